"""The one backend dispatcher: every operation that has a compiled CPU kernel (``kernels``,
numba) and a torch twin (``twins``) is called through here, and here alone it is decided which
of the two runs.

The compiled kernel runs when kernels are enabled (numba imports and ``IMPACTREG_KERNELS`` is
not "0") and every tensor involved is on the CPU and requires no grad (``_compiled``, a few
attribute reads per call); otherwise the torch twin runs (GPUs, autograd, kernels off). Both
give the same results to float rounding. Operation kinds:

========================  =========================  =========================================
operation                 compiled kernel            torch twin
========================  =========================  =========================================
sample_image              kernels.sample_image       twins.sample_image
sample_values             point_sampler.values       twins.sample_image (values of channel 0)
bspline_map               kernels.bspline_map        twins.bspline_map
bspline_scatter           kernels.bspline_scatter    twins.bspline_scatter
bending_energy            bending.bending_energy     twins.bending_energy
parzen_joint / _contract  kernels.parzen_taps,       twins.parzen_taps, twins.parzen_joint,
                          parzen_joint, _contract    twins.parzen_contract
convolve_axis             kernels.convolve_axis,     twins.convolve_axis (then the stride)
                          smoothing.convolve_axis_
                          strided (every step-th)
bspline_prefilter         prefilter.prefilter_axis   none: False, and the caller runs its FIR
                          (recursive, in place)      (interpolation.bspline_coefficients, torch)
voxel_world_points        kernels.voxel_world_points twins.voxel_world_points
box_coordinates           random_coordinates.        twins.box_coordinates
                          box_coordinates
sparse_gram               kernels.sparse_gram        twins.sparse_gram
linear_intensity          linear_metrics.mattes_mi,  none: None, and the caller takes the generic
                          mean_squares, normalized_  chain (sample_image, the metric's
                          correlation                value_and_derivative, parameter_gradient)
========================  =========================  =========================================

A Parzen histogram is one operation kind: ``parzen_joint`` decides for its taps and records
the choice in the ``ParzenParts`` it returns, which ``parzen_contract`` follows. An image
sampling of PARALLEL_WORK or more, with torch given more than one thread, runs on those threads
(``kernels.sample_image_threads``) where ``compute.parallel`` measures that to be faster.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import torch

from ..geometry import Grid
from . import twins
from .parallel import ThreadChoice
from .tables import ImageTable, ParzenParts, SplineTable

try:
    from . import bending, kernels, linear_metrics, point_sampler, prefilter, random_coordinates, smoothing
except ImportError:  # numba missing: the torch twins do everything
    bending = kernels = linear_metrics = point_sampler = prefilter = random_coordinates = smoothing = None

ENABLED = kernels is not None and os.environ.get("IMPACTREG_KERNELS", "1") != "0"
PARALLEL_WORK = 1 << 20  # multiply-adds of one image sampling from which the registration's threads share it
_PARALLEL = threading.Lock()  # one parallel sampling at a time: a concurrent caller samples on its own thread


def _compiled(*tensors: torch.Tensor) -> bool:
    """The backend decision: True when the compiled kernel may run on these tensors."""
    if not ENABLED:
        return False
    for t in tensors:
        if t.device.type != "cpu" or t.requires_grad:
            return False
    return True


def sample_image(table: ImageTable, points: torch.Tensor, gradient: bool = False):
    """Sample an image at world points (N, D): values (N, C) (``table.default`` outside),
    d value / d world point (N, C, D) when ``gradient`` (else None), inside (N,) bool; values
    and gradients in ``table.dtype``."""
    if not _compiled(points, table.coef):
        return twins.sample_image(table, points, gradient)
    coef, w2i, origin = table.kernel_arrays()
    n, dim = points.shape
    values = torch.empty((n, table.channels), dtype=table.dtype)
    grads = torch.empty((n, table.channels, dim) if gradient else (1, 1, 1), dtype=table.dtype)
    inside = torch.empty(n, dtype=torch.bool)
    args = (coef, table.order, w2i, origin, points.contiguous().numpy(), gradient, table.default, values.numpy(),
            grads.numpy(), inside.numpy(), table.mirror_linear)
    threads = torch.get_num_threads()
    work = n * table.channels * (table.order + 1) ** dim * (4 if gradient else 1)
    if threads > 1 and work >= PARALLEL_WORK:
        choice = table.thread_choices.setdefault(gradient, ThreadChoice())
        split = choice.parallel() and _PARALLEL.acquire(blocking=False)
        try:
            choice.run(split, work, lambda: kernels.sample_image_threads(threads, *args) if split
                       else kernels.sample_image(*args))
        finally:
            if split:
                _PARALLEL.release()
    else:
        kernels.sample_image(*args)
    return values, (grads if gradient else None), inside


def sample_values(table: ImageTable, points: torch.Tensor) -> torch.Tensor:
    """The first channel's values (N,) at world points (N, D) (``table.default`` outside), in ``table.dtype``:
    ``sample_image``'s values; of one channel at order 1 or 3 by ``point_sampler.values`` (a third of the time)."""
    if (table.channels != 1 or not _compiled(points, table.coef)
            or table.order not in point_sampler.LINEAR_ORDERS):
        return sample_image(table, points)[0][:, 0]
    coef, w2i, origin = table.kernel_arrays()
    out = torch.empty(points.shape[0], dtype=table.dtype)
    inside = torch.empty(points.shape[0], dtype=torch.bool)
    point_sampler.values(coef[..., 0], table.order, table.mirror_linear, w2i, origin, points.contiguous().numpy(),
                         table.default, out.numpy(), inside.numpy())
    return out


