"""Intensity metrics (Mattes MI, mean squares, normalized correlation) and their parameter gradient for
a transform linear in the point, in one compiled call per iteration (numba): map the samples, sample
the moving image (value and gradient), the metric's value and d value / d m at every sample (for
Mattes MI through the Parzen joint histogram), and the moments sum_n d_n u_n^T and sum_n d_n of
d value / d T(x_n) = d_n, from which the transform's closed-form derivatives give d value / d mu
(``transforms.base.LinearForm``).

It computes what the generic chain computes (``metrics.protocol.IntensityMetric``: ``sample_image``,
the metric's ``value_and_derivative``, the transform's ``parameter_gradient``) in float64
throughout, without the per-iteration tensors. The Parzen binning is ``kernels.parzen_taps``/
``parzen_joint``/``parzen_contract`` itself; the single-channel order-1 and order-3 point sampler
(``compute.point_sampler``) equals ``kernels.sample_image`` to rounding. Only ``compute.dispatch`` calls it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels import ORDERED, parzen_contract, parzen_joint, parzen_taps
from .point_sampler import LINEAR_ORDERS, sample_point

METRICS = ("mattes_mi", "mean_squares", "normalized_correlation")  # the kernels compute.linear_intensity runs
BINNING_FIELDS = 9  # order, bins, true_min, true_max, min, max, binsize, nmin, soft


def binning_array(binning) -> np.ndarray:
    """A ``metrics.intensity._Binning`` as the float64 array the kernel reads."""
    return np.array([binning.order, binning.bins, binning.true_min, binning.true_max, binning.min, binning.max,
                     binning.binsize, binning.nmin, 1.0 if binning.soft else 0.0], dtype=np.float64)


def work_arrays(n: int, dim: int, fixed_order: int = 0, moving_order: int = -1, fixed_bins: int = 0,
                moving_bins: int = 0):
    """The kernels' scratch for n samples: float64 (n, 2 + 2 D + taps) per sample, int64 (n, 2) first bins,
    float64 (2 Bf Bm + 2 (Bf + Bm)) histogram, its derivative, marginals and their logarithms (Mattes MI; the
    other metrics need no taps or bins)."""
    columns = 2 + 2 * dim + (fixed_order + 1) + 2 * (moving_order + 1)
    return (np.empty((n, columns)), np.empty((n, 2), dtype=np.int64),
            np.empty(2 * fixed_bins * moving_bins + 2 * (fixed_bins + moving_bins)))


@njit(cache=True, fastmath=ORDERED)
def _value_and_derivative(joint, derivative, marginals):
    """-MI = -sum p log(p / (pf pm)) of the joint histogram (Bf, Bm), and d(-MI)/dp_ij = -(log p_ij - log pm_j)
    (pf does not depend on the moving values) where p_ij and pf_i pm_j exceed 1e-16, else 0; ``marginals``
    (2 (Bf + Bm),) scratch."""
    fixed_bins, moving_bins = joint.shape
    pf, pm = marginals[:fixed_bins], marginals[fixed_bins:fixed_bins + moving_bins]
    both = fixed_bins + moving_bins
    log_pf, log_pm = marginals[both:both + fixed_bins], marginals[both + fixed_bins:]
    pm[:] = 0.0
    for i in range(fixed_bins):
        row = 0.0
        for j in range(moving_bins):
            row += joint[i, j]
            pm[j] += joint[i, j]
        pf[i] = row
    for i in range(fixed_bins):
        log_pf[i] = math.log(pf[i]) if pf[i] > 0.0 else 0.0
    for j in range(moving_bins):
        log_pm[j] = math.log(pm[j]) if pm[j] > 0.0 else 0.0
    value = 0.0
    for i in range(fixed_bins):
        for j in range(moving_bins):
            pij = joint[i, j]
            if pij > 1e-16 and pf[i] * pm[j] > 1e-16:
                log_p = math.log(pij)
                value -= pij * (log_p - log_pf[i] - log_pm[j])
                derivative[i, j] = log_pm[j] - log_p
            else:
                derivative[i, j] = 0.0
    return value


@njit(cache=True, inline="always")
def _affine(m, offset, v0, v1, v2, dim):
    """m @ v + offset for v = (v0, v1[, v2]) as a 3-tuple (third 0 in 2D); offset None: none."""
    if dim == 2:
        r0 = m[0, 0] * v0 + m[0, 1] * v1
        r1 = m[1, 0] * v0 + m[1, 1] * v1
        if offset is None:
            return r0, r1, 0.0
        return offset[0] + r0, offset[1] + r1, 0.0
    r0 = m[0, 0] * v0 + m[0, 1] * v1 + m[0, 2] * v2
    r1 = m[1, 0] * v0 + m[1, 1] * v1 + m[1, 2] * v2
    r2 = m[2, 0] * v0 + m[2, 1] * v1 + m[2, 2] * v2
    if offset is None:
        return r0, r1, r2
    return offset[0] + r0, offset[1] + r1, offset[2] + r2


@njit(cache=True, inline="always")
def _row_times(v0, v1, v2, m, dim):
    """The row v (v0, v1[, v2]) times m, as a 3-tuple (third 0 in 2D)."""
    if dim == 2:
        return v0 * m[0, 0] + v1 * m[1, 0], v0 * m[0, 1] + v1 * m[1, 1], 0.0
    return (v0 * m[0, 0] + v1 * m[1, 0] + v2 * m[2, 0], v0 * m[0, 1] + v1 * m[1, 1] + v2 * m[2, 1],
            v0 * m[0, 2] + v1 * m[1, 2] + v2 * m[2, 2])


@njit(cache=True, inline="always")
def _inside(c0, c1, c2, nx, ny, nz, dim):
    """ITK's IsInsideBuffer: -0.5 <= index < size - 0.5 on every axis."""
    ok = c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5
    return ok and (dim == 2 or (c2 >= -0.5 and c2 < nz - 0.5))


