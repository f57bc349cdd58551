"""Feature maps that carry their validity, computed along shared axes.

A ``FeatureMap`` is one layer's features on its grid with a bool mask of the voxels whose receptive
field lies wholly inside the image (and its mask): elsewhere the network saw padding, and its
features are made up. Sampling a map at world points counts a point only where every voxel of its
linear neighbourhood is valid (``FeatureSampler``); Static mode, map updates and the dense engine
share this rule.

Both images' maps are computed along the same axes (``shared_direction``): channels of MIND and of
any network are defined along array axes, so maps computed along different axes (an image stored
with x flipped, or with another axis order) hold permuted channels. By default the axes are the
fixed image's; a network trained in a canonical orientation (the catalogue's ``orientation``) gets
that orientation. An image is resampled onto a grid along those axes over its own box: exact for
flips and permutations; an oblique image leaves corners of the grid outside it, marked invalid.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..compute.memory import MemoryBudget
from ..errors import ModelError
from ..filters import erode, resample_to_grid
from ..geometry import Grid, sizes_along
from ..image import Image
from ..interpolation import Interpolator, Samples, flush_subnormals
from .catalog import DEFAULT_HALF_WIDTH, catalogued_half_widths, find_model, orientation_direction
from .extractor import FeatureExtractor
from .inference import feature_maps

log = logging.getLogger("impactreg")

VALID_LEVEL = 1.0 - 1e-4  # linear interpolation of the validity mask: 1 where every neighbour is valid


@dataclass
class FeatureMap:
    """One layer's features ``values`` (C, *spatial), torch order, on ``grid``; ``valid`` (*spatial)
    bool marks the voxels whose receptive field lies inside the image and its mask."""

    values: torch.Tensor
    grid: Grid
    valid: torch.Tensor
    _samplers: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def channels(self) -> int:
        return self.values.shape[0]

    @property
    def image(self) -> Image:
        return Image(self.values, self.grid, "float32")

    def with_values(self, values: torch.Tensor) -> "FeatureMap":
        """The same grid and validity with other channels (e.g. principal components)."""
        return FeatureMap(values, self.grid, self.valid)

    def sampler(self, order: int = 3, device=None) -> "FeatureSampler":
        """A sampler of this map (B-spline ``order``), built once per order and device."""
        key = (order, str(device))
        if key not in self._samplers:
            self._samplers[key] = FeatureSampler(self, order, device)
        return self._samplers[key]

    def sample(self, points: torch.Tensor, order: int = 3, gradient: bool = False) -> Samples:
        return self.sampler(order, points.device)(points, gradient)


class FeatureSampler:
    """Samples a FeatureMap at world points (N, D): values (N, C), gradients (N, C, D) in value per mm;
    ``inside`` is True only inside the map where every voxel of the point's linear neighbourhood is valid."""

    def __init__(self, feature_map: FeatureMap, order: int, device=None):
        self.grid = feature_map.grid
        self.channels = feature_map.channels
        # in the map itself, channel-last as the compiled kernel reads it: the interpolator then needs no copy of it
        flush_subnormals(feature_map.values, owned=True)
        if feature_map.values.device.type == "cpu" and feature_map.channels > 1:
            feature_map.values = feature_map.values.movedim(0, -1).contiguous().movedim(-1, 0)
        self.values = Interpolator(feature_map.image, order=order, device=device)
        validity = Image(feature_map.valid.to(torch.float32)[None], feature_map.grid, "float32")
        self.validity = Interpolator(validity, order=1, device=device)

    def valid(self, points: torch.Tensor) -> torch.Tensor:
        return self.validity(points).values[..., 0] >= VALID_LEVEL

    def __call__(self, points: torch.Tensor, gradient: bool = False) -> Samples:
        sampled = self.values(points, gradient)
        return Samples(sampled.values, sampled.gradients, sampled.inside & self.valid(points))


# shared axes --------------------------------------------------------------------------------------

