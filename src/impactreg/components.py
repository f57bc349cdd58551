"""The registries: every component installed under its elastix name, the only place where names
map to classes. Adding a component means one class and one line here."""
from __future__ import annotations

from .engine.kinds import MultiMetricMultiResolutionRegistration, MultiResolutionRegistration
from .errors import ParameterError
from .interpolators import (BSplineInterpolator, FinalBSplineInterpolator, FinalLinearInterpolator,
                            FinalNearestNeighborInterpolator, LinearInterpolator, NearestNeighborInterpolator)
from .keys import Key
from .metrics.impact import ImpactMetric
from .metrics.intensity import MattesMutualInformation, MeanSquares, NormalizedCorrelation, NormalizedMutualInformation
from .metrics.penalties import BendingEnergyPenalty, DisplacementMagnitudePenalty
from .metrics.points import CorrespondingPointsEuclideanDistance
from .metrics.rigidity import TransformRigidityPenalty
from .optimizers import Adam, AdaptiveStochasticGradientDescent, RegularStepGradientDescent, StandardGradientDescent
from .quasinewton import QuasiNewtonLBFGS
from .pyramid import GenericImagePyramid, RecursiveImagePyramid, ShrinkingImagePyramid, SmoothingImagePyramid
from .resampler import DefaultResampler
from .sampling import FullSampler, GridSampler, RandomCoordinateSampler, RandomSampler, RandomSparseMaskSampler
from .transforms.components import (AffineTransformComponent, BSplineTransformComponent, EulerTransformComponent,
                                    SimilarityTransformComponent, TranslationTransformComponent)

_PYRAMIDS = {"Smoothing": SmoothingImagePyramid, "Recursive": RecursiveImagePyramid, "Shrinking": ShrinkingImagePyramid,
             "Generic": GenericImagePyramid}

# selector key -> (registry {elastix name: class}, default, doc, one value per level, several values)
REGISTRIES: dict[str, tuple[dict[str, type], str | None, str]] = {
    "Registration": ({
        "MultiResolutionRegistration": MultiResolutionRegistration,
        "MultiMetricMultiResolutionRegistration": MultiMetricMultiResolutionRegistration,
    }, "MultiResolutionRegistration", "how metrics and levels are combined"),
    "Transform": ({
        "TranslationTransform": TranslationTransformComponent,
        "EulerTransform": EulerTransformComponent,
        "SimilarityTransform": SimilarityTransformComponent,
        "AffineTransform": AffineTransformComponent,
        "BSplineTransform": BSplineTransformComponent,
        "RecursiveBSplineTransform": BSplineTransformComponent,
    }, None, "the transform to optimise"),
    "Metric": ({
        "AdvancedMeanSquares": MeanSquares,
        "AdvancedNormalizedCorrelation": NormalizedCorrelation,
        "AdvancedMattesMutualInformation": MattesMutualInformation,
        "NormalizedMutualInformation": NormalizedMutualInformation,
        "TransformBendingEnergyPenalty": BendingEnergyPenalty,
        "DisplacementMagnitudePenalty": DisplacementMagnitudePenalty,
        "TransformRigidityPenalty": TransformRigidityPenalty,
        "CorrespondingPointsEuclideanDistanceMetric": CorrespondingPointsEuclideanDistance,
        "Impact": ImpactMetric,
    }, None, "similarity metric(s); several need MultiMetricMultiResolutionRegistration"),
    "Optimizer": ({
        "AdaptiveStochasticGradientDescent": AdaptiveStochasticGradientDescent,
        "StandardGradientDescent": StandardGradientDescent,
        "RegularStepGradientDescent": RegularStepGradientDescent,
        "Adam": Adam,
        "QuasiNewtonLBFGS": QuasiNewtonLBFGS,
    }, "AdaptiveStochasticGradientDescent", "the optimiser"),
    "ImageSampler": ({
        "Full": FullSampler,
        "Grid": GridSampler,
        "Random": RandomSampler,
        "RandomCoordinate": RandomCoordinateSampler,
        "RandomSparseMask": RandomSparseMaskSampler,
    }, "RandomCoordinate", "where the metrics are evaluated each iteration"),
    "Interpolator": ({
        "LinearInterpolator": LinearInterpolator,
        "BSplineInterpolator": BSplineInterpolator,
        "BSplineInterpolatorFloat": BSplineInterpolator,
        "NearestNeighborInterpolator": NearestNeighborInterpolator,
    }, "BSplineInterpolator", "moving-image interpolation during registration"),
    "ResampleInterpolator": ({
        "FinalBSplineInterpolator": FinalBSplineInterpolator,
        "FinalBSplineInterpolatorFloat": FinalBSplineInterpolator,
        "FinalLinearInterpolator": FinalLinearInterpolator,
        "FinalNearestNeighborInterpolator": FinalNearestNeighborInterpolator,
    }, "FinalBSplineInterpolator", "interpolation of the result image"),
    "Resampler": ({"DefaultResampler": DefaultResampler}, "DefaultResampler", "the result-image resampler"),
    "FixedImagePyramid": ({f"Fixed{k}ImagePyramid": c for k, c in _PYRAMIDS.items()}, "FixedSmoothingImagePyramid",
                          "fixed-image pyramid"),
    "MovingImagePyramid": ({f"Moving{k}ImagePyramid": c for k, c in _PYRAMIDS.items()}, "MovingSmoothingImagePyramid",
                           "moving-image pyramid"),
}
_PER_LEVEL = {"ImageSampler"}
_SEVERAL = {"Metric"}


def selector_keys() -> list[Key]:
    """The keys that name components (Transform, Metric, ...), their allowed values from the registries."""
    return [Key(name, "str", default, doc, tuple(registry), per_level=name in _PER_LEVEL, multi=name in _SEVERAL)
            for name, (registry, default, doc) in REGISTRIES.items()]


def component_classes() -> list[type]:
    """Every installed component class, once."""
    seen: dict[int, type] = {}
    for registry, _, _ in REGISTRIES.values():
        for cls in registry.values():
            seen.setdefault(id(cls), cls)
    return list(seen.values())


def component_class(selector: str, name: str) -> type:
    registry = REGISTRIES[selector][0]
    if name not in registry:
        raise ParameterError(f"({selector} \"{name}\") is not a component impactreg has; use one of {', '.join(registry)}")
    return registry[name]