@njit(cache=True, fastmath=ORDERED, inline="always")
def _gather(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask, mask_w2i,
            mask_origin, scales, work, dim):
    """Pass 1: the valid samples (T(x) inside the moving image and its mask) packed at the front of ``work`` as
    [f, m, g (D), u (D)]: fixed value, moving value, scaled world gradient of the moving image at T(x), u = pre x
    + pre_offset. Returns their count. Inlined with a constant ``dim`` (3x faster than a variable one)."""
    n_points = points.shape[0]
    nz, ny, nx = coef.shape
    has_mask = mask.shape[0] > 0
    mz, my, mx = mask.shape
    n = 0
    for p in range(n_points):
        u0, u1, u2 = _affine(pre, pre_offset, points[p, 0], points[p, 1], points[p, dim - 1], dim)
        y0, y1, y2 = _affine(matrix, offset, u0, u1, u2, dim)
        c0, c1, c2 = _affine(w2i, None, y0 - origin[0], y1 - origin[1], y2 - origin[dim - 1], dim)
        if not _inside(c0, c1, c2, nx, ny, nz, dim):
            continue
        if has_mask:
            k0, k1, k2 = _affine(mask_w2i, None, y0 - mask_origin[0], y1 - mask_origin[1], y2 - mask_origin[dim - 1],
                                 dim)
            if not _inside(k0, k1, k2, mx, my, mz, dim):
                continue
            i0 = min(max(int(math.floor(k0 + 0.5)), 0), mx - 1)
            i1 = min(max(int(math.floor(k1 + 0.5)), 0), my - 1)
            i2 = min(max(int(math.floor(k2 + 0.5)), 0), mz - 1) if dim == 3 else 0
            if not mask[i2, i1, i0] > 0:
                continue
        value, d0, d1, d2 = sample_point(coef, order, mirror, dim, c0, c1, c2)
        g0, g1, g2 = _row_times(d0, d1, d2, w2i, dim)  # d value / d world = (d value / d index) w2i
        g0, g1, g2 = _row_times(g0, g1, g2, scales, dim)  # times the derivative scales
        work[n, 0] = fixed_values[p]
        work[n, 1] = value
        work[n, 2] = g0
        work[n, 3] = g1
        work[n, 2 + dim] = u0
        work[n, 3 + dim] = u1
        if dim == 3:
            work[n, 4] = g2
            work[n, 7] = u2
        n += 1
    return n


