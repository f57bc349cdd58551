"""elastix TransformParameters files: read (with InitialTransformParameterFileName chains) and write.

Files written here carry every key elastix writes, so elastix's own transformix applies them.
Direction matrices are stored column by column (elastix writes m00 m10 m01 m11 ...).
An output-grid ``Index`` (and a B-spline ``GridIndex``) other than zero is folded into the origin
when reading; files are written with zero indices.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..components import REGISTRIES
from ..errors import TransformFileError
from ..files import atomic_write_text
from ..geometry import Grid
from ..image import Image, read_image, write_image
from ..parameters.parse import RawParameters, format_parameter_map, parse_parameter_text
from ..parameters.schema import lookup
from .base import Transform
from .bspline import BSplineTransform
from .combination import COMBINATIONS, CombinationTransform
from .deformation_field import FIELD_ORDERS, DeformationFieldTransform
from .matrix import AffineTransform, EulerTransform, MatrixTransform, SimilarityTransform, TranslationTransform

NO_INITIAL = "NoInitialTransform"
MAX_CHAIN = 64

# What the resampler needs, with elastix's defaults; written into every file.
RESAMPLE_DEFAULTS: dict[str, list] = {
    "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "FinalBSplineInterpolationOrder": [3],
    "Resampler": ["DefaultResampler"],
    "DefaultPixelValue": [0],
    "ResultImageFormat": ["mha"],
    "ResultImagePixelType": ["float"],
    "CompressResultImage": ["false"],
}


@dataclass
class TransformFile:
    """A read TransformParameters file: the whole transform chain and the output image grid."""

    path: Path
    transform: Transform
    grid: Grid
    keys: "ElastixKeys" = field(repr=False)
    initial: "TransformFile | None" = field(default=None, repr=False)

    @property
    def chain(self) -> list[Path]:
        """This file, its displacement-field image if any, and the files of its initial transforms, outermost first."""
        field_file = [self.field_path] if self.field_path is not None else []
        return [self.path] + field_file + (self.initial.chain if self.initial is not None else [])

    @property
    def field_path(self) -> Path | None:
        """The DeformationFieldFileName image of a DeformationFieldTransform file, resolved; else None."""
        if self.keys.text("Transform") != DeformationFieldTransform.elastix_name:
            return None
        return _resolve_relative(self.path, self.keys.text("DeformationFieldFileName"), "DeformationFieldFileName")

    @property
    def interpolation_order(self) -> int:
        name = self._get("ResampleInterpolator", "FinalBSplineInterpolator")
        interpolators = REGISTRIES["ResampleInterpolator"][0]
        if name not in interpolators:
            raise TransformFileError(f"{self.path}: unknown ResampleInterpolator {name!r}; use one of "
                                     f"{', '.join(interpolators)}")
        order = interpolators[name]().order(self)
        if not 0 <= order <= 5:
            raise TransformFileError(f"{self.path}: FinalBSplineInterpolationOrder {order} is not in 0..5")
        return order

    def get(self, name: str):
        """A numeric key with the type and default its component declares (what components read)."""
        key = lookup(name)
        value = self._number(name, key.default)
        return int(value) if key.kind == "int" else value

    @property
    def default_pixel_value(self) -> float:
        return self._number("DefaultPixelValue", 0.0)

    @property
    def result_pixel_type(self) -> str:
        return self._get("ResultImagePixelType", "float")

    @property
    def result_format(self) -> str:
        return self._get("ResultImageFormat", "mha").lstrip(".")

    @property
    def compress(self) -> bool:
        return self._get("CompressResultImage", "false").lower() == "true"

    def _get(self, key: str, default: str) -> str:
        return self.keys.text(key, default)

    def _number(self, key: str, default: float) -> float:
        return float(self.keys.numbers(key, 1, default=[default])[0])


def read_transform_file(path: str | os.PathLike) -> TransformFile:
    """Read a TransformParameters file and, recursively, its initial transforms."""
    return _read(Path(path), depth=0)


def _read(path: Path, depth: int) -> TransformFile:
    if depth > MAX_CHAIN:
        raise TransformFileError(f"{path}: InitialTransformParameterFileName chain is longer than {MAX_CHAIN} (a cycle?)")
    if not path.is_file():
        raise TransformFileError(f"{path}: no such transform parameter file; check the path")
    try:
        params = parse_parameter_text(path.read_text(), str(path))
    except UnicodeDecodeError:
        raise TransformFileError(f"{path}: not a text file; give an elastix TransformParameters.N.txt") from None
    except Exception as exc:  # ParameterError from the parser: re-label as a transform-file problem
        raise TransformFileError(str(exc)) from None
    reader = ElastixKeys(path, params)
    transform = _transform_from(reader)
    grid = _output_grid(reader)
    initial_name = reader.text("InitialTransformParameterFileName", NO_INITIAL, alt="InitialTransformParametersFileName")
    initial = None
    if initial_name != NO_INITIAL:
        initial_path = _resolve_initial(path, initial_name)
        initial = _read(initial_path, depth + 1)
        if initial.transform.dim != transform.dim:
            raise TransformFileError(f"{path}: its initial transform {initial_path} is {initial.transform.dim}D, this one {transform.dim}D")
        how = reader.text("HowToCombineTransforms", "Compose")
        if how not in COMBINATIONS:
            raise TransformFileError(f"{path}: HowToCombineTransforms {how!r} is not one of {', '.join(COMBINATIONS)}")
        transform = CombinationTransform(initial.transform, transform, how)
    return TransformFile(path, transform, grid, reader, initial)


def _resolve_initial(path: Path, name: str) -> Path:
    return _resolve_relative(path, name, "InitialTransformParameterFileName")


def _resolve_relative(path: Path, name: str, key: str) -> Path:
    """A file a transform file names: as written (absolute, or relative to the transform file's folder or
    the working folder), or, when absolute and missing, by its name next to the transform file."""
    candidate = Path(name)
    options = [candidate] if candidate.is_absolute() else [path.parent / candidate, Path.cwd() / candidate]
    if candidate.is_absolute():
        options.append(path.parent / candidate.name)  # a moved output folder
    for option in options:
        if option.is_file():
            return option
    raise TransformFileError(f"{path}: its {key} {name!r} does not exist; put that file next to it or fix the path")


class ElastixKeys:
    """Typed access to the keys of one transform parameter file, with errors naming the file and key."""

    def __init__(self, path: Path, params: RawParameters):
        self.path, self.params = path, params

    def text(self, key: str, default: str | None = None, alt: str | None = None) -> str:
        values = self.params.get(key) or (self.params.get(alt) if alt else None)
        if not values:
            if default is None:
                raise TransformFileError(f"{self.path}: the key ({key} ...) is missing")
            return default
        return values[0]

    def numbers(self, key: str, count: int | None = None, default=None) -> np.ndarray:
        values = self.params.get(key)
        if values is None:
            if default is None:
                raise TransformFileError(f"{self.path}: the key ({key} ...) is missing")
            return np.asarray(default, dtype=np.float64)
        try:
            array = np.array([float(v) for v in values], dtype=np.float64)
        except ValueError:
            raise TransformFileError(f"{self.path}: ({key} ...) must hold numbers, got {' '.join(values)[:80]!r}") from None
        if count is not None and array.size != count:
            raise TransformFileError(f"{self.path}: ({key} ...) has {array.size} values, expected {count}")
        if not np.all(np.isfinite(array)):
            raise TransformFileError(f"{self.path}: ({key} ...) holds a non-finite value")
        return array

    def dimension(self) -> int:
        dim = int(self.numbers("FixedImageDimension", 1, default=[0])[0])
        if dim == 0:
            size = self.params.get("Size")
            dim = len(size) if size else 0
        if dim not in (2, 3):
            raise TransformFileError(f"{self.path}: FixedImageDimension {dim} is not supported; impactreg handles 2D and 3D")
        moving = int(self.numbers("MovingImageDimension", 1, default=[dim])[0])
        if moving != dim:
            raise TransformFileError(f"{self.path}: FixedImageDimension {dim} differs from MovingImageDimension {moving}")
        return dim

    def use_direction(self) -> bool:
        return self.text("UseDirectionCosines", "true").lower() == "true"


def _output_grid(keys: ElastixKeys) -> Grid:
    dim = keys.dimension()
    size = keys.numbers("Size", dim)
    if np.any(size < 1) or np.any(size != np.round(size)):
        raise TransformFileError(f"{keys.path}: (Size ...) must be positive integers")
    spacing = keys.numbers("Spacing", dim, default=np.ones(dim))
    origin = keys.numbers("Origin", dim, default=np.zeros(dim))
    direction = keys.numbers("Direction", dim * dim, default=np.eye(dim).ravel()).reshape(dim, dim).T
    if not keys.use_direction():
        direction = np.eye(dim)
    index = keys.numbers("Index", dim, default=np.zeros(dim))
    try:
        grid = Grid(tuple(int(s) for s in size), spacing, origin, direction)
    except Exception as exc:
        raise TransformFileError(f"{keys.path}: invalid output image geometry ({exc})") from None
    if np.any(index != 0):
        grid = grid.region(index)
    return grid


def _transform_from(keys: ElastixKeys) -> Transform:
    name = keys.text("Transform")
    names = REGISTRIES["Transform"][0]
    if name not in names:
        raise TransformFileError(f"{keys.path}: Transform {name!r} is not supported; impactreg reads {', '.join(names)}")
    dim = keys.dimension()
    if name == DeformationFieldTransform.elastix_name:
        return _field_transform(keys, dim)
    params = keys.numbers("TransformParameters")
    declared = keys.numbers("NumberOfParameters", 1, default=[params.size])[0]
    if declared != params.size:
        raise TransformFileError(f"{keys.path}: NumberOfParameters says {int(declared)} but TransformParameters holds {params.size} values")
    params_t = torch.from_numpy(params.copy())
    if name in ("BSplineTransform", "RecursiveBSplineTransform"):
        order = int(keys.numbers("BSplineTransformSplineOrder", 1, default=[3])[0])
        if order not in (1, 2, 3):
            raise TransformFileError(f"{keys.path}: BSplineTransformSplineOrder {order} is not 1, 2 or 3")
        if keys.text("UseCyclicTransform", "false").lower() == "true":
            raise TransformFileError(f"{keys.path}: UseCyclicTransform \"true\" is not supported")
        size = keys.numbers("GridSize", dim)
        spacing = keys.numbers("GridSpacing", dim)
        origin = keys.numbers("GridOrigin", dim)
        direction = keys.numbers("GridDirection", dim * dim, default=np.eye(dim).ravel()).reshape(dim, dim).T
        if not keys.use_direction():
            direction = np.eye(dim)
        grid_index = keys.numbers("GridIndex", dim, default=np.zeros(dim))
        try:
            grid = Grid(tuple(int(s) for s in size), spacing, origin, direction)
            if np.any(grid_index != 0):
                grid = grid.region(grid_index)
            transform = BSplineTransform(grid, order, params_t)
        except Exception as exc:
            raise TransformFileError(f"{keys.path}: invalid B-spline grid ({exc})") from None
        transform.elastix_name = name
        return transform
    expected = {"TranslationTransform": dim, "EulerTransform": 3 if dim == 2 else 6,
                "SimilarityTransform": 4 if dim == 2 else 7, "AffineTransform": dim * dim + dim}[name]
    if params.size != expected:
        raise TransformFileError(f"{keys.path}: a {dim}D {name} has {expected} parameters, the file gives {params.size}")
    center = keys.numbers("CenterOfRotationPoint", dim, default=np.zeros(dim))
    if name == "TranslationTransform":
        return TranslationTransform(dim, params_t)
    if name == "EulerTransform":
        zyx = keys.text("ComputeZYX", "false").lower() == "true"
        return EulerTransform(dim, params_t, center, compute_zyx=zyx)
    if name == "SimilarityTransform":
        return SimilarityTransform(dim, params_t, center)
    return AffineTransform(dim, params_t, center)


def _field_transform(keys: ElastixKeys, dim: int) -> DeformationFieldTransform:
    order = keys.numbers("DeformationFieldInterpolationOrder", 1, default=[0])[0]
    if order not in FIELD_ORDERS:
        raise TransformFileError(f"{keys.path}: DeformationFieldInterpolationOrder {order:g} is not 0 or 1")
    path = _resolve_relative(keys.path, keys.text("DeformationFieldFileName"), "DeformationFieldFileName")
    try:
        field_image = read_image(path)
    except Exception as exc:  # an ImpactRegError from reading: name the transform file too
        raise TransformFileError(f"{keys.path}: its DeformationFieldFileName: {exc}") from None
    if field_image.dim != dim or field_image.channels != dim:
        raise TransformFileError(f"{keys.path}: the displacement field {path} is a {field_image.dim}D image of "
                                 f"{field_image.channels} component(s); a {dim}D transform needs {dim} components")
    if not keys.use_direction():
        g = field_image.grid
        field_image = Image(field_image.data, Grid(g.size, g.spacing, g.origin, np.eye(dim)))
    return DeformationFieldTransform(field_image, int(order))


# Writing ------------------------------------------------------------------------------------

def transform_parameter_map(transform: Transform, grid: Grid, initial_file: str | os.PathLike | None = None,
                            how: str = "Compose", resample: dict | None = None,
                            pixel_type: str = "float", field_file: str | os.PathLike | None = None) -> RawParameters:
    """The keys elastix writes for one (non-combined) transform whose output grid is ``grid``; a
    DeformationFieldTransform names its field image ``field_file``."""
    if isinstance(transform, CombinationTransform):
        raise ValueError("write a CombinationTransform with write_transform_chain")
    dim = transform.dim
    params: RawParameters = {}
    if isinstance(transform, MatrixTransform) and not isinstance(transform, TranslationTransform):
        params["CenterOfRotationPoint"] = _floats(transform.center)
    if isinstance(transform, EulerTransform) and dim == 3:
        params["ComputeZYX"] = ["true" if transform.compute_zyx else "false"]
    params["Direction"] = _floats(grid.direction.T.ravel())
    params["FixedImageDimension"] = [dim]
    params["FixedInternalImagePixelType"] = ["float"]
    params["HowToCombineTransforms"] = [how]
    params["Index"] = [0] * dim
    params["InitialTransformParameterFileName"] = [str(initial_file) if initial_file else NO_INITIAL]
    params["MovingImageDimension"] = [dim]
    params["MovingInternalImagePixelType"] = ["float"]
    params["NumberOfParameters"] = [0 if isinstance(transform, DeformationFieldTransform) else
                                    transform.number_of_parameters]
    params["Origin"] = _floats(grid.origin)
    params["Size"] = list(grid.size)
    params["Spacing"] = _floats(grid.spacing)
    params["Transform"] = [transform.elastix_name]
    if isinstance(transform, DeformationFieldTransform):  # elastix writes no TransformParameters for it
        params["DeformationFieldFileName"] = [str(field_file)]
        params["DeformationFieldInterpolationOrder"] = [transform.order]
    else:
        params["TransformParameters"] = _floats(transform.parameters)
    params["UseDirectionCosines"] = ["true"]
    if isinstance(transform, BSplineTransform):
        g = transform.grid
        params["BSplineTransformSplineOrder"] = [transform.order]
        params["GridDirection"] = _floats(g.direction.T.ravel())
        params["GridIndex"] = [0] * dim
        params["GridOrigin"] = _floats(g.origin)
        params["GridSize"] = list(g.size)
        params["GridSpacing"] = _floats(g.spacing)
        params["UseCyclicTransform"] = ["false"]
    settings = {k: list(v) for k, v in RESAMPLE_DEFAULTS.items()}
    settings["ResultImagePixelType"] = [pixel_type]
    for key, value in (resample or {}).items():
        settings[key] = value if isinstance(value, (list, tuple)) else [value]
    params.update(settings)
    return dict(sorted(params.items(), key=lambda kv: (kv[0] in RESAMPLE_DEFAULTS, kv[0])))


_SECTIONS = {
    "ResampleInterpolator specific": ["FinalBSplineInterpolationOrder", "ResampleInterpolator"],
    "Resampler specific": ["CompressResultImage", "DefaultPixelValue", "Resampler", "ResultImageFormat", "ResultImagePixelType"],
}


def _floats(values) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return [float(v) for v in np.ravel(values)]


def field_file_name(transform_file: str | os.PathLike, image_format: str = "mha") -> str:
    """elastix's name for the field image of TransformParameters.<i>.txt: DeformationFieldImage.<i>.<format>."""
    name = Path(transform_file).name
    stem = name[len("TransformParameters"):-len(".txt")] if name.startswith("TransformParameters") and \
        name.endswith(".txt") else "." + Path(name).stem
    return f"DeformationFieldImage{stem}.{image_format.lstrip('.')}"


