"""Known feature-extraction models, as `impactreg models` lists them.

Per layer: channels, stride and receptive field (voxels). Families of the published hub
repository (VBoussot/impact-torchscript-models) and the built-in MIND.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mind import parse_mind_name

HUB_REPOSITORY = "VBoussot/impact-torchscript-models"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dimension: int
    channels: int  # input channels
    normalization: str
    layers: tuple = field(default=())  # (channels, stride, receptive field) per output layer
    description: str = ""
    orientation: str | None = None  # axes the network was trained along (e.g. "RAS"); None: any


_TS_LAYERS = ((32, 1, 5), (64, 2, 11), (128, 4, 23), (256, 8, 47), (320, 16, 95), (320, 32, 191),
              (32, 1, 191), (0, 1, 191))
_TS_AXES = "RAS"  # nnU-Net trains TotalSegmentator on images reoriented to the closest canonical (RAS) axes
_TS_CT = "clip [-1024, 276] HU then (x + 370) / 436.6 (old exports; newer ones normalise inside)"

_LINKNET_LAYERS = ((16, 4, 11), (16, 4, 43), (32, 8, 99), (64, 16, 211), (128, 32, 435), (64, 16, 467),
                   (32, 8, 483), (16, 4, 491), (16, 4, 499), (8, 2, 503), (8, 2, 507), (2, 1, 507))
_LINKNET_NOTE = ("brain T1 MR, read from the installed deepbet package (no download); normalises inside (z-score from stats, then "
                 "0.226 z + 0.449: keep Normalization none) and reorients to RAS from the direction")

CATALOG = [
    ModelInfo("TS/M730", 3, 1, "zscore", _TS_LAYERS, "TotalSegmentator MR/CT organs (default baseline)", _TS_AXES),
    ModelInfo("TS/M731", 3, 1, "zscore", _TS_LAYERS, "TotalSegmentator MR/CT muscles", _TS_AXES),
    ModelInfo("TS/M732", 3, 1, "zscore", _TS_LAYERS, "TotalSegmentator MR/CT, 3 mm", _TS_AXES),
    ModelInfo("TS/M733", 3, 1, "zscore", _TS_LAYERS, "TotalSegmentator MR/CT, 6 mm", _TS_AXES),
    ModelInfo("TS/M258", 3, 1, "ct", _TS_LAYERS, "TotalSegmentator CT lung vessels; " + _TS_CT, _TS_AXES),
    ModelInfo("TS/M291", 3, 1, "ct", _TS_LAYERS, "TotalSegmentator CT organs; " + _TS_CT, _TS_AXES),
    ModelInfo("SAM2.1/SAM2.1_Tiny", 2, 3, "imagenet", (), "SAM 2.1 image encoder (2D, RGB)"),
    # Packaged in the deepbet wheel (impactreg[deepbet]); receptive fields from the layers' kernels and
    # strides (encoder exact, decoder an upper bound); instance normalisation over the whole input.
    ModelInfo("deepbet/LinkNet3d_head", 3, 1, "none", _LINKNET_LAYERS, "deepbet brain-extraction LinkNet3d, "
              "box model (whole head at 128^3, ~2 mm); " + _LINKNET_NOTE),
    ModelInfo("deepbet/LinkNet3d", 3, 1, "none", _LINKNET_LAYERS, "deepbet brain-extraction LinkNet3d, brain "
              "model (brain box at 256^3, ~0.7 mm); " + _LINKNET_NOTE),
    ModelInfo("MIND/R<r>D<d>", 0, 1, "minmax", ((0, 1, 0),), "built in: MIND-SSC, 12 channels 3D / 4 channels 2D, "
              "field of view 2(r+d)+1; no weights needed"),
]



DEFAULT_HALF_WIDTH = 16  # voxels of margin around a tile when a model's receptive field is unknown


def find_model(name: str) -> ModelInfo | None:
    """The catalogued family a model name (path, hub name or built-in name) belongs to, if any."""
    if parse_mind_name(name) is not None:
        return next(info for info in CATALOG if info.name.startswith("MIND/"))
    for info in CATALOG:
        family = info.name.split("/")[-1]
        if info.dimension and family in name:
            return info
    return None


_TOWARD = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_direction(code: str) -> np.ndarray:
    """The ITK (LPS) direction matrix of an orientation code such as "RAS" (array axis i points toward letter i)."""
    direction = np.zeros((3, 3))
    for axis, letter in enumerate(code.upper()):
        world, sign = _TOWARD[letter]
        direction[world, axis] = sign
    return direction


def receptive_half_width(extractor, layers: list[int]) -> int:
    """Voxels on each side of an output voxel that it sees (at the input's voxel size), for the
    selected ``layers``: MIND's r + d, a catalogued family's receptive field, else DEFAULT_HALF_WIDTH."""
    known = catalogued_half_widths(extractor.name, layers)
    return max(known) if known else DEFAULT_HALF_WIDTH


def catalogued_half_widths(name: str, layers: list[int]) -> list[int] | None:
    """Per selected layer, the half receptive field (voxels) the catalogue knows: MIND's r + d, a
    catalogued family's (receptive field - 1) / 2; None when the model or a layer is unknown."""
    mind = parse_mind_name(name)
    if mind is not None:
        return [mind.radius + mind.dilation for _ in layers]
    info = find_model(name)
    if info is None or not info.layers or any(i >= len(info.layers) for i in layers):
        return None
    return [info.layers[i][2] // 2 for i in layers]
