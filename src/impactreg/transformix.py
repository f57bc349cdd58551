"""What elastix's transformix does: apply a transform to images and points, and write the
deformation field and the Jacobian determinant, on the output grid of a TransformParameters file.

Everything is evaluated in chunks of voxels so that memory stays bounded on large grids.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .files import atomic_write_text
from .geometry import Grid
from .image import Image, image_format, read_image, write_image
from .interpolation import Interpolator
from .points import PointSet, format_output_points, read_points
from .transforms import Transform
from .transforms.elastix_files import TransformFile, read_transform_file

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


@dataclass
class TransformixResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    image: Image | None = None
    points: np.ndarray | None = None


def transform(transform_file: str | os.PathLike | TransformFile, out_dir: str | os.PathLike | None = None,
              image: str | os.PathLike | Image | None = None, points: str | os.PathLike | PointSet | None = None,
              deformation: bool = False, jacobian: bool = False, jacobian_matrix: bool = False,
              labels: bool = False, device=None) -> TransformixResult:
    """Apply an elastix TransformParameters file as transformix does.

    ``image``: resampled on the file's output grid (``labels=True``: nearest neighbour, the
    image's own pixel type). ``points``: a point file or PointSet, mapped fixed -> moving.
    ``deformation`` / ``jacobian`` / ``jacobian_matrix``: the ``-def all``, ``-jac all`` and
    ``-jacmat all`` images. Every input is read and checked before anything is written; with
    ``out_dir`` the outputs are written there under transformix's names.
    """
    tf = transform_file if isinstance(transform_file, TransformFile) else read_transform_file(transform_file)
    dim = tf.transform.dim
    moving = read_image(image) if isinstance(image, (str, os.PathLike)) else image
    if moving is not None and moving.dim != dim:
        raise InputError(f"{image}: the image is {moving.dim}D but the transform file {tf.path} is {dim}D")
    point_set = read_points(points) if isinstance(points, (str, os.PathLike)) else points
    if point_set is not None and point_set.dim != dim:
        raise InputError(f"{points}: the points are {point_set.dim}D but the transform file {tf.path} is {dim}D")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"{out_dir}: the output folder exists as a file; give a folder")

    ext = tf.result_format
    try:
        image_format(f"result.{ext}")
    except InputError:
        raise InputError(f"{tf.path}: ResultImageFormat {ext!r} is not supported; use mha, mhd, nii, nii.gz or nrrd") from None

    result = TransformixResult()
    staged: list[tuple[str, object]] = []
    if moving is not None:
        order = 0 if labels else tf.interpolation_order
        result.image = resample(moving, tf.transform, tf.grid, order, tf.default_pixel_value, device)
        pixel_type = moving.pixel_type if labels else tf.result_pixel_type
        staged.append((f"result.{ext}", lambda p, im=result.image, pt=pixel_type: write_image(im, p, pt, tf.compress)))
    if point_set is not None:
        world_in = point_set.world(tf.grid)
        result.points = map_points(tf.transform, world_in)
        text = format_output_points(point_set, world_in, result.points, tf.grid,
                                    moving.grid if moving is not None else None)
        staged.append(("outputpoints.txt", lambda p, t=text: atomic_write_text(p, t)))
    if deformation:
        field_ = deformation_field(tf.transform, tf.grid, device)
        staged.append((f"deformationField.{ext}", lambda p, im=field_: write_image(im, p, "float32", tf.compress)))
    if jacobian:
        det = jacobian_determinant(tf.transform, tf.grid, device)
        staged.append((f"spatialJacobian.{ext}", lambda p, im=det: write_image(im, p, "float32", tf.compress)))
    if jacobian_matrix:
        mat = spatial_jacobian(tf.transform, tf.grid, device)
        staged.append((f"fullSpatialJacobian.{ext}", lambda p, im=mat: write_image(im, p, "float32", tf.compress)))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, write in staged:
            path = out / name
            write(path)
            result.outputs[name] = path
    return result
