"""The regression cases: short, seeded registrations that together use every engine component.

Shared by ``record.py`` (writes the golden files) and ``tests/test_regression_outputs.py``
(re-runs each case and compares). Each case is a ``Case``: an id, the input names (files in
``inputs/``), one parameter map per stage, an optional initial transform and the seed. The
golden outputs of case ``<id>`` are ``golden/<id>/TransformParameters.<i>.txt``, one per stage.

The golden files hold the results of the compiled-kernel path (IMPACTREG_KERNELS unset) with one
torch thread, on the machine and library versions listed in ``golden/environment.txt``; other
CPUs or versions of torch, numpy or numba may change the last bits.

The inputs are stored files (``inputs/*.mha``, ``inputs/*.txt``) rather than computed in the
test, so that a change to ``impactreg.synthetic`` or the resampling code does not move every
golden file at once; ``make_inputs`` (``record.py --inputs``) rebuilds them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs"
GOLDEN = HERE / "golden"

# keys whose value is a file path: compared by file name only (the folders differ between runs)
PATH_KEYS = ("InitialTransformParameterFileName", "InitialTransformParametersFileName")
_PATH_LINE = re.compile(r'^\((%s) "(.*)"\)$' % "|".join(PATH_KEYS))


def normalise(text: str) -> str:
    """Transform-file text with every path-valued key reduced to the file name."""
    def fix(line: str) -> str:
        m = _PATH_LINE.match(line)
        if m is None or m.group(2) == "NoInitialTransform":
            return line
        return f'({m.group(1)} "{Path(m.group(2)).name}")'
    return "\n".join(fix(line) for line in text.split("\n"))


def _entries(text: str) -> dict[str, str]:
    out = {}
    for line in text.split("\n"):
        if line.startswith("(") and line.endswith(")") and " " in line:
            key, _, value = line[1:-1].partition(" ")
            out[key] = value
    return out


def describe_difference(want: str, got: str) -> str:
    """One line per differing key: how many values differ and by how much (numbers), or both values."""
    a, b = _entries(want), _entries(got)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        try:
            x = [float(v) for v in a[key].split()]
            y = [float(v) for v in b[key].split()]
            if len(x) != len(y):
                raise ValueError
            diffs = [abs(u - v) for u, v in zip(x, y)]
            lines.append(f"  {key}: {sum(d > 0 for d in diffs)}/{len(diffs)} values differ, max |diff| "
                         f"{max(diffs):.3g} (golden max |value| {max(abs(u) for u in x):.3g})")
        except (KeyError, ValueError):
            lines.append(f"  {key}: golden {a.get(key, '<missing>')[:80]!r}, now {b.get(key, '<missing>')[:80]!r}")
    if not lines and want != got:
        lines.append("  same keys and values; the layout (order, comments, blank lines) differs")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """What the bits of the results depend on besides the code: library versions and the CPU
    (numba compiles the kernels for the host CPU, with fastmath)."""
    import platform

    import numba
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "numba": numba.__version__, "cpu": cpu}


ENVIRONMENT_FILE = GOLDEN / "environment.txt"


def recorded_environment() -> dict[str, str]:
    if not ENVIRONMENT_FILE.is_file():
        return {}
    return dict(line.split(": ", 1) for line in ENVIRONMENT_FILE.read_text().splitlines() if ": " in line)


@dataclass
class Case:
    id: str
    fixed: str
    moving: str
    maps: list[dict]
    seed: int = 1
    fixed_mask: str | None = None
    moving_mask: str | None = None
    initial: str | None = None
    covers: list[str] = field(default_factory=list)  # components exercised, for the report and docs
    fixed_points: str | None = None  # landmark files in inputs/ (-fp, -mp)
    moving_points: str | None = None


# common settings: short runs, no result image (only the transform files are recorded)
_BASE = {"NumberOfResolutions": 2, "WriteResultImage": "false", "NumberOfSpatialSamples": 300,
         "NumberOfSamplesForExactGradient": 1000, "NumberOfJacobianMeasurements": 300,
         "MaximumNumberOfIterations": 12}


def _m(**entries) -> dict:
    out = dict(_BASE)
    out.update(entries)
    return out


_MIND_2D = {"ImpactModelsPath0": "MIND/R1D1", "ImpactDimension0": 2, "ImpactLayersMask0": "1",
            "ImpactDistance0": "L2", "ImpactSubsetFeatures0": 4}
_MIND_3D = {"ImpactModelsPath0": "MIND/R1D1", "ImpactLayersMask0": "1", "ImpactDistance0": "L2",
            "ImpactSubsetFeatures0": 6}

CASES: list[Case] = [
    Case("2d-translation-ams-random-smoothing-asgd-original", "fixed2d", "moving2d_same", [_m(
        Transform="TranslationTransform", Metric="AdvancedMeanSquares", ImageSampler="Random",
        NewSamplesEveryIteration="true", FixedImagePyramid="FixedSmoothingImagePyramid",
        MovingImagePyramid="MovingSmoothingImagePyramid", Optimizer="AdaptiveStochasticGradientDescent",
        ASGDParameterEstimationMethod="Original", Interpolator="LinearInterpolator",
        AutomaticTransformInitialization="true", AutomaticTransformInitializationMethod="GeometricalCenter")],
        seed=11, covers=["TranslationTransform", "AdvancedMeanSquares", "Random sampler (new samples)",
                         "Smoothing pyramid", "ASGD automatic Original (noisy)", "LinearInterpolator",
                         "AutomaticTransformInitialization GeometricalCenter", "2D"]),
    Case("2d-euler-amsnorm-grid-recursive-rsgd", "fixed2d", "moving2d_same", [_m(
        Transform="EulerTransform", Metric="AdvancedMeanSquares", UseNormalization="true", ImageSampler="Grid",
        SampleGridSpacing=3, FixedImagePyramid="FixedRecursiveImagePyramid",
        MovingImagePyramid="MovingRecursiveImagePyramid", Optimizer="RegularStepGradientDescent",
        MaximumStepLength=[2.0, 1.0], MinimumStepLength=0.01, RelaxationFactor=0.6,
        Interpolator="BSplineInterpolator", BSplineInterpolationOrder=1,
        AutomaticTransformInitialization="true", AutomaticTransformInitializationMethod="CenterOfGravity")],
        covers=["EulerTransform 2D", "AdvancedMeanSquares UseNormalization", "Grid sampler",
                "Recursive pyramid", "RegularStepGradientDescent", "BSplineInterpolator order 1",
                "AutomaticTransformInitialization CenterOfGravity", "2D"]),
    Case("2d-similarity-anc-full-shrinking-sgd", "fixed2d", "moving2d_same", [_m(
        Transform="SimilarityTransform", Metric="AdvancedNormalizedCorrelation", ImageSampler="Full",
        FixedImagePyramid="FixedShrinkingImagePyramid", MovingImagePyramid="MovingShrinkingImagePyramid",
        ImagePyramidSchedule=[2, 2, 1, 1], Optimizer="StandardGradientDescent", SP_a=[2000.0, 1000.0],
        SP_A=20.0, SP_alpha=0.602, Interpolator="BSplineInterpolator", BSplineInterpolationOrder=3,
        Scales=[3000.0, 3000.0, 1.0, 1.0], CenterOfRotationPoint=[-1.5, 2.0],
        ResampleInterpolator="FinalLinearInterpolator")],
        covers=["SimilarityTransform", "AdvancedNormalizedCorrelation", "Full sampler", "Shrinking pyramid",
                "ImagePyramidSchedule", "StandardGradientDescent", "BSplineInterpolator order 3", "Scales",
                "CenterOfRotationPoint", "ResampleInterpolator FinalLinearInterpolator", "2D"]),
    Case("2d-affine-mattes-randomcoordinate-generic-adam-autoscales", "fixed2d", "moving2d_multi", [_m(
        Transform="AffineTransform", Metric="AdvancedMattesMutualInformation", NumberOfHistogramBins=24,
        ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true",
        FixedImagePyramid="FixedGenericImagePyramid", MovingImagePyramid="MovingGenericImagePyramid",
        ImagePyramidRescaleSchedule=[2, 2, 1, 1], ImagePyramidSmoothingSchedule=[1.5, 1.5, 0.5, 0.5],
        Optimizer="Adam", LearningRate=[0.5, 0.25], AutomaticScalesEstimation="true",
        Interpolator="LinearInterpolator")],
        covers=["AffineTransform", "AdvancedMattesMutualInformation", "RandomCoordinate sampler",
                "Generic pyramid (rescale + smoothing schedules)", "Adam", "AutomaticScalesEstimation", "2D"]),
    Case("2d-affine-nmi-random-asgd-displacementdistribution", "fixed2d", "moving2d_multi", [_m(
        Transform="AffineTransform", Metric="NormalizedMutualInformation", ImageSampler="Random",
        NewSamplesEveryIteration="true", Optimizer="AdaptiveStochasticGradientDescent",
        ASGDParameterEstimationMethod="DisplacementDistribution", FixedImagePyramid="FixedGenericImagePyramid",
        MovingImagePyramid="MovingGenericImagePyramid", Interpolator="LinearInterpolator",
        AutomaticTransformInitialization="true", AutomaticTransformInitializationMethod="Origins")],
        covers=["AffineTransform", "NormalizedMutualInformation", "Random sampler",
                "ASGD automatic DisplacementDistribution (noisy)", "Generic pyramid (default schedules)",
                "AutomaticTransformInitialization Origins", "2D"]),
    Case("2d-bspline3-mattes-bending-multimetric", "fixed2d", "moving2d_multi", [_m(
        Transform="BSplineTransform", BSplineTransformSplineOrder=3, FinalGridSpacingInPhysicalUnits=12.0,
        GridSpacingSchedule=[2.0, 1.0], Registration="MultiMetricMultiResolutionRegistration",
        Metric=["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"], Metric0Weight=1.0,
        Metric1Weight=[0.5, 2.0], ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true",
        Interpolator="LinearInterpolator", ASGDParameterEstimationMethod="Original")],
        covers=["BSplineTransform order 3", "GridSpacingSchedule", "MultiMetricMultiResolutionRegistration",
                "TransformBendingEnergyPenalty", "Metric<i>Weight per level", "ASGD automatic Original", "2D"]),
    Case("2d-bspline2-ams-asgd-manual", "fixed2d", "moving2d_same", [_m(
        Transform="BSplineTransform", BSplineTransformSplineOrder=2, FinalGridSpacingInPhysicalUnits=[14.0, 12.0],
        Metric="AdvancedMeanSquares", ImageSampler="Random", NewSamplesEveryIteration="false",
        AutomaticParameterEstimation="false", SP_a=[0.02, 0.01], SP_A=10.0, SP_alpha=0.7,
        UseAdaptiveStepSizes="true", SigmoidMax=1.0, SigmoidMin=-0.8, SigmoidScale=1e-6,
        Interpolator="BSplineInterpolator", BSplineInterpolationOrder=2)],
        covers=["BSplineTransform order 2", "AdvancedMeanSquares", "Random sampler (fixed samples)",
                "ASGD without automatic estimation (adaptive)", "BSplineInterpolator order 2", "2D"]),
    Case("2d-recursivebspline1-anc-voxelspacing", "fixed2d", "moving2d_same", [_m(
        Transform="RecursiveBSplineTransform", BSplineTransformSplineOrder=1, FinalGridSpacingInVoxels=10,
        Metric="AdvancedNormalizedCorrelation", SubtractMean="false", ImageSampler="RandomCoordinate",
        NewSamplesEveryIteration="true", ASGDParameterEstimationMethod="DisplacementDistribution",
        UseAdaptiveStepSizes="false", Interpolator="LinearInterpolator",
        ResampleInterpolator="FinalNearestNeighborInterpolator")],
        covers=["RecursiveBSplineTransform order 1", "FinalGridSpacingInVoxels",
                "AdvancedNormalizedCorrelation SubtractMean false", "ASGD automatic DisplacementDistribution, UseAdaptiveStepSizes false",
                "ResampleInterpolator FinalNearestNeighborInterpolator", "2D"]),
    Case("2d-euler-mattes-masks-erode", "fixed2d", "moving2d_multi", [_m(
        Transform="EulerTransform", Metric="AdvancedMattesMutualInformation", ImageSampler="Random",
        NewSamplesEveryIteration="true", ErodeMask="true", Interpolator="LinearInterpolator",
        AutomaticScalesEstimation="true", NumberOfFixedHistogramBins=16, NumberOfMovingHistogramBins=20,
        FixedKernelBSplineOrder=1, MovingKernelBSplineOrder=2)],
        fixed_mask="fixed2d_mask", moving_mask="moving2d_mask",
        covers=["fixed mask", "moving mask", "ErodeMask", "EulerTransform 2D", "AutomaticScalesEstimation",
                "Mattes MI fixed/moving bins and Parzen kernel orders", "2D"]),
    Case("2d-nearestneighbor-translation", "fixed2d", "moving2d_same", [_m(
        Transform="TranslationTransform", Metric="AdvancedMeanSquares", ImageSampler="Random",
        Interpolator="NearestNeighborInterpolator", AutomaticTransformInitialization="true",
        AutomaticTransformInitializationMethod="CenterOfGravity", MaximumNumberOfIterations=5)],
        covers=["NearestNeighborInterpolator (zero image gradient: the parameters stay at the initialisation)",
                "2D"]),
    Case("2d-t0-compose-bspline", "fixed2d", "moving2d_multi", [_m(
        Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=12.0, HowToCombineTransforms="Compose",
        Metric="AdvancedMattesMutualInformation", ImageSampler="RandomCoordinate",
        NewSamplesEveryIteration="true", Interpolator="LinearInterpolator")],
        initial="t0_euler2d.txt",
        covers=["initial transform file (-t0)", "HowToCombineTransforms Compose (B-spline grid over the mapped box)",
                "2D"]),
    Case("2d-t0-add-bspline", "fixed2d", "moving2d_multi", [_m(
        Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=12.0, HowToCombineTransforms="Add",
        Metric="AdvancedMattesMutualInformation", ImageSampler="RandomCoordinate",
        NewSamplesEveryIteration="true", Interpolator="LinearInterpolator")],
        initial="t0_euler2d.txt",
        covers=["initial transform file (-t0)", "HowToCombineTransforms Add", "2D"]),
    Case("2d-t0-compose-affine", "fixed2d", "moving2d_multi", [_m(
        Transform="AffineTransform", HowToCombineTransforms="Compose", Metric="AdvancedMattesMutualInformation",
        ImageSampler="Random", NewSamplesEveryIteration="true", Interpolator="LinearInterpolator",
        AutomaticTransformInitialization="true")],
        initial="t0_euler2d.txt",
        covers=["initial transform file (-t0) before a matrix transform",
                "AutomaticTransformInitialization through an initial transform", "2D"]),
    Case("2d-two-stage-affine-bspline", "fixed2d", "moving2d_multi", [
        _m(Transform="AffineTransform", Metric="AdvancedMattesMutualInformation", ImageSampler="Random",
           NewSamplesEveryIteration="true", Interpolator="LinearInterpolator",
           AutomaticTransformInitialization="true"),
        _m(Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=12.0,
           Registration="MultiMetricMultiResolutionRegistration",
           Metric=["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"], Metric1Weight=1.0,
           Metric1Use=["false", "true"], ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true",
           Interpolator="LinearInterpolator")],
        covers=["two stages (affine then B-spline, InitialTransformParameterFileName chain)", "Metric<i>Use",
                "2D"]),
    Case("2d-impact-mind-static-bspline", "fixed2d", "moving2d_multi", [_m(
        Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=12.0,
        Registration="MultiMetricMultiResolutionRegistration", Metric=["Impact", "TransformBendingEnergyPenalty"],
        Metric0Weight=1.0, Metric1Weight=5.0, ImpactMode="Static", ImpactPatchSize0=[0, 0],
        ImpactVoxelSize0=[2.0, 2.0], ImpactVoxelSize1=[1.25, 1.25], ImageSampler="RandomCoordinate",
        NewSamplesEveryIteration="true", Interpolator="LinearInterpolator", **_MIND_2D)],
        covers=["Impact MIND Static (whole-image maps, per-level voxel size)", "Impact + bending energy", "2D"]),
    Case("2d-impact-mind-static-update-tiled-affine", "fixed2d", "moving2d_multi", [_m(
        Transform="AffineTransform", Metric="Impact", ImpactMode="Static", ImpactFeaturesMapUpdateInterval=4,
        ImpactPatchSize0=[24, 24], ImpactVoxelSize0=[1.5, 1.5], ImageSampler="Random",
        NewSamplesEveryIteration="true", Interpolator="BSplineInterpolator", BSplineInterpolationOrder=3,
        AutomaticTransformInitialization="true", **_MIND_2D)],
        covers=["Impact MIND Static, FeaturesMapUpdateInterval 4", "Static tiled inference (PatchSize > 0)",
                "feature maps sampled with cubic B-splines", "2D"]),
    Case("2d-impact-mind-jacobian-euler", "fixed2d", "moving2d_multi", [_m(
        Transform="EulerTransform", Metric="Impact", ImpactMode="Jacobian", ImpactPatchSize0=[7, 7],
        ImpactVoxelSize0=[2.0, 2.0], ImpactVoxelSize1=[1.25, 1.25], NumberOfSpatialSamples=60,
        NumberOfSamplesForExactGradient=300, NumberOfGradientMeasurements=3, ImageSampler="RandomCoordinate",
        NewSamplesEveryIteration="true", MaximumNumberOfIterations=6, Interpolator="LinearInterpolator", **dict(_MIND_2D, ImpactDistance0="L1"))],
        covers=["Impact MIND Jacobian (patches, autograd through the model), L1 distance", "2D"]),
    Case("3d-euler-zyx-mattes-cog", "fixed3d", "moving3d_multi", [_m(
        Transform="EulerTransform", ComputeZYX="true", Metric="AdvancedMattesMutualInformation",
        ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true", Interpolator="LinearInterpolator",
        MaximumStepLength=[2.0, 1.0], AutomaticTransformInitialization="true",
        AutomaticTransformInitializationMethod="CenterOfGravity")],
        covers=["EulerTransform 3D ComputeZYX", "AdvancedMattesMutualInformation",
                "AutomaticTransformInitialization CenterOfGravity", "ASGD MaximumStepLength per level", "3D"]),
    Case("3d-similarity-ams-grid-recursive-adam", "fixed3d", "moving3d_same", [_m(
        Transform="SimilarityTransform", Metric="AdvancedMeanSquares", ImageSampler="Grid", SampleGridSpacing=[3, 3, 2],
        FixedImagePyramid="FixedRecursiveImagePyramid", MovingImagePyramid="MovingRecursiveImagePyramid",
        Optimizer="Adam", Interpolator="LinearInterpolator", AutomaticScalesEstimation="true")],
        covers=["SimilarityTransform 3D", "Grid sampler (per-axis spacing)", "Recursive pyramid", "Adam", "3D"]),
    Case("3d-two-stage-affine-bspline-masks", "fixed3d", "moving3d_multi", [
        _m(Transform="AffineTransform", Metric="AdvancedMattesMutualInformation", ImageSampler="Random",
           NewSamplesEveryIteration="true", Interpolator="LinearInterpolator", ErodeMask="false",
           AutomaticTransformInitialization="true"),
        _m(Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=16.0,
           Registration="MultiMetricMultiResolutionRegistration",
           Metric=["NormalizedMutualInformation", "TransformBendingEnergyPenalty"], Metric1Weight=0.5,
           ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true", ErodeFixedMask="true",
           ErodeMovingMask="false", Interpolator="LinearInterpolator")],
        fixed_mask="fixed3d_mask", moving_mask="moving3d_mask",
        covers=["two stages in 3D", "masks in 3D with ErodeFixedMask/ErodeMovingMask",
                "NormalizedMutualInformation + bending energy", "3D"]),
    Case("3d-impact-mind-static-bspline", "fixed3d", "moving3d_multi", [_m(
        Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=16.0,
        Registration="MultiMetricMultiResolutionRegistration", Metric=["Impact", "TransformBendingEnergyPenalty"],
        Metric1Weight=5.0, Mode="Static", ModelsPath="MIND/R1D1", PatchSize="0*0*0", VoxelSize=["4*4*4", "2*2*2"],
        LayersMask="1", Distance="L2", SubsetFeatures="6", FeaturesMapUpdateInterval="5", NumberOfGradientMeasurements=3,
        ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true", Interpolator="LinearInterpolator",
        MaximumNumberOfIterations=10,
        # 48 mm images at 4 mm features: only their middle is out of reach of padding (MIND R1D1: 2 voxels)
        RequiredRatioOfValidSamples=0.1)],
        covers=["Impact MIND Static 3D with FeaturesMapUpdateInterval 5",
                "IMPACT keys of the documented family (ModelsPath, PatchSize \"0*0*0\", per-level VoxelSize)",
                "3D"]),
    Case("3d-impact-mind-jacobian-translation", "fixed3d", "moving3d_multi", [_m(
        Transform="TranslationTransform", Metric="Impact", ImpactMode="Jacobian", ImpactPatchSize0=[5, 5, 5],
        ImpactVoxelSize0=[2.0, 2.0, 2.0], NumberOfSpatialSamples=40, NumberOfSamplesForExactGradient=200, NumberOfGradientMeasurements=3,
        ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true", MaximumNumberOfIterations=5,
        Interpolator="LinearInterpolator", **_MIND_3D)],
        covers=["Impact MIND Jacobian 3D", "TranslationTransform 3D", "3D"]),
    Case("2d-bspline-ams-rigidity-sparsemask-lbfgs", "fixed2d", "moving2d_same", [_m(
        Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=12.0,
        Registration="MultiMetricMultiResolutionRegistration", Metric=["AdvancedMeanSquares", "TransformRigidityPenalty"],
        Metric1Weight=[50.0, 200.0], MovingRigidityImageName=str(INPUTS / "moving2d_mask.mha"),
        DilationRadiusMultiplier=0.25, LinearityConditionWeight=10.0, PropernessConditionWeight=2.0,
        ImageSampler="RandomSparseMask", NewSamplesEveryIteration="false", Optimizer="QuasiNewtonLBFGS",
        LBFGSUpdateAccuracy=4, StopIfWolfeNotSatisfied="false", Interpolator="LinearInterpolator")],
        fixed_mask="fixed2d_mask",
        covers=["TransformRigidityPenalty with a dilated moving rigidity image", "RandomSparseMask sampler",
                "QuasiNewtonLBFGS (More-Thuente line search on fixed samples)", "2D"]),
    Case("2d-euler-displacement-inverts-t0", "fixed2d", "moving2d_same", [_m(
        Transform="EulerTransform", Metric="DisplacementMagnitudePenalty", HowToCombineTransforms="Compose",
        ImageSampler="Random", NewSamplesEveryIteration="true", Interpolator="LinearInterpolator")],
        initial="t0_euler2d.txt",
        covers=["DisplacementMagnitudePenalty (inverting the initial transform)", "2D"]),
    Case("3d-affine-anc-landmarks", "fixed3d", "moving3d_same", [_m(
        Transform="AffineTransform", Registration="MultiMetricMultiResolutionRegistration",
        Metric=["AdvancedNormalizedCorrelation", "CorrespondingPointsEuclideanDistanceMetric"], Metric1Weight=0.05,
        ImageSampler="RandomCoordinate", NewSamplesEveryIteration="true", Interpolator="LinearInterpolator",
        AutomaticTransformInitialization="true")],
        fixed_points="landmarks3d_fixed.txt", moving_points="landmarks3d_moving_index.txt",
        covers=["CorrespondingPointsEuclideanDistanceMetric (-fp world points, -mp moving indices)", "3D"]),
]


def case_by_id(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def run_case(case: Case, out_dir: Path) -> list[Path]:
    """Run one case into ``out_dir``; returns its TransformParameters.<i>.txt, one per stage.

    Runs with one torch thread (restored afterwards): the outputs were checked to be identical
    with 1, 2 and 4 threads, and on a busy machine two threads are several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_case(case, out_dir)
    finally:
        torch.set_num_threads(threads)


