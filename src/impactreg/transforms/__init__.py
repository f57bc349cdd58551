"""Transforms mapping fixed-space points to moving-space points, by their elastix names."""
from .base import SparseJacobian, Transform
from .bspline import BSplineTransform, control_grid_for_image
from .combination import CombinationTransform
from .matrix import AffineTransform, EulerTransform, MatrixTransform, SimilarityTransform, TranslationTransform

# elastix Transform names -> classes. RecursiveBSplineTransform is elastix's faster
# implementation of the same B-spline transform.
TRANSFORMS = {
    "TranslationTransform": TranslationTransform,
    "EulerTransform": EulerTransform,
    "SimilarityTransform": SimilarityTransform,
    "AffineTransform": AffineTransform,
    "BSplineTransform": BSplineTransform,
    "RecursiveBSplineTransform": BSplineTransform,
}

__all__ = [
    "Transform", "SparseJacobian", "MatrixTransform", "TranslationTransform", "EulerTransform",
    "SimilarityTransform", "AffineTransform", "BSplineTransform", "CombinationTransform",
    "control_grid_for_image", "TRANSFORMS",
]
