"""Whole-image inference within a memory budget (Static mode, PatchSize 0).

The whole image goes through the model at once when that fits; otherwise it is cut into cores,
each run with a margin of the model's receptive half-width around it, and only each core's
output is kept, so a local model gives the whole-image result. Out-of-memory halves the core and
starts again. The feature maps themselves (channels x voxels x 4 bytes) must fit, else one line.
"""
from __future__ import annotations

import itertools
import logging
import math

import torch

from ..compute.memory import MemoryBudget, format_bytes, is_out_of_memory
from ..errors import MemoryLimitError, ModelError
from .catalog import receptive_half_width
from .extractor import FeatureExtractor

log = logging.getLogger("impactreg")

PROBE = 32  # voxels per axis of the input that finds each layer's channels and stride


def layer_strides(extractor, data, stats, direction, layers, nb_layers):
    """(channels, stride per axis) of each selected layer, from a small corner of ``data``."""
    spatial = data.shape[1:]
    tile = tuple(min(n, PROBE) for n in spatial)
    with torch.no_grad():
        probe = extractor(data[None, :, *[slice(0, t) for t in tile]], stats, direction, nb_layers)
    if len(probe) != nb_layers:
        raise ModelError(f"model {extractor.name} gives {len(probe)} output layer(s) but LayersMask has {nb_layers} digits; "
                         f"use a mask of {len(probe)} digits")
    return [(probe[i].shape[1], tuple(max(1, int(round(t / o))) for t, o in zip(tile, probe[i].shape[2:])))
            for i in layers]


def input_aligned(extractor: FeatureExtractor, layer: torch.Tensor, tile, stride) -> torch.Tensor:
    """A layer (B, C, *out) cropped to the voxels that lie on its input tile. A model that pads more than
    it convolves away (output larger than ceil(tile / stride)) is centred on its input: the excess is
    cut evenly from both ends. An output below floor(tile / stride), or unevenly larger, has no known
    place and is refused."""
    excess = [max(0, o - math.ceil(t / k)) for o, t, k in zip(layer.shape[2:], tile, stride)]
    short = any(o < t // k for o, t, k in zip(layer.shape[2:], tile, stride))
    if short or any(e % 2 for e in excess):
        raise ModelError(f"model {extractor.name} gives a {tuple(layer.shape[2:])} output for a {tuple(tile)} input "
                         f"(stride {tuple(stride)}), so its features have no known position; use a model whose "
                         f"outputs cover its input (padding 'same')")
    if not any(excess):
        return layer
    return layer[(slice(None), slice(None)) + tuple(slice(e // 2, n - e // 2) for e, n in zip(excess, layer.shape[2:]))]


def _run(extractor, x, stats, direction, layers, nb_layers, strides):
    with torch.no_grad():
        out = extractor(x[None], stats, direction, nb_layers)
    tile = tuple(x.shape[1:])
    return [input_aligned(extractor, out[i], tile, k)[0].to(torch.float32) for i, k in zip(layers, strides)]


def _cores(n: int, core: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + core)) for s in range(0, n, core)]


def run_within_budget(extractor: FeatureExtractor, data: torch.Tensor, stats, direction, layers: list[int],
                      nb_layers: int, budget: MemoryBudget, voxel_size=None):
    """Selected layers (C, *out) and their strides (torch order) for a (1, *spatial) input, whole or in cores."""
    spatial = tuple(data.shape[1:])
    shapes = layer_strides(extractor, data, stats, direction, layers, nb_layers)
    out_shapes = [tuple(math.ceil(n / k) for n, k in zip(spatial, stride)) for _, stride in shapes]
    maps_bytes = sum(4 * c * math.prod(s) for (c, _), s in zip(shapes, out_shapes))
    room = budget.room() - maps_bytes
    if room < 0:
        channels = "+".join(str(c) for c, _ in shapes)
        size = "x".join(str(n) for n in reversed(spatial))
        where = f" at voxel size {' '.join(f'{v:g}' for v in voxel_size)} mm" if voxel_size is not None else ""
        raise MemoryLimitError(
            f"IMPACT feature maps of model {extractor.name}{where} ({channels} channels on {size} voxels) need "
            f"{format_bytes(maps_bytes)} but {budget.describe()}; use a larger ImpactVoxelSize, fewer layers "
            f"in ImpactLayersMask or a larger --memory-limit")
    per_voxel = extractor.bytes_per_item((1,) * len(spatial), [(c, (1,) * len(spatial)) for c, _ in shapes])
    if per_voxel * math.prod(spatial) <= room:
        try:
            strides = [stride for _, stride in shapes]
            return [(out, stride) for out, stride in zip(_run(extractor, data, stats, direction, layers, nb_layers, strides),
                                                         strides)]
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
    largest = tuple(max(s[d] for _, s in shapes) for d in range(len(spatial)))
    half = receptive_half_width(extractor, layers)
    margin = tuple(math.ceil(half / k) * k for k in largest)
    side = max(1, int((room / per_voxel) ** (1 / len(spatial))))
    core = [max(k, (side - 2 * m) // k * k) for m, k in zip(margin, largest)]
    while True:
        try:
            return _run_cores(extractor, data, stats, direction, layers, nb_layers, shapes, out_shapes, core, margin)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            axis = max(range(len(core)), key=lambda d: core[d] // largest[d])
            if core[axis] <= largest[axis]:
                raise MemoryLimitError(
                    f"IMPACT feature maps of model {extractor.name}: even a tile of "
                    f"{'x'.join(str(c + 2 * m) for c, m in zip(reversed(core), reversed(margin)))} voxels does not fit "
                    f"in the memory left ({budget.describe()}); use a larger ImpactVoxelSize or a larger --memory-limit") from None
            core[axis] = max(largest[axis], core[axis] // 2 // largest[axis] * largest[axis])
            log.info("out of memory in a feature-map tile; cores now %s voxels", core)


def _run_cores(extractor, data, stats, direction, layers, nb_layers, shapes, out_shapes, core, margin):
    spatial = tuple(data.shape[1:])
    outputs = [torch.zeros((c,) + s, device=data.device) for (c, _), s in zip(shapes, out_shapes)]
    log.info("feature maps in cores of %s voxels with margins %s", core, margin)
    for cores in itertools.product(*[_cores(n, c) for n, c in zip(spatial, core)]):
        lo = [max(0, a - m) for (a, _), m in zip(cores, margin)]
        hi = [min(n, b + m) for (_, b), m, n in zip(cores, margin, spatial)]
        tile = data[(slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        results = _run(extractor, tile, stats, direction, layers, nb_layers, [stride for _, stride in shapes])
        for out, result, (_, stride), full in zip(outputs, results, shapes, out_shapes):
            target = tuple(slice(a // k, min(f, math.ceil(b / k))) for (a, b), k, f in zip(cores, stride, full))
            source = tuple(slice(t.start - o // k, t.stop - o // k) for t, o, k in zip(target, lo, stride))
            out[(slice(None),) + target] = result[(slice(None),) + source]
    return [(out, stride) for out, (_, stride) in zip(outputs, shapes)]
