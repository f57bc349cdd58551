"""A stage's components, made from its parameter map through the registries."""
from __future__ import annotations

from dataclasses import dataclass

from ..components import component_class
from ..errors import ParameterError
from ..image import Image
from ..parameters import ParameterMap, closest_key


@dataclass
class StageComponents:
    registration: object
    transform: object
    metrics: list
    optimizer: object
    interpolator: object
    resample_interpolator: object
    resampler: object
    fixed_pyramid: object
    moving_pyramid: object


def _make(pm: ParameterMap, selector: str):
    return component_class(selector, pm.get(selector))()


def _missing(pm: ParameterMap, selector: str, example: str) -> ParameterError:
    where = f"{pm.source}: " if pm.source else ""
    if "TransformParameters" in pm.unknown and "Metric" not in pm:
        return ParameterError(f"{where}this is a TransformParameters file (a registration's result), not a parameter "
                              f"map; give it as the initial transform (-t0) or to `impactreg transform -tp`")
    typo = next((name for name in pm.unknown if closest_key(name) == selector), None)
    hint = f" ({typo!r} is not a key: did you mean {selector!r}?)" if typo else ""
    return ParameterError(f"{where}({selector} ...) is missing{hint}; e.g. ({selector} \"{example}\")")


def build_stage(pm: ParameterMap) -> StageComponents:
    names = pm.values("Metric")
    if not names:
        raise _missing(pm, "Metric", "AdvancedMattesMutualInformation")
    if pm.get("Transform") is None:
        raise _missing(pm, "Transform", "BSplineTransform")
    registration = _make(pm, "Registration")
    registration.check_metrics(names)
    return StageComponents(
        registration=registration,
        transform=_make(pm, "Transform"),
        metrics=[component_class("Metric", name)() for name in names],
        optimizer=_make(pm, "Optimizer"),
        interpolator=_make(pm, "Interpolator"),
        resample_interpolator=_make(pm, "ResampleInterpolator"),
        resampler=_make(pm, "Resampler"),
        fixed_pyramid=component_class("FixedImagePyramid", pm.get("FixedImagePyramid"))("Fixed"),
        moving_pyramid=component_class("MovingImagePyramid", pm.get("MovingImagePyramid"))("Moving"),
    )


def build_pyramid(role: str, image: Image, pm: ParameterMap):
    """The ``role`` ('Fixed' or 'Moving') image pyramid a map asks for, built for its levels."""
    pyramid = component_class(f"{role}ImagePyramid", pm.get(f"{role}ImagePyramid"))(role)
    return pyramid.build(image, pm, pm.get("NumberOfResolutions"))


def make_sampler(view):
    """The ImageSampler component (elastix: one per metric; impactreg: the same for all, checked at the map)."""
    return component_class("ImageSampler", view.get("ImageSampler"))()