@njit(cache=True, fastmath=ORDERED)
def mattes_mi(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
              mask_w2i, mask_origin, scales, fixed_binning, moving_binning, work, index, hist, moments):
    """Mattes MI (lower is better) at T(x) = matrix (pre x + pre_offset) + offset for samples x (N, D) with fixed
    values (N,); returns (value, valid count) and fills moments (D + 1, D): rows 0..D-1 sum_n d_n u_n^T, row D
    sum_n d_n, with d_n = d value / d T(x_n) and u_n = pre x_n + pre_offset.

    ``coef`` (Z, Y, X) the moving image's single-channel coefficients (order 1 or 3; ``mirror``: order 1 mirrors
    beyond the outermost voxel centres), ``w2i``/``origin`` its world-to-index map; ``mask`` (Z, Y, X) the moving
    mask read by nearest neighbour (> 0 counts; shape (0, 0, 0): none); ``scales`` (D, D) multiplies the moving
    gradient (a row); binnings as ``binning_array``; work, index, hist from ``work_arrays``."""
    dim = points.shape[1]
    n = _gathered(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                  mask_w2i, mask_origin, scales, work, moments)
    kf, km = int(fixed_binning[0]) + 1, int(moving_binning[0]) + 1
    col_f, col_m, col_g, col_u = 0, 1, 2, 2 + dim
    col_fw = 2 + 2 * dim
    col_mw = col_fw + kf
    col_mdw = col_mw + km
    fixed_order, fixed_bins = int(fixed_binning[0]), int(fixed_binning[1])
    moving_order, moving_bins = int(moving_binning[0]), int(moving_binning[1])
    if n < 2:
        return 0.0, n
    valid = work[:n]
    fstart, mstart = index[:n, 0], index[:n, 1]
    fw, mw, mdw = valid[:, col_fw:col_mw], valid[:, col_mw:col_mdw], valid[:, col_mdw:col_mdw + km]
    parzen_taps(valid[:, col_f], fixed_order, fixed_bins, fixed_binning[2], fixed_binning[3], fixed_binning[4],
                fixed_binning[5], fixed_binning[6], fixed_binning[7], fixed_binning[8] > 0, False, fstart, fw, fw)
    parzen_taps(valid[:, col_m], moving_order, moving_bins, moving_binning[2], moving_binning[3], moving_binning[4],
                moving_binning[5], moving_binning[6], moving_binning[7], moving_binning[8] > 0, True, mstart, mw, mdw)
    cells = fixed_bins * moving_bins
    flat = hist[:cells]
    flat[:] = 0.0
    parzen_joint(fstart, fw, mstart, mw, moving_bins, flat)
    joint = flat.reshape((fixed_bins, moving_bins))
    derivative = hist[cells:2 * cells].reshape((fixed_bins, moving_bins))
    value = _value_and_derivative(joint, derivative, hist[2 * cells:])
    dv_dm = valid[:, col_f]  # the fixed values are no longer needed
    parzen_contract(derivative, fstart, fw, mstart, mdw, dv_dm)
    _moments(valid, dv_dm, dim, moments)
    return value, n


@njit(cache=True, fastmath=ORDERED)
def _moments(valid, dv_dm, dim, moments):
    """moments (D + 1, D) += [sum_s d_s u_s^T; sum_s d_s] with d_s = dv_dm[s] g_s, over the gathered samples."""
    for s in range(valid.shape[0]):
        for i in range(dim):
            d = dv_dm[s] * valid[s, 2 + i]
            moments[dim, i] += d
            for j in range(dim):
                moments[i, j] += d * valid[s, 2 + dim + j]


@njit(cache=True, fastmath=ORDERED)
def _gathered(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
              mask_w2i, mask_origin, scales, work, moments):
    """Pass 1 with a constant dimension; moments zeroed. Returns the valid count."""
    dim = points.shape[1]
    moments[:] = 0.0
    if dim == 2:
        return _gather(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                       mask_w2i, mask_origin, scales, work, 2)
    return _gather(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                   mask_w2i, mask_origin, scales, work, 3)


@njit(cache=True, fastmath=ORDERED)
def mean_squares(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                 mask_w2i, mask_origin, scales, normalization, work, moments):
    """AdvancedMeanSquares sum (m - f)^2 / (N normalization) over the valid samples, as ``mattes_mi`` (same
    arguments but the binnings and histogram; ``work`` (n, 2 + 2 D) at least)."""
    n = _gathered(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                  mask_w2i, mask_origin, scales, work, moments)
    if n < 2:
        return 0.0, n
    valid = work[:n]
    scale = 1.0 / (n * normalization)
    value = 0.0
    dv_dm = valid[:, 0]
    for s in range(n):
        diff = valid[s, 1] - valid[s, 0]
        value += diff * diff
        dv_dm[s] = 2.0 * diff * scale
    _moments(valid, dv_dm, points.shape[1], moments)
    return value * scale, n


@njit(cache=True, fastmath=ORDERED)
def normalized_correlation(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin,
                           mask, mask_w2i, mask_origin, scales, subtract_mean, work, moments):
    """AdvancedNormalizedCorrelation -sum f' m' / sqrt(sum f'^2 sum m'^2) (primes: minus the means when
    ``subtract_mean``) over the valid samples, as ``mattes_mi`` (``work`` (n, 2 + 2 D) at least)."""
    n = _gathered(points, fixed_values, pre, pre_offset, matrix, offset, coef, order, mirror, w2i, origin, mask,
                  mask_w2i, mask_origin, scales, work, moments)
    if n < 2:
        return 0.0, n
    valid = work[:n]
    mean_f = 0.0
    mean_m = 0.0
    if subtract_mean:
        for s in range(n):
            mean_f += valid[s, 0]
            mean_m += valid[s, 1]
        mean_f /= n
        mean_m /= n
    sff = 0.0
    smm = 0.0
    sfm = 0.0
    for s in range(n):
        f = valid[s, 0] - mean_f
        m = valid[s, 1] - mean_m
        sff += f * f
        smm += m * m
        sfm += f * m
    smm = max(smm, 1e-12)
    root = max(math.sqrt(sff * smm), 1e-12)
    dv_dm = valid[:, 0]
    for s in range(n):
        dv_dm[s] = -((valid[s, 0] - mean_f) / root - sfm * (valid[s, 1] - mean_m) / (root * smm))
    _moments(valid, dv_dm, points.shape[1], moments)
    return -sfm / root, n
