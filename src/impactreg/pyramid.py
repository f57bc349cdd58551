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


class Pyramid:
    """The images of one pyramid (fixed or moving) for every level."""

    def __init__(self, kind: str, image: Image, levels: int, factors: np.ndarray,
                 sigmas: np.ndarray | None = None, rescale: np.ndarray | None = None):
        self.kind, self.image, self.levels = kind, image, levels
        self.factors = factors
        self.sigmas = sigmas
        self.rescale = rescale

    @classmethod
    def from_parameters(cls, role: str, image: Image, pm) -> "Pyramid":
        """``role`` is 'Fixed' or 'Moving'; reads the pyramid keys of a ParameterMap."""
        levels = pm.get("NumberOfResolutions")
        dim = image.dim
        component = pm.get(f"{role}ImagePyramid")
        kind = component[len(role):-len("ImagePyramid")]
        factors = schedule(pm.values(f"{role}ImagePyramidSchedule") or pm.values("ImagePyramidSchedule"),
                           levels, dim, f"{role}ImagePyramidSchedule")
        sigmas = rescale = None
        if kind == "Generic":
            rescale_values = pm.values(f"{role}ImagePyramidRescaleSchedule") or pm.values("ImagePyramidRescaleSchedule")
            rescale = schedule(rescale_values, levels, dim, f"{role}ImagePyramidRescaleSchedule", default=factors)
            smoothing = pm.values(f"{role}ImagePyramidSmoothingSchedule") or pm.values("ImagePyramidSmoothingSchedule")
            if smoothing is None:
                sigmas = 0.5 * factors * image.grid.spacing
                if np.all(factors[-1] == 1):
                    sigmas[-1] = 0.0
            else:
                sigmas = schedule(smoothing, levels, dim, f"{role}ImagePyramidSmoothingSchedule")
            sigmas = np.maximum(sigmas, 0.0)
            rescale = np.maximum(rescale, 1.0)
        if np.any(factors <= 0) and kind != "Smoothing":
            raise ParameterError(f"{role}ImagePyramidSchedule: shrink factors must be positive")
        return cls(kind, image, levels, factors, sigmas, rescale)

    def level(self, l: int) -> Image:
        f = self.factors[l]
        image = self.image
        if self.kind == "Smoothing":
            return gaussian_smooth(image, 0.5 * f * image.grid.spacing)
        if self.kind == "Recursive":
            if np.all(f == 1) and l == self.levels - 1:
                return image
            smoothed = gaussian_smooth(image, 0.5 * f * image.grid.spacing)
            return resample_to_grid(smoothed, image.grid.shrunk(f, centred=True))
        if self.kind == "Shrinking":
            return resample_to_grid(image, image.grid.shrunk(f, centred=True))
        sigma = self.sigmas[l]
        smoothed = gaussian_smooth(image, sigma) if np.any(sigma > 0) else image
        r = self.rescale[l]
        return smoothed if np.all(r == 1) else resample_to_grid(smoothed, image.grid.shrunk(r, centred=False))
