"""FeatureExtractor: a model plus how to feed it (normalisation, channels, calling convention)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import torch

from ..compute.memory import is_out_of_memory
from ..errors import ModelError
from .mind import MIND, parse_mind_name
from .packaged import load_packaged, packaged_name
from .torchscript import forward_arity, hub_download, load_torchscript, network_dimension, resolve_model_path

log = logging.getLogger("impactreg")

NORMALIZATIONS = ("none", "zscore", "minmax", "ct", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Intermediate tensors per pass, in multiples of (input + output layers): a conservative estimate, not
# a measurement (MIND holds about a dozen channel-sized temporaries); out-of-memory halving covers misses.
FORWARD_FACTOR = 4
BACKWARD_FACTOR = 10

_LOADED: dict[tuple[str, str], object] = {}
_BUILT_IN_FOR: set[str] = set()  # missing model files named like a MIND, replaced by the built-in one (said once)


def image_stats(data: torch.Tensor) -> torch.Tensor:
    """[min, max, mean, std] of a whole raw image, float32 (the 'stats' argument of new models)."""
    x = data.to(torch.float32)
    return torch.stack([x.min(), x.max(), x.mean(), x.std()])


def normalize(x: torch.Tensor, stats: torch.Tensor, method: str) -> torch.Tensor:
    if method == "none":
        return x
    if method == "zscore":
        return (x - stats[2]) / torch.clamp(stats[3], min=1e-6)
    if method in ("minmax", "imagenet"):
        return (x - stats[0]) / torch.clamp(stats[1] - stats[0], min=1e-6)
    if method == "ct":
        return (x.clamp(-1024.0, 276.0) + 370.0) / 436.6
    raise ModelError(f"unknown normalisation {method!r}; use one of {', '.join(NORMALIZATIONS)}")


class FeatureExtractor:
    """Calls a feature model on raw-intensity batches (B, 1, *spatial) and returns its layer list."""

    def __init__(self, model, name: str, dimension: int, channels: int = 1, normalization: str = "none",
                 arity: int = 1):
        if normalization not in NORMALIZATIONS:
            raise ModelError(f"unknown normalisation {normalization!r} for model {name}; use one of {', '.join(NORMALIZATIONS)}")
        self.model, self.name, self.dimension = model, name, dimension
        self.channels, self.normalization, self.arity = channels, normalization, arity

    def __call__(self, x: torch.Tensor, stats: torch.Tensor, direction: torch.Tensor, nb_layers: int = 1) -> list[torch.Tensor]:
        x = normalize(x, stats, self.normalization)
        if self.channels > 1 and x.shape[1] == 1:
            x = x.expand(-1, self.channels, *x.shape[2:])
        if self.normalization == "imagenet" and self.channels == 3:
            shape = (1, 3) + (1,) * (x.dim() - 2)
            x = (x - torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)) / torch.tensor(IMAGENET_STD, device=x.device).view(shape)
        args = [x, torch.tensor([nb_layers], dtype=torch.int64, device=x.device), stats.to(x.device),
                direction.to(x.device)][: max(1, min(self.arity, 4))]
        try:
            out = self.model(*args)
        except (RuntimeError, ValueError, TypeError, torch.jit.Error) as exc:  # torch.jit.Error is no RuntimeError
            if is_out_of_memory(exc):
                raise
            raise ModelError(f"model {self.name} failed on a {tuple(x.shape)} input ({_last_line(exc)}); "
                             f"check ImpactDimension, NumberOfChannels and PatchSize for this model") from None
        if isinstance(out, torch.Tensor):
            out = [out]
        if not isinstance(out, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in out):
            raise ModelError(f"model {self.name} must return a tensor or a list of tensors, got {type(out).__name__}")
        return list(out)

    def bytes_per_item(self, spatial: tuple[int, ...], shapes: list[tuple[int, tuple[int, ...]]],
                       backward: bool = False) -> int:
        """Estimated peak bytes of one (1, *spatial) input through the model: float32 input and output
        layers (``shapes`` from ``layer_shapes``), times the intermediate tensors a pass holds (more
        when autograd keeps them for the backward pass)."""
        voxels = math.prod(spatial)
        elements = voxels * max(self.channels, 1) + sum(c * math.prod(s) for c, s in shapes)
        return int(4 * elements * (BACKWARD_FACTOR if backward else FORWARD_FACTOR))

    def layer_shapes(self, spatial: tuple[int, ...], device) -> list[tuple[int, tuple[int, ...]]]:
        """(channels, spatial shape) of each output layer for an input of ``spatial`` size."""
        x = torch.zeros((1, 1) + tuple(spatial), device=device)
        stats = torch.tensor([0.0, 1.0, 0.5, 0.5], device=device)
        with torch.no_grad():
            out = self(x, stats, torch.eye(self.dimension, dtype=torch.int64), nb_layers=1)
        return [(t.shape[1], tuple(t.shape[2:])) for t in out]


def _last_line(exc: Exception) -> str:
    """The reason of a (TorchScript) exception: its last non-empty line, without the interpreter's traceback."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]


def load_extractor(name: str, dimension: int, channels: int = 1, normalization: str = "none", device="cpu",
                   base: Path | None = None, downloader: Callable = hub_download) -> FeatureExtractor:
    """A FeatureExtractor for a built-in MIND name, a TorchScript path, a network shipped in an installed
    package (``deepbet/LinkNet3d``), or a hub name (cached)."""
    device = torch.device(device)
    local = Path(name)
    mind = parse_mind_name(name, dimension) if not local.is_file() and not (base and (base / name).is_file()) else None
    if mind is not None:
        if local.is_absolute() and name not in _BUILT_IN_FOR:
            _BUILT_IN_FOR.add(name)
            log.warning("model file %s does not exist: using the built-in MIND R%dD%d", name, mind.radius, mind.dilation)
        if mind.dim != dimension:
            raise ModelError(f"{name} is a {mind.dim}D MIND but Dimension says {dimension}")
        return FeatureExtractor(mind.to(device), f"MIND/R{mind.radius}D{mind.dilation}", dimension, 1, normalization, 4)
    packaged = packaged_name(name) if not local.is_file() and not (base and (base / name).is_file()) else None
    if packaged is not None:
        if dimension != 3 or channels != 1:
            raise ModelError(f"model {packaged} is a 3D network with 1 input channel but runs here as a {dimension}D "
                             f"model with {channels} channel(s); use it on 3D images with (ImpactDimension 3) and "
                             f"(ImpactNumberOfChannels 1)")
        key = (packaged, str(device))
        if key not in _LOADED:
            _LOADED[key] = load_packaged(packaged, device)
        return FeatureExtractor(_LOADED[key], packaged, dimension, channels, normalization, 4)
    path = resolve_model_path(name, base, downloader)
    key = (str(path.resolve()), str(device))
    if key not in _LOADED:
        _LOADED[key] = load_torchscript(path, device)
    model = _LOADED[key]
    layers = network_dimension(model)
    if layers is not None and layers != dimension:
        fix = ("set (ImpactDimension 2) to run it slice by slice, or use a 3D model" if layers == 2 else
               "use a 2D model on 2D images, or run it on 3D images with (ImpactDimension 3)")
        raise ModelError(f"model {path.name} is a {layers}D network but runs here as a {dimension}D model "
                         f"(ImpactDimension {dimension}, by default the images' dimension); {fix}")
    return FeatureExtractor(model, path.name, dimension, channels, normalization, forward_arity(model))


__all__ = ["FeatureExtractor", "load_extractor", "normalize", "image_stats", "NORMALIZATIONS", "MIND"]
