"""Image samplers: where in the fixed image the metric is evaluated (elastix's ImageSampler).

``Full``: every voxel; ``Grid``: every ``SampleGridSpacing``-th voxel; ``Random``: random voxels;
``RandomCoordinate``: random continuous positions (a random voxel plus a uniform offset inside
it). All honour the fixed mask and return world points (N, D). Cost per draw is proportional
to the number of samples, never to the image size.
"""
from __future__ import annotations

import numpy as np
import torch

from . import compute
from .errors import ImageError, ParameterError
from .geometry import Grid
from .keys import NO_EFFECT, Key

SAMPLERS = ("Full", "Grid", "Random", "RandomCoordinate")


class ImageSampler:
    def __init__(self, kind: str, grid: Grid, mask: torch.Tensor | None = None, number_of_samples: int = 2000,
                 grid_spacing=(2,), generator: torch.Generator | None = None, device=None,
                 dtype: torch.dtype = torch.float32, grid_start=(0,)):
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind}")
        self.kind, self.grid, self.n = kind, grid, int(number_of_samples)
        self.generator = generator
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        voxels = torch.ones(grid.shape, dtype=torch.bool) if mask is None else mask.to("cpu").bool()
        if kind == "Grid":
            step = np.broadcast_to(np.asarray(grid_spacing, dtype=int), (grid.dim,))
            keep = torch.zeros_like(voxels)
            start = np.broadcast_to(np.asarray(grid_start, dtype=int), (grid.dim,))
            keep[tuple(slice(int(a), None, int(s)) for a, s in zip(reversed(start), reversed(step)))] = True
            voxels = voxels & keep
        flat = torch.nonzero(voxels.reshape(-1)).reshape(-1)
        if flat.numel() == 0:
            raise ImageError("the fixed mask is empty at this resolution: no voxel to sample; check the mask "
                             "(it must overlap the fixed image and have non-zero voxels)")
        self._candidates = flat.to(self.device)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """World points (N, D) of this draw."""
        if self.kind in ("Full", "Grid"):
            return self.grid.index_to_world(self.grid.unravel(self._candidates).to(self.dtype))
        n = self.n if n is None else n
        if self.kind == "RandomCoordinate":
            return self._random_coordinates(n)
        pick = torch.randint(0, self._candidates.numel(), (n,), generator=self.generator, device="cpu").to(self.device)
        return compute.voxel_world_points(self.grid, self._candidates[pick], None, self.dtype)

    def _random_coordinates(self, n: int) -> torch.Tensor:
        """Continuous positions between the outermost voxel centres, as elastix draws them: uniform
        over the image, or within half a voxel of a mask voxel. A sample beyond the centres would compare
        an extrapolated (flat) fixed value, which biases the optimum on coarse voxels."""
        dim = self.grid.dim
        last = torch.tensor(self.grid.size, dtype=self.dtype) - 1
        jitter = torch.rand((n, dim), generator=self.generator, dtype=self.dtype, device="cpu")
        if self._candidates.numel() == self.grid.num_voxels:  # no mask: uniform in [0, size - 1] per axis
            position = jitter * last
            index = torch.round(position)
            strides = torch.tensor(self.grid.strides, dtype=torch.int64)
            flat = (index.to(torch.int64) * strides).sum(1).to(self.device)
            return compute.voxel_world_points(self.grid, flat, position - index, self.dtype)
        pick = torch.randint(0, self._candidates.numel(), (n,), generator=self.generator, device="cpu").to(self.device)
        flat = self._candidates[pick]
        index = self.grid.unravel(flat.to("cpu")).to(self.dtype)
        jitter = (index + jitter - 0.5).clamp(torch.zeros_like(last), last) - index
        return compute.voxel_world_points(self.grid, flat, jitter, self.dtype)


