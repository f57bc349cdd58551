"""The Transform components: how a registration stage creates, initialises, refines per level and
scales the transform it optimises. The transforms themselves (``matrix.py``, ``bspline.py``) are
the mathematics; a component reads the map's keys for them."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import ImageError, ParameterError
from ..geometry import Grid
from ..image import Image
from ..interpolation import bspline_coefficients
from ..keys import NO_EFFECT, Key
from ..pyramid import schedule
from ..sampling import ImageSampler
from .base import Transform
from .bspline import BSplineTransform
from .initial_search import SearchSettings, matrix_parameters, search
from .matrix import AffineTransform, EulerTransform, MatrixTransform, SimilarityTransform, TranslationTransform

log = logging.getLogger("impactreg")

_COMMON_KEYS = (
    Key("HowToCombineTransforms", "str", "Compose", "how this stage combines with the initial transform", ("Compose", "Add")),
    Key("AutomaticScalesEstimation", "bool", False, "estimate parameter scales from dT/dmu"),
    Key("Scales", "float", None, "parameter scales (one per parameter, or one for all)", multi=True,
        minimum=0, exclusive_minimum=True),
)
_INITIALISATION_KEYS = (
    Key("AutomaticTransformInitialization", "bool", False, "initialise the translation before optimising"),
    Key("AutomaticTransformInitializationMethod", "str", "GeometricalCenter", "how to initialise: align centres, "
        "centres of gravity or origins, or Search: score translations (and rotations) over every overlap with "
        "mutual information on coarse images (for partial fields of view, e.g. an MR slab against a whole CT)",
        ("GeometricalCenter", "CenterOfGravity", "Origins", "GeometryTop", "Search")),
    Key("AutomaticTransformInitializationSearchStep", "float", 20.0, "Search: translation step of the first round, "
        "mm (two more rounds refine it to a quarter)", minimum=0, exclusive_minimum=True),
    Key("AutomaticTransformInitializationSearchRange", "float", None, "Search: largest translation from the aligned "
        "centres per axis, mm (one or one per axis; default every shift at which the images overlap by "
        "the minimum)", multi=True, minimum=0),
    Key("AutomaticTransformInitializationSearchRotation", "float", 0.0, "Search: largest rotation about each axis, "
        "degrees (0: translations only; rotations multiply the candidates)", minimum=0, maximum=180),
    Key("AutomaticTransformInitializationSearchRotationStep", "float", 15.0, "Search: rotation step of the first "
        "round, degrees", minimum=0, exclusive_minimum=True),
    Key("AutomaticTransformInitializationSearchMinimumOverlap", "float", 0.5, "Search: fraction of the smaller "
        "image's samples that must fall inside the other image", minimum=0, maximum=1, exclusive_minimum=True),
)


class TransformComponent:
    """Creates the stage's transform (``begin_stage``), gives the transform to optimise at each level
    (``begin_level``) and takes back the optimised one (``end_level``)."""

    elastix_name = ""
    keys: tuple[Key, ...] = _COMMON_KEYS
    unit_scales = False  # parameters already in mm: scales 1 unless given (Scales), as in elastix

    def begin_stage(self, pm, fixed: Image, moving: Image, initial: Transform | None) -> None:
        self.pm, self.fixed, self.initial = pm, fixed, initial
        self.how = pm.get("HowToCombineTransforms")

    def begin_level(self, view) -> Transform:
        return self.current

    def end_level(self, optimised: Transform) -> None:
        self.current = optimised.to("cpu")

    def scales(self, transform: Transform) -> torch.Tensor:
        """sqrt of elastix's Scales: parameters are optimised as mu * sqrt(scales)."""
        pm, fixed_grid = self.pm, self.fixed.grid
        P = transform.number_of_parameters
        given = pm.values("Scales")
        if given is not None:
            if len(given) not in (1, P):
                raise ParameterError(f"(Scales ...) needs 1 or {P} values for {transform.elastix_name}, got {len(given)}")
            scales = torch.tensor(given, dtype=torch.float64).expand(P).clone()
        elif self.unit_scales:  # elastix's translation and B-spline transforms do not read AutomaticScalesEstimation
            scales = torch.ones(P, dtype=torch.float64)
        else:
            # elastix's AutomaticScalesEstimation: mean over a grid of fixed points of sum_d (dT_d/dmu_p)^2;
            # also used for rotation-like parameters when no Scales are given.
            sampler = ImageSampler("Grid", fixed_grid, grid_spacing=(fixed_grid.sample_step(10000),), dtype=torch.float64)
            jac = transform.parameter_jacobian(sampler.sample())
            if not isinstance(jac, torch.Tensor):
                jac = jac.to_dense()
            scales = (jac ** 2).sum(1).mean(0).clamp_min(1e-12)
        if torch.any(scales <= 0):
            raise ParameterError("(Scales ...) must be positive")
        return scales.sqrt()


