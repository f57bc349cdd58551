"""Multi-resolution image pyramids, as elastix's four pyramid components build them.

Schedules are shrink factors per level and image axis (x, y[, z]); the default for level l of L
is 2^(L-1-l) on every axis. Smoothing sigmas are in mm.
- Smoothing: Gaussian sigma = 0.5 * factor * spacing, no downsampling (every level smoothed).
- Recursive: ITK's recursive pyramid: each level from the next finer one, ITK's discrete Gaussian of
  variance (0.5 r)^2 voxels then ITK's shrinking by r (the ratio of the levels' factors), as elastix's.
- Shrinking: ITK's shrinking only (the voxel nearest each output voxel's centre).
- Generic: sigma from ImagePyramidSmoothingSchedule (mm; default 0.5 * factor * spacing, and 0
  on the axes of a last level of factor 1), then resampling by the rescale schedule on a
  corner-aligned grid with linear interpolation.
Schedules are read as elastix reads them: entry l x D + d, Fixed/Moving names overriding the shared
one, ImagePyramidSchedule overriding ImagePyramidRescaleSchedule; a schedule missing entries gives
the default schedule (with a warning), and the shrinking pyramids clamp factors as ITK does
(never above the previous level's, at least 1).
"""
from __future__ import annotations

import logging

import numpy as np

import torch

from . import compute
from .errors import ParameterError
from .filters import gaussian_smooth, resample_to_grid
from .image import Image
from .keys import Key

log = logging.getLogger("impactreg")


def schedule(values, levels: int, dim: int, name: str, default=None) -> np.ndarray:
    """A (levels, dim) schedule from a flat list of levels x dim values or one per level (GridSpacingSchedule's
    rule in elastix); any other count is one ParameterError."""
    if values is None:
        if default is not None:
            return default
        return default_schedule(levels, dim)
    values = np.asarray(values, dtype=np.float64)
    if values.size == levels * dim:
        return values.reshape(levels, dim)
    if values.size == levels:
        return np.repeat(values[:, None], dim, axis=1)
    raise ParameterError(f"({name} {' '.join(f'{v:g}' for v in values)}): give {levels * dim} values "
                         f"(levels x dimension) or {levels} (one per level)")


def default_schedule(levels: int, dim: int) -> np.ndarray:
    """ITK's default pyramid schedule: 2^(L-1-l) on every axis."""
    return np.array([[2.0 ** (levels - 1 - l)] * dim for l in range(levels)])


def read_schedule(pm, names: list[str], levels: int, dim: int, what: str) -> np.ndarray | None:
    """elastix's reading of a pyramid schedule: entry l * D + d from each of ``names`` in turn, a later
    name overriding an earlier one entry by entry; None when absent or when some entry is given by none
    of them (elastix then warns and uses the default schedule)."""
    lists = [pm.values(name) for name in names]
    given = [v for v in lists if v is not None]
    if not given:
        return None
    longest = max(len(v) for v in given)
    if longest < levels * dim:
        log.warning("%s%s: %d values for %d levels x %d axes; the default schedule is used, as elastix does",
                    f"{pm.source}: " if getattr(pm, "source", "") else "", what, longest, levels, dim)
        return None
    table = np.zeros(levels * dim)
    for values in given:
        n = min(len(values), levels * dim)
        table[:n] = values[:n]
    return table.reshape(levels, dim)


def itk_shrink_schedule(factors: np.ndarray) -> np.ndarray:
    """ITK's MultiResolutionPyramidImageFilter::SetSchedule: a factor never exceeds the previous level's and
    is at least 1 (a zero shrink factor becomes 1)."""
    return np.maximum(np.minimum.accumulate(factors, axis=0), 1.0)


_SCHEDULE_KEYS = (
    Key("ImagePyramidSchedule", "float", None, "shrink factors, levels x dimension (both images)", multi=True,
        minimum=0),
    Key("FixedImagePyramidSchedule", "float", None, "fixed shrink factors, levels x dimension", multi=True,
        minimum=0),
    Key("MovingImagePyramidSchedule", "float", None, "moving shrink factors, levels x dimension", multi=True,
        minimum=0),
)


