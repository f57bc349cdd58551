"""The bending energy of a B-spline transform at sample points as one compiled loop (numba): the
compiled side of ``compute.dispatch.bending_energy`` (its torch twin: ``compute.twins.bending_energy``).

Per point x with index-space coordinates u = W (x - origin) and a (D, D) matrix A (W, times the
initial transform's Jacobian when the B-spline is composed after one), the world Hessian of output
axis d is H_d = A^T H_u,d A, with H_u,d[e, f] = sum_k c_d[k] B_ef(u - k) (B_ef the tensor product
of the per-axis basis functions, differentiated once along e and once along f). The value is
sum_d ||H_d||^2; its gradient on c_d[k] is sum_ef (A 2 H_d A^T)[e, f] B_ef(u - k), added times
``scale`` / 2 (scale = 2 / N: the gradient of the mean over N points). The second-derivative
weights of each point are computed inline (float64).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels import MAX_TAPS, ORDERED, _cubic, _cubic_derivative, _kernel, _kernel_derivative


@njit(cache=True, inline="always")
def _second_derivative(t, order):
    if order < 2:
        return 0.0
    return _kernel(t + 1.0, order - 2) - 2.0 * _kernel(t, order - 2) + _kernel(t - 1.0, order - 2)


@njit(cache=True, fastmath=ORDERED)
def bending_energy(params, sizes, order, w2i, origin, points, a, scale, grad):
    """Sum over points (N, D) of sum_d ||H_d||^2 (returned) for the B-spline with parameters
    (D * K,) on control grid ``sizes`` (x, y[, z]); grad (D * K,) += its gradient times ``scale`` / 2
    (see the module). ``a`` is (N, D, D), or (1, D, D) for one matrix for every point. A point whose
    support leaves the control grid contributes nothing.

    The tap sums are separable: rows along x first, then y, then z, for the six (three in 2D)
    index-space second derivatives at once; a 2D grid is a 3D one with a single z tap of weight 1."""
    n_points, dim = points.shape
    ncoef = 1
    for e in range(dim):
        ncoef *= sizes[e]
    taps = order + 1
    taps_z = taps if dim == 3 else 1
    sx = sizes[0]
    sxy = sizes[0] * sizes[1]
    b = np.zeros((3, 3, MAX_TAPS))  # axis, derivative order, tap
    b[2, 0, 0] = 1.0
    hu = np.zeros((3, 3, 3))  # output axis, index-space Hessian
    h = np.zeros((3, 3))
    t1 = np.zeros((3, 3))
    g = np.zeros((3, 3, 3))
    value = 0.0
    for p in range(n_points):
        first = 0
        stride = 1
        for e in range(dim):
            ue = 0.0
            for j in range(dim):
                ue += w2i[e, j] * (points[p, j] - origin[j])
            start = math.floor(ue - (order - 1) / 2.0)
            if start < 0 or start > sizes[e] - 1 - order:
                first = -1
                break
            if order == 3:
                f = ue - start - 1.0
                b[e, 0, 0], b[e, 0, 1], b[e, 0, 2], b[e, 0, 3] = _cubic(f)
                b[e, 1, 0], b[e, 1, 1], b[e, 1, 2], b[e, 1, 3] = _cubic_derivative(f)
                gf = 1.0 - f
                b[e, 2, 0], b[e, 2, 1], b[e, 2, 2], b[e, 2, 3] = gf, 3.0 * f - 2.0, 3.0 * gf - 2.0, f
            else:
                for k in range(taps):
                    t = ue - (start + k)
                    b[e, 0, k] = _kernel(t, order)
                    b[e, 1, k] = _kernel_derivative(t, order)
                    b[e, 2, k] = _second_derivative(t, order)
            first += int(start) * stride
            stride *= sizes[e]
        if first < 0:
            continue
        for d in range(dim):
            base = d * ncoef + first
            hxx = hyy = hzz = hxy = hxz = hyz = 0.0
            for kz in range(taps_z):
                y00 = y10 = y01 = y20 = y11 = y02 = 0.0
                for ky in range(taps):
                    row = base + kz * sxy + ky * sx
                    x0 = x1 = x2 = 0.0
                    for kx in range(taps):
                        c = params[row + kx]
                        x0 += c * b[0, 0, kx]
                        x1 += c * b[0, 1, kx]
                        x2 += c * b[0, 2, kx]
                    by0, by1, by2 = b[1, 0, ky], b[1, 1, ky], b[1, 2, ky]
                    y00 += by0 * x0
                    y10 += by0 * x1
                    y01 += by1 * x0
                    y20 += by0 * x2
                    y11 += by1 * x1
                    y02 += by2 * x0
                bz0, bz1, bz2 = b[2, 0, kz], b[2, 1, kz], b[2, 2, kz]
                hxx += bz0 * y20
                hyy += bz0 * y02
                hzz += bz2 * y00
                hxy += bz0 * y11
                hxz += bz1 * y10
                hyz += bz1 * y01
            hu[d, 0, 0], hu[d, 1, 1], hu[d, 0, 1], hu[d, 1, 0] = hxx, hyy, hxy, hxy
            if dim == 3:
                hu[d, 2, 2], hu[d, 0, 2], hu[d, 2, 0], hu[d, 1, 2], hu[d, 2, 1] = hzz, hxz, hxz, hyz, hyz
        pa = 0 if a.shape[0] == 1 else p
        for d in range(dim):
            for e in range(dim):  # t1 = M A, h = A^T M A
                for j in range(dim):
                    acc = 0.0
                    for f in range(dim):
                        acc += hu[d, e, f] * a[pa, f, j]
                    t1[e, j] = acc
            for i in range(dim):
                for j in range(dim):
                    acc = 0.0
                    for e in range(dim):
                        acc += a[pa, e, i] * t1[e, j]
                    h[i, j] = acc
                    value += acc * acc
            for i in range(dim):  # t1 = H A^T, g = scale A H A^T
                for f in range(dim):
                    acc = 0.0
                    for j in range(dim):
                        acc += h[i, j] * a[pa, f, j]
                    t1[i, f] = acc
            for e in range(dim):
                for f in range(dim):
                    acc = 0.0
                    for i in range(dim):
                        acc += a[pa, e, i] * t1[i, f]
                    g[d, e, f] = scale * acc
        for d in range(dim):
            base = d * ncoef + first
            gxx, gyy, gxy = g[d, 0, 0], g[d, 1, 1], g[d, 0, 1] + g[d, 1, 0]
            gzz = gxz = gyz = 0.0
            if dim == 3:
                gzz, gxz, gyz = g[d, 2, 2], g[d, 0, 2] + g[d, 2, 0], g[d, 1, 2] + g[d, 2, 1]
            for kz in range(taps_z):
                bz0, bz1, bz2 = b[2, 0, kz], b[2, 1, kz], b[2, 2, kz]
                y20 = gxx * bz0
                y02 = gyy * bz0
                y00 = gzz * bz2
                y11 = gxy * bz0
                y10 = gxz * bz1
                y01 = gyz * bz1
                if dim == 2:
                    y00 = 0.0
                    y10 = 0.0
                    y01 = 0.0
                for ky in range(taps):
                    by0, by1, by2 = b[1, 0, ky], b[1, 1, ky], b[1, 2, ky]
                    x0 = y02 * by2 + y00 * by0 + y01 * by1
                    x1 = y11 * by1 + y10 * by0
                    x2 = y20 * by0
                    row = base + kz * sxy + ky * sx
                    for kx in range(taps):
                        grad[row + kx] += x0 * b[0, 0, kx] + x1 * b[0, 1, kx] + x2 * b[0, 2, kx]
    return value