def _run_case(case: Case, out_dir: Path) -> list[Path]:
    from impactreg.image import read_image
    from impactreg import register

    def image(name):
        return read_image(INPUTS / f"{name}.mha") if name else None

    result = register(image(case.fixed), image(case.moving), [dict(m) for m in case.maps],
                      fixed_mask=image(case.fixed_mask), moving_mask=image(case.moving_mask),
                      initial_transform=str(INPUTS / case.initial) if case.initial else None,
                      out_dir=out_dir, seed=case.seed,
                      fixed_points=str(INPUTS / case.fixed_points) if case.fixed_points else None,
                      moving_points=str(INPUTS / case.moving_points) if case.moving_points else None)
    files = [result.outputs[f"TransformParameters.{i}.txt"] for i in range(len(case.maps))]
    return files


# inputs ----------------------------------------------------------------------------------------

def _phantom(grid):
    """Label-like soft phantom: a body ellipse(oid) with three inner structures, each a soft
    indicator (sigmoid of the normalised radius), returned as a list of (N,) arrays."""
    import numpy as np
    pts = grid.voxel_points().numpy()
    lo, hi = grid.extent_corners().min(0), grid.extent_corners().max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2

    def blob(c, r, width=0.08):
        rr = np.sqrt((((pts - (centre + c * half)) / (r * half)) ** 2).sum(1))
        return 1.0 / (1.0 + np.exp((rr - 1.0) / width))
    dim = grid.dim
    if dim == 2:
        shapes = [((0.0, 0.0), (0.75, 0.65)), ((-0.3, -0.15), (0.22, 0.3)), ((0.3, 0.1), (0.25, 0.2)),
                  ((0.05, 0.38), (0.15, 0.12))]
    else:
        shapes = [((0.0, 0.0, 0.0), (0.75, 0.65, 0.7)), ((-0.3, -0.15, 0.1), (0.22, 0.3, 0.3)),
                  ((0.3, 0.1, -0.15), (0.25, 0.2, 0.25)), ((0.05, 0.38, 0.2), (0.15, 0.12, 0.2))]
    return [blob(np.asarray(c), np.asarray(r)) for c, r in shapes]