class ImagePyramid:
    """The images of one pyramid (role 'Fixed' or 'Moving') for every level; ``build`` reads its keys."""

    elastix_name = ""
    keys: tuple[Key, ...] = _SCHEDULE_KEYS
    clamps = True  # ITK's schedule rule (non-increasing, >= 1); elastix's smoothing pyramid keeps the factors

    def __init__(self, role: str):
        self.role = role

    def schedule_names(self) -> list[str]:
        return ["ImagePyramidSchedule", f"{self.role}ImagePyramidSchedule"]

    def build(self, image: Image, pm, levels: int) -> "ImagePyramid":
        self.image, self.levels = image, levels
        factors = read_schedule(pm, self.schedule_names(), levels, image.dim, f"{self.role.lower()} pyramid schedule")
        factors = default_schedule(levels, image.dim) if factors is None else factors
        self.factors = itk_shrink_schedule(factors) if self.clamps else factors
        return self

    def level(self, l: int) -> Image:
        raise NotImplementedError

    def level_grid(self, l: int):
        """The grid of ``level(l)``, without computing the level."""
        raise NotImplementedError


class SmoothingImagePyramid(ImagePyramid):
    """Gaussian sigma = 0.5 * factor * spacing, no downsampling (every level smoothed; factor 0: none)."""

    clamps = False

    def level(self, l: int) -> Image:
        return gaussian_smooth(self.image, 0.5 * self.factors[l] * self.image.grid.spacing)

    def level_grid(self, l: int):
        return self.image.grid


MAXIMUM_ERROR = 0.1  # ITK's MultiResolutionPyramidImageFilter: the Gaussian kernel's tail mass left out
MAXIMUM_KERNEL_WIDTH = 32  # ITK's DiscreteGaussianImageFilter


def itk_gaussian_kernel(variance: float, maximum_error: float = MAXIMUM_ERROR,
                        maximum_width: int = MAXIMUM_KERNEL_WIDTH) -> np.ndarray:
    """ITK's GaussianOperator: the discrete Gaussian exp(-t) I_n(t) (t the variance in voxels^2), taps added
    until they hold 1 - maximum_error of the mass (or the width limit), then normalised; odd length."""
    from scipy.special import ive

    taps = [float(ive(0, variance)), float(ive(1, variance))]
    total = taps[0] + 2 * taps[1]
    n = 2
    while total < 1.0 - maximum_error:
        taps.append(float(ive(n, variance)))
        total += 2 * taps[-1]
        if taps[-1] <= 0.0 or len(taps) > maximum_width:
            break
        n += 1
    half = np.asarray(taps) / total
    return np.concatenate([half[:0:-1], half])


def discrete_gaussian(image: Image, variance_voxels) -> Image:
    """ITK's DiscreteGaussianImageFilter without image spacing: per axis (x, y[, z]) the kernel of that variance
    (voxels^2; 0 leaves the axis), edges replicated (ZeroFluxNeumann)."""
    data = image.data.to(torch.float32)
    for axis, variance in enumerate(np.broadcast_to(variance_voxels, (image.dim,))):
        if variance > 0:
            kernel = torch.from_numpy(itk_gaussian_kernel(float(variance))).to(torch.float32)
            data = compute.convolve_axis(data, kernel, axis)
    return Image(data.contiguous(), image.grid, image.pixel_type)


def itk_shrink(image: Image, factors) -> Image:
    """ITK's ShrinkImageFilter by integer ``factors`` (x, y[, z]): the centre-preserving grid, each output voxel
    the input voxel nearest its centre (rounded half up; no averaging)."""
    factors = np.asarray(factors, dtype=np.int64)
    grid = image.grid.shrunk(factors, centred=True)
    offset = _shrink_offset(image.grid, grid, factors)
    n_out = np.asarray(grid.size)
    index = tuple(slice(int(o), int(o) + int(f) * (int(m) - 1) + 1, int(f))
                  for o, f, m in zip(offset[::-1], factors[::-1], n_out[::-1]))
    return Image(image.data[(slice(None),) + index].contiguous(), grid, image.pixel_type)


