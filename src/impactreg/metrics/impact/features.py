"""IMPACT's feature maps for Static mode: the image low-pass filtered for its feature voxel size, the
network run over the whole image (tiled) along the shared axes, each map with its validity, optional
PCA of the channels, and writing the maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import ModelError
from ...features.extractor import FeatureExtractor
from ...features.maps import FeatureMap, compute_feature_maps
from ...filters import gaussian_smooth
from ...geometry import sizes_along
from ...image import Image, write_image
from .config import ModelSettings


def anti_alias(image: Image, voxel_size, direction=None) -> Image:
    """The image low-pass filtered for sampling at ``voxel_size`` mm (along the image's axes, or those
    of ``direction``; a 2D model's planar voxel size applies to every axis): Gaussian sigma
    0.5 sqrt(v^2 - s^2) along each image axis where v > s."""
    v = np.asarray(voxel_size, dtype=np.float64)
    if v.size != image.dim:
        v = np.full(image.dim, float(v.min()))
    if direction is not None:
        v = sizes_along(v, direction, image.grid.direction)
    sigma = 0.5 * np.sqrt(np.maximum(v ** 2 - image.grid.spacing ** 2, 0.0))
    return gaussian_smooth(image, sigma) if np.any(sigma > 0) else image


def check_layers_mask(model: FeatureExtractor, settings: ModelSettings, outputs: int | None):
    if outputs is not None and outputs != len(settings.layers_mask):
        raise ModelError(f"IMPACT LayersMask {settings.layers_mask!r} has {len(settings.layers_mask)} digit(s) but model "
                         f"{model.name} gives {outputs} output layer(s); use {outputs} digits")


def output_layers(model: FeatureExtractor, settings: ModelSettings, device, largest: int = 32) -> int:
    """How many layers the model gives on one patch of ``settings.patch_size``. A patch too small for the
    model (e.g. instance normalisation over one voxel) is refused with the smallest cube it runs on."""
    patch = tuple(reversed(settings.patch_size))
    try:
        return len(model.layer_shapes(patch, device))
    except ModelError:
        for n in range(max(patch) + 1, largest + 1):
            try:
                model.layer_shapes((n,) * len(patch), device)
            except ModelError:
                continue
            raise ModelError(f"IMPACT PatchSize {' '.join(map(str, settings.patch_size))} is too small for model "
                             f"{model.name}; use at least PatchSize {' '.join([str(n)] * len(patch))}") from None
        raise


def principal_directions(feature: FeatureMap, components: int):
    """Top principal directions (k, C) of a feature map's channels over its valid voxels (all when none
    is valid), with the channel mean; None when off."""
    if components <= 0 or components >= feature.channels:
        return None
    x = feature.values.reshape(feature.channels, -1)
    valid = feature.valid.reshape(-1)
    x = (x[:, valid] if bool(valid.any()) else x).to(torch.float64)
    mean = x.mean(dim=1, keepdim=True)
    cov = (x - mean) @ (x - mean).T / max(x.shape[1] - 1, 1)
    _, vectors = torch.linalg.eigh(cov)
    return vectors[:, -components:].flip(1).T.to(torch.float32), mean.to(torch.float32)


def project(feature: FeatureMap, projection) -> FeatureMap:
    if projection is None:
        return feature
    w, mean = projection
    x = feature.values.reshape(feature.channels, -1)
    y = w.to(x.device) @ (x - mean.to(x.device))
    return feature.with_values(y.reshape(w.shape[0], *feature.grid.shape))


def image_feature_maps(model: FeatureExtractor, image: Image, mask: Image | None, direction, settings: ModelSettings,
                       stats, device, budget=None) -> tuple[Image, list[FeatureMap]]:
    """(the image resampled to the feature voxel size along ``direction``, one FeatureMap per selected layer)."""
    smoothed = anti_alias(image, settings.voxel_size, direction)
    return compute_feature_maps(model, smoothed, mask, direction, settings.voxel_size, settings.patch_size,
                                settings.layers_mask, stats, device, budget)


def write_maps(folder: Path, side: str, level: int, k: int, settings: ModelSettings, resampled: Image,
               maps: list[FeatureMap]):
    folder.mkdir(parents=True, exist_ok=True)
    sizes = "_".join(f"{v:g}" for v in resampled.grid.spacing)
    write_image(resampled, folder / f"{side}_{level}_{sizes}.mha")
    name = Path(settings.path).stem.replace("/", "_")
    for layer, feature in zip(settings.selected_layers, maps):
        write_image(feature.image, folder / f"{side}_{level}_{k}_{name}_layer{layer}.mha")
