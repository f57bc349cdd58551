"""Multi-resolution image pyramids, as elastix's four pyramid components build them.

Schedules are shrink factors per level and image axis (x, y[, z]); the default for level l of L
is 2^(L-1-l) on every axis. Smoothing sigmas are in mm.
- Smoothing: Gaussian sigma = 0.5 * factor * spacing, no downsampling (every level smoothed).
- Recursive: the same smoothing, then shrinking by the factor (centre-preserving grid).
- Shrinking: shrinking only.
- Generic: sigma from ImagePyramidSmoothingSchedule (mm; default 0.5 * factor * spacing, and 0
  at a last level of factor 1), then resampling by ImagePyramidRescaleSchedule (default: the
  schedule) on a corner-aligned grid with linear interpolation.
"""
from __future__ import annotations

import numpy as np

from .errors import ParameterError
from .filters import gaussian_smooth, resample_to_grid
from .image import Image
from .keys import Key


def schedule(values, levels: int, dim: int, name: str, default=None) -> np.ndarray:
    """A (levels, dim) schedule from elastix's flat list (levels x dim, or one per level)."""
    if values is None:
        if default is not None:
            return default
        return np.array([[2.0 ** (levels - 1 - l)] * dim for l in range(levels)])
    values = np.asarray(values, dtype=np.float64)
    if values.size == levels * dim:
        return values.reshape(levels, dim)
    if values.size == levels:
        return np.repeat(values[:, None], dim, axis=1)
    raise ParameterError(f"({name} {' '.join(f'{v:g}' for v in values)}): give {levels * dim} values "
                         f"(levels x dimension) or {levels} (one per level)")


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

    def __init__(self, role: str):
        self.role = role

    def _values(self, pm, name: str):
        return pm.values(f"{self.role}{name}") or pm.values(name)

    def build(self, image: Image, pm, levels: int) -> "ImagePyramid":
        self.image, self.levels = image, levels
        self.factors = schedule(self._values(pm, "ImagePyramidSchedule"), levels, image.dim,
                                f"{self.role}ImagePyramidSchedule")
        if np.any(self.factors <= 0) and not isinstance(self, SmoothingImagePyramid):
            raise ParameterError(f"{self.role}ImagePyramidSchedule: shrink factors must be positive")
        return self

    def level(self, l: int) -> Image:
        raise NotImplementedError


class SmoothingImagePyramid(ImagePyramid):
    """Gaussian sigma = 0.5 * factor * spacing, no downsampling (every level smoothed)."""

    def level(self, l: int) -> Image:
        return gaussian_smooth(self.image, 0.5 * self.factors[l] * self.image.grid.spacing)


class RecursiveImagePyramid(ImagePyramid):
    """The smoothing pyramid's smoothing, then shrinking by the factor (centre-preserving grid)."""

    def level(self, l: int) -> Image:
        f, image = self.factors[l], self.image
        if np.all(f == 1) and l == self.levels - 1:
            return image
        smoothed = gaussian_smooth(image, 0.5 * f * image.grid.spacing)
        return resample_to_grid(smoothed, image.grid.shrunk(f, centred=True))


class ShrinkingImagePyramid(ImagePyramid):
    """Shrinking only."""

    def level(self, l: int) -> Image:
        return resample_to_grid(self.image, self.image.grid.shrunk(self.factors[l], centred=True))


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

    def build(self, image: Image, pm, levels: int) -> "ImagePyramid":
        super().build(image, pm, levels)
        dim, factors = image.dim, self.factors
        rescale = schedule(self._values(pm, "ImagePyramidRescaleSchedule"), levels, dim,
                           f"{self.role}ImagePyramidRescaleSchedule", default=factors)
        smoothing = self._values(pm, "ImagePyramidSmoothingSchedule")
        if smoothing is None:
            sigmas = 0.5 * factors * image.grid.spacing
            if np.all(factors[-1] == 1):
                sigmas[-1] = 0.0
        else:
            sigmas = schedule(smoothing, levels, dim, f"{self.role}ImagePyramidSmoothingSchedule")
        self.sigmas = np.maximum(sigmas, 0.0)
        self.rescale = np.maximum(rescale, 1.0)
        return self

    def level(self, l: int) -> Image:
        sigma, r = self.sigmas[l], self.rescale[l]
        smoothed = gaussian_smooth(self.image, sigma) if np.any(sigma > 0) else self.image
        return smoothed if np.all(r == 1) else resample_to_grid(smoothed, self.image.grid.shrunk(r, centred=False))
