"""Images: a channel-first tensor (C, [Z,] Y, X) on a physical Grid, read and written via SimpleITK.

Supported files: .mha, .mhd, .nii, .nii.gz, .nrrd, .nhdr, 2D .png, and DICOM series (a directory).
Writing is atomic (a temporary name in the same folder, then a rename): an interrupted or failed
write never leaves a half-written file and never replaces an earlier one.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .errors import ImageError, InputError, OutputError
from .files import new_folder
from .geometry import Grid

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".png",
                  # further formats ITK reads and writes (elastix's ResultImageFormat takes any of them)
                  ".gipl", ".gipl.gz", ".hdr", ".hdr.gz", ".img", ".img.gz", ".vtk", ".tif", ".tiff", ".mnc", ".dcm")

# Pixel type names accepted in elastix files (ResultImagePixelType) and by write_image.
PIXEL_TYPES = {
    "char": sitk.sitkInt8, "int8": sitk.sitkInt8,
    "unsigned char": sitk.sitkUInt8, "uchar": sitk.sitkUInt8, "uint8": sitk.sitkUInt8,
    "short": sitk.sitkInt16, "int16": sitk.sitkInt16,
    "unsigned short": sitk.sitkUInt16, "ushort": sitk.sitkUInt16, "uint16": sitk.sitkUInt16,
    "int": sitk.sitkInt32, "int32": sitk.sitkInt32,
    "unsigned int": sitk.sitkUInt32, "uint": sitk.sitkUInt32, "uint32": sitk.sitkUInt32,
    "long": sitk.sitkInt64, "int64": sitk.sitkInt64,
    "unsigned long": sitk.sitkUInt64, "uint64": sitk.sitkUInt64,
    "float": sitk.sitkFloat32, "float32": sitk.sitkFloat32,
    "double": sitk.sitkFloat64, "float64": sitk.sitkFloat64,
}
_NUMPY_OF_SITK = {
    sitk.sitkInt8: np.int8, sitk.sitkUInt8: np.uint8, sitk.sitkInt16: np.int16,
    sitk.sitkUInt16: np.uint16, sitk.sitkInt32: np.int32, sitk.sitkUInt32: np.uint32,
    sitk.sitkInt64: np.int64, sitk.sitkUInt64: np.uint64,
    sitk.sitkFloat32: np.float32, sitk.sitkFloat64: np.float64,
}
_VECTOR_OF_SCALAR = {
    sitk.sitkInt8: sitk.sitkVectorInt8, sitk.sitkUInt8: sitk.sitkVectorUInt8,
    sitk.sitkInt16: sitk.sitkVectorInt16, sitk.sitkUInt16: sitk.sitkVectorUInt16,
    sitk.sitkInt32: sitk.sitkVectorInt32, sitk.sitkUInt32: sitk.sitkVectorUInt32,
    sitk.sitkInt64: sitk.sitkVectorInt64, sitk.sitkUInt64: sitk.sitkVectorUInt64,
    sitk.sitkFloat32: sitk.sitkVectorFloat32, sitk.sitkFloat64: sitk.sitkVectorFloat64,
}


class Image:
    """Voxel data ``(C, [Z,] Y, X)`` with its physical ``Grid``.

    ``pixel_type`` remembers the file's scalar type (an entry of PIXEL_TYPES) so that results can
    be written back in it.
    """

    def __init__(self, data: torch.Tensor, grid: Grid, pixel_type: str = "float32"):
        data = torch.as_tensor(data)
        if data.dim() == grid.dim:
            data = data.unsqueeze(0)
        if tuple(data.shape[1:]) != grid.shape:
            raise ImageError(f"image data of shape {tuple(data.shape)} does not match grid shape {grid.shape}")
        self.data = data
        self.grid = grid
        self.pixel_type = pixel_type

    @classmethod
    def from_array(cls, array, spacing=None, origin=None, direction=None, channels_first=True) -> "Image":
        """Build an image from an array in torch order ((C,) [Z,] Y, X), geometry in x-y-z order."""
        data = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        if not channels_first or data.dim() in (2, 3) and (spacing is None or len(spacing) == data.dim()):
            data = data.unsqueeze(0)
        dim = data.dim() - 1
        size = tuple(reversed(data.shape[1:]))
        grid = Grid(size, np.ones(dim) if spacing is None else spacing,
                    np.zeros(dim) if origin is None else origin,
                    np.eye(dim) if direction is None else direction)
        return cls(data.to(torch.float32) if not data.is_floating_point() else data, grid)

    @property
    def dim(self) -> int:
        return self.grid.dim

    @property
    def channels(self) -> int:
        return self.data.shape[0]

    def channel(self, c: int) -> "Image":
        return Image(self.data[c:c + 1], self.grid, self.pixel_type)

    def with_data(self, data: torch.Tensor, pixel_type: str | None = None) -> "Image":
        return Image(data, self.grid, self.pixel_type if pixel_type is None else pixel_type)

    def to(self, device=None, dtype=None) -> "Image":
        return Image(self.data.to(device=device, dtype=dtype), self.grid, self.pixel_type)

    def numpy(self) -> np.ndarray:
        return self.data.detach().cpu().numpy()

    def __repr__(self) -> str:
        return f"Image(channels={self.channels}, {self.grid}, dtype={self.data.dtype}, pixel_type={self.pixel_type})"

    # SimpleITK interop -------------------------------------------------------------------

    @classmethod
    def from_sitk(cls, image: sitk.Image, dtype=torch.float32) -> "Image":
        dim = image.GetDimension()
        if dim not in (2, 3):
            raise ImageError(f"only 2D and 3D images are supported, got {dim}D")
        grid = Grid(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                    np.array(image.GetDirection()).reshape(dim, dim))
        array = sitk.GetArrayFromImage(image)
        components = image.GetNumberOfComponentsPerPixel()
        if components > 1:
            array = np.moveaxis(array, -1, 0)
        else:
            array = array[None]
        pixel_type = _pixel_type_name(image)
        return cls(torch.from_numpy(np.ascontiguousarray(array)).to(dtype), grid, pixel_type)

    def to_sitk(self, pixel_type: str | None = None) -> sitk.Image:
        name = pixel_type or self.pixel_type
        if name not in PIXEL_TYPES:
            raise OutputError(f"unknown pixel type {name!r}; use one of {', '.join(sorted(PIXEL_TYPES))}")
        sitk_type = PIXEL_TYPES[name]
        np_type = _NUMPY_OF_SITK[sitk_type]
        array = self.data.detach().cpu().to(torch.float64).numpy()
        if np.issubdtype(np_type, np.integer):
            info = np.iinfo(np_type)
            array = np.clip(np.rint(array), info.min, info.max)
        array = array.astype(np_type)
        if self.channels == 1:
            image = sitk.GetImageFromArray(array[0], isVector=False)
        else:
            image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
        image.SetSpacing(tuple(float(s) for s in self.grid.spacing))
        image.SetOrigin(tuple(float(o) for o in self.grid.origin))
        image.SetDirection(tuple(float(d) for d in self.grid.direction.ravel()))
        return image


def _pixel_type_name(image: sitk.Image) -> str:
    pid = image.GetPixelID()
    for scalar, vector in _VECTOR_OF_SCALAR.items():
        if pid == vector:
            pid = scalar
    for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"):
        if PIXEL_TYPES[name] == pid:
            return name
    return "float32"


def image_format(path: str | os.PathLike) -> str:
    """The file format impactreg infers from a path: a suffix of IMAGE_SUFFIXES or 'dicom' (a folder)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".dcm") and p.is_dir():
        return "dicom"  # a 3D result written as a series (write_image)
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    if p.is_dir() or p.suffix == "":
        return "dicom"
    raise InputError(f"{path}: unsupported image format {p.suffix!r}; use one of "
                     f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")


def read_image(path: str | os.PathLike, dtype=torch.float32) -> Image:
    """Read an image file, or a DICOM series from a folder, keeping its geometry exactly."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    fmt = image_format(p)
    _check_readable(p)
    if fmt in (".nii", ".nii.gz"):
        _check_nifti_complete(p, fmt)
    try:
        with _itk_quiet():
            image = _read_with_itk(p, path, fmt)
    except RuntimeError as exc:
        reason = _itk_reason(str(exc))
        if "determinant is 0" in reason:
            raise InputError(f"{path}: its direction matrix is singular (determinant 0); fix the direction "
                             f"cosines in its header") from None
        raise InputError(f"{path}: cannot read the image ({reason}); check that the file is complete and of the "
                         f"format its name says") from None
    if image.GetDimension() == 3 and fmt == ".png":
        image = image[:, :, 0]
    return Image.from_sitk(image, dtype=dtype)


def _read_with_itk(p: Path, path, fmt: str) -> sitk.Image:
    if fmt == "dicom":
        if not p.is_dir():
            raise InputError(f"{path}: not an image file of a known format and not a DICOM folder")
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(p))
        if not series:
            raise InputError(f"{path}: folder holds no DICOM series; give an image file or a DICOM series folder")
        if len(series) > 1:
            raise InputError(f"{path}: folder holds {len(series)} DICOM series; put one series per folder")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p), series[0]))
        return reader.Execute()
    if p.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    return sitk.ReadImage(str(p))


def _check_readable(p: Path) -> None:
    try:
        if p.is_dir():
            os.listdir(p)
        else:
            os.close(os.open(p, os.O_RDONLY))
    except PermissionError:
        raise InputError(f"{p}: permission denied; make it readable for this user (e.g. chmod +r)") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot open it ({exc.strerror}); check the path") from None


def _check_nifti_complete(p: Path, fmt: str) -> None:
    """A truncated NIfTI file is read by ITK with the missing voxels set to zero: compare the data the
    header announces with what the file (or its gzip stream) holds."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        with _itk_quiet():
            reader.ReadImageInformation()
    except RuntimeError:
        return  # the full read reports it
    voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    pixel_bytes = np.dtype(_NUMPY_OF_SITK.get(_scalar_id(reader.GetPixelID()), np.float32)).itemsize
    header = _nifti_header(p, fmt)
    if header is None:
        return
    offset, stored = header
    if stored < 0:
        raise ImageError(f"{p}: the file is truncated (its gzip stream ends early); copy or download it again")
    if stored < offset + voxels * pixel_bytes:
        missing = offset + voxels * pixel_bytes - stored
        raise ImageError(f"{p}: the file is truncated ({missing} of {voxels * pixel_bytes} bytes of voxel data "
                         f"missing); copy or download it again")


def _nifti_header(p: Path, fmt: str) -> tuple[int, int] | None:
    """(byte offset of the voxel data, bytes the file holds uncompressed); -1 when a gzip stream is cut short."""
    if fmt == ".nii":
        with open(p, "rb") as f:
            head = f.read(540)
        stored = p.stat().st_size
    else:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        head, stored = b"", 0
        try:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    data = decompressor.decompress(chunk)
                    head = head if len(head) >= 540 else (head + data)[:540]
                    stored += len(data)
        except zlib.error:
            return None  # not gzip: ITK reports it
        if not decompressor.eof:
            stored = -1
    if stored < 0:
        return 0, stored
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if size == 348:
            return int(np.frombuffer(head[108:112], dtype=f"{order}f4")[0]), stored
        if size == 540 and len(head) >= 176:
            return int(np.frombuffer(head[168:176], dtype=f"{order}i8")[0]), stored
    return None


def _scalar_id(pixel_id: int) -> int:
    for scalar, vector in _VECTOR_OF_SCALAR.items():
        if pixel_id == vector:
            return scalar
    return pixel_id


@contextlib.contextmanager
def _itk_quiet():
    """ITK's warnings and MetaIO's messages go to the process's stderr; keep them off the user's screen
    (the error that follows says what matters)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _itk_reason(text: str) -> str:
    """The reason in an ITK exception text: its 'ITK ERROR' line without the object address."""
    for line in text.splitlines():
        if "ITK ERROR" in line:
            return re.sub(r"^.*ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", line.strip())[:200]
    return _first_line(text)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR" in ln.upper() or "exception" in ln.lower() or "Unable" in ln or "Could not" in ln:
            return ln[-200:]
    return (lines[-1] if lines else "unknown error")[-200:]


def write_image(image: Image, path: str | os.PathLike, pixel_type: str | None = None,
                compress: bool = False) -> Path:
    """Write an image atomically. A path with no image suffix is written as a DICOM series folder."""
    p = Path(path)
    fmt = image_format(p) if p.suffix or not p.exists() else ("dicom" if p.is_dir() else image_format(p))
    if fmt == ".png":
        if image.dim != 2:
            raise OutputError(f"{path}: PNG holds 2D images only; write a 3D image as .mha or .nii.gz")
        pixel_type = pixel_type or ("uint8" if image.pixel_type not in ("uint8", "uint16") else image.pixel_type)
        if pixel_type not in ("uint8", "unsigned char", "uint16", "unsigned short"):
            raise OutputError(f"{path}: PNG holds 8- or 16-bit unsigned pixels, not {pixel_type}")
    if fmt == "dicom" or fmt == ".dcm" and image.dim == 3:  # ITK writes 3D DICOM files of 8/16-bit unsigned only
        np_type = _NUMPY_OF_SITK.get(PIXEL_TYPES.get(pixel_type or "", -1))
        if np_type is not None and np.issubdtype(np_type, np.integer):  # the pixel type asked for, as to_sitk casts
            info = np.iinfo(np_type)
            image = image.with_data(image.data.double().round().clamp(float(info.min), float(info.max)))
        _write_dicom_series(image, p, pixel_type)
        return p
    sitk_image = image.to_sitk(pixel_type)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = new_folder(p.parent, f".{p.name}.")
    try:
        sitk.WriteImage(sitk_image, str(tmpdir / p.name), compress)
        written = sorted(tmpdir.iterdir(), key=lambda f: f.name == p.name)  # header (named file) last
        for f in written:
            os.replace(f, p.parent / f.name)
    except RuntimeError as exc:
        raise OutputError(f"{path}: cannot write the image ({_first_line(str(exc))})") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return p


def _write_dicom_series(image: Image, folder: Path, pixel_type: str | None) -> None:
    """Write a scalar 3D image as a DICOM series (one file per slice) into a new folder.

    Integer data are stored as they are (int16 or uint16); other data are refused with one line (GDCM
    cannot write the rescale they would need). DICOM has no left-handed frames: a direction with a negative
    determinant is written with the slice order reversed, which is the same image in space.
    """
    if image.dim != 3 or image.channels != 1:
        raise OutputError(f"{folder}: DICOM series are written for scalar 3D images only")
    data = image.data[0].detach().cpu().to(torch.float64).numpy()
    grid = image.grid
    direction = grid.direction.copy()
    origin = grid.origin.copy()
    if np.linalg.det(direction) < 0:
        data = data[::-1]
        origin = grid.index_to_world(np.array([0.0, 0.0, grid.size[2] - 1]))
        direction[:, 2] = -direction[:, 2]
    slope, intercept = 1.0, 0.0
    integral = np.all(np.equal(np.rint(data), data))
    if integral and data.min() >= -32768 and data.max() <= 32767:
        stored, store_type = data.astype(np.int16), sitk.sitkInt16
    elif integral and data.min() >= 0 and data.max() <= 65535:
        stored, store_type = data.astype(np.uint16), sitk.sitkUInt16
    else:  # GDCM (through SimpleITK) refuses a rescale slope that is not a whole number
        raise OutputError(f"{folder}: DICOM stores whole numbers and these voxel values are not; set "
                          f"(ResultImagePixelType \"short\") or write another format (mha, nii.gz)")
    study, series = _dicom_uid(), _dicom_uid()
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    iop = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = new_folder(folder.parent, f".{folder.name}.")
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(stored.shape[0]):
            slice_image = sitk.GetImageFromArray(stored[k])
            slice_image = sitk.Cast(slice_image, store_type)
            slice_image.SetSpacing((float(grid.spacing[0]), float(grid.spacing[1])))
            position = origin + direction[:, 2] * grid.spacing[2] * k
            tags = {
                "0008|0060": "OT", "0008|0020": now[0], "0008|0030": now[1],
                "0008|0008": "DERIVED\\SECONDARY", "0008|0016": "1.2.840.10008.5.1.4.1.1.7",
                "0008|0018": _dicom_uid(), "0020|000d": study, "0020|000e": series,
                "0020|0013": str(k + 1), "0020|0037": iop,
                "0020|0032": "\\".join(f"{v:.10g}" for v in position),
                "0018|0050": f"{grid.spacing[2]:.10g}",
                "0028|0030": f"{grid.spacing[1]:.10g}\\{grid.spacing[0]:.10g}",
                "0028|1052": f"{intercept:.10g}", "0028|1053": f"{slope:.10g}", "0028|1054": "US",
            }
            for tag, value in tags.items():
                slice_image.SetMetaData(tag, value)
            writer.SetFileName(str(tmpdir / f"slice_{k:04d}.dcm"))
            writer.Execute(slice_image)
        backup = None
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, backup)
        os.replace(tmpdir, folder)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except RuntimeError as exc:
        raise OutputError(f"{folder}: cannot write the DICOM series ({_first_line(str(exc))})") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _dicom_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)

