"""Interpolation of images at world points: nearest, linear and B-spline (orders 2-5).

Behaviour follows ITK, so that results match elastix/transformix:
- a point is inside when its continuous index u satisfies -0.5 <= u < n - 0.5 on every axis
  (ITK's IsInsideBuffer); outside points get ``default`` and ``inside == False``;
- linear interpolation clamps neighbour indices to the image (edge values between -0.5 and 0);
- nearest neighbour rounds half up;
- B-spline interpolation uses coefficients from the exact B-spline prefilter with mirror boundary
  conditions (ITK's BSplineDecompositionImageFilter, scipy's ``mode='mirror'``) and mirrors the
  support indices at the borders, start index ``floor(u - (order - 1) / 2)``.
Spatial gradients are d value / d world point (world units), computed analytically; values are
also differentiable with respect to the points by autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Grid
from .image import Image

MAX_BSPLINE_ORDER = 5


@dataclass
class Samples:
    """Result of sampling N points: values (N, C), gradients (N, C, D) or None, inside (N,) bool."""

    values: torch.Tensor
    gradients: torch.Tensor | None
    inside: torch.Tensor


def bspline_kernel(t: torch.Tensor, order: int) -> torch.Tensor:
    """Centred B-spline basis function of the given order evaluated at t."""
    if order == 0:
        return ((t >= -0.5) & (t < 0.5)).to(t.dtype)
    half = (order + 1) / 2.0
    out = torch.zeros_like(t)
    for k in range(order + 2):
        out = out + ((-1) ** k) * math.comb(order + 1, k) * torch.clamp(t + half - k, min=0) ** order
    return out / math.factorial(order)


def bspline_kernel_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    return bspline_kernel(t + 0.5, order - 1) - bspline_kernel(t - 0.5, order - 1)


@lru_cache(maxsize=None)
def _prefilter_taps(order: int) -> np.ndarray:
    """Symmetric FIR taps h[-K..K] of the inverse of the sampled B-spline kernel (exact to 1e-15)."""
    n = 1024
    k = np.arange(-(order // 2), order // 2 + 1)
    samples = bspline_kernel(torch.tensor(k, dtype=torch.float64), order).numpy()
    kernel = np.zeros(n)
    kernel[k % n] = samples
    inverse = np.real(np.fft.ifft(1.0 / np.fft.fft(kernel)))
    taps = np.concatenate([inverse[-(n // 2):], inverse[: n // 2]])
    keep = np.nonzero(np.abs(taps) > 1e-16)[0]
    half = max(n // 2 - keep[0], keep[-1] - n // 2)
    return taps[n // 2 - half: n // 2 + half + 1]


def _mirror_pad_1d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Whole-sample mirror padding of the last axis (x[-k] = x[k]), any pad length."""
    n = x.shape[-1]
    if n == 1:
        return x.expand(*x.shape[:-1], n + 2 * pad)
    idx = torch.arange(-pad, n + pad, device=x.device)
    idx = _mirror_index(idx, n)
    return x.index_select(-1, idx)


