"""Single-channel B-spline sampling at one point (orders 1 and 3, value and d value / d index) for the
compiled kernels to call inside their loops, and the values of an image at many points with it
(``values``): ``kernels.sample_image`` for one channel, in a third of its time (no per-tap arrays,
no channel loop). Both compute in float64 what ``kernels.sample_image`` computes, to rounding.
Only ``compute`` calls them."""
from __future__ import annotations

import math

from numba import njit

from .kernels import FAST, _cubic, _cubic_derivative, _mirror

LINEAR_ORDERS = (1, 3)  # the orders sample_point interpolates


@njit(cache=True, inline="always")
def _linear_axis(u, n, mirror):
    base = math.floor(u)
    i0 = int(base)
    f = u - base
    if i0 >= 0 and i0 + 1 < n:
        return i0, i0 + 1, 1.0 - f, f
    if mirror:
        return _mirror(i0, n), _mirror(i0 + 1, n), 1.0 - f, f
    return min(max(i0, 0), n - 1), min(max(i0 + 1, 0), n - 1), 1.0 - f, f


@njit(cache=True, inline="always")
def _cubic_axis(u, n):
    start = math.floor(u - 1.0)
    first = int(start)
    f = u - start - 1.0
    if first >= 0 and first + 3 < n:
        idx = (first, first + 1, first + 2, first + 3)
    else:
        idx = (_mirror(first, n), _mirror(first + 1, n), _mirror(first + 2, n), _mirror(first + 3, n))
    return idx, _cubic(f), _cubic_derivative(f)


@njit(cache=True, fastmath=FAST)
def sample_point(coef, order, mirror, dim, u0, u1, u2):
    """Value and d value / d index (u0, u1, u2) of single-channel coefficients (Z, Y, X) of ``order`` 1 or 3
    at the continuous index (u0, u1[, u2]) (inside the image; u2 ignored in 2D). Order 1 mirrors neighbours
    beyond the outermost voxel centres when ``mirror``, else clamps them; order 3 mirrors."""
    nz, ny, nx = coef.shape
    if order == 1:
        x0, x1, wx0, wx1 = _linear_axis(u0, nx, mirror)
        y0, y1, wy0, wy1 = _linear_axis(u1, ny, mirror)
        z0, z1, wz0, wz1 = (0, 0, 1.0, 0.0) if dim == 2 else _linear_axis(u2, nz, mirror)
        a00, a01, a10, a11 = coef[z0, y0, x0], coef[z0, y0, x1], coef[z0, y1, x0], coef[z0, y1, x1]
        r0 = wx0 * a00 + wx1 * a01
        r1 = wx0 * a10 + wx1 * a11
        v0 = wy0 * r0 + wy1 * r1
        g0 = wy0 * (a01 - a00) + wy1 * (a11 - a10)
        g1 = r1 - r0
        if dim == 2:
            return v0, g0, g1, 0.0
        b00, b01, b10, b11 = coef[z1, y0, x0], coef[z1, y0, x1], coef[z1, y1, x0], coef[z1, y1, x1]
        s0 = wx0 * b00 + wx1 * b01
        s1 = wx0 * b10 + wx1 * b11
        v1 = wy0 * s0 + wy1 * s1
        h0 = wy0 * (b01 - b00) + wy1 * (b11 - b10)
        return wz0 * v0 + wz1 * v1, wz0 * g0 + wz1 * h0, wz0 * g1 + wz1 * (s1 - s0), v1 - v0
    ix, wx, dx = _cubic_axis(u0, nx)
    iy, wy, dy = _cubic_axis(u1, ny)
    taps_z = 1
    iz, wz, dz = (0, 0, 0, 0), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)
    if dim == 3:
        iz, wz, dz = _cubic_axis(u2, nz)
        taps_z = 4
    value = 0.0
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    for kz in range(taps_z):
        plane_v = 0.0
        plane_x = 0.0
        plane_y = 0.0
        for ky in range(4):
            row_v = 0.0
            row_x = 0.0
            for kx in range(4):
                c = coef[iz[kz], iy[ky], ix[kx]]
                row_v += wx[kx] * c
                row_x += dx[kx] * c
            plane_v += wy[ky] * row_v
            plane_x += wy[ky] * row_x
            plane_y += dy[ky] * row_v
        value += wz[kz] * plane_v
        g0 += wz[kz] * plane_x
        g1 += wz[kz] * plane_y
        g2 += dz[kz] * plane_v
    return value, g0, g1, g2




@njit(cache=True, fastmath=FAST)
def values(coef, order, mirror, w2i, origin, points, default, out, inside):
    """out (N,) the values of single-channel coefficients (Z, Y, X) at world points (N, D) (``default`` outside,
    ``inside`` (N,) False there), through world-to-index w2i (D, D) and origin (D,); order 1 or 3."""
    n_points, dim = points.shape
    nz, ny, nx = coef.shape
    for p in range(n_points):
        x0 = points[p, 0] - origin[0]
        x1 = points[p, 1] - origin[1]
        x2 = points[p, dim - 1] - origin[dim - 1]
        if dim == 2:
            u0 = w2i[0, 0] * x0 + w2i[0, 1] * x1
            u1 = w2i[1, 0] * x0 + w2i[1, 1] * x1
            u2 = 0.0
            ok = u0 >= -0.5 and u0 < nx - 0.5 and u1 >= -0.5 and u1 < ny - 0.5
        else:
            u0 = w2i[0, 0] * x0 + w2i[0, 1] * x1 + w2i[0, 2] * x2
            u1 = w2i[1, 0] * x0 + w2i[1, 1] * x1 + w2i[1, 2] * x2
            u2 = w2i[2, 0] * x0 + w2i[2, 1] * x1 + w2i[2, 2] * x2
            ok = u0 >= -0.5 and u0 < nx - 0.5 and u1 >= -0.5 and u1 < ny - 0.5 and u2 >= -0.5 and u2 < nz - 0.5
        inside[p] = ok
        out[p] = sample_point(coef, order, mirror, dim, u0, u1, u2)[0] if ok else default
