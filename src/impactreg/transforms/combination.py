"""A transform applied after an initial transform, as elastix chains TransformParameters files.

``HowToCombineTransforms "Compose"``: T(x) = current(initial(x)).
``HowToCombineTransforms "Add"``:     T(x) = initial(x) + current(x) - x.
Only the current transform's parameters are the combination's parameters.
"""
from __future__ import annotations

import torch

from .base import SparseJacobian, Transform

COMBINATIONS = ("Compose", "Add")


class CombinationTransform(Transform):
    def __init__(self, initial: Transform, current: Transform, how: str = "Compose"):
        if how not in COMBINATIONS:
            raise ValueError(f"HowToCombineTransforms must be one of {COMBINATIONS}, got {how!r}")
        if initial.dim != current.dim:
            raise ValueError(f"cannot combine a {initial.dim}D initial transform with a {current.dim}D transform")
        self.initial = initial
        self.current = current
        self.how = how
        self.dim = current.dim
        self.elastix_name = current.elastix_name

    @property
    def parameters(self) -> torch.Tensor:
        return self.current.parameters

    @parameters.setter
    def parameters(self, value) -> None:
        self.current = self.current.with_parameters(value)

    def with_parameters(self, parameters) -> "CombinationTransform":
        return CombinationTransform(self.initial, self.current.with_parameters(parameters), self.how)

    def to(self, device) -> "CombinationTransform":
        return CombinationTransform(self.initial.to(device), self.current.to(device), self.how)

    def chain(self) -> list[Transform]:
        """The transforms in the order they are applied to a fixed point, initial first."""
        first = self.initial.chain() if isinstance(self.initial, CombinationTransform) else [self.initial]
        return first + [self.current]

    def map(self, points, parameters=None):
        start = self.initial.map(points)
        if self.how == "Compose":
            return self.current.map(start, parameters)
        return start + self.current.map(points, parameters) - points

    def spatial_jacobian(self, points):
        j0 = self.initial.spatial_jacobian(points)
        if self.how == "Compose":
            return self.current.spatial_jacobian(self.initial.map(points)) @ j0
        eye = torch.eye(self.dim, dtype=points.dtype, device=points.device)
        return j0 + self.current.spatial_jacobian(points) - eye

    def parameter_gradient(self, points, d_points):
        at = self.initial.map(points) if self.how == "Compose" else points
        return self.current.parameter_gradient(at, d_points)

    def parameter_jacobian(self, points):
        at = self.initial.map(points) if self.how == "Compose" else points
        return self.current.parameter_jacobian(at)


__all__ = ["CombinationTransform", "COMBINATIONS", "SparseJacobian"]
