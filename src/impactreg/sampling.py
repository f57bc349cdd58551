"""Image samplers: where in the fixed image the metric is evaluated (elastix's ImageSampler).

``Full``: every voxel; ``Grid``: every ``SampleGridSpacing``-th voxel; ``Random``: random voxels;
``RandomCoordinate``: random continuous positions (a random voxel plus a uniform offset inside
it). All honour the fixed mask and return world points (N, D). Cost per draw is proportional
to the number of samples, never to the image size.
"""
from __future__ import annotations

import contextlib

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
                 dtype: torch.dtype = torch.float32, region: tuple[np.ndarray, np.ndarray] | None = None):
        """``region``: elastix's fixed image region (start, size), x-y-z order (see fixed_image_region), or None."""
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind}")
        self.kind, self.grid, self.n = kind, grid, int(number_of_samples)
        self.generator = generator
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.has_mask = mask is not None
        self.region = region
        if mask is None:  # no voxel-sized list or mask: random samplers draw over the box, Full/Grid enumerate it
            lo, size = ((np.zeros(grid.dim, dtype=int), np.asarray(grid.size)) if region is None
                        else (np.asarray(region[0], dtype=int), np.asarray(region[1], dtype=int)))
            self._box = (lo, size)
            self._candidates = None if kind in ("Random", "RandomCoordinate") else self._grid_voxels(grid_spacing)
            self._count = int(np.prod(size)) if self._candidates is None else self._candidates.numel()
            if self._candidates is not None:
                self._candidates = self._candidates.to(self.device)
            if self._count == 0:
                raise ImageError("the sample grid has no voxel at this resolution; use a smaller SampleGridSpacing")
            return
        voxels = mask.to("cpu").bool()
        if region is not None:
            voxels = region_mask(grid, region, voxels)
        if kind == "Grid":
            step = np.broadcast_to(np.asarray(grid_spacing, dtype=int), (grid.dim,))
            keep = torch.zeros_like(voxels)
            start = _grid_start(voxels, step)
            keep[tuple(slice(int(a), None, int(s)) for a, s in zip(reversed(start), reversed(step)))] = True
            voxels = voxels & keep
        flat = torch.nonzero(voxels.reshape(-1)).reshape(-1)
        if flat.numel() == 0:
            raise ImageError("the fixed mask is empty at this resolution: no voxel to sample; check the mask "
                             "(it must overlap the fixed image and have non-zero voxels)")
        self._candidates = flat.to(self.device)
        self._count = flat.numel()

    def _grid_voxels(self, grid_spacing) -> torch.Tensor:
        """Flat indices (x fastest, ascending) of every voxel (Full) or of the sample grid (Grid) of the box
        (the image, or elastix's fixed image region), made without a voxel-sized mask."""
        dim = self.grid.dim
        lo, size = self._box
        step = np.broadcast_to(np.asarray(grid_spacing if self.kind == "Grid" else (1,), dtype=int), (dim,))
        start = _centred_start(lo, size, step)
        flat = torch.zeros((), dtype=torch.int64)
        stride = 1
        for axis in range(dim):  # x first; x varies fastest in the flat index
            stop = int(lo[axis] + size[axis])
            along = torch.arange(int(start[axis]), stop, int(step[axis]), dtype=torch.int64) * stride
            flat = (flat.unsqueeze(-1) + along) if axis == 0 else (along.reshape(-1, *([1] * flat.dim())) + flat)
            stride *= self.grid.size[axis]
        return flat.reshape(-1)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """World points (N, D) of this draw."""
        if self.kind in ("Full", "Grid"):
            return self.grid.index_to_world(self.grid.unravel(self._candidates).to(self.dtype))
        n = self.n if n is None else n
        if self.kind == "RandomCoordinate":
            return self._random_coordinates(n)
        pick = torch.randint(0, self._count, (n,), generator=self.generator, device="cpu")
        flat = self._box_flat(pick) if self._candidates is None else self._candidates[pick.to(self.device)]
        return compute.voxel_world_points(self.grid, flat.to(self.device), None, self.dtype)

    def _box_flat(self, pick: torch.Tensor) -> torch.Tensor:
        """Image flat indices of positions ``pick`` counted in the box (x fastest)."""
        lo, size = self._box
        if self.region is None:
            return pick
        flat = torch.zeros_like(pick)
        for axis in range(self.grid.dim):
            flat += (pick % int(size[axis]) + int(lo[axis])) * self.grid.strides[axis]
            pick = pick // int(size[axis])
        return flat

    def _random_coordinates(self, n: int) -> torch.Tensor:
        """Continuous positions between the outermost voxel centres, as elastix draws them: uniform
        over the image, or within half a voxel of a mask voxel. A sample beyond the centres would compare
        an extrapolated (flat) fixed value, which biases the optimum on coarse voxels."""
        dim = self.grid.dim
        last = torch.tensor(self.grid.size, dtype=self.dtype) - 1
        jitter = torch.rand((n, dim), generator=self.generator, dtype=self.dtype, device="cpu")
        full = self.region is None and self._count == self.grid.num_voxels  # a mask of every voxel: as none
        if not self.has_mask or full:  # uniform in [0, size - 1] per axis (elastix: its fixed image region's first to last)
            low = torch.zeros_like(last) if self.region is None else torch.tensor(self.region[0], dtype=self.dtype)
            high = last if self.region is None else low + torch.tensor(self.region[1], dtype=self.dtype) - 1
            return compute.box_coordinates(self.grid, low, high, jitter, self.dtype, self.device)
        pick = torch.randint(0, self._count, (n,), generator=self.generator, device="cpu").to(self.device)
        flat = self._candidates[pick]
        index = self.grid.unravel(flat.to("cpu")).to(self.dtype)
        jitter = (index + jitter - 0.5).clamp(torch.zeros_like(last), last) - index
        return compute.voxel_world_points(self.grid, flat, jitter, self.dtype)


