"""Transforms mapping fixed-space points to moving-space points: elastix's transform kinds."""
from .base import SparseJacobian, Transform
from .bspline import BSplineTransform
from .combination import CombinationTransform
from .matrix import AffineTransform, EulerTransform, MatrixTransform, SimilarityTransform, TranslationTransform

__all__ = [
    "Transform", "SparseJacobian", "MatrixTransform", "TranslationTransform", "EulerTransform",
    "SimilarityTransform", "AffineTransform", "BSplineTransform", "CombinationTransform",
]
