"""The dense engine's features: both images' feature maps (IMPACT's Static feature-map code: MIND,
TorchScript models, several models and layers, PCA), or the plain intensities, with the fixed maps on
one fixed-space grid and where they are valid (inside the fixed mask).

The interface stays narrow on purpose: ``dense_features`` gives ``FeaturePair``s (fixed map on the
shared fixed grid, moving map on its own grid, the distance and weight that compare them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from ..compute.memory import MemoryBudget
from ..features.extractor import image_stats, load_extractor
from ..features.maps import shared_direction
from ..filters import resample_to_grid
from ..geometry import Grid
from ..image import Image
from ..metrics.impact.config import impact_level
from ..metrics.impact.features import check_layers_mask, image_feature_maps, principal_directions, project

INTENSITY_METRICS = {"AdvancedMeanSquares": "L2"}
FEATURE_METRIC = "Impact"


@dataclass
class FeaturePair:
    fixed: torch.Tensor  # (C, [Z,] Y, X) on DenseFeatures.grid
    moving: Image  # (C, ...) on the moving feature grid
    distance: str  # a key of metrics.distances.DISTANCES
    weight: float


@dataclass
class DenseFeatures:
    grid: Grid  # the fixed feature grid every fixed map lies on
    pairs: list[FeaturePair]
    fixed_valid: torch.Tensor  # bool ([Z,] Y, X) on ``grid``: inside the fixed image and mask
    moving_mask: Image | None  # the moving mask (samples outside it do not count)


def dense_features(pm, metric: str, fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                   device: torch.device, base=None, memory=None) -> DenseFeatures:
    """Feature maps of both images for the dense engine (IMPACT settings of level 0), or intensities.
    IMPACT maps are computed along shared axes and carry their validity (the receptive field inside the
    image and mask): the fixed maps' validity restricts the fixed voxels, the moving maps' validity
    replaces the moving mask."""
    fixed_valid_image = moving_valid_image = None
    if metric == FEATURE_METRIC:
        pairs, fixed_valid_image, moving_valid_image = _impact_pairs(pm, fixed, moving, fixed_mask, moving_mask, device,
                                                                     base, memory)
    elif metric in INTENSITY_METRICS:
        pairs = [FeaturePair(fixed.data.to(torch.float32), moving.to(dtype=torch.float32), INTENSITY_METRICS[metric], 1.0)]
    else:
        raise ParameterError(f"(Metric \"{metric}\") is not one the dense engine uses; use \"Impact\" (feature maps) "
                             f"or {', '.join(repr(m) for m in INTENSITY_METRICS)} (intensities)")
    grid = fixed.grid if metric != FEATURE_METRIC else pairs[0].fixed.grid
    out = []
    for pair in pairs:
        fixed_map = pair.fixed if isinstance(pair.fixed, torch.Tensor) else resample_to_grid(pair.fixed, grid).data
        out.append(FeaturePair(fixed_map.to(torch.float32), pair.moving, pair.distance, pair.weight))
    valid = torch.ones(grid.shape, dtype=torch.bool)
    if fixed_valid_image is not None:
        valid = resample_to_grid(fixed_valid_image, grid, order=0).data[0] > 0.5
    elif fixed_mask is not None:
        valid = resample_to_grid(fixed_mask, grid, order=0).data[0] > 0
    device = torch.device(device)
    out = [FeaturePair(p.fixed.to(device), p.moving.to(device), p.distance, p.weight) for p in out]
    moving_valid = moving_valid_image if moving_valid_image is not None else moving_mask
    return DenseFeatures(grid, out, valid.to(device), None if moving_valid is None else moving_valid.to(device))


def _validity(maps) -> Image:
    first = maps[0]
    valid = first.valid.clone()
    for other in maps[1:]:
        valid &= resample_to_grid(Image(other.valid[None].float(), other.grid), first.grid, order=0).data[0].bool().to(valid.device)
    return Image(valid[None].to(torch.float32).cpu(), first.grid, "float32")


def _impact_pairs(pm, fixed: Image, moving: Image, fixed_mask, moving_mask, device, base, memory):
    config = impact_level(pm, 0, fixed.dim, torch.device(device))
    memory = MemoryBudget.resolve(memory).on(config.device)
    fixed_stats, moving_stats = image_stats(fixed.data), image_stats(moving.data)
    pairs, fixed_all, moving_all = [], [], []
    for k, (fs, ms) in enumerate(zip(config.fixed, config.moving)):
        fmodel = load_extractor(fs.path, fs.dimension, fs.channels, fs.normalization, config.device, base)
        mmodel = fmodel if ms == fs else load_extractor(ms.path, ms.dimension, ms.channels, ms.normalization,
                                                        config.device, base)
        direction = shared_direction(fixed.grid, fmodel.name, fs.dimension)
        _, fixed_maps = image_feature_maps(fmodel, fixed, fixed_mask, direction, fs, fixed_stats.to(config.device),
                                           config.device, memory)
        _, moving_maps = image_feature_maps(mmodel, moving, moving_mask, direction, ms, moving_stats.to(config.device),
                                            config.device, memory)
        check_layers_mask(fmodel, fs, None)
        fixed_all += fixed_maps
        moving_all += moving_maps
        for j, (f_map, m_map, weight) in enumerate(zip(fixed_maps, moving_maps, config.layer_weights[k])):
            projection = principal_directions(f_map, config.pca[k][j])
            f_map, m_map = project(f_map, projection), project(m_map, projection)
            pairs.append(FeaturePair(f_map.image.to("cpu"), m_map.image.to("cpu"), config.distances[k][j], weight))
    return pairs, _validity(fixed_all), _validity(moving_all)