def smoothed_shrink(image: Image, variance_voxels, factors) -> Image:
    """itk_shrink(discrete_gaussian(image, variance_voxels), factors), smoothing only the voxels the shrink keeps
    (the same values, in about a third of the time for factors of 2)."""
    factors = np.asarray(factors, dtype=np.int64)
    grid = image.grid.shrunk(factors, centred=True)
    offset = _shrink_offset(image.grid, grid, factors)
    data = image.data.to(torch.float32)
    for axis, variance in enumerate(np.broadcast_to(variance_voxels, (image.dim,))):
        start, step, count = int(offset[axis]), int(factors[axis]), int(grid.size[axis])
        if variance > 0:
            kernel = torch.from_numpy(itk_gaussian_kernel(float(variance))).to(torch.float32)
            data = compute.convolve_axis(data, kernel, axis, start, step, count)
        else:
            along = image.dim - axis
            data = data.narrow(along, start, step * (count - 1) + 1)[(slice(None),) * along + (slice(None, None, step),)]
    return Image(data.contiguous(), grid, image.pixel_type)


def _shrink_offset(grid_in, grid_out, factors: np.ndarray) -> np.ndarray:
    """The input index of output voxel 0 per axis, in ITK's order of float64 operations: at a half-integer offset
    (an even/odd size pair) the rounding follows the last bit, as elastix's pyramid images do."""
    direction, origin = np.asarray(grid_in.direction, dtype=np.float64), np.asarray(grid_in.origin, dtype=np.float64)
    spacing_in = np.asarray(grid_in.spacing, dtype=np.float64)
    centre_in = (np.asarray(grid_in.size) - 1) / 2.0
    centre_out = (np.asarray(grid_out.size) - 1) / 2.0
    to_world_in, to_world_out = direction * spacing_in, direction * (spacing_in * factors)
    origin_out = origin + ((origin + to_world_in @ centre_in) - (origin + to_world_out @ centre_out))
    index = np.linalg.inv(to_world_in) @ (origin_out - origin)
    return np.maximum(0, np.floor(index + 0.5)).astype(np.int64)


