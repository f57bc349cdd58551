"""Fused CPU kernels (numba): the compiled side of every operation in ``compute.dispatch``.

Three computations dominate an iteration on the CPU: sampling an image (value and gradient) at
N points, the B-spline transform (mapping N points, scattering N point-gradients onto its
coefficients) and the Parzen joint histogram of mutual information. Their torch twins
(``compute.twins``) evaluate them as dozens of small tensor operations; here each is one
compiled loop. Both compute the same thing (here in float64 internally). The kernels work on
numpy arrays and fill the output arrays they are given; only ``compute.dispatch`` calls them.
Compiled code is cached on disk by numba.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

MAX_TAPS = 6
PREFETCH_ABOVE = 1 << 20  # coefficients (~4 MB float32): beyond the L2 cache, misses dominate
TOUCH_BLOCK = 16  # points whose B-spline supports are loaded ahead at once (_touch_supports)
TOUCH_SUPPORTS_ABOVE = 1 << 22  # coefficients (16 MB float32) of a map of several channels beyond the L3 cache
FAST = {"reassoc", "contract", "nsz", "arcp"}  # fastmath without assuming no NaN/inf
# without "reassoc": sums in source order. Vectorised reductions peel to the arrays' alignment, so their last
# bits would change with where numpy placed the work arrays (a golden test failed only after other tests ran)
ORDERED = {"contract", "nsz", "arcp"}


@njit(cache=True, inline="always")
def _kernel(t, order):
    """Centred B-spline basis of ``order`` at t (same as compute.basis.bspline_kernel)."""
    a = abs(t)
    if order == 0:
        return 1.0 if -0.5 <= t < 0.5 else 0.0
    if order == 1:
        return 1.0 - a if a < 1.0 else 0.0
    if order == 2:
        if a < 0.5:
            return 0.75 - a * a
        return 0.5 * (1.5 - a) * (1.5 - a) if a < 1.5 else 0.0
    if order == 3:
        if a < 1.0:
            return (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
        b = 2.0 - a
        return b * b * b / 6.0 if a < 2.0 else 0.0
    half = (order + 1) / 2.0
    total = 0.0
    binom = 1.0
    for k in range(order + 2):
        x = t + half - k
        if x > 0:
            total += (-1.0) ** k * binom * x ** order
        binom = binom * (order + 1 - k) / (k + 1)
    fact = 1.0
    for k in range(2, order + 1):
        fact *= k
    return total / fact


@njit(cache=True, inline="always")
def _kernel_derivative(t, order):
    if order == 3:
        a = abs(t)
        s = 1.0 if t > 0 else (-1.0 if t < 0 else 0.0)
        if a < 1.0:
            return s * (1.5 * a * a - 2.0 * a)
        b = 2.0 - a
        return -0.5 * s * b * b if a < 2.0 else 0.0
    return _kernel(t + 0.5, order - 1) - _kernel(t - 0.5, order - 1)


@njit(cache=True, inline="always")
def _cubic(f):
    """Cubic B-spline weights beta(1 + f - k), k = 0..3, for f in [0, 1), without branches."""
    g = 1.0 - f
    return g * g * g / 6.0, (4.0 - 6.0 * f * f + 3.0 * f * f * f) / 6.0, \
        (4.0 - 6.0 * g * g + 3.0 * g * g * g) / 6.0, f * f * f / 6.0


@njit(cache=True, inline="always")
def _cubic_derivative(f):
    """beta'(1 + f - k), k = 0..3, for f in [0, 1)."""
    g = 1.0 - f
    return -0.5 * g * g, 1.5 * f * f - 2.0 * f, 2.0 * g - 1.5 * g * g, 0.5 * f * f


@njit(cache=True, inline="always")
def _mirror(k, n):
    if n == 1:
        return 0
    period = 2 * n - 2
    k = k % period
    return period - k if k >= n else k


