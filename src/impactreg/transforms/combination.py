"""A transform applied after an initial transform, as elastix chains TransformParameters files.

``HowToCombineTransforms "Compose"``: T(x) = current(initial(x)).
``HowToCombineTransforms "Add"``:     T(x) = initial(x) + current(x) - x.
Only the current transform's parameters are the combination's parameters.
"""
from __future__ import annotations

import torch

from .base import LinearForm, SparseJacobian, Transform

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
        clone = CombinationTransform(self.initial, self.current.with_parameters(parameters), self.how)
        clone._initial_cache = getattr(self, "_initial_cache", None)
        return clone

    def to(self, device) -> "CombinationTransform":
        return CombinationTransform(self.initial.to(device), self.current.to(device), self.how)

    def chain(self) -> list[Transform]:
        """The transforms in the order they are applied to a fixed point, initial first."""
        first = self.initial.chain() if isinstance(self.initial, CombinationTransform) else [self.initial]
        return first + [self.current]

    def _initial_map(self, points):
        """initial(points), reused for the same points tensor within an iteration."""
        cached = getattr(self, "_initial_cache", None)
        if cached is not None and cached[0] is points and cached[1] == points._version:
            return cached[2]
        with torch.no_grad():
            mapped = self.initial.map(points)
        self._initial_cache = (points, points._version, mapped)
        return mapped

    def map(self, points, parameters=None):
        start = self._initial_map(points)
        if self.how == "Compose":
            return self.current.map(start, parameters)
        return start + self.current.map(points, parameters) - points

    def spatial_jacobian(self, points):
        j0 = self.initial.spatial_jacobian(points)
        if self.how == "Compose":
            return self.current.spatial_jacobian(self.initial.map(points)) @ j0
        eye = torch.eye(self.dim, dtype=points.dtype, device=points.device)
        return j0 + self.current.spatial_jacobian(points) - eye

    def linear_form(self) -> LinearForm | None:
        """Composed after a linear initial transform, the current one's form on the initial's output."""
        if self.how != "Compose":
            return None
        first, then = self.initial.linear_form(), self.current.linear_form()
        if first is None or then is None:
            return None
        matrix = first.matrix @ first.pre  # initial(x) = matrix x + offset
        offset = first.matrix @ first.pre_offset + first.offset
        return LinearForm(then.pre @ matrix, then.pre @ offset + then.pre_offset, then.matrix, then.offset,
                          then.gradient)

    def parameter_gradient(self, points, d_points):
        at = self._initial_map(points) if self.how == "Compose" else points
        return self.current.parameter_gradient(at, d_points)

    def parameter_jacobian(self, points):
        at = self.initial.map(points) if self.how == "Compose" else points
        return self.current.parameter_jacobian(at)


__all__ = ["CombinationTransform", "COMBINATIONS", "SparseJacobian"]
