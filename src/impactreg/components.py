"""The registries: every component installed under its elastix name, the only place where names
map to classes. Adding a component means one class and one line here."""
from __future__ import annotations

import difflib

from .dense.components import ConvexAdam, DenseRegistration
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
from .transforms.components import (AffineTransformComponent, BSplineTransformComponent,
                                    DeformationFieldTransformComponent, EulerTransformComponent,
                                    SimilarityTransformComponent, TranslationTransformComponent)

_PYRAMIDS = {"Smoothing": SmoothingImagePyramid, "Recursive": RecursiveImagePyramid, "Shrinking": ShrinkingImagePyramid,
             "Generic": GenericImagePyramid}

# selector key -> (registry {elastix name: class}, default, doc, one value per level, several values)
REGISTRIES: dict[str, tuple[dict[str, type], str | None, str]] = {
    "Registration": ({
        "MultiResolutionRegistration": MultiResolutionRegistration,
        "MultiMetricMultiResolutionRegistration": MultiMetricMultiResolutionRegistration,
        "DenseRegistration": DenseRegistration,
    }, "MultiResolutionRegistration", "how metrics and levels are combined"),
    "Transform": ({
        "TranslationTransform": TranslationTransformComponent,
        "EulerTransform": EulerTransformComponent,
        "SimilarityTransform": SimilarityTransformComponent,
        "AffineTransform": AffineTransformComponent,
        "BSplineTransform": BSplineTransformComponent,
        "RecursiveBSplineTransform": BSplineTransformComponent,
        "DeformationFieldTransform": DeformationFieldTransformComponent,
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
        "ConvexAdam": ConvexAdam,
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
_SEVERAL = {"Metric"}
# elastix gives each metric its own sampler, interpolator and pyramids: one value per metric, usually repeated
_PER_METRIC = ("ImageSampler", "Interpolator", "FixedImagePyramid", "MovingImagePyramid")


def selector_keys() -> list[Key]:
    """The keys that name components (Transform, Metric, ...), their allowed values from the registries.
    Every selector takes several values: Metric one per metric, the others repeat one name (elastix syntax)."""
    return [Key(name, "str", default, doc, tuple(registry), multi=True)
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


def components_in_use(entries: dict[str, list[str]], source: str = "") -> list[type]:
    """The component classes a map's selector keys name (absent: the default; Transform or Metric absent: all of
    their kind, so that a partial map keeps their keys). A name impactreg has no component for, or different
    names where impactreg takes one, is one ParameterError naming the component and the file."""
    where = f"{source}: " if source else ""
    classes: list[type] = []
    for selector, (registry, default, _) in REGISTRIES.items():
        names = entries.get(selector) or ([default] if default is not None else None)
        if names is None:
            classes.extend(registry.values())
            continue
        for name in names:
            if name not in registry:
                near = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.8)
                hint = f" (did you mean {near[0]!r}?)" if near else f"; it has {', '.join(registry)}"
                raise ParameterError(f"{where}({selector} \"{name}\"): impactreg has no {selector} component "
                                     f"{name!r}{hint}")
        if selector not in _SEVERAL and len(set(names)) > 1:
            what = "one per metric is the same for all metrics in impactreg" if selector in _PER_METRIC else "one"
            raise ParameterError(f"{where}({selector} {' '.join(repr(n) for n in names)}): impactreg takes {what}; "
                                 f"give one {selector}")
        classes.extend(registry[name] for name in dict.fromkeys(names))
    return classes
