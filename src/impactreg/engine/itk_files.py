"""ITK transform files beside the TransformParameters files, as elastix writes them with
``(ITKTransformOutputFileNameExtension "tfm")``: ``TransformParameters.<i>.<ext>`` holds the stage's
own transform and, with ``(WriteITKCompositeTransform "true")``, ``TransformParameters.<i>-Composite.<ext>``
the whole chain (initial transforms first applied). Files are written through SimpleITK, so SimpleITK,
ANTs and 3D Slicer read them: ``.tfm``/``.txt`` (ITK text), ``.h5``/``.hdf5`` (HDF5), ``.mat`` (MATLAB).
Both map fixed-space points to moving-space points, as the TransformParameters file does.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError, ParameterError
from ..transforms import BSplineTransform, CombinationTransform, Transform
from ..transforms.matrix import MatrixTransform

log = logging.getLogger("impactreg")

ITK_TRANSFORM_EXTENSIONS = ("tfm", "txt", "h5", "hdf5", "mat", "xfm")


def _extension(pm) -> str | None:
    ext = pm.get("ITKTransformOutputFileNameExtension")
    if not ext:
        return None
    ext = ext.lstrip(".")
    if ext.lower().rsplit(".", 1)[-1] not in ITK_TRANSFORM_EXTENSIONS:
        raise ParameterError(f"{pm.source + ': ' if pm.source else ''}(ITKTransformOutputFileNameExtension \"{ext}\"): "
                             f"ITK writes transforms as {', '.join(ITK_TRANSFORM_EXTENSIONS)}; use one of them")
    return ext


def itk_output_names(pm, stage: int) -> list[str]:
    """The ITK transform files a stage writes (none without ITKTransformOutputFileNameExtension)."""
    ext = _extension(pm)
    if ext is None:
        return []
    names = [f"TransformParameters.{stage}.{ext}"]
    if pm.get("WriteITKCompositeTransform"):
        names.append(f"TransformParameters.{stage}-Composite.{ext}")
    return names


def to_sitk(transform: Transform) -> sitk.Transform:
    """One impactreg transform as the SimpleITK transform that maps points identically: matrix transforms
    as an AffineTransform (matrix, translation, centre), B-splines as a BSplineTransform on the same
    control grid, a Compose chain as a CompositeTransform (the initial transform applied first)."""
    if isinstance(transform, CombinationTransform):
        if transform.how != "Compose":
            raise OutputError("an \"Add\" combination of transforms has no ITK form; use HowToCombineTransforms "
                              "\"Compose\" or the TransformParameters files")
        composite = sitk.CompositeTransform(transform.dim)
        for part in reversed(transform.chain()):  # ITK applies the last added transform first
            composite.AddTransform(to_sitk(part))
        return composite
    if isinstance(transform, MatrixTransform):
        matrix = transform.matrix().detach().cpu().double().numpy()
        affine = sitk.AffineTransform(transform.dim)
        affine.SetCenter(transform.center.double().numpy().tolist())
        affine.SetMatrix(matrix.ravel().tolist())
        _, t = transform.matrix_translation(transform.parameters.detach().cpu().double())
        affine.SetTranslation(t.numpy().tolist())
        return affine
    if isinstance(transform, BSplineTransform):
        return _bspline_to_sitk(transform)
    raise OutputError(f"a {type(transform).__name__} has no ITK transform form; use the TransformParameters file")


def _bspline_to_sitk(transform: BSplineTransform) -> sitk.Transform:
    grid = transform.grid
    coefficients = transform.coefficients().detach().cpu().double().numpy()  # (D, [Z,] Y, X), mm
    images = []
    for axis in range(transform.dim):
        image = sitk.GetImageFromArray(coefficients[axis])
        image.SetOrigin(grid.origin.tolist())
        image.SetSpacing(grid.spacing.tolist())
        image.SetDirection(np.asarray(grid.direction, dtype=np.float64).ravel().tolist())
        images.append(image)
    return sitk.BSplineTransform(images, transform.order)


def write_itk_transform_files(folder: Path, stage: int, transform: Transform, pm) -> dict[str, Path]:
    """The stage's ITK transform files in ``folder``: {name: path} (empty when the map asks for none)."""
    names = itk_output_names(pm, stage)
    if not names:
        return {}
    current = transform.current if isinstance(transform, CombinationTransform) else transform
    written = {}
    for name, part in zip(names, (current, transform)):
        path = folder / name
        try:
            sitk.WriteTransform(to_sitk(part.to("cpu")), str(path))
        except RuntimeError as exc:
            raise OutputError(f"{path}: SimpleITK cannot write this transform "
                              f"({str(exc).strip().splitlines()[-1][:120]})") from None
        written[name] = path
    return written
