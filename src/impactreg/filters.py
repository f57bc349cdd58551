"""Image filters the engine needs: Gaussian smoothing in mm, resampling onto a grid, erosion."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import compute
from .geometry import Grid
from .image import Image
from .interpolation import Interpolator


def gaussian_kernel(sigma_vox: float, dtype=torch.float64, device=None) -> torch.Tensor:
    radius = max(1, int(math.ceil(4.0 * sigma_vox)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    return k / k.sum()


def gaussian_smooth(image: Image, sigma_mm) -> Image:
    """Separable Gaussian smoothing with sigma in mm per image axis (x, y[, z]); edges replicated."""
    sigma_mm = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (image.dim,))
    data = image.data.to(torch.float32)
    for axis in range(image.dim):  # axis in x-y-z order
        sigma_vox = float(sigma_mm[axis] / image.grid.spacing[axis])
        if sigma_vox <= 0:
            continue
        data = compute.convolve_axis(data, gaussian_kernel(sigma_vox, torch.float32, data.device), axis)
    return Image(data.contiguous(), image.grid, image.pixel_type)


def resample_to_grid(image: Image, grid: Grid, order: int = 1, default: float = 0.0,
                     dtype: torch.dtype = torch.float64) -> Image:
    """The image sampled at every voxel of ``grid`` (identity transform), computed in ``dtype``."""
    if image.grid.same_as(grid, tol=1e-9):
        return image
    interp = Interpolator(image, order=order, default=default, dtype=dtype)
    values = interp(grid.voxel_points(dtype=dtype, device=image.data.device)).values
    return Image(values.T.reshape(image.channels, *grid.shape).to(torch.float32), grid, image.pixel_type)


def erode(mask: torch.Tensor, radius) -> torch.Tensor:
    """Binary erosion of a (Z, Y, X) or (Y, X) bool mask by a box of ``radius`` voxels per torch axis."""
    radius = [int(r) for r in radius]
    if not any(radius):
        return mask
    x = (~mask).to(torch.float32)[None, None]
    kernel = [2 * r + 1 for r in radius]
    pad = [p for r in reversed(radius) for p in (r, r)]
    x = F.pad(x, pad, mode="constant", value=1.0)
    pool = F.max_pool3d if mask.dim() == 3 else F.max_pool2d
    return pool(x, kernel, stride=1)[0, 0] < 0.5