def _grid_start(voxels: torch.Tensor, step: np.ndarray) -> np.ndarray:
    """First grid index per axis (x, y[, z]) of elastix's ImageGridSampler: the grid of ``step`` is centred
    on the bounding box of the voxels that may be sampled (the fixed mask's, or the whole image)."""
    where = torch.nonzero(voxels)
    if where.numel() == 0:
        return np.zeros(len(step), dtype=int)
    where = where.numpy()[:, ::-1]  # x-y-z order
    lo = where.min(axis=0)
    return _centred_start(lo, where.max(axis=0) - lo + 1, step)


def _centred_start(lo: np.ndarray, size: np.ndarray, step: np.ndarray) -> np.ndarray:
    """First index per axis of a grid of ``step`` centred on the box [lo, lo + size)."""
    count = 1 + (size - 1) // step
    return lo + (size - ((count - 1) * step + 1)) // 2


def exact_gradient_sampler(grid: Grid, mask: torch.Tensor | None, number_of_samples: int, device=None,
                           dtype: torch.dtype = torch.float32,
                           region: tuple[np.ndarray, np.ndarray] | None = None) -> ImageSampler:
    """elastix's sampler for ASGD's 'exact' gradients: a grid over the bounding box of the fixed
    mask (or the whole image) with the isotropic voxel step round((box voxels / N)^(1/D)), at least 1;
    within elastix's fixed image region when it is not the whole image."""
    if region is not None:
        mask = region_mask(grid, region, mask)
    if mask is None:
        lo, size = np.zeros(grid.dim, dtype=int), np.asarray(grid.size)
    else:
        where = torch.nonzero(mask.to("cpu")).numpy()[:, ::-1]  # x-y-z order
        lo = where.min(axis=0)
        size = where.max(axis=0) - lo + 1
    step = max(1, int(np.floor((np.prod(size.astype(np.float64)) / max(number_of_samples, 1)) ** (1.0 / grid.dim) + 0.5)))
    return ImageSampler("Grid", grid, mask, grid_spacing=(step,), device=device, dtype=dtype, region=region)


def fixed_image_region(image_grid: Grid, level_grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """elastix's fixed image region at a pyramid level (MultiResolutionImageRegistrationMethod2::PreparePyramids):
    the image's first and last voxel centres as continuous indices of the level image, the start ceiled and the end
    floored, in ITK's float64 arithmetic. (start, size) in x-y-z order, or None when it is the whole level image.
    A float64 round trip can floor the last index one below (an image of 78 voxels of 2.732 mm keeps 77): elastix
    then never samples that row, and neither does impactreg."""
    last = np.asarray(image_grid.size, dtype=np.float64) - 1
    ends = image_grid.index_to_world(np.stack([np.zeros_like(last), last]))
    cindex = level_grid.world_to_index(ends)
    size = np.asarray(level_grid.size)
    start = np.clip(np.ceil(cindex[0]).astype(np.int64), 0, size - 1)
    stop = np.clip(np.floor(cindex[1]).astype(np.int64), start, size - 1)
    if np.all(start == 0) and np.all(stop == size - 1):
        return None
    return start, stop - start + 1


def region_mask(grid: Grid, region: tuple[np.ndarray, np.ndarray], mask: torch.Tensor | None) -> torch.Tensor:
    """``mask`` (or the whole image) restricted to the box ``region`` = (start, size), x-y-z order."""
    start, size = region
    box = torch.zeros(grid.shape, dtype=torch.bool)
    box[tuple(slice(int(a), int(a + n)) for a, n in zip(reversed(start), reversed(size)))] = True
    return box if mask is None else box & mask.to("cpu").bool()


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
)