@njit(cache=True)
def _touch(coef, w2i, origin, points):
    """Load the first channel at the (z, y) corner rows of every point's cell, in a loop with no
    other work, so that the cache misses of a large image overlap; the interpolation that
    follows then reads from cache. Returns a sum the caller stores (so it is not optimised away)."""
    n_points, dim = points.shape
    nz, ny, nx = coef.shape[0], coef.shape[1], coef.shape[2]
    total = 0.0
    for p in range(n_points):
        ix = 0
        iy = 0
        iz = 0
        for e in range(dim):
            ue = 0.0
            for j in range(dim):
                ue += w2i[e, j] * (points[p, j] - origin[j])
            i = min(max(int(math.floor(ue)), 0), (nx, ny, nz)[e] - 1)
            if e == 0:
                ix = i
            elif e == 1:
                iy = i
            else:
                iz = i
        x1 = min(ix + 1, nx - 1)
        y1 = min(iy + 1, ny - 1)
        z1 = min(iz + 1, nz - 1)
        last = coef.shape[3] - 1
        total += coef[iz, iy, ix, 0] + coef[iz, y1, ix, 0] + coef[z1, iy, ix, 0] + coef[z1, y1, ix, 0] + \
            coef[iz, iy, x1, last] + coef[iz, y1, x1, last] + coef[z1, iy, x1, last] + coef[z1, y1, x1, last]
    return total



@njit(cache=True, inline="always")
def _touches_supports(coef, order):
    """Whether sampling loads B-spline supports ahead in blocks (else the corner pass, for large
    images): for B-splines of a large map of several channels, whose rows span several cache lines."""
    return order >= 2 and coef.shape[3] >= 4 and coef.size > TOUCH_SUPPORTS_ABOVE


@njit(cache=True)
def _touch_supports(coef, order, w2i, origin, points, lo, hi):
    """Load every cache line of the (z, y) rows of the B-spline supports of points lo..hi - 1
    (indices clamped to the image), in a loop with no other work, so that their misses overlap:
    a few points at a time, their supports then fit the L2 cache (16 x 4 x 4 rows of 12 channels
    is ~50 KB). Returns a sum the caller stores (so it is not optimised away)."""
    dim = points.shape[1]
    nz, ny, nx, channels = coef.shape[0], coef.shape[1], coef.shape[2], coef.shape[3]
    taps = order + 1
    taps_z = taps if dim == 3 else 1
    total = 0.0
    for p in range(lo, hi):
        ix = 0
        iy = 0
        iz = 0
        for e in range(dim):
            ue = 0.0
            for j in range(dim):
                ue += w2i[e, j] * (points[p, j] - origin[j])
            i = int(math.floor(ue - (order - 1) / 2.0))
            if e == 0:
                ix = i
            elif e == 1:
                iy = i
            else:
                iz = i
        x0 = min(max(ix, 0), nx - 1)
        x1 = min(max(ix + order, 0), nx - 1)
        for kz in range(taps_z):
            z = min(max(iz + kz, 0), nz - 1)
            for ky in range(taps):
                y = min(max(iy + ky, 0), ny - 1)
                for x in range(x0, x1 + 1):  # a voxel's channels start every line or less (up to 16 floats)
                    for c in range(0, channels, 16):
                        total += coef[z, y, x, c]
                total += coef[z, y, x1, channels - 1]
    return total

@njit(cache=True, fastmath=FAST)
def sample_image(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear=False):
    """Sample coefficients ``coef`` (Z, Y, X, C), channel-last so that one voxel's channels share
    a cache line (Z = 1 for 2D), at world points (N, D). Order 1 clamps its neighbours to the image, or
    mirrors them (``mirror_linear``) as the order-1 B-spline does.

    Fills values (N, C), world-unit gradients (N, C, D) when ``want_grad``, inside (N,)."""
    n_points = points.shape[0]
    if coef.size > PREFETCH_ABOVE and not _touches_supports(coef, order) and n_points > 0:
        values[0, 0] = _touch(coef, w2i, origin, points)
    _sample_points(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear,
                   0, n_points)


@njit(cache=True, fastmath=FAST, parallel=True)
def sample_image_parallel(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear,
                          chunks):
    """``sample_image`` on ``chunks`` consecutive blocks of the points at once (numba's threads;
    each point's arithmetic is the serial kernel's, so the results are the same bits)."""
    n_points = points.shape[0]
    for chunk in prange(chunks):
        lo = chunk * n_points // chunks
        hi = (chunk + 1) * n_points // chunks
        if coef.size > PREFETCH_ABOVE and not _touches_supports(coef, order) and hi > lo:
            values[lo, 0] = _touch(coef, w2i, origin, points[lo:hi])
        _sample_points(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear,
                       lo, hi)


