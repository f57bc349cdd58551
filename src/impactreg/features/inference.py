"""Static-mode feature maps: resample an image to the model's voxel size, run the model once
(whole image, or overlapping tiles blended with a cosine window), and keep each selected layer
as a multi-channel Image with its true geometry.

A layer of stride k (per axis) has spacing k * voxel size and its first voxel centred on the
first k input voxels: origin + D ((k - 1) / 2 * voxel size).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError
from ..filters import resample_to_grid
from ..image import Image
from ..compute.memory import MemoryBudget
from .budgeted import input_aligned, run_within_budget
from .extractor import FeatureExtractor

TILE_BATCH = 4


def _window(shape, device) -> torch.Tensor:
    w = None
    for n in shape:
        i = torch.arange(n, dtype=torch.float32, device=device)
        axis = 0.5 - 0.5 * torch.cos(2 * math.pi * (i + 0.5) / n)
        w = axis if w is None else w[..., None] * axis
    return w


def _starts(n: int, tile: int, step: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def run_model(extractor: FeatureExtractor, data: torch.Tensor, stats: torch.Tensor, direction: torch.Tensor,
              layers: list[int], patch_size, nb_layers: int,
              budget: MemoryBudget | None = None) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """Selected layers (C, *out) and their integer strides (torch order) for a (1, *spatial) input,
    tiled in ``patch_size`` tiles (torch order; 0 = the whole axis; all 0: the whole image when it
    fits in ``budget``, else tiles sized to it)."""
    budget = budget or MemoryBudget.resolve()
    if all(int(p) == 0 for p in patch_size):
        return run_within_budget(extractor, data, stats, direction, layers, nb_layers, budget)
    spatial = tuple(data.shape[1:])
    dim = len(spatial)
    tile = tuple(n if p == 0 else int(p) for p, n in zip(patch_size, spatial))  # patch_size in torch order
    padded = data
    if any(t > n for t, n in zip(tile, spatial)):
        pad = []
        for t, n in reversed(list(zip(tile, spatial))):
            pad += [0, max(0, t - n)]
        padded = F.pad(data[None], pad, mode="replicate")[0]
    full = tuple(padded.shape[1:])
    with torch.no_grad():
        probe = extractor(padded[None, :, *[slice(0, t) for t in tile]], stats, direction, nb_layers)
    if len(probe) != nb_layers:
        raise ModelError(f"model {extractor.name} gives {len(probe)} output layer(s) but LayersMask has {nb_layers} digits; "
                         f"use a mask of {len(probe)} digits")
    strides = []
    for layer in layers:
        out = probe[layer].shape[2:]
        strides.append(tuple(max(1, int(round(t / o))) for t, o in zip(tile, out)))
    largest = tuple(max(s[d] for s in strides) for d in range(dim))
    steps = [max(largest[d], (tile[d] // 2) // largest[d] * largest[d]) for d in range(dim)]
    starts = [_starts(full[d], tile[d], steps[d]) for d in range(dim)]
    for d in range(dim):  # tile starts must fall on every selected layer's output grid
        if any(s % largest[d] for s in starts[d]):
            starts[d] = sorted({(s // largest[d]) * largest[d] for s in starts[d]})
    outputs, weights = [], []
    for layer, stride in zip(layers, strides):
        shape = tuple(math.ceil(n / k) + 1 for n, k in zip(full, stride))
        outputs.append(torch.zeros((probe[layer].shape[1],) + shape, device=data.device))
        weights.append(torch.zeros(shape, device=data.device))
    corners = [tuple(c) for c in np.array(np.meshgrid(*starts, indexing="ij")).reshape(dim, -1).T]
    single = len(corners) == 1
    tile_bytes = extractor.bytes_per_item(tile, [(o.shape[1], tuple(o.shape[2:])) for o in probe])
    batches = [corners[b:b + TILE_BATCH] for b in range(0, len(corners), max(1, budget.items(tile_bytes, most=TILE_BATCH)))]
    for batch in batches:
        tiles = torch.stack([padded[(slice(None),) + tuple(slice(c, c + t) for c, t in zip(corner, tile))] for corner in batch])
        with torch.no_grad():
            result = extractor(tiles, stats, direction, nb_layers)
        for i, (layer, stride) in enumerate(zip(layers, strides)):
            feats = input_aligned(extractor, result[layer], tile, stride).to(torch.float32)
            out_shape = tuple(feats.shape[2:])
            window = torch.ones(out_shape, device=data.device) if single else _window(out_shape, data.device) + 1e-3
            for corner, f in zip(batch, feats):
                region = tuple(slice(c // k, c // k + o) for c, k, o in zip(corner, stride, out_shape))
                outputs[i][(slice(None),) + region] += f * window
                weights[i][region] += window
    results = []
    for out, w, stride in zip(outputs, weights, strides):
        valid = tuple(math.ceil(n / k) for n, k in zip(spatial, stride))
        crop = (slice(None),) + tuple(slice(0, v) for v in valid)
        results.append((out[crop] / w[crop[1:]].clamp_min(1e-6), stride))
    return results


def feature_maps(extractor: FeatureExtractor, image: Image, voxel_size, patch_size, layers_mask: str,
                 stats: torch.Tensor, device, budget: MemoryBudget | None = None, grid=None,
                 default: float = 0.0) -> tuple[Image, list[Image]]:
    """The image resampled to ``voxel_size`` (or onto ``grid``; ``default`` outside the image) and each
    selected layer's feature map as an Image. The model gets the direction of the grid it runs on.

    A 2D model on a 3D image runs slice by slice (along the image's third axis, whose spacing is kept)."""
    if grid is None:
        voxel_size = tuple(voxel_size)
        if len(voxel_size) == 2 and image.dim == 3:
            voxel_size = voxel_size + (float(image.grid.spacing[2]),)
        grid = image.grid.with_voxel_size(voxel_size)
    resampled = resample_to_grid(image.to(device), grid, order=3, default=default, dtype=torch.float32)
    direction = grid.axis_direction()
    layers = [i for i, c in enumerate(layers_mask) if c == "1"]
    data = resampled.data.to(device)
    tile = tuple(int(p) for p in reversed(tuple(patch_size)))  # x-y(-z) -> torch order
    if extractor.dimension == image.dim:
        maps = run_model(extractor, data, stats, direction, layers, tile, len(layers_mask), budget)
    elif extractor.dimension == 2 and image.dim == 3:
        per_slice = [run_model(extractor, data[:, z], stats, direction[:2, :2], layers, tile, len(layers_mask), budget)
                     for z in range(data.shape[1])]
        maps = [(torch.stack([s[i][0] for s in per_slice], dim=1), (1,) + per_slice[0][i][1])
                for i in range(len(layers))]
    else:
        raise ModelError(f"a {extractor.dimension}D model cannot run on a {image.dim}D image")
    images = []
    for values, stride in maps:
        k = np.asarray(stride[::-1], dtype=np.float64)  # torch order -> x, y, z
        layer_grid = grid.shrunk(k, centred=False, size=tuple(reversed(values.shape[1:])))
        images.append(Image(values, layer_grid, "float32"))
    return resampled, images
