"""The Interpolator components (the moving image during registration) and the ResampleInterpolator
components (the result image): each gives the B-spline order of ``interpolation.Interpolator``."""
from __future__ import annotations

from .keys import NO_EFFECT, Key


class NearestNeighborInterpolator:
    elastix_name = "NearestNeighborInterpolator"
    keys: tuple[Key, ...] = ()

    def order(self, view) -> int:
        return 0


class LinearInterpolator(NearestNeighborInterpolator):
    elastix_name = "LinearInterpolator"

    def order(self, view) -> int:
        return 1


class BSplineInterpolator(NearestNeighborInterpolator):
    elastix_name = "BSplineInterpolator"
    keys = (Key("BSplineInterpolationOrder", "int", 1, "order of the moving-image B-spline interpolator (0-5)",
                per_level=True, minimum=0, maximum=5),
            Key("FixedImageBSplineInterpolationOrder", "int", 1, NO_EFFECT, per_level=True, minimum=0, maximum=5))

    def order(self, view) -> int:
        return view.get("BSplineInterpolationOrder")


class FinalNearestNeighborInterpolator(NearestNeighborInterpolator):
    elastix_name = "FinalNearestNeighborInterpolator"


class FinalLinearInterpolator(LinearInterpolator):
    elastix_name = "FinalLinearInterpolator"


class FinalBSplineInterpolator(NearestNeighborInterpolator):
    elastix_name = "FinalBSplineInterpolator"
    keys = (Key("FinalBSplineInterpolationOrder", "int", 3, "order of the result-image interpolator (0-5)",
        minimum=0, maximum=5),)

    def order(self, view) -> int:
        return view.get("FinalBSplineInterpolationOrder")
