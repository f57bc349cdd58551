"""The transform interface: maps FIXED-space world points to MOVING-space world points.

Parameters are one flat float64 tensor in elastix's order. Every transform gives mapped points,
the spatial Jacobian dT/dx (N, D, D) and its determinant, and the derivative of the mapped points
with respect to the parameters: dense (N, D, P) for the low-dimensional transforms, sparse
(``SparseJacobian``) for B-splines. ``map`` is differentiable in the parameters by autograd too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class SparseJacobian:
    """dT_d(x_n)/d mu[d * num_coefficients + indices[n, k]] = weights[n, k]; all else zero."""

    weights: torch.Tensor  # (N, K)
    indices: torch.Tensor  # (N, K) coefficient indices, shared by the D output axes
    num_coefficients: int
    dim: int

    def to_dense(self) -> torch.Tensor:
        n = self.weights.shape[0]
        dense = torch.zeros(n, self.dim, self.dim * self.num_coefficients, dtype=self.weights.dtype,
                            device=self.weights.device)
        rows = torch.arange(n, device=self.weights.device)[:, None].expand_as(self.indices)
        for d in range(self.dim):
            dense[:, d].index_put_((rows, self.indices + d * self.num_coefficients), self.weights, accumulate=True)
        return dense


@dataclass
class LinearForm:
    """A transform linear in the point, T(x) = matrix u + offset with u = pre x + pre_offset (float64 numpy),
    whose parameters enter ``matrix`` and ``offset`` alone: its parameter gradient is
    ``gradient(outer, total)`` (P,) float64 from the moments outer = sum_n d_n u_n^T (D, D) and
    total = sum_n d_n (D,) of d value / d T(x_n) = d_n."""

    pre: np.ndarray
    pre_offset: np.ndarray
    matrix: np.ndarray
    offset: np.ndarray
    gradient: Callable[[np.ndarray, np.ndarray], torch.Tensor]


class Transform:
    """Base class. Subclasses set ``elastix_name`` and implement ``map``."""

    elastix_name = ""

    def __init__(self, dim: int, parameters: torch.Tensor):
        self.dim = dim
        self.parameters = torch.as_tensor(parameters, dtype=torch.float64).clone().reshape(-1)

    @property
    def number_of_parameters(self) -> int:
        return self.parameters.numel()

    def with_parameters(self, parameters: torch.Tensor) -> "Transform":
        """A copy of this transform with other parameters (same fixed settings)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.parameters = torch.as_tensor(parameters, dtype=torch.float64).reshape(-1)
        return clone

    def to(self, device) -> "Transform":
        return self.with_parameters(self.parameters.to(device))

    def map(self, points: torch.Tensor, parameters: torch.Tensor | None = None) -> torch.Tensor:
        """Fixed-space points (..., D) -> moving-space points (..., D)."""
        raise NotImplementedError

    def spatial_jacobian(self, points: torch.Tensor) -> torch.Tensor:
        """dT/dx at points (..., D) -> (..., D, D), row = output axis."""
        raise NotImplementedError

    def jacobian_determinant(self, points: torch.Tensor) -> torch.Tensor:
        return torch.linalg.det(self.spatial_jacobian(points))

    def inverse_map(self, points: torch.Tensor, iterations: int = 50, tolerance: float = 1e-6) -> torch.Tensor:
        """Moving-space points (..., D) -> the fixed-space points x with T(x) = points.

        Chord iterations x <- x - J^-1 (T(x) - y), with J the spatial Jacobian at the start,
        refreshed every 10 iterations (Newton's method when the deformation is strongly non-linear).
        """
        target = points.reshape(-1, self.dim)
        x = target.clone()
        with torch.no_grad():
            for k in range(iterations):
                residual = self.map(x) - target
                if float(residual.abs().max()) < tolerance:
                    break
                if k % 10 == 0:
                    inverse_jacobian = torch.linalg.inv(self.spatial_jacobian(x))
                x = x - (inverse_jacobian @ residual.unsqueeze(-1)).squeeze(-1)
        return x.reshape(points.shape)

    def parameter_jacobian(self, points: torch.Tensor):
        """dT/dmu at points (N, D): a dense (N, D, P) tensor or a SparseJacobian."""
        raise NotImplementedError

    def linear_form(self) -> LinearForm | None:
        """The transform as a LinearForm when it is linear in the point with a closed-form parameter gradient (the
        matrix transforms, alone or composed after a linear initial transform); None otherwise."""
        return None

    def parameter_gradient(self, points: torch.Tensor, d_points: torch.Tensor) -> torch.Tensor:
        """sum_n (dT(x_n)/dmu)^T d_points[n]: the chain rule from d value / d T(x) to d value / d mu (P,)."""
        jac = self.parameter_jacobian(points)
        if isinstance(jac, SparseJacobian):
            jac = jac.to_dense()
        return torch.einsum("ndp,nd->p", jac, d_points)

    def _params(self, parameters, like: torch.Tensor) -> torch.Tensor:
        p = self.parameters if parameters is None else parameters
        return p.to(device=like.device, dtype=like.dtype) if p.dtype != like.dtype or p.device != like.device else p