def make_inputs(folder: Path = INPUTS) -> None:
    """Build the synthetic inputs (fixed/moving, two contrasts, masks, a t0 file) into ``folder``."""
    import numpy as np
    import torch

    from impactreg.geometry import Grid
    from impactreg.image import Image, write_image
    from impactreg.synthetic import random_deformation, warp_by_inverse

    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "2d": (Grid((52, 44), (1.25, 1.0), (-30.0, -20.0), np.eye(2)),
               dict(seed=3, rotation_degrees=6.0, translation_mm=3.0, bumps=5, bump_mm=2.0, bump_width_mm=10.0,
                    control_spacing_mm=8.0)),
        "3d": (Grid((24, 22, 20), (2.0, 2.0, 2.2), (-20.0, -24.0, 10.0), np.eye(3)),
               dict(seed=4, rotation_degrees=4.0, translation_mm=3.0, bumps=4, bump_mm=2.5, bump_width_mm=12.0,
                    control_spacing_mm=12.0)),
    }
    # intensities of (body, structure 1, 2, 3) in the two contrasts
    same = (400.0, 800.0, 150.0, 600.0)
    multi = (500.0, 200.0, 900.0, 350.0)
    for tag, (grid, deformation) in specs.items():
        rng = np.random.default_rng(deformation["seed"])
        parts = _phantom(grid)

        def compose(levels):
            value = levels[0] * parts[0]
            for lv, p in zip(levels[1:], parts[1:]):
                value = value * (1 - p) + lv * p
            return value

        def as_image(values):
            return Image(torch.from_numpy(values.reshape(grid.shape)).float()[None], grid)

        fixed = as_image(compose(same))
        other = as_image(compose(multi))
        mask = as_image((parts[0] > 0.3).astype(np.float64))
        truth = random_deformation(grid, **deformation)
        moving_same, moving_multi, moving_mask = warp_by_inverse([fixed, other, mask], truth, order=[3, 3, 0])

        def noisy(image, sigma):
            data = image.data + torch.from_numpy(rng.normal(scale=sigma, size=tuple(image.data.shape))).float()
            return Image(data, image.grid)

        write_image(noisy(fixed, 10.0), folder / f"fixed{tag}.mha")
        write_image(noisy(moving_same, 10.0), folder / f"moving{tag}_same.mha")
        write_image(noisy(moving_multi, 10.0), folder / f"moving{tag}_multi.mha")
        write_image(Image(mask.data, grid, "uint8"), folder / f"fixed{tag}_mask.mha", "uint8")
        write_image(Image(moving_mask.data, grid, "uint8"), folder / f"moving{tag}_mask.mha", "uint8")
    (folder / "t0_euler2d.txt").write_text(
        "// a hand-written elastix transform: the initial transform of the -t0 cases\n"
        '(Transform "EulerTransform")\n(NumberOfParameters 3)\n(TransformParameters 0.05 1.5 -1.0)\n'
        "(CenterOfRotationPoint 2.5 1.5)\n"
        '(InitialTransformParameterFileName "NoInitialTransform")\n(HowToCombineTransforms "Compose")\n'
        "(FixedImageDimension 2)\n(MovingImageDimension 2)\n"
        '(FixedInternalImagePixelType "float")\n(MovingInternalImagePixelType "float")\n'
        "(Size 52 44)\n(Index 0 0)\n(Spacing 1.25 1.0)\n(Origin -30.0 -20.0)\n(Direction 1 0 0 1)\n"
        '(UseDirectionCosines "true")\n')
    write_landmark_files(folder)


def write_landmark_files(folder: Path = INPUTS) -> None:
    """Hand-written landmarks of the 3D case: world points in the fixed image and, as elastix's 'index'
    format, voxel indices of the moving image (same grid) about 2 mm away."""
    (folder / "landmarks3d_fixed.txt").write_text(
        "point\n6\n-10.0 -14.0 20.0\n12.0 -10.0 24.4\n2.0 6.0 30.0\n-14.0 8.0 40.0\n16.0 10.0 44.0\n0.0 -2.0 33.0\n")
    (folder / "landmarks3d_moving_index.txt").write_text(
        "index\n6\n6 6 5\n17 8 7\n12 16 9\n4 17 14\n19 18 15\n11 12 11\n")
