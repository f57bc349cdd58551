"""Transforms of the form T(x) = A (x - c) + c + t, with c the centre of rotation.

Parameter order (elastix):
- TranslationTransform: t
- EulerTransform 2D: [angle, tx, ty]; 3D: [ax, ay, az, tx, ty, tz] with R = Rz Rx Ry
  (ITK Euler3DTransform default) or R = Rz Ry Rx when ComputeZYX is true
- SimilarityTransform 2D: [scale, angle, tx, ty]; 3D: [versor x, y, z, tx, ty, tz, scale]
- AffineTransform: the matrix A row by row, then t
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import LinearForm, Transform


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

    def derivatives(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A (D, D), t (D,), dA/dmu (P, D, D) and dt/dmu (P, D) at parameters p (P,), float64, in closed form."""
        raise NotImplementedError

    def _derivatives(self):
        """``derivatives`` at this transform's parameters, computed once per parameters."""
        cached = getattr(self, "_derivatives_cache", None)
        p = self.parameters
        if cached is None or cached[0] is not p or cached[1] != p._version:
            cached = self._derivatives_cache = (p, p._version, self.derivatives(p.detach().cpu().numpy()))
        return cached[2]

    def linear_form(self) -> LinearForm:
        A, t, _, _ = self._derivatives()
        c = self.center.numpy()
        return LinearForm(np.eye(self.dim), -c, A, c + t, self.moment_gradient)

    def moment_gradient(self, outer, total) -> torch.Tensor:
        """d value / d mu (P,) float64 from the moments outer = sum_n d_n (x_n - c)^T (D, D) and total = sum_n d_n (D,)
        of d value / d T(x_n) = d_n: sum_ij dA_ij/dmu outer_ij + sum_i dt_i/dmu total_i."""
        _, _, dA, dt = self._derivatives()
        outer, total = np.asarray(outer, dtype=np.float64), np.asarray(total, dtype=np.float64)
        return torch.from_numpy(dA.reshape(dA.shape[0], -1) @ outer.reshape(-1) + dt @ total)

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
        _, _, dA, dt = self._derivatives()
        dA = torch.from_numpy(dA).to(device=points.device, dtype=points.dtype)
        dt = torch.from_numpy(dt).to(device=points.device, dtype=points.dtype)
        c = self.center.to(device=points.device, dtype=points.dtype)
        return torch.einsum("pij,nj->nip", dA, points - c) + dt.T

    def parameter_gradient(self, points, d_points):
        c = self.center.to(device=points.device, dtype=points.dtype)
        outer = d_points.T @ (points - c)  # sum_n d_n (x_n - c)^T
        total = d_points.sum(0)
        gradient = self.moment_gradient(outer.detach().cpu().double().numpy(), total.detach().cpu().double().numpy())
        return gradient.to(device=points.device, dtype=points.dtype)


class TranslationTransform(MatrixTransform):
    elastix_name = "TranslationTransform"

    @classmethod
    def identity_parameters(cls, dim):
        return torch.zeros(dim, dtype=torch.float64)

    def matrix_translation(self, p):
        return torch.eye(self.dim, dtype=p.dtype, device=p.device), p

    def derivatives(self, p):
        d = self.dim
        return np.eye(d), p.copy(), np.zeros((d, d, d)), np.eye(d)


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


_TRANSLATION_LAST = {3: np.eye(3, 2, -1), 6: np.eye(6, 3, -3)}  # dt/dmu of the Euler transforms (t last)


