"""Torch twins of the compiled kernels: each operation of ``compute.dispatch`` as tensor code,
for GPUs, for autograd and for ``IMPACTREG_KERNELS=0``. Inputs and outputs are tensors on one
device; shapes are stated per function (N points, D dimensions, C channels)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..geometry import Grid
from .basis import bspline_kernel, bspline_kernel_derivative, mirror_index
from .tables import ImageTable, ParzenParts, SplineTable


# image sampling ---------------------------------------------------------------------------

def sample_image(table: ImageTable, points: torch.Tensor, gradient: bool):
    """At world points (N, D): values (N, C) (``table.default`` outside), d value / d world point
    (N, C, D) or None, inside (N,) bool (ITK's -0.5 <= index < size - 0.5 on every axis)."""
    if points.dtype != table.dtype:
        points = points.to(table.dtype)
    u = table.grid.world_to_index(points)
    inside = ((u >= -0.5) & (u < table.upper)).all(dim=-1)
    axes = [_axis_taps(table, u[:, d], d, gradient) for d in range(table.grid.dim)]
    values, grads = _contract(table, axes, gradient)
    values = torch.where(inside[:, None], values, torch.full_like(values, table.default))
    if grads is not None:
        w2i = table.grid.tensors(table.dtype, table.device).world_to_index
        grads = torch.where(inside[:, None, None], grads @ w2i, torch.zeros_like(grads))
    return values, grads, inside


def _axis_taps(table: ImageTable, u: torch.Tensor, axis: int, gradient: bool):
    """Flat-index offsets (K, N), weights (K, N) and d weights / du (K, N) along one axis."""
    n, stride, order = table.grid.size[axis], table.grid.strides[axis], table.order
    if order == 0:
        idx = torch.floor(u + 0.5).long().clamp_(0, n - 1)
        ones = torch.ones_like(u)[None]
        return idx[None] * stride, ones, (torch.zeros_like(ones) if gradient else None)
    if order == 1:
        base = torch.floor(u)
        frac = u - base
        i0 = base.long()
        if table.mirror_linear:
            idx = mirror_index(torch.stack([i0, i0 + 1]), n)
        else:
            idx = torch.stack([i0.clamp(0, n - 1), (i0 + 1).clamp_(0, n - 1)])
        weights = torch.stack([1 - frac, frac])
        dweights = torch.stack([-torch.ones_like(frac), torch.ones_like(frac)]) if gradient else None
        return idx * stride, weights, dweights
    start = torch.floor(u - (order - 1) / 2.0)
    knots = start[None] + table.taps[:, None]
    t = u[None] - knots
    weights = bspline_kernel(t, order)
    dweights = bspline_kernel_derivative(t, order) if gradient else None
    return mirror_index(knots.long(), n) * stride, weights, dweights


def _contract(table: ImageTable, axes, gradient: bool):
    """Gather the coefficients of every tap combination and weight them axis by axis.

    Returns values (N, C) and, with ``gradient``, d value / d index (N, C, D).
    """
    dim = len(axes)
    flat = None
    for d, (idx, _, _) in enumerate(axes):
        shape = [1] * dim + [idx.shape[-1]]
        shape[d] = idx.shape[0]
        flat = idx.reshape(shape) if flat is None else flat + idx.reshape(shape)
    t = table.coef.index_select(1, flat.reshape(-1)).reshape(table.channels, *flat.shape)  # (C, K0, ..., N)
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


# B-spline transform -----------------------------------------------------------------------

def bspline_map(table: SplineTable, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """T(points) (..., D) for parameters (D * K,) (all x coefficients, then y[, then z])."""
    flat, weight, _, _, valid = table.support(points)
    n, k = flat.shape
    coef = params.reshape(table.dim, -1).index_select(1, flat.reshape(-1)).reshape(table.dim, n, k)
    disp = torch.einsum("dnk,nk->nd", coef, weight * valid[:, None])
    return points + disp.reshape(points.shape)


def bspline_scatter(table: SplineTable, points: torch.Tensor, d_points: torch.Tensor) -> torch.Tensor:
    """(dT/dmu)^T d_points summed over the points (N, D): the parameter gradient (D * K,)."""
    flat, weight, _, _, valid = table.support(points)
    weight = weight * valid[:, None].to(weight.dtype)
    grad = torch.zeros(table.dim, table.grid.num_voxels, dtype=d_points.dtype, device=d_points.device)
    contributions = d_points.T[:, :, None] * weight.to(d_points.dtype)[None]  # (D, N, K)
    grad.index_add_(1, flat.reshape(-1), contributions.reshape(table.dim, -1))
    return grad.reshape(-1)



def bending_energy(table: SplineTable, params: torch.Tensor, points: torch.Tensor, a: torch.Tensor, scale: float):
    """(sum over points (N, D) of sum_d ||A^T H_u,d A||^2, its gradient on the parameters (D * K,)
    times ``scale`` / 2) for index-space Hessians H_u,d and matrices a (N, D, D) (see
    compute.bending); in the points' dtype."""
    flat, _, weights = table.hessian_weights(points)  # (N, K), (N, K, D, D) in index space
    n, k = flat.shape
    dim = table.dim
    coef = params.to(points.dtype).reshape(dim, -1).index_select(1, flat.reshape(-1)).reshape(dim, n, k)
    hess_u = torch.einsum("dnk,nkef->ndef", coef, weights)
    hess = a.transpose(1, 2)[:, None] @ hess_u @ a[:, None]  # (N, D, D, D): A^T H_u A per output axis
    value = float((hess ** 2).sum())
    d_hess_u = a[:, None] @ (hess * scale) @ a.transpose(1, 2)[:, None]
    per_tap = torch.einsum("ndef,nkef->dnk", d_hess_u, weights)
    grad = torch.zeros(dim, table.grid.num_voxels, dtype=points.dtype, device=points.device)
    grad.index_add_(1, flat.reshape(-1), per_tap.reshape(dim, -1))
    return value, grad.reshape(-1)

# Parzen joint histogram -------------------------------------------------------------------

def parzen_limit(binning, v: torch.Tensor):
    """elastix's intensity limiter of one image's binning: limited values (N,) and d limited / d v (N,)."""
    hi_gap, lo_gap = binning.true_max - binning.max, binning.true_min - binning.min
    if not binning.soft or hi_gap == 0 or lo_gap == 0:
        inside = (v >= binning.min) & (v <= binning.max)
        return v.clamp(binning.min, binning.max), inside.to(v.dtype)
    e_hi = torch.exp((v.clamp_min(binning.true_max) - binning.true_max) / hi_gap)
    e_lo = torch.exp((v.clamp_max(binning.true_min) - binning.true_min) / lo_gap)
    above, below = v > binning.true_max, v < binning.true_min
    limited = torch.where(above, hi_gap * e_hi + binning.max, torch.where(below, lo_gap * e_lo + binning.min, v))
    slope = torch.where(above, e_hi, torch.where(below, e_lo, torch.ones_like(v)))
    return limited, slope


def parzen_taps(binning, v: torch.Tensor, derivative: bool = False):
    """First bin (N,) long, Parzen weights (N, order + 1) and, if asked, d weights / d v (N, order + 1)."""
    limited, slope = parzen_limit(binning, v)
    term = limited / binning.binsize - binning.nmin
    start = torch.floor(term + 0.5 - binning.order / 2.0)
    offsets = torch.arange(binning.order + 1, dtype=v.dtype, device=v.device)
    t = start[:, None] + offsets - term[:, None]
    weights = bspline_kernel(t, binning.order)
    start = start.long().clamp(0, binning.bins - binning.order - 1)
    if not derivative:
        return start, weights, None
    dweights = -bspline_kernel_derivative(t, binning.order) * (slope / binning.binsize)[:, None]
    return start, weights, dweights


def parzen_joint(fixed, moving, f: torch.Tensor, m: torch.Tensor, derivative: bool):
    """Joint histogram p (Bf, Bm) of fixed values f (N,) and moving values m (N,), and its taps."""
    fstart, fw, _ = parzen_taps(fixed, f)
    mstart, mw, mdw = parzen_taps(moving, m, derivative)
    rows = (fstart[:, None] + torch.arange(fixed.order + 1, device=fstart.device))[:, :, None]
    cols = (mstart[:, None] + torch.arange(moving.order + 1, device=mstart.device))[:, None, :]
    flat = rows * moving.bins + cols  # (N, Kf, Km)
    outer = fw[:, :, None] * mw[:, None, :]
    p = torch.zeros(fixed.bins * moving.bins, dtype=f.dtype, device=f.device)
    p = p.index_add(0, flat.reshape(-1), outer.reshape(-1)) / f.shape[0]
    return p.reshape(fixed.bins, moving.bins), ParzenParts(False, fstart, fw, mstart, mdw, flat)


def parzen_contract(dvalue_dp: torch.Tensor, parts: ParzenParts, n: int) -> torch.Tensor:
    """d value / d m_s (N,) = (1/N) sum_ij dvalue/dp_ij w_f(i, s) w_m'(j, s)."""
    k = dvalue_dp.reshape(-1).index_select(0, parts.flat.reshape(-1)).reshape(parts.flat.shape)  # (N, Kf, Km)
    return (k * parts.fw[:, :, None] * parts.mdw[:, None, :]).sum(dim=(1, 2)) / n


# filters, samplers, optimiser terms ------------------------------------------------------

def convolve_axis(data: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """data (C, [Z,] Y, X) convolved along image ``axis`` (x-y-z order) with a centred odd-length
    kernel (K,), edges replicated; same shape."""
    r = (kernel.numel() - 1) // 2
    dim_t = data.dim() - 1 - axis  # torch axis
    moved = data.movedim(dim_t, -1)
    shape = moved.shape
    rows = moved.reshape(-1, 1, shape[-1])
    rows = F.pad(rows, (r, r), mode="replicate")
    rows = F.conv1d(rows, kernel.view(1, 1, -1))
    return rows.reshape(shape).movedim(-1, dim_t)


def voxel_world_points(grid: Grid, flat: torch.Tensor, jitter: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """World points (N, D) in ``dtype`` of flat voxel indices (N,), each plus a jitter (N, D) in voxels."""
    index = grid.unravel(flat).to(dtype)
    if jitter is not None:
        index = index + jitter.to(flat.device)
    return grid.index_to_world(index)


def box_coordinates(grid: Grid, low: torch.Tensor, high: torch.Tensor, jitter: torch.Tensor, dtype: torch.dtype,
                    device) -> torch.Tensor:
    """World points (N, D) on ``device`` at the continuous indices low + jitter (high - low) (per axis, jitter
    (N, D) in [0, 1)), through the nearest voxel (rounded half to even) plus the offset from it."""
    position = low + jitter * (high - low)
    index = torch.round(position)
    strides = torch.tensor(grid.strides, dtype=torch.int64, device=index.device)
    flat = (index.to(torch.int64) * strides).sum(1).to(device)
    return voxel_world_points(grid, flat, position - index, dtype)


def sparse_gram(indices: torch.Tensor, weights: torch.Tensor, columns: int) -> torch.Tensor:
    """W W^T (N, N) for the sparse rows W[n, indices[n, k]] = weights[n, k] (N x columns)."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    w = torch.sparse_coo_tensor(torch.stack([rows, indices.reshape(-1)]), weights.reshape(-1), (n, columns),
                                check_invariants=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta" (used inside the product)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(w, w.t()).to_dense()
