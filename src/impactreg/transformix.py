"""What elastix's transformix does: apply a transform to images and points, and write the
deformation field and the Jacobian determinant, on the output grid of a TransformParameters file
(the warping itself is ``warp.py``'s).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .devices import torch_device
from .engine.inputs import with_direction, without_direction
from .engine.outputs import StagedFolder
from .errors import InputError
from .files import atomic_write_text
from .image import Image, image_format, read_image, write_image
from .points import PointSet, format_output_points, read_points
from .transforms.elastix_files import TransformFile, read_transform_file
from .warp import deformation_field, jacobian_determinant, map_points, resample, spatial_jacobian


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
    device = torch_device(device)
    tf = transform_file if isinstance(transform_file, TransformFile) else read_transform_file(transform_file)
    dim = tf.transform.dim
    moving = read_image(image) if isinstance(image, (str, os.PathLike)) else image
    if moving is not None and moving.dim != dim:
        raise InputError(f"{image}: the image is {moving.dim}D but the transform file {tf.path} is {dim}D")
    point_set = read_points(points) if isinstance(points, (str, os.PathLike)) else points
    if point_set is not None and point_set.dim != dim:
        raise InputError(f"{points}: the points are {point_set.dim}D but the transform file {tf.path} is {dim}D")

    ext = tf.result_format
    try:
        image_format(f"result.{ext}")
    except InputError:
        raise InputError(f"{tf.path}: ResultImageFormat {ext!r} is not an image format ITK writes; use mha, mhd, "
                         f"nii, nii.gz, nrrd, gipl, hdr, vtk, tif or dcm") from None

    names = [name for name, wanted in ((f"result.{ext}", moving is not None), ("outputpoints.txt", point_set is not None),
                                       (f"deformationField.{ext}", deformation), (f"spatialJacobian.{ext}", jacobian),
                                       (f"fullSpatialJacobian.{ext}", jacobian_matrix)) if wanted]
    inputs = {"transform file": tf.chain, "image": image, "point file": points}
    with StagedFolder(out_dir, names, inputs) if out_dir is not None else contextlib.nullcontext() as folder:
        result = _compute(tf, moving, point_set, deformation, jacobian, jacobian_matrix, labels, device, folder)
        if folder is not None:
            folder.commit()
            result.outputs = {name: Path(out_dir) / name for name in names}
    return result


def _compute(tf: TransformFile, moving: Image | None, point_set: PointSet | None, deformation: bool, jacobian: bool,
             jacobian_matrix: bool, labels: bool, device, folder: StagedFolder | None) -> TransformixResult:
    """The requested outputs, written into ``folder`` when given."""
    ext, result = tf.result_format, TransformixResult()
    legacy = not tf.keys.use_direction()  # (UseDirectionCosines "false"): images as if their directions were identity
    if legacy and moving is not None:
        moving = without_direction(moving)

    def save(name: str, image: Image, pixel_type: str) -> None:
        if folder is not None:
            if legacy:  # elastix writes them on the fixed image's own direction (the file's Direction)
                dim = image.dim
                image = with_direction(image, tf.keys.numbers("Direction", dim * dim, default=np.eye(dim).ravel())
                                       .reshape(dim, dim).T)
            write_image(image, folder.path(name), pixel_type, tf.compress)

    if moving is not None:
        order = 0 if labels else tf.interpolation_order
        result.image = resample(moving, tf.transform, tf.grid, order, tf.default_pixel_value, device)
        save(f"result.{ext}", result.image, moving.pixel_type if labels else tf.result_pixel_type)
    if point_set is not None:
        world_in = point_set.world(tf.grid)
        result.points = map_points(tf.transform, world_in)
        if folder is not None:
            text = format_output_points(point_set, world_in, result.points, tf.grid,
                                        moving.grid if moving is not None else None)
            atomic_write_text(folder.path("outputpoints.txt"), text)
    if deformation:
        save(f"deformationField.{ext}", deformation_field(tf.transform, tf.grid, device), "float32")
    if jacobian:
        save(f"spatialJacobian.{ext}", jacobian_determinant(tf.transform, tf.grid, device), "float32")
    if jacobian_matrix:
        save(f"fullSpatialJacobian.{ext}", spatial_jacobian(tf.transform, tf.grid, device), "float32")
    return result