def _rot2_np(angle):
    """The 2D rotation matrix and its derivative by the angle."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]]), np.array([[-s, -c], [c, -s]])


def _rot_axis_np(angle, axis):
    """The rotation about one axis (0 = x, 1 = y, 2 = z) and its derivative by the angle, as _rot_axis."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]), np.array([[0.0, 0.0, 0.0], [0.0, -s, -c],
                                                                               [0.0, c, -s]])
    if axis == 1:
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]), np.array([[-s, 0.0, c], [0.0, 0.0, 0.0],
                                                                               [-c, 0.0, -s]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([[-s, -c, 0.0], [c, -s, 0.0],
                                                                           [0.0, 0.0, 0.0]])


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

    def derivatives(self, p):
        if self.dim == 2:
            R, dR = _rot2_np(p[0])
            dA = np.zeros((3, 2, 2))
            dA[0] = dR
            return R, p[1:3].copy(), dA, _TRANSLATION_LAST[3].copy()
        (rx, dx), (ry, dy), (rz, dz) = _rot_axis_np(p[0], 0), _rot_axis_np(p[1], 1), _rot_axis_np(p[2], 2)
        dA = np.zeros((6, 3, 3))
        if self.compute_zyx:  # R = Rz Ry Rx
            zy, yx = rz @ ry, ry @ rx
            R, dA[0], dA[1], dA[2] = zy @ rx, zy @ dx, rz @ dy @ rx, dz @ yx
        else:  # R = Rz Rx Ry
            zx, xy = rz @ rx, rx @ ry
            R, dA[0], dA[1], dA[2] = zx @ ry, rz @ dx @ ry, zx @ dy, dz @ xy
        return R, p[3:6].copy(), dA, _TRANSLATION_LAST[6].copy()


def versor_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the unit quaternion with vector part v (w = sqrt(1 - |v|^2))."""
    x, y, z = v[0], v[1], v[2]
    w = torch.sqrt(torch.clamp(1 - (v * v).sum(), min=0))
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])


def _versor_np(v):
    """versor_matrix(v) and its derivatives by v (3, 3, 3), w = sqrt(1 - |v|^2) following v."""
    x, y, z = v
    w2 = 1.0 - (x * x + y * y + z * z)
    w = np.sqrt(max(w2, 0.0))
    V = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    by_x = np.array([[0, 2 * y, 2 * z], [2 * y, -4 * x, -2 * w], [2 * z, 2 * w, -4 * x]])
    by_y = np.array([[-4 * y, 2 * x, 2 * w], [2 * x, 0, 2 * z], [-2 * w, 2 * z, -4 * y]])
    by_z = np.array([[-4 * z, -2 * w, 2 * x], [2 * w, -4 * z, 2 * y], [2 * x, 2 * y, 0]])
    by_w = np.array([[0, -2 * z, 2 * y], [2 * z, 0, -2 * x], [-2 * y, 2 * x, 0]])
    dw = -np.asarray(v, dtype=np.float64) / w if w2 > 0 else np.zeros(3)  # d w / d v
    return V, np.stack([by_x + by_w * dw[0], by_y + by_w * dw[1], by_z + by_w * dw[2]])


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

    def derivatives(self, p):
        if self.dim == 2:
            R, dR = _rot2_np(p[1])
            return p[0] * R, p[2:4].copy(), np.stack([R, p[0] * dR, np.zeros((2, 2)), np.zeros((2, 2))]), \
                np.eye(4, 2, -2)
        V, dV = _versor_np(p[0:3])
        dA = np.zeros((7, 3, 3))
        dA[0:3] = p[6] * dV
        dA[6] = V
        dt = np.zeros((7, 3))
        dt[3:6] = np.eye(3)
        return p[6] * V, p[3:6].copy(), dA, dt


class AffineTransform(MatrixTransform):
    elastix_name = "AffineTransform"

    @classmethod
    def identity_parameters(cls, dim):
        return torch.cat([torch.eye(dim, dtype=torch.float64).reshape(-1), torch.zeros(dim, dtype=torch.float64)])

    def matrix_translation(self, p):
        d = self.dim
        return p[: d * d].reshape(d, d), p[d * d: d * d + d]

    def derivatives(self, p):
        d = self.dim
        dA = np.zeros((d * d + d, d, d))
        dA[np.arange(d * d), np.repeat(np.arange(d), d), np.tile(np.arange(d), d)] = 1.0
        return p[: d * d].reshape(d, d).copy(), p[d * d:].copy(), dA, np.eye(d * d + d, d, -d * d)

    def parameter_gradient(self, points, d_points):
        c = self.center.to(device=points.device, dtype=points.dtype)
        return torch.cat([(d_points.T @ (points - c)).reshape(-1), d_points.sum(0)])

    def moment_gradient(self, outer, total) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([np.asarray(outer, dtype=np.float64).reshape(-1),
                                                np.asarray(total, dtype=np.float64)]))
