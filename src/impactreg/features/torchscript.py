"""TorchScript feature extractors: load from a path or a hub name, adapt the call to the schema.

A model maps (B, C, *spatial) to a list of per-layer tensors. Older models take forward(x) and
expect the caller to normalise; newer ones take forward(x, nb_layers, stats, direction) with
stats = [min, max, mean, std] of the whole raw image and the rounded direction matrix.
Hub names ('TS/M730_2_Layers.pt') are looked up in the cache folder ($IMPACTREG_MODELS, default
~/.cache/impactreg/models) and downloaded from the hub with huggingface_hub when missing; so is a
missing absolute path under a folder named Models (the IMPACT Docker layout the authors' maps use:
/Data/Models/TS/M730_2_Layers.pt stands for TS/M730_2_Layers.pt).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from .catalog import HUB_REPOSITORY

log = logging.getLogger("impactreg")


def cache_dir() -> Path:
    return Path(os.environ.get("IMPACTREG_MODELS", Path.home() / ".cache" / "impactreg" / "models"))


def hub_download(name: str, destination: Path) -> Path:
    """Download ``name`` from the hub repository into ``destination`` (real network code)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelError(f"model {name!r} is not in the cache {destination.parent} and huggingface_hub is not "
                         f"installed; run `pip install huggingface_hub` or download {HUB_REPOSITORY}/{name} "
                         f"into {cache_dir()}") from None
    try:
        downloaded = Path(hf_hub_download(repo_id=HUB_REPOSITORY, filename=name, cache_dir=str(cache_dir() / ".hub")))
    except Exception as exc:  # network, authentication, missing file: all mean "not available here"
        raise ModelError(f"model {name!r} could not be downloaded from {HUB_REPOSITORY} ({exc.__class__.__name__}); "
                         f"download it by hand and put it at {destination}") from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(downloaded, tmp)
    tmp.replace(destination)
    return destination


def published_name(path: Path) -> str | None:
    """The hub name an absolute model path stands for: what follows its last folder named Models
    (the IMPACT Docker layout /Data/Models/<hub name> that the authors' parameter maps use), else None."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "models":
            return "/".join(parts[i + 1:])
    return None


_SUBSTITUTED: set[str] = set()


def _explicitly_relative(name: str) -> bool:
    return name.replace("\\", "/").startswith(("./", "../"))


def resolve_model_path(name: str, base: Path | None = None,
                       downloader: Callable[[str, Path], Path] = hub_download) -> Path:
    """A local file for a model path or hub name: the path itself, relative to the working folder or
    ``base`` (the parameter map's folder), in the cache, or downloaded into the cache. A missing
    absolute path under a Models folder (/Data/Models/TS/M730_2_Layers.pt) is the hub name after it."""
    candidate = Path(name).expanduser()
    options = [candidate] if candidate.is_absolute() else [Path.cwd() / candidate] + ([base / candidate] if base else [])
    for option in options:
        if option.is_file():
            return option
    if candidate.is_absolute():
        published = published_name(candidate)
        if not published:
            raise ModelError(f"model file {name} does not exist; check the path, or name a published model by its hub "
                             f"name (e.g. TS/M730_2_Layers.pt, kept in {cache_dir()})")
        if name not in _SUBSTITUTED:
            _SUBSTITUTED.add(name)
            log.warning("model file %s does not exist: using the published model %s (from %s, $IMPACTREG_MODELS)",
                        name, published, cache_dir())
        name = published
    elif _explicitly_relative(name):
        where = " or ".join(str(o.parent.resolve()) for o in options)
        raise ModelError(f"model file {name} not found in {where}; put it there or give its absolute path")
    cached = cache_dir() / name
    if cached.is_file():
        return cached
    return downloader(name, cached)


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable TorchScript model ({str(exc).splitlines()[0][:120]}); "
                         f"export it with torch.jit.script/trace and save()") from None
    model.eval()
    return model


def forward_arity(model) -> int:
    """How many arguments forward takes besides self (1 for forward(x), 4 for the new convention)."""
    try:
        schema = model.forward.schema
        return len(schema.arguments) - 1
    except AttributeError:
        import inspect
        return len(inspect.signature(model.forward).parameters)


def network_dimension(model) -> int | None:
    """2 or 3 when the model's convolution or normalisation layers say so (Conv3d, InstanceNorm2d, ...), else None."""
    try:
        names = {m.original_name for m in model.modules()}
    except AttributeError:
        return None
    found = {int(n[-2]) for n in names
             if n[-2:] in ("2d", "3d") and n.startswith(("Conv", "InstanceNorm", "BatchNorm", "MaxPool", "AvgPool"))}
    return found.pop() if len(found) == 1 else None
