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

from . import kernels
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
    a = t.abs()
    if order == 1:
        return (1 - a).clamp_min(0)
    if order == 2:
        return torch.where(a < 0.5, 0.75 - a * a, 0.5 * (1.5 - a).clamp_min(0) ** 2)
    if order == 3:
        return torch.where(a < 1, (4 - 6 * a * a + 3 * a * a * a) / 6, (2 - a).clamp_min(0) ** 3 / 6)
    half = (order + 1) / 2.0
    out = torch.zeros_like(t)
    for k in range(order + 2):
        out = out + ((-1) ** k) * math.comb(order + 1, k) * torch.clamp(t + half - k, min=0) ** order
    return out / math.factorial(order)


def bspline_kernel_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    if order == 3:
        a = t.abs()
        return torch.sign(t) * torch.where(a < 1, 1.5 * a * a - 2 * a, -0.5 * (2 - a).clamp_min(0) ** 2)
    return bspline_kernel(t + 0.5, order - 1) - bspline_kernel(t - 0.5, order - 1)


@lru_cache(maxsize=None)
def _prefilter_taps(order: int, tolerance: float = 1e-16) -> np.ndarray:
    """Symmetric FIR taps h[-K..K] of the inverse of the sampled B-spline kernel; taps below
    ``tolerance`` are dropped (the kernel decays geometrically, so the result is exact to it)."""
    n = 1024
    k = np.arange(-(order // 2), order // 2 + 1)
    samples = bspline_kernel(torch.tensor(k, dtype=torch.float64), order).numpy()
    kernel = np.zeros(n)
    kernel[k % n] = samples
    inverse = np.real(np.fft.ifft(1.0 / np.fft.fft(kernel)))
    taps = np.concatenate([inverse[-(n // 2):], inverse[: n // 2]])
    # |taps| decays monotonically away from the centre down to the FFT's rounding noise (~1e-17):
    # cut at the first tap below the tolerance rather than at the last one above it
    centre = n // 2
    half = next(k for k in range(1, centre) if abs(taps[centre + k]) < tolerance) - 1
    return taps[centre - half: centre + half + 1]


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


def bspline_coefficients(data: torch.Tensor, order: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """B-spline coefficients of channel-first data (C, [Z,] Y, X) under mirror boundary conditions,
    computed in ``dtype`` (float64: exact to 1e-16; float32: to 1e-7 with a shorter filter)."""
    if order < 2:
        return data
    tolerance = 1e-16 if dtype == torch.float64 else 1e-8
    taps = torch.as_tensor(_prefilter_taps(order, tolerance), dtype=dtype, device=data.device)
    half = (taps.numel() - 1) // 2
    coef = data.to(dtype)
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
        coef = bspline_coefficients(data, order, dtype) if order >= 2 else data
        self.channels = data.shape[0]
        coef = coef.to(dtype)
        # subnormal values (e.g. exp() of large negative numbers in MIND) make arithmetic ~100x slower
        coef = torch.where(coef.abs() < torch.finfo(dtype).tiny, torch.zeros_like(coef), coef)
        self._coef = coef.reshape(self.channels, -1)
        self._strides = [int(v) for v in np.cumprod((1,) + self.grid.size[:-1])]  # x fastest in memory
        self._upper = torch.tensor([n - 0.5 for n in self.grid.size], dtype=dtype, device=self.device)
        self._taps = torch.arange(order + 1, device=self.device, dtype=dtype)
        self._w2i = torch.tensor(self.grid.world_to_index_matrix, dtype=dtype, device=self.device)
        self._origin = torch.tensor(np.array(self.grid.origin), dtype=dtype, device=self.device)
        self._coef_block = None

    def continuous_index(self, points: torch.Tensor) -> torch.Tensor:
        if points.dtype != self.dtype:
            points = points.to(self.dtype)
        return (points - self._origin) @ self._w2i.T

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        return self._inside_index(self.continuous_index(points))

    def _inside_index(self, u: torch.Tensor) -> torch.Tensor:
        return ((u >= -0.5) & (u < self._upper)).all(dim=-1)

    def __call__(self, points: torch.Tensor, gradient: bool = False) -> Samples:
        """Sample at points (..., D). Values (..., C); gradients (..., C, D) in value per mm."""
        lead = points.shape[:-1]
        if kernels.usable(points, self._coef):
            return self._sample_compiled(points.reshape(-1, self.grid.dim), gradient, lead)
        u = self.continuous_index(points.reshape(-1, self.grid.dim))
        inside = self._inside_index(u)
        axes = [self._axis_taps(u[:, d], d, gradient) for d in range(self.grid.dim)]
        values, grads = self._contract(axes, gradient)
        values = torch.where(inside[:, None], values, torch.full_like(values, self.default))
        if grads is not None:
            grads = torch.where(inside[:, None, None], grads @ self._w2i, torch.zeros_like(grads))
            grads = grads.reshape(*lead, self.channels, self.grid.dim)
        return Samples(values.reshape(*lead, self.channels), grads, inside.reshape(lead))

    def _sample_compiled(self, points: torch.Tensor, gradient: bool, lead) -> Samples:
        if self._coef_block is None:
            spatial = (1,) * (3 - self.grid.dim) + tuple(reversed(self.grid.size))
            self._coef_block = self._coef.T.contiguous().reshape(*spatial, self.channels).numpy()  # channel-last
            self._w2i64 = np.array(self.grid.world_to_index_matrix, dtype=np.float64)
            self._origin64 = np.asarray(self.grid.origin, dtype=np.float64)
        n, dim = points.shape
        values = torch.empty((n, self.channels), dtype=self.dtype)
        grads = torch.empty((n, self.channels, dim) if gradient else (1, 1, 1), dtype=self.dtype)
        inside = torch.empty(n, dtype=torch.bool)
        kernels.sample_image(self._coef_block, self.order, self._w2i64, self._origin64, points.contiguous().numpy(),
                             gradient, self.default, values.numpy(), grads.numpy(), inside.numpy())
        return Samples(values.reshape(*lead, self.channels),
                       grads.reshape(*lead, self.channels, dim) if gradient else None, inside.reshape(lead))

    def _axis_taps(self, u: torch.Tensor, axis: int, gradient: bool):
        """Flat-index offsets (K, N), weights (K, N) and d weights / du (K, N) along one axis."""
        n, stride = self.grid.size[axis], self._strides[axis]
        if self.order == 0:
            idx = torch.floor(u + 0.5).long().clamp_(0, n - 1)
            ones = torch.ones_like(u)[None]
            return idx[None] * stride, ones, (torch.zeros_like(ones) if gradient else None)
        if self.order == 1:
            base = torch.floor(u)
            frac = u - base
            i0 = base.long()
            idx = torch.stack([i0.clamp(0, n - 1), (i0 + 1).clamp_(0, n - 1)])
            weights = torch.stack([1 - frac, frac])
            dweights = torch.stack([-torch.ones_like(frac), torch.ones_like(frac)]) if gradient else None
            return idx * stride, weights, dweights
        start = torch.floor(u - (self.order - 1) / 2.0)
        knots = start[None] + self._taps[:, None]
        t = u[None] - knots
        weights = bspline_kernel(t, self.order)
        dweights = bspline_kernel_derivative(t, self.order) if gradient else None
        return _mirror_index(knots.long(), n) * stride, weights, dweights

    def _contract(self, axes, gradient: bool):
        """Gather the coefficients of every tap combination and weight them axis by axis.

        Returns values (N, C) and, with ``gradient``, d value / d index (N, C, D).
        """
        dim = len(axes)
        flat = None
        for d, (idx, _, _) in enumerate(axes):
            shape = [1] * dim + [idx.shape[-1]]
            shape[d] = idx.shape[0]
            flat = idx.reshape(shape) if flat is None else flat + idx.reshape(shape)
        t = self._coef.index_select(1, flat.reshape(-1)).reshape(self.channels, *flat.shape)  # (C, K0, ..., N)
        partial = [None] * dim
        for d in reversed(range(dim)):  # contract the last tap axis first
            partial[d] = t
            t = (t * axes[d][1]).sum(-2)
        values = t.T
        if not gradient:
            return values, None
        grads = []
        for e in range(dim):
            t = (partial[e] * axes[e][2]).sum(-2)
            for d in reversed(range(e)):
                t = (t * axes[d][1]).sum(-2)
            grads.append(t)
        return values, torch.stack(grads, dim=-1).transpose(0, 1)


def sample(image: Image, points: torch.Tensor, order: int = 1, default: float = 0.0,
           gradient: bool = False) -> Samples:
    """One-off sampling of ``image`` at world ``points`` (..., D); see Interpolator."""
    return Interpolator(image, order=order, default=default, device=points.device, dtype=points.dtype)(points, gradient)


def bspline_kernel_second_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    if order < 2:
        return torch.zeros_like(t)
    return bspline_kernel(t + 1.0, order - 2) - 2.0 * bspline_kernel(t, order - 2) + bspline_kernel(t - 1.0, order - 2)