def sample_image_threads(threads, coef, order, w2i, origin, points, want_grad, default, values, grads, inside,
                         mirror_linear):
    """``sample_image`` on ``threads`` of numba's threads (at most as many as it started)."""
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)  # per calling thread: concurrent callers keep their own
    sample_image_parallel(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear,
                          threads)


@njit(cache=True, fastmath=FAST)
def _sample_points(coef, order, w2i, origin, points, want_grad, default, values, grads, inside, mirror_linear, lo, hi):
    """``sample_image`` for points lo..hi - 1."""
    dim = points.shape[1]
    channels = coef.shape[3]
    sizes = (coef.shape[2], coef.shape[1], coef.shape[0])
    idx = np.zeros((3, MAX_TAPS), dtype=np.int64)
    w = np.zeros((3, MAX_TAPS))
    dw = np.zeros((3, MAX_TAPS))
    ntaps = np.ones(3, dtype=np.int64)
    u = np.zeros(3)
    acc = np.zeros(channels)
    acc_x = np.zeros(channels)
    acc_y = np.zeros(channels)
    acc_z = np.zeros(channels)
    w[2, 0] = 1.0
    touch = _touches_supports(coef, order)
    block = TOUCH_BLOCK if touch else max(hi - lo, 1)
    for block_lo in range(lo, hi, block):
        block_hi = min(hi, block_lo + block)
        if touch:
            values[block_lo, 0] = _touch_supports(coef, order, w2i, origin, points, block_lo, block_hi)
        for p in range(block_lo, block_hi):
            ok = True
            for e in range(dim):
                ue = 0.0
                for j in range(dim):
                    ue += w2i[e, j] * (points[p, j] - origin[j])
                u[e] = ue
                if not (ue >= -0.5 and ue < sizes[e] - 0.5):
                    ok = False
            inside[p] = ok
            if not ok:
                for c in range(channels):
                    values[p, c] = default
                    if want_grad:
                        for j in range(dim):
                            grads[p, c, j] = 0.0
                continue
            for e in range(dim):  # indices, weights and d weights / du along each axis (ITK's conventions)
                n = sizes[e]
                if order == 0:
                    idx[e, 0] = min(max(int(math.floor(u[e] + 0.5)), 0), n - 1)
                    w[e, 0] = 1.0
                    dw[e, 0] = 0.0
                    ntaps[e] = 1
                elif order == 1:
                    base = math.floor(u[e])
                    i0 = int(base)
                    if mirror_linear:
                        idx[e, 0] = _mirror(i0, n)
                        idx[e, 1] = _mirror(i0 + 1, n)
                    else:
                        idx[e, 0] = min(max(i0, 0), n - 1)
                        idx[e, 1] = min(max(i0 + 1, 0), n - 1)
                    w[e, 0] = 1.0 - (u[e] - base)
                    w[e, 1] = u[e] - base
                    dw[e, 0] = -1.0
                    dw[e, 1] = 1.0
                    ntaps[e] = 2
                else:
                    start = math.floor(u[e] - (order - 1) / 2.0)
                    first = int(start)
                    interior = first >= 0 and first + order < n
                    for k in range(order + 1):
                        idx[e, k] = first + k if interior else _mirror(first + k, n)
                    if order == 3:
                        f = u[e] - start - 1.0
                        w[e, 0], w[e, 1], w[e, 2], w[e, 3] = _cubic(f)
                        dw[e, 0], dw[e, 1], dw[e, 2], dw[e, 3] = _cubic_derivative(f)
                    else:
                        for k in range(order + 1):
                            t = u[e] - (start + k)
                            w[e, k] = _kernel(t, order)
                            dw[e, k] = _kernel_derivative(t, order) if want_grad else 0.0
                    ntaps[e] = order + 1
            acc[:] = 0.0
            if want_grad:
                acc_x[:] = 0.0
                acc_y[:] = 0.0
                acc_z[:] = 0.0
            if want_grad and channels % 4 == 0:  # four channels at a time, their 16 sums in registers
                for c0 in range(0, channels, 4):
                    a0 = a1 = a2 = a3 = 0.0
                    x0 = x1 = x2 = x3 = 0.0
                    y0 = y1 = y2 = y3 = 0.0
                    z0 = z1 = z2 = z3 = 0.0
                    for kz in range(ntaps[2]):
                        iz = idx[2, kz]
                        for ky in range(ntaps[1]):
                            iy = idx[1, ky]
                            wzy = w[2, kz] * w[1, ky]
                            dzy = dw[2, kz] * w[1, ky]
                            wdy = w[2, kz] * dw[1, ky]
                            for kx in range(ntaps[0]):
                                ix = idx[0, kx]
                                weight = wzy * w[0, kx]
                                gx, gy, gz = wzy * dw[0, kx], wdy * w[0, kx], dzy * w[0, kx]
                                v0, v1 = coef[iz, iy, ix, c0], coef[iz, iy, ix, c0 + 1]
                                v2, v3 = coef[iz, iy, ix, c0 + 2], coef[iz, iy, ix, c0 + 3]
                                a0 += weight * v0
                                a1 += weight * v1
                                a2 += weight * v2
                                a3 += weight * v3
                                x0 += gx * v0
                                x1 += gx * v1
                                x2 += gx * v2
                                x3 += gx * v3
                                y0 += gy * v0
                                y1 += gy * v1
                                y2 += gy * v2
                                y3 += gy * v3
                                z0 += gz * v0
                                z1 += gz * v1
                                z2 += gz * v2
                                z3 += gz * v3
                    acc[c0], acc[c0 + 1], acc[c0 + 2], acc[c0 + 3] = a0, a1, a2, a3
                    acc_x[c0], acc_x[c0 + 1], acc_x[c0 + 2], acc_x[c0 + 3] = x0, x1, x2, x3
                    acc_y[c0], acc_y[c0 + 1], acc_y[c0 + 2], acc_y[c0 + 3] = y0, y1, y2, y3
                    acc_z[c0], acc_z[c0 + 1], acc_z[c0 + 2], acc_z[c0 + 3] = z0, z1, z2, z3
            for kz in range(0 if want_grad and channels % 4 == 0 else ntaps[2]):
                iz = idx[2, kz]
                for ky in range(ntaps[1]):
                    iy = idx[1, ky]
                    wzy = w[2, kz] * w[1, ky]
                    dzy = dw[2, kz] * w[1, ky]
                    wdy = w[2, kz] * dw[1, ky]
                    for kx in range(ntaps[0]):
                        ix = idx[0, kx]
                        weight = wzy * w[0, kx]
                        if want_grad:
                            gx, gy, gz = wzy * dw[0, kx], wdy * w[0, kx], dzy * w[0, kx]
                            for c in range(channels):
                                val = coef[iz, iy, ix, c]
                                acc[c] += weight * val
                                acc_x[c] += gx * val
                                acc_y[c] += gy * val
                                acc_z[c] += gz * val
                        else:
                            for c in range(channels):
                                acc[c] += weight * coef[iz, iy, ix, c]
            for c in range(channels):
                values[p, c] = acc[c]
                if want_grad:
                    for j in range(dim):
                        grads[p, c, j] = acc_x[c] * w2i[0, j] + acc_y[c] * w2i[1, j] + \
                            (acc_z[c] * w2i[2, j] if dim == 3 else 0.0)


