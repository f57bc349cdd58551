"""What the user gives, checked and converted: images, masks, landmarks and the initial transform."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ImageError, InputError
from ..filters import resample_to_grid
from ..geometry import Grid
from ..image import Image, read_image
from ..interpolation import Interpolator
from ..points import PointSet, read_points
from ..sampling import ImageSampler
from ..transforms import Transform
from ..transforms.elastix_files import read_transform_file


def as_image(value, what: str, required: bool = False) -> Image | None:
    """A path, Image or 2D/3D numeric array as an Image with finite voxels; None only when not ``required``."""
    if value is None:
        if required:
            raise InputError(f"{what}: none given; pass a file path, an impactreg Image or a 2D/3D numeric array")
        return None
    if isinstance(value, Image):
        image = value
    elif isinstance(value, (str, os.PathLike)):
        image, what = read_image(value), f"{what} {value}"
    else:
        image = Image.from_array(_numeric_array(value, what).astype(np.float32))
    check_finite(image, what)
    return image


def _numeric_array(value, what: str) -> np.ndarray:
    try:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        if array is None or not isinstance(value, (np.ndarray, list, tuple)):
            kind = f"got {type(value).__name__}"
        else:
            kind = "got an array of " + {"U": "strings", "S": "bytes", "O": "Python objects"}.get(array.dtype.kind,
                                                                                            str(array.dtype))
        raise InputError(f"{what}: {kind}, not an image; pass a file path, an impactreg Image or a 2D/3D numeric array")
    if array.ndim not in (2, 3):
        raise InputError(f"{what}: an array must be 2D or 3D, got shape {array.shape}")
    return array


def without_direction(image: Image | None) -> Image | None:
    """The image with an identity direction (origin, spacing and voxels kept): what elastix registers and
    transformix resamples when (UseDirectionCosines "false")."""
    if image is None:
        return None
    grid = image.grid
    return Image(image.data, Grid(grid.size, grid.spacing, grid.origin, np.eye(grid.dim)), image.pixel_type)


def with_direction(image: Image, direction: np.ndarray) -> Image:
    """The image with ``direction`` in place of its own (how elastix writes results of a UseDirectionCosines
    "false" run: on the original fixed image's direction)."""
    grid = image.grid
    return Image(image.data, Grid(grid.size, grid.spacing, grid.origin, direction), image.pixel_type)


def check_finite(image: Image, what: str) -> None:
    """Refuse NaN and infinite voxels: they would reach the metric as samples outside the image."""
    # one fast reduction first: a finite sum means every voxel is finite (an overflowing one is counted below)
    if image.data.is_floating_point() and not bool(torch.isfinite(image.data.sum())):
        bad = int((~torch.isfinite(image.data)).sum())
        if bad:
            raise ImageError(f"{what}: {bad} voxel(s) are NaN or infinite; replace them (e.g. with the background "
                             f"value) before registering")


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


def landmarks(value, image: Image, what: str) -> torch.Tensor | None:
    """A point file (elastix point/index, .csv, .fcsv), PointSet or (N, D) array in mm as world points
    (N, D) float64; indices are converted with ``image``'s grid, as elastix does for -fp/-mp."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = read_points(value)
    if isinstance(value, PointSet):
        world = value.world(image.grid)
    else:
        world = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    if world.ndim != 2 or world.shape[1] != image.dim or len(world) == 0:
        raise InputError(f"{what}: give {image.dim}D points, one per row (got shape {tuple(world.shape)}) for "
                         f"{image.dim}D images")
    if not np.all(np.isfinite(world)):
        raise InputError(f"{what}: the points must be finite numbers")
    return torch.from_numpy(np.ascontiguousarray(world))


def corresponding_points(fixed_points, moving_points, fixed: Image, moving: Image):
    """(fixed landmarks, moving landmarks), each (N, D) float64 in mm or None; the counts must match."""
    fixed_world = landmarks(fixed_points, fixed, f"fixed points {fixed_points}" if isinstance(fixed_points, (str, os.PathLike))
                            else "fixed points")
    moving_world = landmarks(moving_points, moving, f"moving points {moving_points}"
                             if isinstance(moving_points, (str, os.PathLike)) else "moving points")
    if fixed_world is not None and moving_world is not None and len(fixed_world) != len(moving_world):
        raise InputError(f"the fixed points ({len(fixed_world)}) and the moving points ({len(moving_world)}) do not "
                         f"correspond: give the same number of points in both files, in the same order")
    return fixed_world, moving_world