class Sampler:
    """An ImageSampler component: where in the fixed image the metrics are evaluated at one level."""

    elastix_name = ""
    keys: tuple[Key, ...] = _COMMON_KEYS
    fixed_interpolation_order = 0  # how the fixed image is read at the samples

    @property
    def kind(self) -> str:
        """The ImageSampler draw this component makes (its own name unless it shares another's)."""
        return self.elastix_name

    fixed_region = None  # elastix's fixed image region at this level (set by the engine; None: the whole image)

    def begin_level(self, view, grid: Grid, mask: torch.Tensor | None, generator, device, dtype) -> None:
        self.sampler = ImageSampler(self.kind, grid, mask, view.get("NumberOfSpatialSamples"),
                                    self.grid_spacing(view, grid.dim), generator, device, dtype, self.fixed_region)
        self.new_samples = False
        self.required_ratio = view.get("RequiredRatioOfValidSamples") if view.get("CheckNumberOfSamples") else 0.0
        self.attempts = view.get("MaximumNumberOfSamplingAttempts")

    random_region = False  # whether draws fall in a random sample region (RandomCoordinate's UseRandomSampleRegion)

    def grid_spacing(self, view, dim: int) -> list[int]:
        return [2]

    def sample(self) -> torch.Tensor:
        return self.sampler.sample()

    @contextlib.contextmanager
    def estimating(self):
        """While an optimiser estimates its settings from sampled gradients (elastix draws them over the whole
        image then, without a random sample region)."""
        yield


class FullSampler(Sampler):
    elastix_name = "Full"


class GridSampler(Sampler):
    elastix_name = "Grid"
    keys = _COMMON_KEYS + (Key("SampleGridSpacing", "int", 2, "Grid sampler: spacing in voxels, one per dimension for "
                               "each level (entry level x D + d; 2 where absent, as elastix)", multi=True, minimum=1),)

    def grid_spacing(self, view, dim: int) -> list[int]:
        """elastix's reading: axis d of level l is entry l * D + d, and 2 where the list has no such entry
        (so (SampleGridSpacing 4) is 4 2 2 at level 0 of a 3D image and 2 2 2 after, as in elastix)."""
        values = view.values("SampleGridSpacing") or []
        start = view.level * dim
        return [values[start + d] if start + d < len(values) else 2 for d in range(dim)]


class RandomSampler(Sampler):
    elastix_name = "Random"
    keys = _RANDOM_KEYS

    def begin_level(self, view, grid, mask, generator, device, dtype) -> None:
        super().begin_level(view, grid, mask, generator, device, dtype)
        self.new_samples = view.get("NewSamplesEveryIteration")


class RandomCoordinateSampler(RandomSampler):
    """Random continuous positions; with UseRandomSampleRegion, elastix's random sample region: at every draw
    a box of SampleRegionSize mm placed uniformly at random inside the image (cropped to the fixed mask's
    bounding box), the samples uniform inside the box and the mask."""

    elastix_name = "RandomCoordinate"
    fixed_interpolation_order = 1
    keys = _RANDOM_KEYS + (
        Key("UseRandomSampleRegion", "bool", False, "RandomCoordinate: draw each iteration's samples in a random box "
            "of SampleRegionSize", per_level=True),
        Key("SampleRegionSize", "float", None, "RandomCoordinate: the random box's size in mm, one per axis for each "
            "level (entry level x D + d, else the first; default min(extent, largest extent / 3))", multi=True,
            minimum=0, exclusive_minimum=True),
    )

    def begin_level(self, view, grid, mask, generator, device, dtype) -> None:
        super().begin_level(view, grid, mask, generator, device, dtype)
        self.region = None
        if view.get("UseRandomSampleRegion"):
            self.region = SampleRegion(grid, mask, sample_region_size(view, grid), generator, device, dtype)
        self.random_region = self.region is not None
        self._whole_image = False

    def sample(self) -> torch.Tensor:
        if self.region is None or self._whole_image:
            return super().sample()
        return self.region.sample(self.sampler.n)

    @contextlib.contextmanager
    def estimating(self):
        self._whole_image = True
        try:
            yield
        finally:
            self._whole_image = False