@njit(cache=True, fastmath=FAST)
def _bspline_loop(params, sizes, order, w2i, origin, points, d_points, mapped, gradient):
    """The B-spline transform on control grid ``sizes`` (x, y[, z]) with parameters (D * K,):
    mapped (N, D) = T(points), or with ``gradient`` params += sum_n d_points[n, d] * weight_k(n)."""
    n_points, dim = points.shape
    ncoef = 1
    for e in range(dim):
        ncoef *= sizes[e]
    w = np.zeros((3, MAX_TAPS))
    taps_z = order + 1 if dim == 3 else 1
    if dim == 2:
        w[2, 0] = 1.0
    sx = sizes[0]
    sxy = sizes[0] * sizes[1]
    for p in range(n_points):
        first = 0  # flat index of the first support node; -1 when the support leaves the grid
        stride = 1
        for e in range(dim):
            acc = 0.0
            for j in range(dim):
                acc += w2i[e, j] * (points[p, j] - origin[j])
            start = math.floor(acc - (order - 1) / 2.0)
            if start < 0 or start > sizes[e] - 1 - order:
                first = -1
                break
            if order == 3:
                w[e, 0], w[e, 1], w[e, 2], w[e, 3] = _cubic(acc - start - 1.0)
            else:
                for k in range(order + 1):
                    w[e, k] = _kernel(acc - (start + k), order)
            first += int(start) * stride
            stride *= sizes[e]
        if first < 0:
            if not gradient:
                for d in range(dim):
                    mapped[p, d] = points[p, d]
            continue
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        if gradient:
            g0 = d_points[p, 0]
            g1 = d_points[p, 1]
            g2 = d_points[p, 2] if dim == 3 else 0.0
        for kz in range(taps_z):
            for ky in range(order + 1):
                wzy = w[2, kz] * w[1, ky]
                row = first + kz * sxy + ky * sx
                for kx in range(order + 1):
                    weight = wzy * w[0, kx]
                    flat = row + kx
                    if gradient:
                        params[flat] += g0 * weight
                        params[ncoef + flat] += g1 * weight
                        if dim == 3:
                            params[2 * ncoef + flat] += g2 * weight
                    else:
                        d0 += params[flat] * weight
                        d1 += params[ncoef + flat] * weight
                        if dim == 3:
                            d2 += params[2 * ncoef + flat] * weight
        if not gradient:
            mapped[p, 0] = points[p, 0] + d0
            mapped[p, 1] = points[p, 1] + d1
            if dim == 3:
                mapped[p, 2] = points[p, 2] + d2


