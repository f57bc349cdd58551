"""Interpolation of images at world points: nearest, linear and B-spline (orders 2-5).

Behaviour follows ITK, so that results match elastix/transformix:
- a point is inside when its continuous index u satisfies -0.5 <= u < n - 0.5 on every axis
  (ITK's IsInsideBuffer); outside points get ``default`` and ``inside == False``;
- linear interpolation clamps neighbour indices to the image (edge values between -0.5 and 0), as ITK's
  linear interpolator (transformix's FinalLinearInterpolator); with ``mirror_linear`` it mirrors them, as
  the order-1 B-spline and elastix's linear interpolator do for the metrics' moving image;
- nearest neighbour rounds half up;
- B-spline interpolation uses coefficients from the exact B-spline prefilter with mirror boundary
  conditions (ITK's BSplineDecompositionImageFilter, scipy's ``mode='mirror'``) and mirrors the
  support indices at the borders, start index ``floor(u - (order - 1) / 2)``.
Spatial gradients are d value / d world point (world units), computed analytically; values are
also differentiable with respect to the points by autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import compute
from .compute.basis import bspline_kernel, mirror_index
from .geometry import Grid
from .image import Image

MAX_BSPLINE_ORDER = 5


@dataclass
class Samples:
    """Result of sampling N points: values (N, C), gradients (N, C, D) or None, inside (N,) bool."""

    values: torch.Tensor
    gradients: torch.Tensor | None
    inside: torch.Tensor


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
    idx = mirror_index(idx, n)
    return x.index_select(-1, idx)


PREFILTER_SLAB_BYTES = 64 * 2 ** 20  # temporaries of one slab of the prefilter (its rows, padded, unfolded)


def _slabs(shape, axis: int, taps: int, itemsize: int) -> tuple[int, int]:
    """(dimension, thickness) of the slabs filtered one at a time along ``axis``: the largest other
    dimension, as thick as PREFILTER_SLAB_BYTES of temporaries allows (the whole array when it fits)."""
    dim = max((d for d in range(len(shape)) if d != axis), key=lambda d: shape[d])
    per_slice = max(1, int(np.prod(shape)) // max(shape[dim], 1)) * (taps + 4) * itemsize
    return dim, max(1, PREFILTER_SLAB_BYTES // per_slice)


def bspline_coefficients(data: torch.Tensor, order: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """B-spline coefficients of channel-first data (C, [Z,] Y, X) under mirror boundary conditions,
    in ``dtype``. On the CPU the compiled recursive filter (``compute.bspline_prefilter``, float64
    inside); elsewhere (GPU, autograd, kernels off) an FIR (float64: exact to 1e-16; float32: to 1e-7
    with a shorter filter), in place in one copy of ``data``, slab by slab along another axis, so that
    the temporaries stay within PREFILTER_SLAB_BYTES whatever the image size."""
    if order < 2:
        return data
    coef = data.to(dtype=dtype, copy=True).contiguous()
    if compute.bspline_prefilter(coef, order):  # the recursive filter, compiled, on the CPU
        return coef
    tolerance = 1e-16 if dtype == torch.float64 else 1e-8
    taps = torch.as_tensor(_prefilter_taps(order, tolerance), dtype=dtype, device=data.device)
    half = (taps.numel() - 1) // 2
    for axis in range(1, coef.dim()):
        along, thickness = _slabs(coef.shape, axis, taps.numel(), coef.element_size())
        for start in range(0, coef.shape[along], thickness):
            slab = coef.narrow(along, start, min(thickness, coef.shape[along] - start))
            moved = slab.movedim(axis, -1)
            rows = moved.reshape(-1, 1, moved.shape[-1])
            rows = F.conv1d(_mirror_pad_1d(rows, half), taps.view(1, 1, -1))
            slab.copy_(rows.reshape(moved.shape).movedim(-1, axis))
    return coef


def flush_subnormals(coef: torch.Tensor, owned: bool, chunk: int = 2 ** 24) -> torch.Tensor:
    """``coef`` with subnormal values and -0 set to +0 (subnormals make arithmetic ~100x slower),
    chunk by chunk; ``owned``: ``coef`` may be changed in place, else it is copied only when it has
    such values."""
    if not coef.is_floating_point():
        return coef
    if not _dense(coef).is_contiguous():
        coef, owned = coef.contiguous(), True
    tiny = torch.finfo(coef.dtype).tiny
    flat = _dense(coef).view(-1)
    for start in range(0, flat.numel(), chunk):
        part = flat[start:start + chunk]
        small = part.abs() < tiny
        if bool((small & ((part != 0) | part.signbit())).any()):
            if not owned:
                coef, owned = coef.clone(memory_format=torch.preserve_format), True
                flat = _dense(coef).view(-1)
                part = flat[start:start + chunk]
            part.masked_fill_(small, 0.0)
    return coef


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its axes in memory order (largest stride first): contiguous when ``t`` is a permutation of a
    contiguous tensor (e.g. channel-last)."""
    return t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d)))


