"""The dense engine's components: the registration kind that selects it and the optimiser that runs it.

    (Registration "DenseRegistration")
    (Transform "DeformationFieldTransform")
    (Optimizer "ConvexAdam")
    (Metric "Impact")              // feature maps from the IMPACT keys of level 0; or "AdvancedMeanSquares"
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.kinds import MultiResolutionRegistration
from ..errors import ParameterError
from ..keys import Key

REGULARIZERS = ("Diffusion", "Bending")


class DenseRegistration(MultiResolutionRegistration):
    """A stage run by the dense engine (``dense/stage.py``) instead of the iterative B-spline driver:
    features once, coupled-convex search, Adam on a displacement field. One metric; NumberOfResolutions
    and the sampler, interpolator and pyramid keys do not apply (the IMPACT keys of level 0 are used)."""

    elastix_name = "DenseRegistration"
    dense = True

    def check_metrics(self, names: list[str]) -> None:
        if len(names) != 1:
            raise ParameterError(f"(Registration \"DenseRegistration\") takes one metric, got {len(names)}: "
                                 f"use (Metric \"Impact\") or (Metric \"AdvancedMeanSquares\")")


@dataclass
class DenseSettings:
    grid_spacing: float  # mm, coarse grid of the discrete stage
    radius: int  # search window half-width in coarse voxels
    couplings: list[float]
    symmetric: bool
    consistency_iterations: int
    iterations: int  # Adam
    samples: int  # Adam: voxels drawn per iteration, 0 = all
    learning_rate: float  # mm
    smoothing: int  # box-filter passes applied to the Adam parameters
    regularizer: str
    regularization_weight: float
    diffeomorphic: bool
    squaring_steps: int


class ConvexAdam:
    """The dense optimiser: a cost volume over a displacement window on a coarse grid with coupled-convex
    optimisation (optionally inverse-consistent), then Adam on a displacement field with the metric in
    feature space plus a diffusion or bending-energy regulariser (optionally diffeomorphic: the field is
    the exponential of the optimised one, by scaling and squaring)."""

    elastix_name = "ConvexAdam"
    converged = False
    last_gain = 0.0
    keys = (
        Key("ConvexGridSpacing", "float", 6.0, "ConvexAdam: spacing in mm of the coarse grid of the discrete search "
            "(features averaged over its cells; a whole number of feature voxels)", minimum=0, exclusive_minimum=True),
        Key("ConvexSearchRadius", "int", 4, "ConvexAdam: displacements searched, in coarse cells along each axis "
            "(window of (2r + 1)^D)", minimum=0, maximum=12),
        Key("ConvexCouplingWeights", "float", None, "ConvexAdam: coupling weights of the coupled-convex iterations "
            "(default 0.003 0.01 0.03 0.1 0.3 1; costs are scaled to a mean spread of 1)", multi=True, minimum=0),
        Key("ConvexSymmetric", "bool", True, "ConvexAdam: search both directions and make the coarse field "
            "inverse-consistent"),
        Key("ConvexInverseConsistencyIterations", "int", 15, "ConvexAdam: inverse-consistency iterations", minimum=0),
        Key("AdamIterations", "int", 100, "ConvexAdam: Adam iterations on the displacement field (0: coarse only)",
            minimum=0),
        Key("AdamNumberOfSamples", "int", 0, "ConvexAdam: fixed feature voxels drawn (seeded) each Adam iteration "
            "(0: every voxel in the fixed mask)", minimum=0),
        Key("AdamLearningRate", "float", 0.5, "ConvexAdam: Adam step size in mm", minimum=0, exclusive_minimum=True),
        Key("AdamFieldSmoothing", "int", 2, "ConvexAdam: 3-voxel box filters applied to the optimised field",
            minimum=0),
        Key("DenseRegularization", "str", "Diffusion", "ConvexAdam: regulariser of the field", REGULARIZERS),
        Key("DenseRegularizationWeight", "float", 1.0, "ConvexAdam: weight of the regulariser (mean squared first "
            "(Diffusion) or second (Bending) derivatives of the displacement, per mm)", minimum=0),
        Key("DenseDiffeomorphic", "bool", False, "ConvexAdam: the field is the exponential of the optimised one "
            "(scaling and squaring)"),
        Key("DenseScalingAndSquaringSteps", "int", 7, "ConvexAdam: squarings of the diffeomorphic field", minimum=1,
            maximum=20),
    )

    def settings(self, pm) -> DenseSettings:
        couplings = pm.values("ConvexCouplingWeights")
        return DenseSettings(pm.get("ConvexGridSpacing"), pm.get("ConvexSearchRadius"),
                             [float(c) for c in couplings] if couplings else [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
                             pm.get("ConvexSymmetric"), pm.get("ConvexInverseConsistencyIterations"),
                             pm.get("AdamIterations"), pm.get("AdamNumberOfSamples"), pm.get("AdamLearningRate"), pm.get("AdamFieldSmoothing"),
                             pm.get("DenseRegularization"), pm.get("DenseRegularizationWeight"),
                             pm.get("DenseDiffeomorphic"), pm.get("DenseScalingAndSquaringSteps"))

    def begin_level(self, view, setup) -> dict:
        raise ParameterError("(Optimizer \"ConvexAdam\") runs in the dense engine only; set "
                             "(Registration \"DenseRegistration\") and (Transform \"DeformationFieldTransform\")")
