"""What the operations of ``compute.dispatch`` read, prepared once in the layouts both backends
need: an image's interpolation coefficients (``ImageTable``), a B-spline control grid with its
support cache (``SplineTable``), and the Parzen taps a joint histogram leaves for its
contraction (``ParzenParts``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Grid
from .basis import bspline_kernel, bspline_kernel_derivative, bspline_kernel_second_derivative


class ImageTable:
    """Interpolation coefficients of an image on its grid.

    ``coef`` (C, V): one row per channel, V = grid.num_voxels in flat order (x fastest), in the
    dtype and on the device sampling works in. ``order``: 0 nearest, 1 linear, 2-5 B-spline
    (then ``coef`` holds B-spline coefficients). ``default``: the value outside the image.
    ``mirror_linear``: order 1 mirrors the neighbours beyond the last voxel centres (ITK's order-1
    B-spline and elastix's linear interpolator) instead of clamping them (ITK's linear interpolator).
    """

    def __init__(self, coef: torch.Tensor, grid: Grid, order: int, default: float, mirror_linear: bool = False):
        if coef.device.type == "cpu" and coef.shape[0] > 1 and coef.is_contiguous():
            # held channel-last, as the compiled kernel reads it (``coef`` a (C, V) view): one copy, not two
            coef = coef.T.contiguous().T
        self.coef, self.grid, self.order, self.default = coef, grid, order, float(default)
        self.mirror_linear = bool(mirror_linear)
        self.channels = coef.shape[0]
        self.dtype, self.device = coef.dtype, coef.device
        self.upper = torch.tensor([n - 0.5 for n in grid.size], dtype=self.dtype, device=self.device)
        self.taps = torch.arange(order + 1, device=self.device, dtype=self.dtype)
        self._kernel_arrays = None
        self.thread_choices: dict = {}  # gradient or not -> parallel.ThreadChoice of the compiled sampling

    def kernel_arrays(self):
        """(coefficients (Z, Y, X, C) channel-last, Z = 1 in 2D; world-to-index (D, D) and origin
        (D,) in float64) as numpy arrays for the compiled kernel, made on first use (CPU only)."""
        if self._kernel_arrays is None:
            spatial = (1,) * (3 - self.grid.dim) + self.grid.shape
            self._kernel_arrays = (self.coef.T.contiguous().reshape(*spatial, self.channels).numpy(),
                                   np.array(self.grid.world_to_index_matrix, dtype=np.float64),
                                   np.asarray(self.grid.origin, dtype=np.float64))
        return self._kernel_arrays


class SplineTable:
    """A B-spline transform's control grid and order, for its map, scatter and derivatives.

    ``support(points)`` is the torch side's basis evaluation at points, cached for the last
    points tensor (an iteration's map and parameter gradient share it); ``kernel_arrays()`` is
    what the compiled kernels read.
    """

    def __init__(self, grid: Grid, order: int):
        self.grid, self.order, self.dim = grid, order, grid.dim
        self._constants: dict = {}
        self._support_cache = None
        self._kernel_arrays = None

    def kernel_arrays(self):
        """(control grid size (D,) int64, world-to-index (D, D), origin (D,) float64) as numpy arrays."""
        if self._kernel_arrays is None:
            g = self.grid
            self._kernel_arrays = (np.asarray(g.size, dtype=np.int64), np.array(g.world_to_index_matrix),
                                   np.asarray(g.origin, dtype=np.float64))
        return self._kernel_arrays

    def constants(self, device, dtype) -> dict:
        """Tap offsets and flat-index constants as tensors of ``dtype`` on ``device`` (cached)."""
        key = (device, dtype)
        found = self._constants.get(key)
        if found is None:
            g, k = self.grid, self.order + 1
            strides = g.strides
            offsets = torch.zeros((k,) * self.dim, dtype=torch.long)
            for d in range(self.dim):
                shape = [1] * self.dim
                shape[d] = k
                offsets = offsets + (torch.arange(k) * strides[d]).reshape(shape)
            # offsets[kx, ky, kz] = kx + ky * sx + kz * sx * sy, flattened with the x tap slowest
            found = self._constants[key] = dict(
                taps=torch.arange(k, dtype=dtype, device=device),
                last_start=torch.tensor([n - 1 - self.order for n in g.size], dtype=dtype, device=device),
                strides=torch.tensor(strides, dtype=dtype, device=device),
                offsets=offsets.reshape(-1).to(device),
            )
        return found

    def support(self, points: torch.Tensor, derivative: bool = False):
        """At points (..., D), N of them: flat coefficient indices (N, K), weights (N, K) with
        K = (order + 1)^D, per-axis weights (N, D, order + 1), their derivatives d/du (or None)
        and validity (N,) (the support lies wholly inside the control grid). The last call's
        result is reused for the same, unmodified points tensor."""
        cached = self._support_cache
        if cached is not None and cached[0] is points and cached[1] == points._version and (cached[2][3] is not None or not derivative):
            return cached[2]
        c = self.constants(points.device, points.dtype)
        n = points.numel() // self.dim
        u = self.grid.world_to_index(points.reshape(-1, self.dim))
        start = torch.floor(u - (self.order - 1) / 2.0)
        t = (u - start)[:, :, None] - c["taps"]
        w = bspline_kernel(t, self.order)
        dw = bspline_kernel_derivative(t, self.order) if derivative else None
        valid = ((start >= 0) & (start <= c["last_start"])).all(dim=-1)
        first = (start * c["strides"]).sum(-1).long() * valid
        flat = first[:, None] + c["offsets"]
        weight = w[:, 0]
        for d in range(1, self.dim):
            weight = (weight[:, :, None] * w[:, d][:, None, :]).reshape(n, -1)
        result = (flat, weight, w, dw, valid)
        self._support_cache = (points, points._version, result)
        return result

    def hessian_weights(self, points: torch.Tensor):
        """Flat coefficient indices (N, K), validity (N,) and index-space W (N, K, D, D) with
        d^2 T_d / du_e du_f = sum_k coef_d[k] W[n, k, e, f] at points (..., D); world units follow
        from u = world_to_index_matrix @ (x - origin)."""
        u = self.grid.world_to_index(points.reshape(-1, self.dim))
        start = torch.floor(u - (self.order - 1) / 2.0)
        taps = torch.arange(self.order + 1, device=u.device, dtype=u.dtype)
        t = u[:, :, None] - (start[:, :, None] + taps)
        bases = [bspline_kernel(t, self.order), bspline_kernel_derivative(t, self.order),
                 bspline_kernel_second_derivative(t, self.order)]
        flat, _, _, _, valid = self.support(points)
        n = flat.shape[0]
        w_u = torch.zeros(n, flat.shape[1], self.dim, self.dim, dtype=points.dtype, device=points.device)
        for e in range(self.dim):
            for f in range(e, self.dim):
                orders = [int(a == e) + int(a == f) for a in range(self.dim)]
                w = bases[orders[0]][:, 0]
                for a in range(1, self.dim):
                    w = (w[:, :, None] * bases[orders[a]][:, a][:, None, :]).reshape(n, -1)
                w_u[:, :, e, f] = w
                w_u[:, :, f, e] = w
        return flat, valid, w_u * valid[:, None, None, None].to(points.dtype)


@dataclass
class ParzenParts:
    """The Parzen taps of one joint histogram, kept for its contraction: first fixed and moving
    bins (N,), fixed weights (N, Kf), moving weight derivatives (N, Km) or None, and (torch
    side only) the flat histogram index of every tap pair (N, Kf, Km). ``compiled`` records the
    backend the histogram was built with; the contraction uses the same."""

    compiled: bool
    fstart: torch.Tensor
    fw: torch.Tensor
    mstart: torch.Tensor
    mdw: torch.Tensor | None
    flat: torch.Tensor | None = None