class Interpolator:
    """Samples an image at world points. Build once per image, call many times.

    ``order``: 0 nearest, 1 linear, 2-5 B-spline. ``default``: value outside the image.
    ``mirror_linear``: order 1 mirrors the neighbours beyond the outermost voxel centres instead of clamping.
    """

    def __init__(self, image: Image, order: int = 1, default: float = 0.0, device=None,
                 dtype: torch.dtype = torch.float32, mirror_linear: bool = False):
        if order < 0 or order > MAX_BSPLINE_ORDER:
            raise ValueError(f"interpolation order must be 0..{MAX_BSPLINE_ORDER}, got {order}")
        self.grid: Grid = image.grid
        self.order = order
        self.default = float(default)
        self.device = torch.device(device) if device is not None else image.data.device
        self.dtype = dtype
        data = image.data.to(self.device)
        coef = bspline_coefficients(data, order, dtype) if order >= 2 else data.to(dtype)
        self.channels = data.shape[0]
        # subnormal values (e.g. exp() of large negative numbers in MIND) make arithmetic ~100x slower
        coef = flush_subnormals(coef, owned=coef.data_ptr() != image.data.data_ptr())
        self.table = compute.ImageTable(coef.reshape(self.channels, -1), self.grid, order, self.default,
                                        mirror_linear)

    def continuous_index(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous indices (..., D) of world points (..., D), in the interpolator's dtype."""
        if points.dtype != self.dtype:
            points = points.to(self.dtype)
        return self.grid.world_to_index(points)

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        """(...,) bool: ITK's IsInsideBuffer, -0.5 <= index < size - 0.5 on every axis."""
        u = self.continuous_index(points)
        return ((u >= -0.5) & (u < self.table.upper)).all(dim=-1)

    def __call__(self, points: torch.Tensor, gradient: bool = False) -> Samples:
        """Sample at points (..., D). Values (..., C); gradients (..., C, D) in value per mm."""
        lead = points.shape[:-1]
        values, grads, inside = compute.sample_image(self.table, points.reshape(-1, self.grid.dim), gradient)
        return Samples(values.reshape(*lead, self.channels),
                       None if grads is None else grads.reshape(*lead, self.channels, self.grid.dim),
                       inside.reshape(lead))


    def values(self, points: torch.Tensor) -> torch.Tensor:
        """The first channel's values (N,) at points (N, D): ``self(points).values[:, 0]``, faster."""
        return compute.sample_values(self.table, points)


def sample(image: Image, points: torch.Tensor, order: int = 1, default: float = 0.0,
           gradient: bool = False) -> Samples:
    """One-off sampling of ``image`` at world ``points`` (..., D); see Interpolator."""
    return Interpolator(image, order=order, default=default, device=points.device, dtype=points.dtype)(points, gradient)