def _centre_of_gravity(image: Image) -> np.ndarray:
    weights = image.data[0].double().clamp_min(0).reshape(-1)
    pts = image.grid.voxel_points()
    total = weights.sum()
    if total <= 0:
        return image.grid.centre
    return ((pts * weights[:, None]).sum(0) / total).numpy()


class MatrixTransformComponent(TransformComponent):
    transform_class: type[MatrixTransform] = AffineTransform
    keys = _COMMON_KEYS + _INITIALISATION_KEYS + (
        Key("CenterOfRotationPoint", "float", None, "centre of rotation in mm (default: fixed image centre)", multi=True),)

    def _create(self, dim: int, centre: np.ndarray) -> MatrixTransform:
        return self.transform_class(dim, None, centre)

    def begin_stage(self, pm, fixed, moving, initial) -> None:
        super().begin_stage(pm, fixed, moving, initial)
        dim = fixed.dim
        centre_values = pm.values("CenterOfRotationPoint")
        if centre_values is not None and len(centre_values) != dim:
            raise ParameterError(f"(CenterOfRotationPoint ...) needs {dim} values for {dim}D images")
        automatic = pm.get("AutomaticTransformInitialization")
        method = pm.get("AutomaticTransformInitializationMethod")
        if centre_values is not None:
            centre = np.asarray(centre_values, dtype=np.float64)
        elif automatic and method == "CenterOfGravity":
            centre = _centre_of_gravity(fixed)
        else:
            centre = fixed.grid.centre
        transform = self._create(dim, centre)
        if automatic and method == "Search":
            transform = _searched(transform, pm, fixed, moving, initial)
        elif automatic:
            if method == "CenterOfGravity":
                fixed_c, moving_c = _centre_of_gravity(fixed), _centre_of_gravity(moving)
            elif method == "Origins":
                fixed_c, moving_c = fixed.grid.origin, moving.grid.origin
            else:
                fixed_c, moving_c = fixed.grid.centre, moving.grid.centre
            if initial is not None:
                with torch.no_grad():
                    fixed_c = initial.map(torch.from_numpy(np.asarray(fixed_c, dtype=np.float64))[None])[0].numpy()
            params = transform.parameters.clone()
            params[transform.translation_indices()] = torch.from_numpy(np.asarray(moving_c - fixed_c, dtype=np.float64))
            transform = transform.with_parameters(params)
        self.current = transform