def shared_direction(fixed_grid: Grid, model_name: str, dimension: int) -> np.ndarray:
    """The axes both images' features are computed along: the catalogued orientation of a 3D network
    trained in one, else the fixed image's axes."""
    info = find_model(model_name)
    if info is not None and info.orientation and fixed_grid.dim == 3 and dimension == 3:
        return orientation_direction(info.orientation)
    return np.array(fixed_grid.direction)


def feature_grid(image_grid: Grid, direction: np.ndarray, voxel_size) -> Grid:
    """The grid the model runs on: whole voxels of ``voxel_size`` (along ``direction``'s axes; a 2D
    model's two sizes on a 3D image take the image's spacing along the third axis) inside the
    image's box."""
    v = tuple(float(s) for s in voxel_size)
    if len(v) == 2 and image_grid.dim == 3:
        v = v + (float(sizes_along(image_grid.spacing, image_grid.direction, direction)[2]),)
    return image_grid.with_voxel_size(v, direction)


CHUNK = 1 << 18  # voxels whose validity is computed at once (about 24 MB of float64 points)


def input_validity(image_grid: Grid, mask: Image | None, grid: Grid) -> torch.Tensor:
    """(*grid.shape) bool: voxels of ``grid`` whose centre lies inside the image (ITK's rule) and
    inside ``mask`` (nearest neighbour; any grid), computed slab by slab along the last axis."""
    upper = torch.tensor(image_grid.size, dtype=torch.float64) - 0.5
    sampler = None if mask is None else Interpolator(mask, order=0, dtype=torch.float64)
    plane = int(np.prod(grid.size[:-1]))
    depth = max(1, CHUNK // plane)
    slabs = []
    for first in range(0, grid.size[-1], depth):
        size = grid.size[:-1] + (min(depth, grid.size[-1] - first),)
        slab = grid.region([0] * (grid.dim - 1) + [first], size)
        points = slab.voxel_points(dtype=torch.float64)
        u = image_grid.world_to_index(points)
        inside = ((u >= -0.5) & (u < upper)).all(dim=-1)
        if sampler is not None:
            inside &= sampler(points).values[:, 0] > 0
        slabs.append(inside.reshape(slab.shape))
    return torch.cat(slabs, dim=0)


def _any_invalid_in_blocks(invalid: torch.Tensor, stride: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
    """Per output voxel of a layer of ``stride`` (torch order) and ``shape``: any invalid input voxel
    in its block of stride voxels (blocks reaching past the input count as invalid)."""
    if all(k == 1 for k in stride) and tuple(invalid.shape) == tuple(shape):
        return invalid
    pad = []
    for n, k, m in reversed(list(zip(invalid.shape, stride, shape))):
        pad += [0, max(0, m * k - n)]
    x = F.pad(invalid.to(torch.float32)[None, None], pad, value=1.0)
    pool = F.max_pool3d if invalid.dim() == 3 else F.max_pool2d
    pooled = pool(x, stride, stride=stride)[0, 0] > 0.5
    return pooled[tuple(slice(0, m) for m in shape)]


def layer_validity(input_valid: torch.Tensor, half_width: tuple[int, ...], stride: tuple[int, ...],
                   shape: tuple[int, ...]) -> torch.Tensor:
    """A layer's validity (``shape``, torch order) from its input's: every input voxel within
    ``half_width`` (per torch axis) of its block of ``stride`` voxels is valid."""
    eroded = input_valid
    for axis, h in enumerate(half_width):  # a box erodes axis by axis
        if h > 0:
            radius = [0] * input_valid.dim()
            radius[axis] = int(h)
            eroded = erode(eroded, radius)
    return ~_any_invalid_in_blocks(~eroded, stride, shape)


# receptive fields ---------------------------------------------------------------------------------

_MEASURED: dict[tuple, int] = {}
PROBE = {2: 65, 3: 33}  # voxels per axis of the input that measures a receptive field
GRADIENT_FLOOR = 1e-3  # input voxels whose gradient is below this share of the largest do not count


def measured_half_width(extractor: FeatureExtractor, layer: int, nb_layers: int, device) -> int | None:
    """The half receptive field (voxels) of ``layer`` measured on a random probe: how far from the
    centre output voxel the input gradient reaches (above GRADIENT_FLOOR of its peak). None when
    the model does not run on the probe; the probe's half size when the field fills it."""
    key = (extractor.name, extractor.dimension, layer, nb_layers)
    if key in _MEASURED:
        return _MEASURED[key]
    n = PROBE[extractor.dimension]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, 1) + (n,) * extractor.dimension, generator=generator).to(device).requires_grad_(True)
    stats = torch.tensor([0.0, 1.0, 0.5, 0.29], device=device)
    try:
        with torch.enable_grad():
            out = extractor(x, stats, torch.eye(extractor.dimension, dtype=torch.int64), nb_layers)[layer]
            centre = (slice(None), slice(None)) + tuple(s // 2 for s in out.shape[2:])
            grad, = torch.autograd.grad(out[centre].sum(), x)
    except (ModelError, RuntimeError, IndexError):
        _MEASURED[key] = None
        return None
    g = grad[0, 0].abs()
    reach = torch.nonzero(g > GRADIENT_FLOOR * g.max())
    stride = [max(1, round(n / o)) for o in out.shape[2:]]
    centres = [s // 2 * k + (k - 1) / 2 for s, k in zip(out.shape[2:], stride)]
    half = max(int(math.ceil(max(abs(float(reach[:, a].min()) - c), abs(float(reach[:, a].max()) - c))))
               for a, c in enumerate(centres)) if len(reach) else 0
    _MEASURED[key] = half
    return half


def half_widths(extractor: FeatureExtractor, layers: list[int], nb_layers: int, patch_size, device) -> list[int]:
    """Per selected layer, the half receptive field in input voxels: the catalogue's (MIND: r + d),
    else measured, else half the PatchSize, else DEFAULT_HALF_WIDTH."""
    known = catalogued_half_widths(extractor.name, layers)
    if known is not None:
        return known
    widths = []
    for layer in layers:
        h = measured_half_width(extractor, layer, nb_layers, device)
        if h is None:
            tile = max(int(p) for p in patch_size)
            h = tile // 2 if tile > 0 else DEFAULT_HALF_WIDTH
            log.info("receptive field of %s layer %d unknown; %d voxels assumed", extractor.name, layer, h)
        widths.append(h)
    return widths


# computing maps -----------------------------------------------------------------------------------

def compute_feature_maps(extractor: FeatureExtractor, image: Image, mask: Image | None, direction: np.ndarray,
                         voxel_size, patch_size, layers_mask: str, stats: torch.Tensor, device,
                         budget: MemoryBudget | None = None) -> tuple[Image, list[FeatureMap]]:
    """(the image resampled onto the feature grid along ``direction``, one FeatureMap per selected
    layer). ``image`` is expected low-pass filtered for the voxel size already; ``mask`` (any grid)
    limits where its features are valid."""
    grid = feature_grid(image.grid, direction, voxel_size)
    default = float(image.data.min())
    resampled, layers = feature_maps(extractor, image, grid.spacing, patch_size, layers_mask, stats, device, budget,
                                     grid=grid, default=default)
    valid = input_validity(image.grid, mask, grid).to(resampled.data.device)
    selected = [i for i, c in enumerate(layers_mask) if c == "1"]
    widths = half_widths(extractor, selected, len(layers_mask), patch_size, device)
    planar = extractor.dimension == 2 and image.dim == 3  # runs slice by slice: no reach across slices
    maps = []
    for layer, h in zip(layers, widths):
        stride = tuple(int(round(a / b)) for a, b in zip(layer.grid.spacing[::-1], grid.spacing[::-1]))
        reach = ((0,) if planar else (h,)) + (h,) * (image.dim - 1)
        layer_valid = layer_validity(valid, reach, stride, tuple(layer.grid.shape))
        maps.append(FeatureMap(layer.data, layer.grid, layer_valid.to(layer.data.device)))
    return resampled, maps