class RecursiveImagePyramid(ImagePyramid):
    """ITK's RecursiveMultiResolutionPyramidImageFilter: each level from the next finer one, smoothed by ITK's
    discrete Gaussian of variance (0.5 r)^2 voxels and shrunk by r, r the ratio of the two levels' factors (the
    finest level from the image by its own factors; all ones copy). A schedule whose levels do not divide
    falls back to ITK's base pyramid: each level from the image, variance (0.5 f)^2, shrunk by f."""

    def build(self, image: Image, pm, levels: int) -> "ImagePyramid":
        super().build(image, pm, levels)
        self._images: dict[int, Image] = {}
        f = self.factors
        self.recursive = bool(np.all(f == np.round(f))) and all(
            np.all(np.mod(f[l], f[l + 1]) == 0) for l in range(levels - 1))
        return self

    def level(self, l: int) -> Image:
        if l in self._images:
            return self._images[l]
        f = self.factors.astype(np.int64) if self.recursive else self.factors
        if not self.recursive:
            result = self._direct(self.factors[l])
        elif l == self.levels - 1:
            result = self._reduce(self.image, f[l])
        else:
            result = self._reduce(self.level(l + 1), f[l] // f[l + 1])
        self._images[l] = result
        return result

    @staticmethod
    def _reduce(image: Image, ratio: np.ndarray) -> Image:
        if np.all(ratio == 1):
            return image
        variance = np.where(ratio != 1, (0.5 * ratio) ** 2, 0.0)
        return smoothed_shrink(image, variance, ratio)

    def _direct(self, factors: np.ndarray) -> Image:
        image = self.image
        if np.all(factors == 1):
            return image
        smoothed = discrete_gaussian(image, np.where(factors != 1, (0.5 * factors) ** 2, 0.0))
        return resample_to_grid(smoothed, image.grid.shrunk(factors, centred=True))

    def level_grid(self, l: int):
        f = self.factors[l]
        return self.image.grid if np.all(f == 1) and l == self.levels - 1 else self.image.grid.shrunk(f, centred=True)


class ShrinkingImagePyramid(ImagePyramid):
    """Shrinking only: ITK's ShrinkImageFilter on the image by each level's factors (whole numbers, as ITK's
    unsigned factors)."""

    def level(self, l: int) -> Image:
        factors = np.maximum(1, np.floor(self.factors[l])).astype(np.int64)
        return self.image if np.all(factors == 1) else itk_shrink(self.image, factors)

    def level_grid(self, l: int):
        return self.image.grid.shrunk(self.factors[l], centred=True)


class GenericImagePyramid(ImagePyramid):
    """Sigma from ImagePyramidSmoothingSchedule (mm; default 0.5 * factor * spacing, 0 at a last level
    of factor 1), then resampling by ImagePyramidRescaleSchedule (default: the schedule) on a
    corner-aligned grid with linear interpolation."""

    keys = _SCHEDULE_KEYS + (
        Key("ImagePyramidRescaleSchedule", "float", None, "generic pyramid: rescale factors, levels x dimension", multi=True,
            minimum=0),
        Key("FixedImagePyramidRescaleSchedule", "float", None, "generic pyramid: fixed rescale factors", multi=True,
            minimum=0),
        Key("MovingImagePyramidRescaleSchedule", "float", None, "generic pyramid: moving rescale factors", multi=True,
            minimum=0),
        Key("ImagePyramidSmoothingSchedule", "float", None, "generic pyramid: Gaussian sigma in mm, levels x dimension",
            multi=True, minimum=0),
        Key("FixedImagePyramidSmoothingSchedule", "float", None, "generic pyramid: fixed sigma in mm", multi=True,
            minimum=0),
        Key("MovingImagePyramidSmoothingSchedule", "float", None, "generic pyramid: moving sigma in mm", multi=True,
            minimum=0),
    )

    def schedule_names(self) -> list[str]:
        """elastix's GenericPyramidHelper reads these in turn: a schedule overrides a rescale schedule."""
        role = self.role
        return ["ImagePyramidRescaleSchedule", "ImagePyramidSchedule", f"{role}ImagePyramidRescaleSchedule",
                f"{role}ImagePyramidSchedule"]

    def build(self, image: Image, pm, levels: int) -> "ImagePyramid":
        super().build(image, pm, levels)
        dim, factors = image.dim, self.factors
        sigmas = read_schedule(pm, ["ImagePyramidSmoothingSchedule", f"{self.role}ImagePyramidSmoothingSchedule"],
                               levels, dim, f"{self.role.lower()} pyramid smoothing schedule")
        if sigmas is None:
            sigmas = 0.5 * factors * image.grid.spacing
            last = factors[-1] == 1
            sigmas[-1, last] = 0.0
        else:
            sigmas = np.maximum(np.minimum.accumulate(sigmas, axis=0), 0.0)  # ITK's rule for the sigmas
        self.sigmas = sigmas
        self.rescale = factors
        return self

    def level(self, l: int) -> Image:
        sigma, r = self.sigmas[l], self.rescale[l]
        smoothed = gaussian_smooth(self.image, sigma) if np.any(sigma > 0) else self.image
        return smoothed if np.all(r == 1) else resample_to_grid(smoothed, self.image.grid.shrunk(r, centred=False))

    def level_grid(self, l: int):
        r = self.rescale[l]
        return self.image.grid if np.all(r == 1) else self.image.grid.shrunk(r, centred=False)