def _searched(transform: MatrixTransform, pm, fixed: Image, moving: Image, initial: Transform | None) -> MatrixTransform:
    """``transform`` set to the best candidate of the exhaustive search (see initial_search.py)."""
    dim = fixed.dim
    rotation = pm.get("AutomaticTransformInitializationSearchRotation")
    if isinstance(transform, TranslationTransform) and rotation > 0:
        log.warning("AutomaticTransformInitializationSearchRotation is ignored for a TranslationTransform")
        rotation = 0.0
    given = pm.values("AutomaticTransformInitializationSearchRange")
    if given is not None and len(given) not in (1, dim):
        raise ParameterError(f"(AutomaticTransformInitializationSearchRange ...) needs 1 or {dim} values, got {len(given)}")
    settings = SearchSettings(step_mm=pm.get("AutomaticTransformInitializationSearchStep"),
                              range_mm=None if given is None else tuple(float(v) for v in given),
                              rotation_degrees=rotation,
                              rotation_step_degrees=pm.get("AutomaticTransformInitializationSearchRotationStep"),
                              minimum_overlap=pm.get("AutomaticTransformInitializationSearchMinimumOverlap"))
    compute_zyx = bool(getattr(transform, "compute_zyx", False))
    found = search(fixed, moving, transform.center.numpy(), settings, initial, compute_zyx)
    if found is None:
        raise ImageError(f"the initialisation search found no position where the images overlap by "
                         f"{settings.minimum_overlap:g} of the smaller one; lower "
                         f"AutomaticTransformInitializationSearchMinimumOverlap or widen the SearchRange")
    log.info("initialisation search: %d candidates, best translation %s mm, rotation %s deg, MI %.3f",
             found.candidates, np.round(found.translation.numpy(), 1), np.round(np.degrees(found.angles.numpy()), 1),
             found.score)
    return transform.with_parameters(matrix_parameters(transform, found.rotation, found.angles, found.translation))


def warn_if_reflection(stage: int, transform: Transform) -> None:
    """One warning line when a linear stage ends in a reflection (det A < 0): the images were matched
    mirror-wise, which no anatomy does; a wrong start is the usual cause."""
    if isinstance(transform, MatrixTransform):
        determinant = float(torch.linalg.det(transform.matrix().detach().double()))
        if determinant < 0:
            log.warning(f"stage {stage}: the {transform.elastix_name} ends in a reflection (determinant "
                        f"{determinant:.2f}); the registration is likely wrong: start closer, e.g. "
                        f"(AutomaticTransformInitializationMethod \"Search\"), or use a rigid stage first")


class TranslationTransformComponent(MatrixTransformComponent):
    elastix_name = "TranslationTransform"
    transform_class = TranslationTransform
    unit_scales = True

    def _create(self, dim, centre):
        return TranslationTransform(dim)


class EulerTransformComponent(MatrixTransformComponent):
    elastix_name = "EulerTransform"
    transform_class = EulerTransform
    keys = MatrixTransformComponent.keys + (Key("ComputeZYX", "bool", False, "Euler 3D: R = Rz Ry Rx instead of Rz Rx Ry"),)

    def _create(self, dim, centre):
        return EulerTransform(dim, None, centre, compute_zyx=self.pm.get("ComputeZYX"))


class SimilarityTransformComponent(MatrixTransformComponent):
    elastix_name = "SimilarityTransform"
    transform_class = SimilarityTransform


class AffineTransformComponent(MatrixTransformComponent):
    elastix_name = "AffineTransform"
    transform_class = AffineTransform


