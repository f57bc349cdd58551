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


def _chunks(grid: Grid, device, chunk: int = CHUNK):
    """World points of the grid's voxels in torch memory order, chunk by chunk (float64)."""
    index = grid.voxel_indices(dtype=torch.float64, device=device)
    for start in range(0, index.shape[0], chunk):
        yield grid.index_to_world(index[start:start + chunk])


def resample(moving: Image, transform: Transform, grid: Grid, order: int = 3, default: float = 0.0,
             device=None) -> Image:
    """moving(T(x)) for every voxel x of ``grid``: the moving image warped into fixed space."""
    device = torch.device(device or "cpu")
    if moving.dim != transform.dim:
        raise InputError(f"the image is {moving.dim}D but the transform is {transform.dim}D")
    transform = transform.to(device)
    interp = Interpolator(moving, order=order, default=default, device=device, dtype=torch.float64)
    parts = []
    with torch.no_grad():
        for pts in _chunks(grid, device):
            parts.append(interp(transform.map(pts)).values)
    values = torch.cat(parts).T.reshape(moving.channels, *grid.shape)
    return Image(values.to(torch.float32).cpu(), grid, moving.pixel_type)


def deformation_field(transform: Transform, grid: Grid, device=None) -> Image:
    """T(x) - x in mm (world axes, fixed -> moving) as a D-component image on ``grid``."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    with torch.no_grad():
        parts = [transform.map(pts) - pts for pts in _chunks(grid, device)]
    field_ = torch.cat(parts).T.reshape(grid.dim, *grid.shape)
    return Image(field_.to(torch.float32).cpu(), grid, "float32")


def jacobian_determinant(transform: Transform, grid: Grid, device=None) -> Image:
    """det(dT/dx) on ``grid``: < 1 where the transform compresses, <= 0 where it folds."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    with torch.no_grad():
        parts = [transform.jacobian_determinant(pts) for pts in _chunks(grid, device)]
    return Image(torch.cat(parts).reshape(1, *grid.shape).to(torch.float32).cpu(), grid, "float32")


def spatial_jacobian(transform: Transform, grid: Grid, device=None) -> Image:
    """The full dT_i/dx_j on ``grid``, D*D components, row by row."""
    device = torch.device(device or "cpu")
    transform = transform.to(device)
    with torch.no_grad():
        parts = [transform.spatial_jacobian(pts).reshape(-1, grid.dim ** 2) for pts in _chunks(grid, device)]
    return Image(torch.cat(parts).T.reshape(grid.dim ** 2, *grid.shape).to(torch.float32).cpu(), grid, "float32")


def map_points(transform: Transform, points: np.ndarray) -> np.ndarray:
    """Fixed-space world points (N, D) -> moving-space world points (N, D), float64."""
    with torch.no_grad():
        return transform.map(torch.as_tensor(np.asarray(points, dtype=np.float64))).cpu().numpy()
