"""IMPACT settings of one resolution level, read from either parameter-name family.

Documented family (seed parameter guide): ``(ModelsPath "a.pt b.pt" "c.pt")`` - one quoted
string per level, a missing level reusing the first, entries separated by spaces, one per model;
PatchSize and VoxelSize entries written "5*5*5". elastix family: ``(ImpactModelsPath0 "a.pt"
"b.pt")``, ``(ImpactPatchSize0 5 5 5 7 7 7)`` - level in the name, one token per model (sizes
grouped by each model's dimension), a missing level reusing level 0. ``Fixed*``/``Moving*``
variants give the two images their own models. A single value applies to every model.

As the elastix IMPACT metric reads them: SubsetFeatures, PCA, Distance and LayersWeight hold one
value per selected layer (the 1s of all LayersMasks, model after model), not one per model;
VoxelSize holds, per model, as many numbers as the model's dimension in Jacobian mode (the patch
spacing) and as the image's dimension in Static mode (the grid the model runs on; a 2D model's two
planar sizes are accepted too, the third then being the image's). Values beyond those needed are
ignored with a warning, as elastix ignores them.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from ...errors import ParameterError
from ...features.extractor import NORMALIZATIONS
from ...keys import Key
from ..distances import DISTANCES

MODES = ("Jacobian", "Static")

log = logging.getLogger("impactreg")

# name: (default, doc). Documented family: one quoted string per level, a space-separated list with
# one entry per model; sizes as "5*5*5". Each also exists as Fixed<name>/Moving<name> and in the
# elastix family as Impact<name><level> / Impact{Fixed,Moving}<name><level>.
PER_MODEL = {
    "ModelsPath": (None, "TorchScript model path, hub name (e.g. TS/M730_2_Layers.pt) or built-in MIND/R<r>D<d>"),
    "Dimension": (None, "dimension the model expects, 2 or 3 (default: the images' dimension)"),
    "NumberOfChannels": ("1", "input channels the model expects (the image is replicated)"),
    "PatchSize": ("5", "patch size in voxels, e.g. 5*5*5 (0*0*0 in Static mode: whole image)"),
    "VoxelSize": ("1.5", "voxel size in mm at which features are extracted, e.g. 1.5*1.5*1.5"),
    "LayersMask": ("1", "which output layers to use, e.g. 00000001"),
    "Normalization": ("none", f"model input normalisation: {', '.join(NORMALIZATIONS)}"),
}
SHARED = {
    "SubsetFeatures": ("32", "channels compared per sample, drawn at random each iteration (per selected layer)"),
    "LayersWeight": ("1", "weight of each selected layer"),
    "PCA": ("0", "Static mode: principal components kept (0 = off), per selected layer"),
    "Distance": ("L2", f"feature distance per selected layer: {', '.join(DISTANCES)}"),
}
GLOBAL = {
    "Mode": ("Jacobian", "Jacobian (gradients through the model) or Static (feature maps computed once per level)",
             "str", MODES),
    "GPU": (-1, "CUDA device index for the models, -1 = CPU; refused where CUDA is absent unless --device is "
                "given, which then decides", "int", None),
    "UseMixedPrecision": (False, "float16 autocast for the models on GPU", "bool", None),
    "FeaturesMapUpdateInterval": (-1, "Static mode: recompute the moving feature maps every N iterations "
                                      "(-1 = once per level)", "int", None),
    "WriteFeatureMaps": ("false", "Static mode: folder for the resampled inputs and feature maps, or \"false\"", "str", None),
    "FeatureMapOutputDirectory": (None, "Static mode: folder for the resampled inputs and feature maps", "str", None),
}


def _declare() -> tuple[Key, ...]:
    keys = []
    for name, (default, doc) in PER_MODEL.items():
        keys.append(Key(name, "str", default, "IMPACT: " + doc, per_level=True))
        for side in ("Fixed", "Moving"):
            keys.append(Key(side + name, "str", None, f"IMPACT: {side.lower()}-image {doc} (default {name})", per_level=True))
            keys.append(Key(f"Impact{side}{name}0", "str", None, f"IMPACT (elastix names), level <i>: {side.lower()}-image "
                            f"{doc}", multi=True, pattern=rf"(?:Impact)?{side}{name}(\d+)"))
        keys.append(Key(f"Impact{name}0", "str", default, "IMPACT (elastix names), level <i>: " + doc, multi=True,
                        pattern=rf"Impact{name}(\d+)"))
    for name, (default, doc) in SHARED.items():
        keys.append(Key(name, "str", default, "IMPACT: " + doc, per_level=True))
        keys.append(Key(f"Impact{name}0", "str", default, "IMPACT (elastix names), level <i>: " + doc, multi=True,
                        pattern=rf"Impact{name}(\d+)"))
    for name, (default, doc, kind, allowed) in GLOBAL.items():
        keys.append(Key(name, kind, default, "IMPACT: " + doc, allowed, per_level=True))
        keys.append(Key("Impact" + name, kind, default, "IMPACT (elastix names): " + doc, allowed, per_level=True))
    return tuple(keys)


KEYS = _declare()


def _default(name: str) -> str | None:
    """The declared default of a setting, as text."""
    for table in (PER_MODEL, SHARED, GLOBAL):
        if name in table:
            default = table[name][0]
            return None if default is None else str(default).lower() if isinstance(default, bool) else str(default)
    return None


@dataclass(frozen=True)
class ModelSettings:
    path: str
    dimension: int
    channels: int
    patch_size: tuple[int, ...]
    voxel_size: tuple[float, ...]
    layers_mask: str
    normalization: str

    @property
    def selected_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.layers_mask) if c == "1"]


@dataclass
class ImpactLevel:
    fixed: list[ModelSettings]
    moving: list[ModelSettings]
    subset_features: list[list[int]]  # per model, per selected layer
    pca: list[list[int]]  # per model, per selected layer
    distances: list[list[str]]  # per model, per selected layer
    layer_weights: list[list[float]]  # per model, per selected layer
    mode: str
    device: torch.device
    mixed_precision: bool
    update_interval: int
    feature_map_dir: str | None


class _Reader:
    """Values of one IMPACT setting for one level, from whichever family the map uses."""

    def __init__(self, pm, level: int):
        self.pm, self.level = pm, level

    def _documented(self, name: str) -> list[str] | None:
        values = self.pm.values(name)
        if values is None:
            return None
        text = values[self.level] if self.level < len(values) else values[0]
        return str(text).split()

    def _elastix(self, name: str) -> list[str] | None:
        for key in (f"Impact{name}{self.level}", f"Impact{name}0"):
            if key in self.pm:
                return [str(v) for v in self.pm.values(key)]
        if name.startswith(("Fixed", "Moving")):
            for key in (f"{name}{self.level}", f"{name}0"):
                if key in self.pm:
                    return [str(v) for v in self.pm.values(key)]
        return None

    def tokens(self, name: str, elastix_grouped: bool = False) -> tuple[list[str] | None, str]:
        """(tokens, family) for a setting; family is 'documented' or 'elastix'."""
        documented = self._documented(name)
        if documented is not None:
            return documented, "documented"
        return self._elastix(name), "elastix"

    def scalar(self, name: str) -> str | None:
        values = self.pm.values(name) or self.pm.values(f"Impact{name}")
        if values is None:
            return _default(name)
        value = values[self.level] if self.level < len(values) else values[0]
        return str(value).lower() if isinstance(value, bool) else str(value)


def _first(tokens: list[str], count: int, name: str, what: str) -> list[str]:
    """``count`` values: one for all, or the first ``count`` (elastix reads no further; the rest is ignored)."""
    if len(tokens) == 1:
        return tokens * count
    if len(tokens) < count:
        raise ParameterError(f"IMPACT {name}: {len(tokens)} values for {count} {what}; give one per {what.split('(')[0]} "
                             f"(or one for all)")
    if len(tokens) > count:
        log.warning("IMPACT %s: %d values for %d %s; the extra values %s are ignored, as elastix ignores them",
                    name, len(tokens), count, what, " ".join(tokens[count:]))
    return tokens[:count]


def _per_model(tokens: list[str], count: int, name: str) -> list[str]:
    return _first(tokens, count, name, "model(s)")


def _group(values: list, sizes: list[int]) -> list[list]:
    groups, i = [], 0
    for d in sizes:
        groups.append(values[i:i + d])
        i += d
    return groups


def _sizes(tokens: list[str], family: str, dims: list[int], name: str, cast, planar: list[int] | None = None) -> list[tuple]:
    """Per-model size tuples of ``dims`` values each: '5*5*5' entries (documented) or flat numbers
    grouped model after model (elastix). ``planar``: the model dimensions, also accepted instead of
    ``dims`` (a 2D model's two voxel sizes in Static mode on a 3D image)."""
    try:
        if family == "documented" or any("*" in t for t in tokens):
            groups = [[cast(v) for v in e.split("*")] for e in _per_model(tokens, len(dims), name)]
        else:
            values = [cast(t) for t in tokens]
            if len(values) == 1:
                groups = [[values[0]] for _ in dims]
            elif len(values) >= sum(dims):
                if len(values) > sum(dims):
                    log.warning("IMPACT %s: %d numbers for model(s) of %s values; the extra numbers %s are ignored, "
                                "as elastix ignores them", name, len(values), "+".join(map(str, dims)),
                                " ".join(tokens[sum(dims):]))
                groups = _group(values, dims)
            elif planar is not None and len(values) == sum(planar):
                groups = _group(values, planar)
            else:
                need = f"{sum(dims)}" + (f" (or {sum(planar)}: the models' own dimensions)"
                                        if planar is not None and planar != dims else "")
                raise ParameterError(f"IMPACT {name}: {len(values)} numbers for model(s) of dimensions "
                                     f"{' '.join(map(str, dims if planar is None else planar))}; give {need}, "
                                     f"model after model")
    except ValueError:
        raise ParameterError(f"IMPACT {name}: {' '.join(tokens)!r} must be numbers, e.g. 5*5*5") from None
    out = []
    for i, (group, d) in enumerate(zip(groups, dims)):
        if len(group) == 1:
            group = group * d
        allowed = {d} | ({planar[i]} if planar is not None else set())
        if len(group) not in allowed:
            raise ParameterError(f"IMPACT {name}: {'*'.join(map(str, group))} has {len(group)} values for a "
                                 f"{planar[i] if planar is not None else d}D model; give "
                                 f"{' or '.join(str(a) for a in sorted(allowed))}")
        out.append(tuple(group))
    return out


def _models(reader: _Reader, prefix: str, image_dim: int, mode: str) -> list[ModelSettings] | None:
    paths, _ = reader.tokens(prefix + "ModelsPath")
    if not paths:
        return None
    n = len(paths)

    def tokens(name, default=None):
        values, family = reader.tokens(prefix + name)
        if values is None and prefix:
            values, family = reader.tokens(name)
        return (values if values is not None else [default or _default(name)]), family

    try:
        dims = [int(v) for v in _per_model(tokens("Dimension", str(image_dim))[0], n, "Dimension")]
        channels = [int(v) for v in _per_model(tokens("NumberOfChannels")[0], n, "NumberOfChannels")]
    except ValueError:
        raise ParameterError("IMPACT Dimension and NumberOfChannels take whole numbers") from None
    for d in dims:
        if d not in (2, 3) or d > image_dim:
            raise ParameterError(f"IMPACT Dimension {d}: a model must be 2D or 3D and not exceed the {image_dim}D images")
    patch_tokens, family = tokens("PatchSize")
    patch = _sizes(patch_tokens, family, dims, "PatchSize", lambda v: int(float(v)))
    voxel_tokens, family = tokens("VoxelSize")
    if mode == "Static":  # the grid the model runs on has the image's dimension
        voxel = _sizes(voxel_tokens, family, [image_dim] * n, "VoxelSize", float, planar=dims)
    else:  # the spacing of the model's patch
        voxel = _sizes(voxel_tokens, family, dims, "VoxelSize", float)
    masks = _per_model(tokens("LayersMask")[0], n, "LayersMask")
    for m in masks:
        if not re.fullmatch(r"[01]+", m) or "1" not in m:
            raise ParameterError(f"IMPACT LayersMask {m!r}: a string of 0 and 1 with at least one 1 (one digit per model layer)")
    norms = _per_model(tokens("Normalization")[0], n, "Normalization")
    for v in norms:
        if v not in NORMALIZATIONS:
            raise ParameterError(f"IMPACT Normalization {v!r}: use one of {', '.join(NORMALIZATIONS)}")
    for p, v in zip(patch, voxel):
        if any(s < 0 for s in p) or any(s <= 0 for s in v):
            raise ParameterError("IMPACT PatchSize must be >= 0 and VoxelSize > 0")
    return [ModelSettings(paths[i], dims[i], channels[i], patch[i], voxel[i], masks[i], norms[i]) for i in range(n)]


def _per_layer(reader: _Reader, name: str, counts: list[int], cast) -> list[list]:
    """One value per selected layer (model after model), or one for all; split per model."""
    tokens, _ = reader.tokens(name)
    values = _first(tokens or [_default(name)], sum(counts), name, "selected layer(s) (the 1s of the LayersMasks)")
    try:
        values = [cast(v) for v in values]
    except ValueError:
        raise ParameterError(f"IMPACT {name}: {' '.join(tokens)!r} must be "
                             f"{'whole numbers' if cast is int else 'numbers'}, one per selected layer") from None
    return [list(group) for group in _group(values, counts)]


def model_device(gpu: int, device: torch.device, device_given: bool) -> torch.device:
    """Where the models run: ``(ImpactGPU N)`` asks for CUDA device N, -1 for the CPU. A device given on
    the command line (``--device``, ``register(device=...)``) decides instead; without one, a GPU that
    is not there is refused rather than silently replaced by the CPU."""
    if gpu < 0:
        return device
    if device_given:
        if device.type != "cuda" or device.index not in (None, gpu):
            log.warning("(ImpactGPU %d): the models run on %s, the device given to the registration", gpu, device)
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ParameterError(f"(ImpactGPU {gpu}): CUDA is not available on this machine; set (ImpactGPU -1) to run the "
                             f"IMPACT models on the CPU, or pass --device cpu")
    if gpu >= count:
        raise ParameterError(f"(ImpactGPU {gpu}): this machine has {count} CUDA device(s) (0..{count - 1}); "
                             f"set ImpactGPU to one of them, or -1 for the CPU")
    return torch.device(f"cuda:{gpu}")


def impact_level(pm, level: int, image_dim: int, device: torch.device, device_given: bool = False) -> ImpactLevel:
    """The IMPACT settings of ``level``. ``device`` is the registration's; ``device_given``: whether
    the user named it (then it overrides ImpactGPU)."""
    reader = _Reader(pm, level)
    mode = reader.scalar("Mode")
    if mode not in MODES:
        raise ParameterError(f"IMPACT Mode {mode!r}: use Jacobian or Static")
    shared = _models(reader, "", image_dim, mode)
    fixed = _models(reader, "Fixed", image_dim, mode) or shared
    moving = _models(reader, "Moving", image_dim, mode) or shared
    if fixed is None or moving is None:
        raise ParameterError("(Metric \"Impact\") needs models: (ModelsPath \"...\") or (ImpactModelsPath0 \"...\"), "
                             "or FixedModelsPath and MovingModelsPath")
    if len(fixed) != len(moving):
        raise ParameterError(f"IMPACT: {len(fixed)} fixed model(s) but {len(moving)} moving model(s); give as many of each")
    for f, m in zip(fixed, moving):
        if len(f.selected_layers) != len(m.selected_layers):
            raise ParameterError(f"IMPACT LayersMask: fixed {f.layers_mask} and moving {m.layers_mask} select different numbers of layers")
    counts = [len(m.selected_layers) for m in fixed]
    subset = _per_layer(reader, "SubsetFeatures", counts, int)
    pca = _per_layer(reader, "PCA", counts, int)
    weights = _per_layer(reader, "LayersWeight", counts, float)
    distances = _per_layer(reader, "Distance", counts, str)
    for d in (d for per_model in distances for d in per_model):
        if d not in DISTANCES:
            raise ParameterError(f"IMPACT Distance {d!r}: use one of {', '.join(DISTANCES)}")
    try:
        gpu = int(float(reader.scalar("GPU")))
        interval = int(float(reader.scalar("FeaturesMapUpdateInterval")))
    except ValueError:
        raise ParameterError("IMPACT GPU and FeaturesMapUpdateInterval take whole numbers") from None
    device = model_device(gpu, device, device_given)
    mixed = reader.scalar("UseMixedPrecision").lower() == "true"
    out_dir = reader.scalar("FeatureMapOutputDirectory") or reader.scalar("WriteFeatureMaps")
    out_dir = None if out_dir.lower() in ("false", "") else (None if out_dir.lower() == "true" else out_dir)
    return ImpactLevel(fixed, moving, subset, pca, distances, weights, mode, device, mixed, interval, out_dir)
