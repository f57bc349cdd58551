"""IMPACT settings of one resolution level, read from either parameter-name family.

Documented family (seed parameter guide): ``(ModelsPath "a.pt b.pt" "c.pt")`` - one quoted
string per level, a missing level reusing the first, entries separated by spaces, one per model;
PatchSize and VoxelSize entries written "5*5*5". elastix family: ``(ImpactModelsPath0 "a.pt"
"b.pt")``, ``(ImpactPatchSize0 5 5 5 7 7 7)`` - level in the name, one token per model (sizes
grouped by each model's dimension), a missing level reusing level 0. ``Fixed*``/``Moving*``
variants give the two images their own models. A single value applies to every model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ...errors import ParameterError
from ...features.extractor import NORMALIZATIONS
from ...keys import Key
from ..distances import DISTANCES

MODES = ("Jacobian", "Static")

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
    "SubsetFeatures": ("32", "channels compared per sample, drawn at random each iteration (per model)"),
    "LayersWeight": ("1", "weight of each selected layer"),
    "PCA": ("0", "Static mode: principal components kept (0 = off), per model"),
    "Distance": ("L2", f"feature distance per model: {', '.join(DISTANCES)}"),
}
GLOBAL = {
    "Mode": ("Jacobian", "Jacobian (gradients through the model) or Static (feature maps computed once per level)",
             "str", MODES),
    "GPU": (-1, "GPU index for the models, -1 = CPU", "int", None),
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
    subset_features: list[int]  # per model
    pca: list[int]  # per model
    distances: list[str]  # per model
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


def _per_model(tokens: list[str], count: int, name: str) -> list[str]:
    if len(tokens) == count:
        return tokens
    if len(tokens) == 1:
        return tokens * count
    raise ParameterError(f"IMPACT {name}: {len(tokens)} values for {count} model(s); give one per model (or one for all)")


def _sizes(tokens: list[str], family: str, dims: list[int], name: str, cast) -> list[tuple]:
    """Per-model size tuples: '5*5*5' entries (documented) or flat numbers grouped by dimension (elastix)."""
    try:
        if family == "documented" or any("*" in t for t in tokens):
            entries = _per_model(tokens, len(dims), name)
            groups = [[cast(v) for v in e.split("*")] for e in entries]
        else:
            values = [cast(t) for t in tokens]
            groups, i = [], 0
            if len(values) == 1:
                groups = [[values[0]] for _ in dims]
            else:
                for d in dims:
                    group = values[i:i + d]
                    if len(group) < d:
                        raise ParameterError(f"IMPACT {name}: {len(values)} numbers do not cover {len(dims)} model(s) of "
                                             f"dimensions {dims}")
                    groups.append(group)
                    i += d
                if i != len(values):
                    raise ParameterError(f"IMPACT {name}: {len(values)} numbers for models of dimensions {dims}; "
                                         f"give exactly {sum(dims)}")
    except ValueError:
        raise ParameterError(f"IMPACT {name}: {' '.join(tokens)!r} must be numbers, e.g. 5*5*5") from None
    out = []
    for group, d in zip(groups, dims):
        if len(group) == 1:
            group = group * d
        if len(group) != d:
            raise ParameterError(f"IMPACT {name}: {'*'.join(map(str, group))} has {len(group)} values for a {d}D model")
        out.append(tuple(group))
    return out


def _models(reader: _Reader, prefix: str, image_dim: int) -> list[ModelSettings] | None:
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


def impact_level(pm, level: int, image_dim: int, device: torch.device) -> ImpactLevel:
    reader = _Reader(pm, level)
    shared = _models(reader, "", image_dim)
    fixed = _models(reader, "Fixed", image_dim) or shared
    moving = _models(reader, "Moving", image_dim) or shared
    if fixed is None or moving is None:
        raise ParameterError("(Metric \"Impact\") needs models: (ModelsPath \"...\") or (ImpactModelsPath0 \"...\"), "
                             "or FixedModelsPath and MovingModelsPath")
    if len(fixed) != len(moving):
        raise ParameterError(f"IMPACT: {len(fixed)} fixed model(s) but {len(moving)} moving model(s); give as many of each")
    n = len(fixed)
    for f, m in zip(fixed, moving):
        if len(f.selected_layers) != len(m.selected_layers):
            raise ParameterError(f"IMPACT LayersMask: fixed {f.layers_mask} and moving {m.layers_mask} select different numbers of layers")
    subset, _ = reader.tokens("SubsetFeatures")
    pca, _ = reader.tokens("PCA")
    distances, _ = reader.tokens("Distance")
    weights, _ = reader.tokens("LayersWeight")
    try:
        subset = [int(v) for v in _per_model(subset or [_default("SubsetFeatures")], n, "SubsetFeatures")]
        pca = [int(v) for v in _per_model(pca or [_default("PCA")], n, "PCA")]
        flat_weights = [float(v) for v in (weights or [_default("LayersWeight")])]
    except ValueError:
        raise ParameterError("IMPACT SubsetFeatures and PCA take whole numbers, LayersWeight numbers") from None
    distances = _per_model(distances or [_default("Distance")], n, "Distance")
    for d in distances:
        if d not in DISTANCES:
            raise ParameterError(f"IMPACT Distance {d!r}: use one of {', '.join(DISTANCES)}")
    counts = [len(m.selected_layers) for m in fixed]
    if len(flat_weights) == 1:
        flat_weights = flat_weights * sum(counts)
    elif len(flat_weights) == n and sum(counts) != n:
        flat_weights = [w for w, c in zip(flat_weights, counts) for _ in range(c)]
    if len(flat_weights) != sum(counts):
        raise ParameterError(f"IMPACT LayersWeight: {len(flat_weights)} weights for {sum(counts)} selected layer(s)")
    layer_weights, i = [], 0
    for c in counts:
        layer_weights.append(flat_weights[i:i + c])
        i += c
    mode = reader.scalar("Mode")
    if mode not in MODES:
        raise ParameterError(f"IMPACT Mode {mode!r}: use Jacobian or Static")
    try:
        gpu = int(float(reader.scalar("GPU")))
        interval = int(float(reader.scalar("FeaturesMapUpdateInterval")))
    except ValueError:
        raise ParameterError("IMPACT GPU and FeaturesMapUpdateInterval take whole numbers") from None
    if device.type == "cpu" and gpu >= 0 and torch.cuda.is_available():
        device = torch.device(f"cuda:{gpu}")
    mixed = reader.scalar("UseMixedPrecision").lower() == "true"
    out_dir = reader.scalar("FeatureMapOutputDirectory") or reader.scalar("WriteFeatureMaps")
    out_dir = None if out_dir.lower() in ("false", "") else (None if out_dir.lower() == "true" else out_dir)
    return ImpactLevel(fixed, moving, subset, pca, distances, layer_weights, mode, device, mixed, interval, out_dir)