def exact_gradient_sampler(grid: Grid, mask: torch.Tensor | None, number_of_samples: int, device=None,
                           dtype: torch.dtype = torch.float32) -> ImageSampler:
    """elastix's sampler for ASGD's 'exact' gradients: a grid over the bounding box of the fixed
    mask (or the whole image) with the isotropic voxel step round((box voxels / N)^(1/D)), at least 1."""
    if mask is None:
        lo, size = np.zeros(grid.dim, dtype=int), np.asarray(grid.size)
    else:
        where = torch.nonzero(mask.to("cpu")).numpy()[:, ::-1]  # x-y-z order
        lo = where.min(axis=0)
        size = where.max(axis=0) - lo + 1
    step = max(1, int(np.floor((np.prod(size.astype(np.float64)) / max(number_of_samples, 1)) ** (1.0 / grid.dim) + 0.5)))
    return ImageSampler("Grid", grid, mask, grid_spacing=(step,), device=device, dtype=dtype, grid_start=tuple(lo))


# the ImageSampler components ---------------------------------------------------------------------

MAX_SPATIAL_SAMPLES = 10_000_000  # per-sample metric terms (~1 KB each for a 3D B-spline) outgrow memory beyond

_COMMON_KEYS = (
    Key("NewSamplesEveryIteration", "bool", False, "draw new samples each iteration", per_level=True),
    Key("MaximumNumberOfSamplingAttempts", "int", 0, "redraws allowed when too few samples are valid",
        per_level=True, minimum=0),
    Key("RequiredRatioOfValidSamples", "float", 0.25, "minimum fraction of samples that must map inside the moving image",
        per_level=True, minimum=0, maximum=1),
    Key("CheckNumberOfSamples", "bool", True, "fail when too few samples are valid", per_level=True),
)
_RANDOM_KEYS = _COMMON_KEYS + (
    Key("NumberOfSpatialSamples", "int", 5000, "samples per iteration (Random, RandomCoordinate); the cost needs 2",
        per_level=True, minimum=2, maximum=MAX_SPATIAL_SAMPLES),
    Key("UseRandomSampleRegion", "bool", False, NO_EFFECT, per_level=True),
)


class Sampler:
    """An ImageSampler component: where in the fixed image the metrics are evaluated at one level."""

    elastix_name = ""
    keys: tuple[Key, ...] = _COMMON_KEYS
    fixed_interpolation_order = 0  # how the fixed image is read at the samples

    def begin_level(self, view, grid: Grid, mask: torch.Tensor | None, generator, device, dtype) -> None:
        self.sampler = ImageSampler(self.elastix_name, grid, mask, view.get("NumberOfSpatialSamples"),
                                    self.grid_spacing(view, grid.dim), generator, device, dtype)
        self.new_samples = False
        self.required_ratio = view.get("RequiredRatioOfValidSamples") if view.get("CheckNumberOfSamples") else 0.0
        self.attempts = view.get("MaximumNumberOfSamplingAttempts")

    def grid_spacing(self, view, dim: int) -> list[int]:
        return [2]

    def sample(self) -> torch.Tensor:
        return self.sampler.sample()


class FullSampler(Sampler):
    elastix_name = "Full"


class GridSampler(Sampler):
    elastix_name = "Grid"
    keys = _COMMON_KEYS + (Key("SampleGridSpacing", "int", 2, "Grid sampler: spacing in voxels (one, one per dimension, "
                               "or one per dimension for each level)", multi=True, minimum=1),)

    def grid_spacing(self, view, dim: int) -> list[int]:
        """elastix reads entry level * D + d; one value or one per dimension serve every level."""
        values = view.values("SampleGridSpacing") or [2]
        if len(values) in (1, dim):
            return values
        if len(values) % dim == 0 and len(values) >= (view.level + 1) * dim:
            return values[view.level * dim:(view.level + 1) * dim]
        raise ParameterError(f"{view.source + ': ' if view.source else ''}(SampleGridSpacing {' '.join(map(str, values))}): "
                             f"give 1, {dim} (one per dimension) or {dim} per resolution level")


class RandomSampler(Sampler):
    elastix_name = "Random"
    keys = _RANDOM_KEYS

    def begin_level(self, view, grid, mask, generator, device, dtype) -> None:
        super().begin_level(view, grid, mask, generator, device, dtype)
        self.new_samples = view.get("NewSamplesEveryIteration")


class RandomCoordinateSampler(RandomSampler):
    elastix_name = "RandomCoordinate"
    fixed_interpolation_order = 1
