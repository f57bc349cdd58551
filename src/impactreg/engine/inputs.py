"""What the user gives, checked and converted: images, masks and the initial transform."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ImageError, InputError
from ..filters import resample_to_grid
from ..geometry import Grid
from ..image import Image, read_image
from ..interpolation import Interpolator
from ..sampling import ImageSampler
from ..transforms import Transform
from ..transforms.elastix_files import read_transform_file


def as_image(value, what: str) -> Image | None:
    if value is None or isinstance(value, Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_image(value)
    array = np.asarray(value)
    if array.ndim not in (2, 3):
        raise InputError(f"{what}: an array must be 2D or 3D, got shape {array.shape}")
    return Image.from_array(array.astype(np.float32))


def mask_tensor(mask: Image, grid: Grid, what: str) -> torch.Tensor:
    """A mask resampled (nearest neighbour) onto ``grid`` as a bool tensor in torch order."""
    on_grid = resample_to_grid(mask, grid, order=0)
    result = on_grid.data[0] > 0
    if not bool(result.any()):
        raise ImageError(f"{what}: the mask has no non-zero voxel inside the image; give a mask that overlaps the image")
    return result


def read_initial_transform(value, dim: int) -> Transform | None:
    if value is None or isinstance(value, Transform):
        return value
    tf = read_transform_file(value)
    if tf.transform.dim != dim:
        raise InputError(f"{value}: the initial transform is {tf.transform.dim}D but the images are {dim}D")
    return tf.transform


def check_overlap(fixed: Image, moving: Image, transform: Transform | None) -> None:
    pts = ImageSampler("Grid", fixed.grid, grid_spacing=(fixed.grid.sample_step(4096),), dtype=torch.float64).sample()
    with torch.no_grad():
        mapped = transform.map(pts) if transform is not None else pts
    inside = Interpolator(moving, order=0, dtype=torch.float64).inside(mapped)
    if not bool(inside.any()):
        raise ImageError("the fixed and moving images do not overlap in physical space; check their origins and "
                         "directions, or give an initial transform (-t0) or (AutomaticTransformInitialization \"true\")")