class BSplineTransformComponent(TransformComponent):
    """A B-spline whose control grid is refined per level (GridSpacingSchedule); RecursiveBSplineTransform
    is elastix's faster implementation of the same transform and installs this component too."""

    elastix_name = "BSplineTransform"
    unit_scales = True
    keys = _COMMON_KEYS + (
        Key("FinalGridSpacingInPhysicalUnits", "float", None, "B-spline grid spacing at the last level, mm "
            "(per dimension, else the first; 8 mm when neither FinalGridSpacing key is given, as elastix)", multi=True, minimum=0, exclusive_minimum=True),
        Key("FinalGridSpacingInVoxels", "float", None, "B-spline grid spacing at the last level, fixed voxels", multi=True,
            minimum=0, exclusive_minimum=True),
        Key("GridSpacingSchedule", "float", None, "B-spline grid spacing factor per level (or levels x dimension)", multi=True,
            minimum=0, exclusive_minimum=True),
        Key("BSplineTransformSplineOrder", "int", 3, "B-spline transform order", ("1", "2", "3")),
        Key("UseCyclicTransform", "bool", False, "cyclic B-spline, the last axis periodic (elastix, for 4D cycles): not implemented, must be false", ("false",)),
        Key("PassiveEdgeWidth", "int", 0, NO_EFFECT, minimum=0),
    )

    def begin_stage(self, pm, fixed, moving, initial) -> None:
        super().begin_stage(pm, fixed, moving, initial)
        self.name = pm.get("Transform")
        self.order = pm.get("BSplineTransformSplineOrder")
        self.final_spacing = _final_grid_spacing(pm, fixed.grid)
        self.schedule = schedule(pm.values("GridSpacingSchedule"), pm.get("NumberOfResolutions"), fixed.dim,
                                 "GridSpacingSchedule")
        self.current = None

    def begin_level(self, view) -> Transform:
        grid = self.fixed.grid.control_grid(self.final_spacing * self.schedule[view.level], self.order,
                                            self.initial if self.how == "Compose" else None)
        self.current = BSplineTransform(grid, self.order) if self.current is None else _upsample(self.current, grid)
        self.current.elastix_name = self.name
        return self.current


def _final_grid_spacing(pm, fixed_grid: Grid) -> np.ndarray:
    dim = fixed_grid.dim
    physical = pm.values("FinalGridSpacingInPhysicalUnits")
    voxels = pm.values("FinalGridSpacingInVoxels")
    if physical is not None and voxels is not None:
        raise ParameterError("give FinalGridSpacingInPhysicalUnits or FinalGridSpacingInVoxels, not both")
    if physical is None and voxels is None:
        physical = [8.0]  # elastix's default: 8 mm
    values, unit = (physical, 1.0) if physical is not None else (voxels, fixed_grid.spacing)
    # elastix reads entry d for axis d, else the first
    spacing = np.array([values[d] if d < len(values) else values[0] for d in range(dim)], dtype=np.float64) * unit
    if np.any(spacing <= 0):
        raise ParameterError("the B-spline grid spacing must be positive")
    return spacing


def _upsample(old: BSplineTransform, new_grid: Grid) -> BSplineTransform:
    """Coefficients on ``new_grid`` whose spline interpolates the old displacement at the new nodes."""
    nodes = new_grid.voxel_points()
    with torch.no_grad():
        disp = old.map(nodes) - nodes  # (N, D)
    values = disp.T.reshape(old.dim, *new_grid.shape)
    coef = bspline_coefficients(values, old.order) if old.order >= 2 else values
    return BSplineTransform(new_grid, old.order, coef.reshape(-1))


class DeformationFieldTransformComponent(TransformComponent):
    """elastix's DeformationFieldTransform: a dense displacement field (mm, fixed -> moving) on a grid of
    its own. elastix cannot optimise it; in impactreg the dense engine ((Registration "DenseRegistration"))
    does, and writes it with its field image as elastix would."""

    elastix_name = "DeformationFieldTransform"
    keys = _COMMON_KEYS[:1] + (
        Key("DeformationFieldInterpolationOrder", "int", 1, "interpolation of the written field: 0 nearest, 1 linear",
            ("0", "1")),
        Key("DeformationFieldSpacing", "float", None, "spacing in mm of the field's grid (one or one per dimension; "
            "default: twice the dense engine's feature voxel size)", multi=True, minimum=0, exclusive_minimum=True),
    )

    def begin_level(self, view) -> Transform:
        raise ParameterError("(Transform \"DeformationFieldTransform\") is optimised by the dense engine only; "
                             "set (Registration \"DenseRegistration\") and (Optimizer \"ConvexAdam\")")