def write_transform_file(path: str | os.PathLike, transform: Transform, grid: Grid,
                         initial_file: str | os.PathLike | None = None, how: str = "Compose",
                         resample: dict | None = None, final_path: str | os.PathLike | None = None) -> Path:
    """Write one transform (not a chain) as an elastix TransformParameters file, atomically.

    A DeformationFieldTransform's field is written beside it (``field_file_name``) and named in the file
    by its absolute path where the file will finally be (``final_path``, default ``path``), as elastix does.
    """
    field_file = None
    if isinstance(transform, DeformationFieldTransform):
        image_format = (resample or {}).get("ResultImageFormat", RESAMPLE_DEFAULTS["ResultImageFormat"])
        image_format = str(image_format[0] if isinstance(image_format, (list, tuple)) else image_format)
        name = field_file_name(path, image_format)
        write_image(transform.field, Path(path).parent / name, "float32")
        field_file = Path(final_path if final_path is not None else path).resolve().parent / name
    params = transform_parameter_map(transform, grid, initial_file, how, resample, field_file=field_file)
    return atomic_write_text(path, format_parameter_map(params, _SECTIONS))


def write_transform_chain(transform: Transform, grid: Grid, out_dir: str | os.PathLike,
                          first_index: int = 0, resample: dict | None = None) -> list[Path]:
    """Write a (possibly combined) transform as TransformParameters.<i>.txt files, each
    pointing to the previous one by absolute path; returns the paths, last = whole transform."""
    out = Path(out_dir).resolve()
    stages: list[tuple[Transform, str]] = []
    node = transform
    while isinstance(node, CombinationTransform):
        stages.append((node.current, node.how))
        node = node.initial
    stages.append((node, "Compose"))
    stages.reverse()
    paths: list[Path] = []
    for i, (stage, how) in enumerate(stages):
        path = out / f"TransformParameters.{first_index + i}.txt"
        write_transform_file(path, stage, grid, paths[-1] if paths else None, how, resample)
        paths.append(path)
    return paths
