"""Every parameter-map key impactreg knows: type, default, allowed values, and a one-line doc.

Keys follow elastix's names and meanings. ``per_level`` keys take one value per resolution level
or one value for all levels; ``multi`` keys take a list of any length (schedules, scales).
Keys that only tune elastix's internals (pixel types, threading) are accepted so that existing
maps run unchanged, and documented as having no effect.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # "str", "int", "float", "bool"
    default: object
    doc: str
    allowed: tuple[str, ...] | None = None
    per_level: bool = False
    multi: bool = False
    pattern: str | None = None  # regex for indexed names such as Metric<i>Weight


PYRAMIDS = ("SmoothingImagePyramid", "RecursiveImagePyramid", "ShrinkingImagePyramid", "GenericImagePyramid")
METRICS = ("AdvancedMeanSquares", "AdvancedNormalizedCorrelation", "AdvancedMattesMutualInformation",
           "NormalizedMutualInformation", "TransformBendingEnergyPenalty", "Impact")
TRANSFORM_NAMES = ("TranslationTransform", "EulerTransform", "SimilarityTransform", "AffineTransform",
                   "BSplineTransform", "RecursiveBSplineTransform")
OPTIMIZERS = ("AdaptiveStochasticGradientDescent", "StandardGradientDescent", "RegularStepGradientDescent", "Adam")
SAMPLERS = ("Full", "Grid", "Random", "RandomCoordinate")
NO_EFFECT = "accepted for elastix compatibility; no effect in impactreg"

_KEYS = [
    # components
    Key("Registration", "str", "MultiResolutionRegistration", "how metrics and levels are combined",
        ("MultiResolutionRegistration", "MultiMetricMultiResolutionRegistration")),
    Key("Transform", "str", None, "the transform to optimise", TRANSFORM_NAMES),
    Key("Metric", "str", None, "similarity metric(s); several need MultiMetricMultiResolutionRegistration", METRICS, multi=True),
    Key("Optimizer", "str", "AdaptiveStochasticGradientDescent", "the optimiser", OPTIMIZERS),
    Key("ImageSampler", "str", "RandomCoordinate", "where the metric is evaluated each iteration", SAMPLERS, per_level=True),
    Key("Interpolator", "str", "BSplineInterpolator", "moving-image interpolation during registration",
        ("LinearInterpolator", "BSplineInterpolator", "BSplineInterpolatorFloat", "NearestNeighborInterpolator")),
    Key("ResampleInterpolator", "str", "FinalBSplineInterpolator", "interpolation of the result image",
        ("FinalBSplineInterpolator", "FinalBSplineInterpolatorFloat", "FinalLinearInterpolator", "FinalNearestNeighborInterpolator")),
    Key("Resampler", "str", "DefaultResampler", "the result-image resampler", ("DefaultResampler",)),
    Key("FixedImagePyramid", "str", "FixedSmoothingImagePyramid", "fixed-image pyramid", tuple("Fixed" + p for p in PYRAMIDS)),
    Key("MovingImagePyramid", "str", "MovingSmoothingImagePyramid", "moving-image pyramid", tuple("Moving" + p for p in PYRAMIDS)),
    # resolution levels and pyramids
    Key("NumberOfResolutions", "int", 3, "number of resolution levels"),
    Key("ImagePyramidSchedule", "float", None, "shrink factors, levels x dimension (both images)", multi=True),
    Key("FixedImagePyramidSchedule", "float", None, "fixed shrink factors, levels x dimension", multi=True),
    Key("MovingImagePyramidSchedule", "float", None, "moving shrink factors, levels x dimension", multi=True),
    Key("ImagePyramidRescaleSchedule", "float", None, "generic pyramid: rescale factors, levels x dimension", multi=True),
    Key("FixedImagePyramidRescaleSchedule", "float", None, "generic pyramid: fixed rescale factors", multi=True),
    Key("MovingImagePyramidRescaleSchedule", "float", None, "generic pyramid: moving rescale factors", multi=True),
    Key("ImagePyramidSmoothingSchedule", "float", None, "generic pyramid: Gaussian sigma in mm, levels x dimension", multi=True),
    Key("FixedImagePyramidSmoothingSchedule", "float", None, "generic pyramid: fixed sigma in mm", multi=True),
    Key("MovingImagePyramidSmoothingSchedule", "float", None, "generic pyramid: moving sigma in mm", multi=True),
    # optimisation
    Key("MaximumNumberOfIterations", "int", 500, "iterations per level", per_level=True),
    Key("AutomaticParameterEstimation", "bool", True, "ASGD: estimate SP_a (and SP_A, SP_alpha) from the data", per_level=True),
    Key("ASGDParameterEstimationMethod", "str", "Original", "ASGD: how the step size is estimated",
        ("Original", "DisplacementDistribution")),
    Key("MaximumStepLength", "float", None, "ASGD: largest voxel displacement of one step in mm (default: mean fixed spacing)", per_level=True),
    Key("SP_a", "float", 400.0, "gain a in a / (A + k + 1)^alpha", per_level=True),
    Key("SP_A", "float", 20.0, "gain offset A", per_level=True),
    Key("SP_alpha", "float", 0.602, "gain decay exponent alpha (1.0 with automatic estimation)", per_level=True),
    Key("UseAdaptiveStepSizes", "bool", True, "ASGD: adapt the time from successive gradient inner products", per_level=True),
    Key("SigmoidMax", "float", 1.0, "ASGD: maximum of the time-update sigmoid", per_level=True),
    Key("SigmoidMin", "float", -0.8, "ASGD: minimum of the time-update sigmoid", per_level=True),
    Key("SigmoidScale", "float", 1e-8, "ASGD: scale of the time-update sigmoid", per_level=True),
    Key("SigmoidInitialTime", "float", 0.0, "ASGD: initial time", per_level=True),
    Key("NumberOfGradientMeasurements", "int", 0, "ASGD estimation: gradients measured (0 = automatic)", per_level=True),
    Key("NumberOfJacobianMeasurements", "int", 1000, "ASGD estimation: points where dT/dmu is measured", per_level=True),
    Key("NumberOfSamplesForExactGradient", "int", 100000, "ASGD estimation: samples for the 'exact' gradient", per_level=True),
    Key("MaximumStepLengthRatio", "float", 1.0, NO_EFFECT, per_level=True),
    Key("MaxBandCovSize", "int", 192, NO_EFFECT, per_level=True),
    Key("NumberOfBandStructureSamples", "int", 10, NO_EFFECT, per_level=True),
    Key("MinimumStepLength", "float", 1e-6, "RegularStepGradientDescent: stop below this step (mm)", per_level=True),
    Key("MinimumGradientMagnitude", "float", 1e-8, "RegularStepGradientDescent: stop below this gradient", per_level=True),
    Key("RelaxationFactor", "float", 0.5, "RegularStepGradientDescent: step shrink on direction change", per_level=True),
    Key("LearningRate", "float", None, "Adam: step size in mm (default: MaximumStepLength / 2)", per_level=True),
    Key("Beta1", "float", 0.9, "Adam: first-moment decay", per_level=True),
    Key("Beta2", "float", 0.999, "Adam: second-moment decay", per_level=True),
    Key("Epsilon", "float", 1e-8, "Adam: denominator floor", per_level=True),
    Key("AutomaticScalesEstimation", "bool", False, "estimate parameter scales from dT/dmu"),
    Key("Scales", "float", None, "parameter scales (one per parameter, or one for all)", multi=True),
    Key("RandomSeed", "int", None, "seed of every random choice (same seed, same result)"),
    # samplers
    Key("NumberOfSpatialSamples", "int", 5000, "samples per iteration (Random, RandomCoordinate)", per_level=True),
    Key("NewSamplesEveryIteration", "bool", False, "draw new samples each iteration", per_level=True),
    Key("MaximumNumberOfSamplingAttempts", "int", 0, "redraws allowed when too few samples are valid", per_level=True),
    Key("RequiredRatioOfValidSamples", "float", 0.25, "minimum fraction of samples that must map inside the moving image", per_level=True),
    Key("CheckNumberOfSamples", "bool", True, "fail when too few samples are valid", per_level=True),
    Key("SampleGridSpacing", "int", 2, "Grid sampler: spacing in voxels (one, or one per dimension)", multi=True),
    Key("UseRandomSampleRegion", "bool", False, NO_EFFECT, per_level=True),
    # interpolation
    Key("BSplineInterpolationOrder", "int", 1, "order of the moving-image B-spline interpolator (0-5)", per_level=True),
    Key("FinalBSplineInterpolationOrder", "int", 3, "order of the result-image interpolator (0-5)"),
    Key("FixedImageBSplineInterpolationOrder", "int", 1, NO_EFFECT, per_level=True),
    # metrics
    Key("Metric0Weight", "float", 1.0, "weight of metric <i> in the weighted sum", per_level=True, pattern=r"Metric(\d+)Weight"),
    Key("Metric0Use", "bool", True, "whether metric <i> is used at a level", per_level=True, pattern=r"Metric(\d+)Use"),
    Key("NumberOfHistogramBins", "int", 32, "Mattes MI / NMI: histogram bins", per_level=True),
    Key("NumberOfFixedHistogramBins", "int", None, "Mattes MI: fixed-image bins (default NumberOfHistogramBins)", per_level=True),
    Key("NumberOfMovingHistogramBins", "int", None, "Mattes MI: moving-image bins (default NumberOfHistogramBins)", per_level=True),
    Key("FixedKernelBSplineOrder", "int", 0, "Mattes MI: fixed Parzen window B-spline order", per_level=True),
    Key("MovingKernelBSplineOrder", "int", 3, "Mattes MI: moving Parzen window B-spline order", per_level=True),
    Key("FixedLimitRangeRatio", "float", 0.01, "Mattes MI: fixed intensity range widening", per_level=True),
    Key("MovingLimitRangeRatio", "float", 0.01, "Mattes MI: moving intensity range widening", per_level=True),
    Key("UseFastAndLowMemoryVersion", "bool", True, NO_EFFECT, per_level=True),
    Key("UseJacobianPreconditioning", "bool", False, NO_EFFECT, per_level=True),
    Key("FiniteDifferenceDerivative", "bool", False, NO_EFFECT, per_level=True),
    Key("UseNormalization", "bool", False, "MeanSquares: divide by the squared intensity range", per_level=True),
    Key("SubtractMean", "bool", True, "NormalizedCorrelation: subtract the means", per_level=True),
    Key("ShowExactMetricValue", "bool", False, NO_EFFECT, per_level=True),
    # transforms
    Key("AutomaticTransformInitialization", "bool", False, "initialise the translation before optimising"),
    Key("AutomaticTransformInitializationMethod", "str", "GeometricalCenter", "how to initialise",
        ("GeometricalCenter", "CenterOfGravity", "Origins", "GeometryTop")),
    Key("CenterOfRotationPoint", "float", None, "centre of rotation in mm (default: fixed image centre)", multi=True),
    Key("ComputeZYX", "bool", False, "Euler 3D: R = Rz Ry Rx instead of Rz Rx Ry"),
    Key("HowToCombineTransforms", "str", "Compose", "how this stage combines with the initial transform", ("Compose", "Add")),
    Key("FinalGridSpacingInPhysicalUnits", "float", None, "B-spline grid spacing at the last level, mm (one or per dimension)", multi=True),
    Key("FinalGridSpacingInVoxels", "float", None, "B-spline grid spacing at the last level, fixed voxels", multi=True),
    Key("GridSpacingSchedule", "float", None, "B-spline grid spacing factor per level (or levels x dimension)", multi=True),
    Key("BSplineTransformSplineOrder", "int", 3, "B-spline transform order", ("1", "2", "3")),
    Key("UseCyclicTransform", "bool", False, "cyclic B-spline (not supported: must be false)", ("false",)),
    Key("PassiveEdgeWidth", "int", 0, NO_EFFECT),
    # masks
    Key("ErodeMask", "bool", False, "erode masks at each level by the pyramid's smoothing extent", per_level=True),
    Key("ErodeFixedMask", "bool", None, "erode the fixed mask (default ErodeMask)", per_level=True),
    Key("ErodeMovingMask", "bool", None, "erode the moving mask (default ErodeMask)", per_level=True),
    # output
    Key("WriteResultImage", "bool", True, "write result.<stage>.<ext>"),
    Key("WriteIterationInfo", "bool", False, "write IterationInfo.<stage>.R<level>.txt"),
    Key("ResultImageFormat", "str", "mha", "result image format", ("mha", "mhd", "nii", "nii.gz", "nrrd")),
    Key("ResultImagePixelType", "str", "float", "result pixel type",
        ("char", "unsigned char", "short", "unsigned short", "int", "unsigned int", "long", "unsigned long", "float", "double",
         "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")),
    Key("CompressResultImage", "bool", False, "compress the result image"),
    Key("DefaultPixelValue", "float", 0.0, "value of result voxels that map outside the moving image"),
    Key("WriteTransformParametersEachIteration", "bool", False, NO_EFFECT, per_level=True),
    Key("WriteTransformParametersEachResolution", "bool", False, NO_EFFECT, per_level=True),
    Key("WriteResultImageAfterEachResolution", "bool", False, NO_EFFECT, per_level=True),
    Key("WritePyramidImagesAfterEachResolution", "bool", False, NO_EFFECT, per_level=True),
    # image descriptions elastix wants and impactreg reads from the images themselves
    Key("FixedInternalImagePixelType", "str", "float", NO_EFFECT),
    Key("MovingInternalImagePixelType", "str", "float", NO_EFFECT),
    Key("FixedImageDimension", "int", None, "must match the fixed image if given"),
    Key("MovingImageDimension", "int", None, "must match the moving image if given"),
    Key("UseDirectionCosines", "bool", True, "use the images' direction matrices (must be true)", ("true",)),
    Key("UseMultiThreadingForMetrics", "bool", True, NO_EFFECT),
    Key("MaximumNumberOfThreads", "int", None, "threads (same as -threads)"),
]

# IMPACT, documented family: one quoted string per level (a missing level reuses the first), each a
# space-separated list with one entry per model; PatchSize/VoxelSize entries as "5*5*5".
_IMPACT_PER_MODEL = {
    "ModelsPath": "TorchScript model path, hub name (e.g. TS/M730_2_Layers.pt) or built-in MIND/R<r>D<d>",
    "Dimension": "dimension the model expects (2 or 3)",
    "NumberOfChannels": "input channels the model expects (the image is replicated)",
    "PatchSize": "patch size in voxels, e.g. 5*5*5 (0*0*0 in Static mode: whole image)",
    "VoxelSize": "voxel size in mm at which features are extracted, e.g. 1.5*1.5*1.5",
    "LayersMask": "which output layers to use, e.g. 00000001",
    "Normalization": "model input normalisation: none, zscore, minmax, ct, imagenet",
}
_IMPACT_SHARED = {
    "SubsetFeatures": "channels compared per sample, drawn at random each iteration (per model)",
    "LayersWeight": "weight of each selected layer",
    "PCA": "Static mode: principal components kept (0 = off), per model",
    "Distance": "feature distance per model: L1, L2, Cosine, L1Cosine, Dice, NCC, DotProduct",
}
_IMPACT_GLOBAL = {
    "Mode": "Jacobian (gradients through the model) or Static (feature maps computed once per level)",
    "GPU": "GPU index for the models, -1 = CPU",
    "UseMixedPrecision": "float16 autocast for the models on GPU",
    "FeaturesMapUpdateInterval": "Static mode: recompute the moving feature maps every N iterations (-1 = once per level)",
    "WriteFeatureMaps": "Static mode: folder for the resampled inputs and feature maps, or \"false\"",
    "FeatureMapOutputDirectory": "Static mode: folder for the resampled inputs and feature maps",
}
for _name, _doc in _IMPACT_PER_MODEL.items():
    _KEYS.append(Key(_name, "str", None, "IMPACT: " + _doc, per_level=True))
    for _side in ("Fixed", "Moving"):
        _KEYS.append(Key(_side + _name, "str", None, f"IMPACT: {_side.lower()}-image {_doc}", per_level=True))
        _KEYS.append(Key(f"Impact{_side}{_name}0", "str", None, f"IMPACT (elastix names), level <i>: {_side.lower()}-image {_doc}",
                         multi=True, pattern=rf"(?:Impact)?{_side}{_name}(\d+)"))
    _KEYS.append(Key(f"Impact{_name}0", "str", None, "IMPACT (elastix names), level <i>: " + _doc, multi=True,
                     pattern=rf"Impact{_name}(\d+)"))
for _name, _doc in _IMPACT_SHARED.items():
    _KEYS.append(Key(_name, "str", None, "IMPACT: " + _doc, per_level=True))
    _KEYS.append(Key(f"Impact{_name}0", "str", None, "IMPACT (elastix names), level <i>: " + _doc, multi=True,
                     pattern=rf"Impact{_name}(\d+)"))
for _name, _doc in _IMPACT_GLOBAL.items():
    _KEYS.append(Key(_name, "str", None, "IMPACT: " + _doc, per_level=True))
    _KEYS.append(Key("Impact" + _name, "str", None, "IMPACT (elastix names): " + _doc, per_level=True))

KEYS: dict[str, Key] = {k.name: k for k in _KEYS if k.pattern is None}
PATTERNS: list[Key] = [k for k in _KEYS if k.pattern is not None]


def lookup(name: str) -> Key | None:
    key = KEYS.get(name)
    if key is not None:
        return key
    for k in PATTERNS:
        if re.fullmatch(k.pattern, name):
            return k
    return None


def all_keys() -> list[Key]:
    return _KEYS
