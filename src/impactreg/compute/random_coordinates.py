"""The draw of random coordinates over a box of voxels, compiled (numba): what
``compute.twins.box_coordinates`` computes with a dozen small tensor operations, in one loop,
to the same bits (float32 arithmetic where the twin's is float32, float64 where
``kernels.voxel_world_points``'s is; no fast-math, so nothing is contracted or reordered).
Only ``compute.dispatch`` calls it."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def box_coordinates(jitter, low, high, index_to_world, origin, out):
    """World points out (N, D) of the continuous indices low + jitter (high - low) (float32, per axis; jitter
    (N, D) uniform in [0, 1)), through the nearest voxel: index = round half to even, then the voxel's world
    point plus the offset, as kernels.voxel_world_points does with index_to_world (D, D) and origin (D,)."""
    n, dim = jitter.shape
    index = np.zeros(3)
    for p in range(n):
        for e in range(dim):
            position = low[e] + jitter[p, e] * (high[e] - low[e])
            nearest = np.float32(np.rint(position))
            index[e] = np.int64(nearest) + (position - nearest)
        for j in range(dim):
            acc = origin[j]
            for e in range(dim):
                acc += index_to_world[j, e] * index[e]
            out[p, j] = acc