def bspline_map(table: SplineTable, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """T(points) (..., D) of the B-spline transform on ``table`` with parameters (D * K,) (in
    the points' dtype and device); a point whose support leaves the control grid stays put."""
    if not _compiled(points, params):
        return twins.bspline_map(table, params, points)
    sizes, w2i, origin = table.kernel_arrays()
    pts = points.reshape(-1, table.dim).contiguous()
    out = torch.empty_like(pts)
    kernels.bspline_map(params.detach().to(torch.float64).contiguous().numpy(), sizes, table.order, w2i, origin,
                        pts.numpy(), out.numpy())
    return out.reshape(points.shape)


def bspline_scatter(table: SplineTable, points: torch.Tensor, d_points: torch.Tensor) -> torch.Tensor:
    """The parameter gradient (D * K,) sum_n (dT(x_n)/dmu)^T d_points[n] for points (..., D) and
    d_points (N, D), in the dtype of ``d_points``."""
    if not _compiled(points, d_points):
        return twins.bspline_scatter(table, points, d_points)
    sizes, w2i, origin = table.kernel_arrays()
    pts = points.reshape(-1, table.dim).contiguous()
    out = torch.zeros(table.dim * table.grid.num_voxels, dtype=torch.float64)
    kernels.bspline_scatter(out.numpy(), sizes, table.order, w2i, origin, pts.numpy(),
                            d_points.reshape(-1, table.dim).to(pts.dtype).contiguous().numpy())
    return out.to(d_points.dtype)



def bending_energy(table: SplineTable, params: torch.Tensor, points: torch.Tensor, a: torch.Tensor, scale: float):
    """(sum over points (N, D) of sum_d ||A^T H_u,d A||^2, its parameter gradient (D * K,) times
    ``scale`` / 2) for the B-spline on ``table`` with parameters (D * K,), H_u,d the index-space
    Hessian of output axis d and a (N, D, D) per point; the gradient in the points' dtype."""
    if not _compiled(points, params, a):
        return twins.bending_energy(table, params, points, a, scale)
    sizes, w2i, origin = table.kernel_arrays()
    grad = torch.zeros(table.dim * table.grid.num_voxels, dtype=torch.float64)
    pts = points.reshape(-1, table.dim).to(torch.float64).contiguous()
    value = bending.bending_energy(params.detach().to(torch.float64).contiguous().numpy(), sizes, table.order, w2i,
                                   origin, pts.numpy(), a.to(torch.float64).contiguous().numpy(),
                                   float(scale), grad.numpy())
    return float(value), grad.to(points.dtype)

def parzen_joint(fixed, moving, f: torch.Tensor, m: torch.Tensor, derivative: bool = False):
    """The Parzen joint histogram p (Bf, Bm) of fixed values f (N,) and moving values m (N,),
    and the taps its contraction needs (moving weight derivatives with ``derivative``).

    ``fixed`` and ``moving`` are binnings with the attributes order, bins, true_min, true_max,
    min, max, binsize, nmin and soft (``metrics.intensity._Binning``). The compiled histogram
    is float64 (no subnormals); the twin's has the dtype of f."""
    if not _compiled(f, m):
        return twins.parzen_joint(fixed, moving, f, m, derivative)
    fstart, fw, _ = _parzen_taps(fixed, f, False)
    mstart, mw, mdw = _parzen_taps(moving, m, derivative)
    p = torch.zeros(fixed.bins * moving.bins, dtype=torch.float64)
    kernels.parzen_joint(fstart.numpy(), fw.numpy(), mstart.numpy(), mw.numpy(), moving.bins, p.numpy())
    return p.reshape(fixed.bins, moving.bins), ParzenParts(True, fstart, fw, mstart, mdw)


def _parzen_taps(binning, v: torch.Tensor, derivative: bool):
    """twins.parzen_taps by the compiled kernel: first bin (N,), weights and d weights / d v
    (N, order + 1) in float64."""
    n, k = v.shape[0], binning.order + 1
    start, w = torch.empty(n, dtype=torch.long), torch.empty((n, k), dtype=torch.float64)
    dw = torch.empty((n, k) if derivative else (1, 1), dtype=torch.float64)
    kernels.parzen_taps(v.contiguous().numpy(), binning.order, binning.bins, binning.true_min, binning.true_max,
                        binning.min, binning.max, binning.binsize, binning.nmin, binning.soft, derivative,
                        start.numpy(), w.numpy(), dw.numpy())
    return start, w, (dw if derivative else None)


def parzen_contract(dvalue_dp: torch.Tensor, parts: ParzenParts, n: int) -> torch.Tensor:
    """d value / d m_s (N,) = (1/N) sum_ij dvalue/dp_ij w_f(i, s) w_m'(j, s) for dvalue_dp
    (Bf, Bm), on the backend that built ``parts``."""
    if not parts.compiled:
        return twins.parzen_contract(dvalue_dp, parts, n)
    out = torch.empty(n, dtype=torch.float64)
    kernels.parzen_contract(dvalue_dp.to(torch.float64).contiguous().numpy(), parts.fstart.numpy(), parts.fw.numpy(),
                            parts.mstart.numpy(), parts.mdw.numpy(), out.numpy())
    return out


def convolve_axis(data: torch.Tensor, kernel: torch.Tensor, axis: int, start: int = 0, step: int = 1,
                  count: int | None = None) -> torch.Tensor:
    """data (C, [Z,] Y, X) convolved along image ``axis`` (0 = x, 1 = y, 2 = z) with a centred
    odd-length kernel (K,) of the same dtype, edges replicated; same shape, or along ``axis`` only
    the ``count`` voxels start, start + step, ... (the others are not computed)."""
    dim = data.dim() - 1
    along = data.dim() - 1 - axis  # torch axis
    strided = step != 1 or start != 0 or (count is not None and count != data.shape[along])
    if not _compiled(data, kernel):
        out = twins.convolve_axis(data, kernel, axis)
        return out.narrow(along, start, (count - 1) * step + 1)[(slice(None),) * along + (slice(None, None, step),)] \
            if strided else out
    block = data.reshape(data.shape[0], *([1] * (3 - dim)), *data.shape[1:]).contiguous()
    if not strided:
        out = torch.empty_like(block)
        kernels.convolve_axis(block.numpy(), kernel.numpy(), 2 - axis, out.numpy())
        return out.reshape(data.shape)
    shape = list(block.shape)
    shape[3 - axis] = count
    out = torch.empty(shape, dtype=block.dtype)
    smoothing.convolve_axis_strided(block.numpy(), kernel.numpy(), 2 - axis, start, step, out.numpy())
    shape = list(data.shape)
    shape[along] = count
    return out.reshape(shape)


def bspline_prefilter(coef: torch.Tensor, order: int) -> bool:
    """B-spline coefficients of order 2-5 of channel-first data coef (C, [Z,] Y, X), contiguous, in place, under
    whole-sample mirror boundaries, by the recursive filter; False (coef untouched) where the caller's torch FIR
    must run instead."""
    if (not _compiled(coef) or not coef.is_contiguous() or order not in prefilter.POLES
            or coef.dtype not in (torch.float32, torch.float64)):  # numba has no half or bfloat16
        return False
    poles, gain = prefilter.poles_and_gain(order)
    array = coef.numpy()
    for along in range(1, coef.dim()):
        n = coef.shape[along]
        if n > 1:
            outer = int(np.prod(coef.shape[:along]))
            prefilter.prefilter_axis(array.reshape(outer, n, -1), poles, gain)
    return True


def voxel_world_points(grid: Grid, flat: torch.Tensor, jitter: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """World points (N, D) in ``dtype`` of flat voxel indices (N,) of ``grid`` (x fastest), each
    plus a jitter (N, D) in voxels when given."""
    if not _compiled(flat):
        return twins.voxel_world_points(grid, flat, jitter, dtype)
    t = grid.tensors(dtype)
    out = torch.empty((flat.shape[0], grid.dim), dtype=dtype)
    kernels.voxel_world_points(flat.numpy(), t.size.numpy(),
                               (jitter if jitter is not None else torch.zeros(1, 1, dtype=dtype)).numpy(),
                               t.index_to_world.numpy(), t.origin.numpy(), out.numpy())
    return out


def box_coordinates(grid: Grid, low: torch.Tensor, high: torch.Tensor, jitter: torch.Tensor, dtype: torch.dtype,
                    device=None) -> torch.Tensor:
    """World points (N, D) in ``dtype`` on ``device`` at the continuous indices low + jitter (high - low) of
    ``grid`` (low, high (D,) in the dtype of jitter (N, D) in [0, 1)), through the nearest voxel (half to even)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if not _compiled(jitter, low, high) or device.type != "cpu":
        return twins.box_coordinates(grid, low, high, jitter, dtype, device)
    t = grid.tensors(dtype)
    out = torch.empty((jitter.shape[0], grid.dim), dtype=dtype)
    random_coordinates.box_coordinates(jitter.contiguous().numpy(), low.contiguous().numpy(), high.contiguous().numpy(),
                                       t.index_to_world.numpy(), t.origin.numpy(), out.numpy())
    return out


def sparse_gram(indices: torch.Tensor, weights: torch.Tensor, columns: int) -> torch.Tensor:
    """W W^T (N, N) in float64 for the sparse rows W[n, indices[n, k]] = weights[n, k] (float64),
    W having ``columns`` columns."""
    if not _compiled(indices, weights):
        return twins.sparse_gram(indices, weights, columns)
    gram = torch.zeros(indices.shape[0], indices.shape[0], dtype=torch.float64)
    kernels.sparse_gram(indices.contiguous().numpy(), weights.contiguous().numpy(), columns, gram.numpy())
    return gram


def linear_intensity(metric: str, settings, moving: ImageTable, mask: ImageTable | None, scales: torch.Tensor | None,
                     form, points: torch.Tensor, fixed_values: torch.Tensor, work: dict):
    """An intensity metric (value, valid count, moments (D + 1, D) float64) at samples (N, D) with fixed values
    (N,) for a transform linear in the point (``form``, a transforms.base.LinearForm): rows 0..D-1 of the moments
    are sum_n d_n u_n^T, row D sum_n d_n (see ``compute.linear_metrics``). ``metric``: one of
    linear_metrics.METRICS, with ``settings`` the ParzenHistogram (mattes_mi), the normalization (mean_squares)
    or whether to subtract the means (normalized_correlation); ``scales`` (D, D) multiplies the moving gradient
    (None: identity); ``work`` a dict the caller keeps for the level (scratch arrays by sample count). None where
    the compiled kernel cannot run (kernels off, not on the CPU, a moving interpolator of order other than 1 or
    3, several channels): the caller then takes the generic chain."""
    if (not _compiled(points, fixed_values, moving.coef) or moving.channels != 1
            or moving.order not in linear_metrics.LINEAR_ORDERS or metric not in linear_metrics.METRICS):
        return None
    dim = points.shape[1]
    static = work.get("static")
    if static is None:
        coef, w2i, origin = moving.kernel_arrays()
        mask_arrays = (np.zeros((0, 0, 0), dtype=np.float32), np.zeros((3, 3)), np.zeros(3)) if mask is None else \
            (mask.kernel_arrays()[0][..., 0], *mask.kernel_arrays()[1:])
        scale = np.eye(dim) if scales is None else scales.detach().cpu().double().numpy()
        static = work["static"] = (coef[..., 0], moving.order, moving.mirror_linear, w2i, origin, *mask_arrays, scale)
    n = points.shape[0]
    arrays = work.get(n)
    if arrays is None:
        sizes = () if metric != "mattes_mi" else \
            (settings.fixed.order, settings.moving.order, settings.fixed.bins, settings.moving.bins)
        arrays = work[n] = linear_metrics.work_arrays(n, dim, *sizes) + (np.empty((dim + 1, dim)),)
    scratch, index, hist, moments = arrays
    args = (points.numpy(), fixed_values.numpy(), form.pre, form.pre_offset, form.matrix, form.offset, *static)
    if metric == "mattes_mi":
        binnings = work.get("binnings")
        if binnings is None:
            binnings = work["binnings"] = (linear_metrics.binning_array(settings.fixed),
                                           linear_metrics.binning_array(settings.moving))
        value, valid = linear_metrics.mattes_mi(*args, *binnings, scratch, index, hist, moments)
    elif metric == "mean_squares":
        value, valid = linear_metrics.mean_squares(*args, float(settings), scratch, moments)
    else:
        value, valid = linear_metrics.normalized_correlation(*args, bool(settings), scratch, moments)
    return value, valid, moments
