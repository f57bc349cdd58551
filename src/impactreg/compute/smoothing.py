"""Separable smoothing read at every step-th voxel along an axis (numba): ``kernels.convolve_axis``
followed by a strided selection along that axis, without computing the voxels the selection drops
(a smoothing pyramid's shrink keeps one voxel in ``step``). The same sums in the same order and
types as ``kernels.convolve_axis``, so the voxels kept are bit for bit the same. Only
``compute.dispatch`` calls it."""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def convolve_axis_strided(data, kernel, axis, start, step, out):
    """out = data (C, Z, Y, X) convolved along ``axis`` (0 = Z, 1 = Y, 2 = X) with a centred odd-length kernel,
    edges replicated, at indices start + step * i (i < out's size) along that axis."""
    channels, nz, ny, nx = data.shape
    r = (kernel.shape[0] - 1) // 2
    out[:] = 0.0
    for c in range(channels):
        if axis == 2:
            for z in range(nz):
                for y in range(ny):
                    for i in range(out.shape[3]):
                        x = start + step * i
                        acc = 0.0
                        for t in range(kernel.shape[0]):
                            acc += kernel[t] * data[c, z, y, min(max(x + t - r, 0), nx - 1)]
                        out[c, z, y, i] = acc
        elif axis == 1:
            for z in range(nz):
                for i in range(out.shape[2]):
                    y = start + step * i
                    for t in range(kernel.shape[0]):
                        src, k = min(max(y + t - r, 0), ny - 1), kernel[t]
                        for x in range(nx):
                            out[c, z, i, x] += k * data[c, z, src, x]
        else:
            for i in range(out.shape[1]):
                z = start + step * i
                for t in range(kernel.shape[0]):
                    src, k = min(max(z + t - r, 0), nz - 1), kernel[t]
                    for y in range(ny):
                        for x in range(nx):
                            out[c, i, y, x] += k * data[c, src, y, x]
