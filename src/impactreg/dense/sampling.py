"""Sampling channel-first arrays on grids at world points, differentiably (torch grid_sample, linear,
the index clamped to the array as ITK's linear interpolation does), and grid-space helpers.

Arrays are (C, [Z,] Y, X); points (N, D) in world mm, x-y-z; index offsets (D, [Z,] Y, X) x-y-z.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import Grid


def normalised(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Continuous x-y-z indices (..., D) as grid_sample coordinates (align_corners=True)."""
    size = torch.tensor(list(reversed(shape)), dtype=index.dtype, device=index.device)
    return 2 * index / (size - 1).clamp_min(1) - 1


def sample_at_index(array: torch.Tensor, index: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """array (C, *shape) at continuous indices (N, D) -> (C, N); outside: the nearest border value."""
    dim = index.shape[-1]
    coords = normalised(index.to(array.dtype), tuple(array.shape[1:])).reshape(1, *([1] * (dim - 1)), -1, dim)
    out = F.grid_sample(array[None], coords, mode=mode, padding_mode="border", align_corners=True)
    return out.reshape(array.shape[0], -1)


def inside_index(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N,) bool: indices within the voxel centres' extent [0, n - 1] on every axis (no extrapolation)."""
    upper = torch.tensor(list(reversed(shape)), dtype=index.dtype, device=index.device) - 1
    return ((index >= -1e-6) & (index <= upper + 1e-6)).all(dim=-1)


def index_offsets_to_world(grid: Grid, offsets: torch.Tensor) -> torch.Tensor:
    """Index-unit offsets (D, *shape) x-y-z -> world mm offsets (D, *shape)."""
    matrix = torch.tensor(grid.index_to_world_matrix, dtype=offsets.dtype, device=offsets.device)
    return torch.einsum("ij,j...->i...", matrix, offsets)


def world_offsets_to_index(grid: Grid, offsets: torch.Tensor) -> torch.Tensor:
    matrix = torch.tensor(grid.world_to_index_matrix, dtype=offsets.dtype, device=offsets.device)
    return torch.einsum("ij,j...->i...", matrix, offsets)


def box_smooth(field: torch.Tensor, passes: int) -> torch.Tensor:
    """``passes`` 3-voxel box filters along every axis of (C, *shape) (border voxels averaged over the voxels
    inside), one axis at a time: the 3x3x3 box is the product of three 1D boxes."""
    dim = field.dim() - 1
    pool = F.avg_pool3d if dim == 3 else F.avg_pool2d
    for _ in range(passes):
        for axis in range(dim):
            kernel = tuple(3 if a == axis else 1 for a in range(dim))
            padding = tuple(1 if a == axis else 0 for a in range(dim))
            field = pool(field[None], kernel, stride=1, padding=padding, count_include_pad=False)[0]
    return field


def covering_grid(points: np.ndarray, spacing, direction: np.ndarray, margin: int = 2) -> Grid:
    """The grid with ``direction`` and ``spacing`` (mm) whose voxel centres span ``points`` (M, D) with
    ``margin`` voxels to spare on every side."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (points.shape[1],))
    local = points @ np.linalg.inv(direction).T  # coordinates along the grid axes
    lo, hi = local.min(axis=0) - margin * spacing, local.max(axis=0) + margin * spacing
    size = np.maximum(2, np.ceil((hi - lo) / spacing).astype(int) + 1)
    centre = (lo + hi) / 2
    start = centre - (size - 1) * spacing / 2
    return Grid(tuple(int(s) for s in size), spacing, direction @ start, direction)
