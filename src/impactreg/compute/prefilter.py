"""The B-spline prefilter (interpolation coefficients under whole-sample mirror boundaries) as the
recursive filter of Unser et al. that ITK's BSplineDecompositionImageFilter runs: per pole z a causal
and an anticausal first-order recursion, a few operations per voxel and axis where the FIR twin
(``interpolation.bspline_coefficients`` on torch) pays one multiply-add per tap (29 taps for cubic
in float32). Computed in float64 on blocks of columns, whatever the array's type, and written back
in place; exact to the FIR's tolerance. Only ``compute.dispatch`` calls it."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# poles of the sampled B-spline kernel of each order (Unser 1999, Table I)
POLES = {
    2: (math.sqrt(8.0) - 3.0,),
    3: (math.sqrt(3.0) - 2.0,),
    4: (math.sqrt(664.0 - math.sqrt(438976.0)) + math.sqrt(304.0) - 19.0,
        math.sqrt(664.0 + math.sqrt(438976.0)) - math.sqrt(304.0) - 19.0),
    5: (math.sqrt(135.0 / 2.0 - math.sqrt(17745.0 / 4.0)) + math.sqrt(105.0 / 4.0) - 13.0 / 2.0,
        math.sqrt(135.0 / 2.0 + math.sqrt(17745.0 / 4.0)) - math.sqrt(105.0 / 4.0) - 13.0 / 2.0),
}
TOLERANCE = 1e-16  # the causal initialisation sums z^k c[k] until |z|^k falls below it (as the float64 FIR)
BLOCK = 256  # columns filtered together: a (n, BLOCK) float64 buffer per call


def poles_and_gain(order: int) -> tuple[np.ndarray, float]:
    poles = np.asarray(POLES[order], dtype=np.float64)
    return poles, float(np.prod((1.0 - poles) * (1.0 - 1.0 / poles)))


@njit(cache=True, inline="always")
def _filter_block(buf, n, width, poles, gain):
    """Filter the first ``width`` columns of buf (n, BLOCK) along its first axis."""
    for k in range(n):
        for j in range(width):
            buf[k, j] *= gain
    for z in poles:
        horizon = int(math.ceil(math.log(TOLERANCE) / math.log(abs(z))))
        if horizon < n:  # z^k has died out before the end of the line: the mirror's far half adds nothing
            for j in range(width):
                zk = z
                s = buf[0, j]
                for k in range(1, horizon):
                    s += zk * buf[k, j]
                    zk *= z
                buf[0, j] = s
        else:  # the whole mirrored line (period 2n - 2) in closed form
            zn = z ** (n - 1)
            for j in range(width):
                zk = z
                z2n = zn * zn / z
                s = buf[0, j] + zn * buf[n - 1, j]
                for k in range(1, n - 1):
                    s += (zk + z2n) * buf[k, j]
                    zk *= z
                    z2n /= z
                buf[0, j] = s / (1.0 - zn * zn)
        for k in range(1, n):
            for j in range(width):
                buf[k, j] += z * buf[k - 1, j]
        last = z / (z * z - 1.0)
        for j in range(width):
            buf[n - 1, j] = last * (buf[n - 1, j] + z * buf[n - 2, j])
        for k in range(n - 2, -1, -1):
            for j in range(width):
                buf[k, j] = z * (buf[k + 1, j] - buf[k, j])


@njit(cache=True)
def prefilter_axis(a, poles, gain):
    """Filter a (outer, n, inner) in place along its middle axis (n >= 2). The outer x inner lines are
    filtered BLOCK at a time, side by side in a float64 buffer (lines along the last axis too)."""
    outer, n, inner = a.shape
    lines = outer * inner
    buf = np.empty((n, BLOCK))
    row = np.empty(BLOCK, dtype=np.int64)
    col = np.empty(BLOCK, dtype=np.int64)
    for first in range(0, lines, BLOCK):
        width = min(BLOCK, lines - first)
        for j in range(width):
            row[j] = (first + j) // inner
            col[j] = (first + j) % inner
        for k in range(n):
            for j in range(width):
                buf[k, j] = a[row[j], k, col[j]]
        _filter_block(buf, n, width, poles, gain)
        for k in range(n):
            for j in range(width):
                a[row[j], k, col[j]] = buf[k, j]