def _mirror_index(k: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(k)
    period = 2 * n - 2
    k = torch.remainder(k, period)
    return torch.where(k >= n, period - k, k)


def bspline_coefficients(data: torch.Tensor, order: int = 3) -> torch.Tensor:
    """B-spline coefficients of channel-first data (C, [Z,] Y, X) under mirror boundary conditions."""
    if order < 2:
        return data
    taps = torch.as_tensor(_prefilter_taps(order), dtype=torch.float64, device=data.device)
    half = (taps.numel() - 1) // 2
    coef = data.to(torch.float64)
    for axis in range(1, coef.dim()):
        moved = coef.movedim(axis, -1)
        shape = moved.shape
        rows = moved.reshape(-1, 1, shape[-1])
        rows = F.conv1d(_mirror_pad_1d(rows, half), taps.view(1, 1, -1))
        coef = rows.reshape(shape).movedim(-1, axis)
    return coef.contiguous()


class Interpolator:
    """Samples an image at world points. Build once per image, call many times.

    ``order``: 0 nearest, 1 linear, 2-5 B-spline. ``default``: value outside the image.
    """

    def __init__(self, image: Image, order: int = 1, default: float = 0.0, device=None,
                 dtype: torch.dtype = torch.float32):
        if order < 0 or order > MAX_BSPLINE_ORDER:
            raise ValueError(f"interpolation order must be 0..{MAX_BSPLINE_ORDER}, got {order}")
        self.grid: Grid = image.grid
        self.order = order
        self.default = float(default)
        self.device = torch.device(device) if device is not None else image.data.device
        self.dtype = dtype
        data = image.data.to(self.device)
        coef = bspline_coefficients(data, order) if order >= 2 else data
        self.channels = data.shape[0]
        self._coef = coef.to(dtype).reshape(self.channels, -1)
        self._size = torch.tensor(self.grid.size, device=self.device)
        strides = np.cumprod((1,) + self.grid.size[:-1])  # x fastest in memory
        self._strides = torch.as_tensor(strides, device=self.device)
        self._w2i = torch.tensor(self.grid.world_to_index_matrix, dtype=dtype, device=self.device)
        self._origin = torch.tensor(np.array(self.grid.origin), dtype=dtype, device=self.device)
        # d index / d world, for chaining index-space gradients to world units
        self._i2w_grad = self._w2i

    def continuous_index(self, points: torch.Tensor) -> torch.Tensor:
        return (points.to(self.dtype) - self._origin) @ self._w2i.T

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        u = self.continuous_index(points)
        return self._inside_index(u)

    def _inside_index(self, u: torch.Tensor) -> torch.Tensor:
        size = self._size.to(u.dtype)
        return ((u >= -0.5) & (u < size - 0.5)).all(dim=-1)

    def __call__(self, points: torch.Tensor, gradient: bool = False) -> Samples:
        """Sample at points (..., D). Values (..., C); gradients (..., C, D) in value per mm."""
        lead = points.shape[:-1]
        u = self.continuous_index(points.reshape(-1, self.grid.dim))
        inside = self._inside_index(u)
        if self.order == 0:
            values, grads = self._nearest(u, gradient)
        elif self.order == 1:
            values, grads = self._linear(u, gradient)
        else:
            values, grads = self._bspline(u, gradient)
        fill = torch.full_like(values, self.default)
        values = torch.where(inside[:, None], values, fill)
        if grads is not None:
            grads = torch.where(inside[:, None, None], grads @ self._i2w_grad, torch.zeros_like(grads))
            grads = grads.reshape(*lead, self.channels, self.grid.dim)
        return Samples(values.reshape(*lead, self.channels), grads, inside.reshape(lead))

    def _gather(self, flat_index: torch.Tensor) -> torch.Tensor:
        """Coefficients at flat indices (N, K) -> (N, C, K)."""
        n, k = flat_index.shape
        return self._coef[:, flat_index.reshape(-1)].reshape(self.channels, n, k).permute(1, 0, 2)

    def _nearest(self, u, gradient):
        idx = torch.floor(u + 0.5).long()
        idx = torch.minimum(torch.clamp(idx, min=0), self._size - 1)
        flat = (idx * self._strides).sum(-1, keepdim=True)
        values = self._gather(flat)[..., 0]
        grads = torch.zeros(*values.shape, self.grid.dim, dtype=values.dtype, device=values.device) if gradient else None
        return values, grads

    def _linear(self, u, gradient):
        dim = self.grid.dim
        base = torch.floor(u)
        frac = u - base
        base = base.long()
        size = self._size
        # corner c has bit d set when it uses base+1 along axis d
        bits = torch.tensor([[(c >> d) & 1 for d in range(dim)] for c in range(2 ** dim)], device=u.device)
        idx = base[:, None, :] + bits[None]  # (N, 2^D, D)
        idx = torch.minimum(torch.clamp(idx, min=0), size - 1)
        flat = (idx * self._strides).sum(-1)
        corner = self._gather(flat)  # (N, C, 2^D)
        w_axis = torch.where(bits[None].bool(), frac[:, None, :], 1 - frac[:, None, :])  # (N, 2^D, D)
        weights = w_axis.prod(-1)
        values = (corner * weights[:, None, :]).sum(-1)
        grads = None
        if gradient:
            sign = bits.to(u.dtype) * 2 - 1  # d w_axis / d frac
            parts = []
            for d in range(dim):
                others = torch.cat([w_axis[..., :d], w_axis[..., d + 1:]], dim=-1).prod(-1)
                parts.append((corner * (others * sign[None, :, d])[:, None, :]).sum(-1))
            grads = torch.stack(parts, dim=-1)
        return values, grads

    def _bspline(self, u, gradient):
        dim, order = self.grid.dim, self.order
        start = torch.floor(u - (order - 1) / 2.0)
        taps = torch.arange(order + 1, device=u.device, dtype=u.dtype)
        knots = start[:, :, None] + taps  # (N, D, order+1)
        t = u[:, :, None] - knots
        w = bspline_kernel(t, order)
        dw = bspline_kernel_derivative(t, order) if gradient else None
        idx = knots.long()
        flat_axes = [(_mirror_index(idx[:, d], self.grid.size[d]) * int(self._strides[d])) for d in range(dim)]
        flat, weight = flat_axes[0], w[:, 0]
        for d in range(1, dim):
            flat = (flat[:, :, None] + flat_axes[d][:, None, :]).reshape(len(u), -1)
            weight = (weight[:, :, None] * w[:, d][:, None, :]).reshape(len(u), -1)
        coef = self._gather(flat)  # (N, C, K) with x fastest varying slowest... see weight layout
        values = (coef * weight[:, None, :]).sum(-1)
        grads = None
        if gradient:
            parts = []
            for d in range(dim):
                wd = dw[:, 0] if d == 0 else w[:, 0]
                for e in range(1, dim):
                    we = dw[:, e] if e == d else w[:, e]
                    wd = (wd[:, :, None] * we[:, None, :]).reshape(len(u), -1)
                parts.append((coef * wd[:, None, :]).sum(-1))
            grads = torch.stack(parts, dim=-1)
        return values, grads


def sample(image: Image, points: torch.Tensor, order: int = 1, default: float = 0.0,
           gradient: bool = False) -> Samples:
    """One-off sampling of ``image`` at world ``points`` (..., D); see Interpolator."""
    return Interpolator(image, order=order, default=default, device=points.device, dtype=points.dtype)(points, gradient)


def bspline_kernel_second_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    if order < 2:
        return torch.zeros_like(t)
    return bspline_kernel(t + 1.0, order - 2) - 2.0 * bspline_kernel(t, order - 2) + bspline_kernel(t - 1.0, order - 2)