def bspline_map(params, sizes, order, w2i, origin, points, mapped):
    """mapped (N, D) = T(points) for the B-spline transform with parameters (D * K,)."""
    _bspline_loop(params, sizes, order, w2i, origin, points, points, mapped, False)


def bspline_scatter(gradient, sizes, order, w2i, origin, points, d_points):
    """gradient (D * K,) += (dT/dmu)^T d_points, summed over the points."""
    _bspline_loop(gradient, sizes, order, w2i, origin, points, d_points, points, True)


@njit(cache=True)
def parzen_taps(v, order, bins, true_min, true_max, vmin, vmax, binsize, nmin, soft, want_derivative, start, w, dw):
    """elastix's Parzen binning of values v (N,): first bin, weights and d weights / d v
    (same as compute.twins.parzen_taps)."""
    hi_gap = true_max - vmax
    lo_gap = true_min - vmin
    hard = (not soft) or hi_gap == 0.0 or lo_gap == 0.0
    for p in range(v.shape[0]):
        x = v[p]
        if hard:
            slope = 1.0 if vmin <= x <= vmax else 0.0
            limited = min(max(x, vmin), vmax)
        elif x > true_max:
            slope = math.exp((x - true_max) / hi_gap)
            limited = hi_gap * slope + vmax
        elif x < true_min:
            slope = math.exp((x - true_min) / lo_gap)
            limited = lo_gap * slope + vmin
        else:
            slope = 1.0
            limited = x
        term = limited / binsize - nmin
        s = math.floor(term + 0.5 - order / 2.0)
        if order == 3:  # t_k = -(1 + f - k): the kernel is even, its derivative odd
            f = term - s - 1.0
            w[p, 0], w[p, 1], w[p, 2], w[p, 3] = _cubic(f)
            if want_derivative:
                d0, d1, d2, d3 = _cubic_derivative(f)
                scale = slope / binsize
                dw[p, 0], dw[p, 1], dw[p, 2], dw[p, 3] = d0 * scale, d1 * scale, d2 * scale, d3 * scale
        else:
            for k in range(order + 1):
                t = s + k - term
                w[p, k] = _kernel(t, order)
                if want_derivative:
                    dw[p, k] = -_kernel_derivative(t, order) * slope / binsize
        start[p] = min(max(int(s), 0), bins - order - 1)


