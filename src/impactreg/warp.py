"""Warping on a grid: images resampled through a transform, displacement fields, Jacobian
determinants and spatial Jacobians, and point mapping. Everything is evaluated in chunks of voxels
so that memory stays bounded on large grids.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .geometry import Grid
from .image import Image
from .interpolation import Interpolator
from .transforms import Transform

CHUNK = 1 << 17


def _chunks(grid: Grid, device, chunk: int | None = None):
    """(start, stop, world points (stop - start, D) float64) of the grid's voxels in torch memory order,
    chunk by chunk (CHUNK voxels): no list of every voxel is made."""
    chunk = chunk or CHUNK
    for start in range(0, grid.num_voxels, chunk):
        stop = min(grid.num_voxels, start + chunk)
        flat = torch.arange(start, stop, device=device)
        yield start, stop, grid.index_to_world(grid.unravel(flat).to(torch.float64))


def _on_grid(grid: Grid, components: int, device, evaluate) -> torch.Tensor:
    """(components, *grid.shape) float32 on the CPU: ``evaluate(points)`` (n, components) chunk by chunk."""
    out = torch.empty((components, grid.num_voxels), dtype=torch.float32)
    with torch.no_grad():
        for start, stop, pts in _chunks(grid, device):
            out[:, start:stop] = evaluate(pts).reshape(stop - start, components).T.to(torch.float32).cpu()
    return out.reshape(components, *grid.shape)


def resample(moving: Image, transform: Transform, grid: Grid, order: int = 3, default: float = 0.0,
             device=None) -> Image:
    """moving(T(x)) for every voxel x of ``grid``: the moving image warped into fixed space."""
    device = torch.device(device or "cpu")
    if moving.dim != transform.dim:
        raise InputError(f"the image is {moving.dim}D but the transform is {transform.dim}D")
    transform = transform.to(device)
    interp = Interpolator(moving, order=order, default=default, device=device, dtype=torch.float64)
    values = _on_grid(grid, moving.channels, device, lambda pts: interp(transform.map(pts)).values)
    return Image(values, grid, moving.pixel_type)


def deformation_field(transform: Transform, grid: Grid, device=None) -> Image:
    """T(x) - x in mm (world axes, fixed -> moving) as a D-component image on ``grid``."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    return Image(_on_grid(grid, grid.dim, device, lambda pts: transform.map(pts) - pts), grid, "float32")


def jacobian_determinant(transform: Transform, grid: Grid, device=None) -> Image:
    """det(dT/dx) on ``grid``: < 1 where the transform compresses, <= 0 where it folds."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    return Image(_on_grid(grid, 1, device, transform.jacobian_determinant), grid, "float32")


def spatial_jacobian(transform: Transform, grid: Grid, device=None) -> Image:
    """The full dT_i/dx_j on ``grid``, D*D components, row by row."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    return Image(_on_grid(grid, grid.dim ** 2, device, transform.spatial_jacobian), grid, "float32")


def map_points(transform: Transform, points: np.ndarray) -> np.ndarray:
    """Fixed-space world points (N, D) -> moving-space world points (N, D), float64."""
    with torch.no_grad():
        return transform.map(torch.as_tensor(np.asarray(points, dtype=np.float64))).cpu().numpy()
