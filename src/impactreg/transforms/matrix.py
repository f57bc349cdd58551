"""Transforms of the form T(x) = A (x - c) + c + t, with c the centre of rotation.

Parameter order (elastix):
- TranslationTransform: t
- EulerTransform 2D: [angle, tx, ty]; 3D: [ax, ay, az, tx, ty, tz] with R = Rz Rx Ry
  (ITK Euler3DTransform default) or R = Rz Ry Rx when ComputeZYX is true
- SimilarityTransform 2D: [scale, angle, tx, ty]; 3D: [versor x, y, z, tx, ty, tz, scale]
- AffineTransform: the matrix A row by row, then t
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Transform


class MatrixTransform(Transform):
    """Shared machinery; subclasses give ``matrix_translation(parameters) -> (A, t)``."""

    def __init__(self, dim: int, parameters=None, center=None):
        super().__init__(dim, self.identity_parameters(dim) if parameters is None else parameters)
        self.center = torch.zeros(dim, dtype=torch.float64) if center is None else \
            torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(dim)

    @classmethod
    def identity_parameters(cls, dim: int) -> torch.Tensor:
        raise NotImplementedError

    def matrix_translation(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def map(self, points, parameters=None):
        p = self._params(parameters, points)
        A, t = self.matrix_translation(p)
        c = self.center.to(device=points.device, dtype=points.dtype)
        return (points - c) @ A.T + c + t

    def translation_indices(self) -> list[int]:
        """Positions of the translation t in the parameter vector."""
        n, d = self.number_of_parameters, self.dim
        if isinstance(self, SimilarityTransform) and d == 3:
            return list(range(3, 6))
        return list(range(n - d, n))

    def matrix(self) -> torch.Tensor:
        return self.matrix_translation(self.parameters)[0]

    def offset(self) -> torch.Tensor:
        """b in T(x) = A x + b."""
        A, t = self.matrix_translation(self.parameters)
        return t + self.center - A @ self.center

    def spatial_jacobian(self, points):
        A, _ = self.matrix_translation(self._params(None, points))
        return A.expand(*points.shape[:-1], self.dim, self.dim)

    def parameter_jacobian(self, points):
        p = self._params(None, points).detach()
        dA, dt = torch.autograd.functional.jacobian(self.matrix_translation, p)  # (D,D,P), (D,P)
        c = self.center.to(device=points.device, dtype=points.dtype)
        return torch.einsum("ijp,nj->nip", dA, points - c) + dt


    def parameter_gradient(self, points, d_points):
        c = self.center.to(device=points.device, dtype=points.dtype)
        outer = d_points.T @ (points - c)  # sum_n d_n (x_n - c)^T
        total = d_points.sum(0)
        mu = self.parameters.detach().to(points.device).clone().requires_grad_(True)
        A, t = self.matrix_translation(mu)
        (A * outer.to(A.dtype)).sum().add((t * total.to(t.dtype)).sum()).backward()
        return mu.grad.to(points.dtype)


class TranslationTransform(MatrixTransform):
    elastix_name = "TranslationTransform"

    @classmethod
    def identity_parameters(cls, dim):
        return torch.zeros(dim, dtype=torch.float64)

    def matrix_translation(self, p):
        return torch.eye(self.dim, dtype=p.dtype, device=p.device), p


def _rot2(angle):
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])


def _rot_axis(angle, axis):
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 1:
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r) for r in rows])


class EulerTransform(MatrixTransform):
    elastix_name = "EulerTransform"

    def __init__(self, dim, parameters=None, center=None, compute_zyx: bool = False):
        super().__init__(dim, parameters, center)
        self.compute_zyx = compute_zyx

    @classmethod
    def identity_parameters(cls, dim):
        return torch.zeros(3 if dim == 2 else 6, dtype=torch.float64)

    def matrix_translation(self, p):
        if self.dim == 2:
            return _rot2(p[0]), p[1:3]
        rx, ry, rz = (_rot_axis(p[i], i) for i in range(3))
        R = rz @ ry @ rx if self.compute_zyx else rz @ rx @ ry
        return R, p[3:6]


def versor_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the unit quaternion with vector part v (w = sqrt(1 - |v|^2))."""
    x, y, z = v[0], v[1], v[2]
    w = torch.sqrt(torch.clamp(1 - (v * v).sum(), min=0))
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])


class SimilarityTransform(MatrixTransform):
    elastix_name = "SimilarityTransform"

    @classmethod
    def identity_parameters(cls, dim):
        if dim == 2:
            return torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        return torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)

    def matrix_translation(self, p):
        if self.dim == 2:
            return p[0] * _rot2(p[1]), p[2:4]
        return p[6] * versor_matrix(p[0:3]), p[3:6]


class AffineTransform(MatrixTransform):
    elastix_name = "AffineTransform"

    @classmethod
    def identity_parameters(cls, dim):
        return torch.cat([torch.eye(dim, dtype=torch.float64).reshape(-1), torch.zeros(dim, dtype=torch.float64)])

    def matrix_translation(self, p):
        d = self.dim
        return p[: d * d].reshape(d, d), p[d * d: d * d + d]

    def parameter_gradient(self, points, d_points):
        c = self.center.to(device=points.device, dtype=points.dtype)
        return torch.cat([(d_points.T @ (points - c)).reshape(-1), d_points.sum(0)])