@njit(cache=True)
def parzen_joint(fstart, fw, mstart, mw, moving_bins, p):
    """Add the Parzen windows of every sample to the flat joint histogram p (Ff * Fm,), divided by N."""
    n = fstart.shape[0]
    for s in range(n):
        for i in range(fw.shape[1]):
            row = (fstart[s] + i) * moving_bins + mstart[s]
            wi = fw[s, i] / n
            for j in range(mw.shape[1]):
                p[row + j] += wi * mw[s, j]


@njit(cache=True)
def parzen_contract(dvalue_dp, fstart, fw, mstart, mdw, out):
    """out[s] = (1/N) sum_ij dvalue_dp[fstart + i, mstart + j] fw[s, i] mdw[s, j]."""
    n = fstart.shape[0]
    for s in range(n):
        acc = 0.0
        for i in range(fw.shape[1]):
            for j in range(mdw.shape[1]):
                acc += dvalue_dp[fstart[s] + i, mstart[s] + j] * fw[s, i] * mdw[s, j]
        out[s] = acc / n


@njit(cache=True)
def sparse_gram(indices, weights, columns, gram):
    """gram (N, N) += W W^T for the sparse rows W[n, indices[n, k]] = weights[n, k] (N x columns),
    through the column -> rows lists, so the cost is sum over columns of (rows in the column)^2."""
    n, k = indices.shape
    counts = np.zeros(columns + 1, dtype=np.int64)
    for r in range(n):
        for t in range(k):
            counts[indices[r, t] + 1] += 1
    for c in range(columns):
        counts[c + 1] += counts[c]
    fill = counts[:-1].copy()
    rows = np.empty(n * k, dtype=np.int64)
    values = np.empty(n * k)
    for r in range(n):
        for t in range(k):
            c = indices[r, t]
            rows[fill[c]] = r
            values[fill[c]] = weights[r, t]
            fill[c] += 1
    for c in range(columns):
        for a in range(counts[c], counts[c + 1]):
            ra, va = rows[a], values[a]
            for b in range(counts[c], counts[c + 1]):
                gram[ra, rows[b]] += va * values[b]


@njit(cache=True)
def voxel_world_points(flat, sizes, jitter, index_to_world, origin, out):
    """World points (N, D) of flat voxel indices (x fastest), each plus a jitter (N, D) in voxels
    (a (1, 1) jitter array means none)."""
    dim = out.shape[1]
    jittered = jitter.shape[0] == flat.shape[0]
    index = np.zeros(3)
    for n in range(flat.shape[0]):
        rest = flat[n]
        for e in range(dim):
            index[e] = rest % sizes[e] + (jitter[n, e] if jittered else 0.0)
            rest //= sizes[e]
        for j in range(dim):
            acc = origin[j]
            for e in range(dim):
                acc += index_to_world[j, e] * index[e]
            out[n, j] = acc


@njit(cache=True)
def convolve_axis(data, kernel, axis, out):
    """out = data (C, Z, Y, X) convolved along ``axis`` (0 = Z, 1 = Y, 2 = X) with a centred
    odd-length kernel, edges replicated."""
    channels, nz, ny, nx = data.shape
    r = (kernel.shape[0] - 1) // 2
    out[:] = 0.0
    for c in range(channels):
        if axis == 2:
            for z in range(nz):
                for y in range(ny):
                    for x in range(nx):
                        acc = 0.0
                        for t in range(kernel.shape[0]):
                            acc += kernel[t] * data[c, z, y, min(max(x + t - r, 0), nx - 1)]
                        out[c, z, y, x] = acc
        elif axis == 1:
            for z in range(nz):
                for y in range(ny):
                    for t in range(kernel.shape[0]):
                        src, k = min(max(y + t - r, 0), ny - 1), kernel[t]
                        for x in range(nx):
                            out[c, z, y, x] += k * data[c, z, src, x]
        else:
            for z in range(nz):
                for t in range(kernel.shape[0]):
                    src, k = min(max(z + t - r, 0), nz - 1), kernel[t]
                    for y in range(ny):
                        for x in range(nx):
                            out[c, z, y, x] += k * data[c, src, y, x]