def sample_region_size(view, grid: Grid) -> np.ndarray:
    """elastix's SampleRegionSize in mm per axis (x, y[, z]) for this level: entry level x D + d, else the first;
    absent, min(extent, largest extent / 3) with extent = (size - 1) x spacing. Larger than the image: one line."""
    extent = (np.asarray(grid.size) - 1) * grid.spacing
    values = view.values("SampleRegionSize")
    if values is None:
        return np.minimum(extent, extent.max() / 3.0)
    start = view.level * grid.dim
    size = np.array([values[start + d] if start + d < len(values) else values[0] for d in range(grid.dim)], dtype=float)
    if np.any(size > extent + 1e-9):
        axis = int(np.argmax(size > extent + 1e-9))
        raise ParameterError(f"{view.source + ': ' if view.source else ''}(SampleRegionSize {' '.join(map(str, values))}): "
                             f"{size[axis]:g} mm along axis {axis} but the fixed image at level {view.level} spans "
                             f"{extent[axis]:g} mm; give a smaller SampleRegionSize (about a third of the image)")
    return size


class SampleRegion:
    """Draws of elastix's random sample region (ImageRandomCoordinateSampler with UseRandomSampleRegion)."""

    TRIES = 10  # elastix gives up after 10 x N candidate positions in the mask

    def __init__(self, grid: Grid, mask: torch.Tensor | None, size_mm: np.ndarray, generator, device, dtype):
        self.grid, self.generator, self.device, self.dtype = grid, generator, torch.device(device or "cpu"), dtype
        self.mask = None if mask is None else mask.to("cpu").bool()
        if self.mask is None:
            lo, hi = np.zeros(grid.dim), np.asarray(grid.size, dtype=float) - 1
        else:
            where = torch.nonzero(self.mask).numpy()[:, ::-1]  # x-y-z order
            lo, hi = where.min(axis=0).astype(float), where.max(axis=0).astype(float)
        self.lo = torch.tensor(lo, dtype=torch.float64)
        self.size = torch.tensor(size_mm / grid.spacing, dtype=torch.float64)  # in voxels
        self.start_span = torch.clamp(torch.tensor(hi, dtype=torch.float64) - self.size - self.lo, min=0.0)
        self.upper = torch.tensor(np.asarray(grid.size, dtype=float) - 1, dtype=torch.float64)

    def sample(self, n: int) -> torch.Tensor:
        """World points (n, D): one random box, n uniform positions inside it (and the mask)."""
        start = self.lo + torch.rand(self.grid.dim, generator=self.generator, dtype=torch.float64) * self.start_span
        found, total = [], 0
        for _ in range(self.TRIES):
            index = start + torch.rand((n, self.grid.dim), generator=self.generator, dtype=torch.float64) * self.size
            keep = ((index >= 0) & (index <= self.upper)).all(dim=1)
            if self.mask is not None:
                voxel = index.round().long().clamp(min=0)
                voxel = torch.minimum(voxel, self.upper.long())
                keep &= self.mask[tuple(voxel[:, d] for d in reversed(range(self.grid.dim)))]
            found.append(index[keep])
            total += int(keep.sum())
            if total >= n:
                break
        index = torch.cat(found)[:n]
        if index.shape[0] < n:
            raise ImageError(f"the random sample region holds too few voxels of the fixed mask ({index.shape[0]} of "
                             f"{n} samples found); give a larger SampleRegionSize or set (UseRandomSampleRegion \"false\")")
        return self.grid.index_to_world(index).to(device=self.device, dtype=self.dtype)


class RandomSparseMaskSampler(RandomSampler):
    """elastix's RandomSparseMask: random voxels, drawn with replacement from the list of the fixed
    mask's voxels (elastix's choice for small masks in large images). Like elastix, it needs a mask."""

    elastix_name = "RandomSparseMask"
    kind = "Random"

    def begin_level(self, view, grid, mask, generator, device, dtype) -> None:
        if mask is None:
            raise ParameterError(f"{view.source + ': ' if view.source else ''}(ImageSampler \"RandomSparseMask\") "
                                 f"samples inside the fixed mask and needs one: give -fMask (Python: fixed_mask=), "
                                 f"or use (ImageSampler \"Random\")")
        super().begin_level(view, grid, mask, generator, device, dtype)
