"""What a registration will hold in memory, estimated from its maps and image sizes before any
work, so that a configuration that cannot fit in its memory limit is refused in one line at the
start instead of being killed (or refused) hours later.

Per stage and level it counts what is alive at once: the pyramid images of both images (and the
masks), the moving interpolator's B-spline coefficients, IMPACT's own images (Jacobian mode: the
two anti-aliased images it cuts patches from; Static mode: the feature maps of both images with
their B-spline coefficients and validity, from the catalogue's channels and strides), and the
largest transient (a Gaussian smoothing's second buffer, a resampling pyramid's float64 copy); at
the end of a stage the result image's resampling. The process's resident set when the check runs
(the runtime and the images as read) comes on top. Batched work (model passes, tiles) is sized at
run time to what is left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..compute.memory import MemoryBudget, available_bytes, format_bytes, resident_bytes
from ..errors import ImpactRegError, MemoryLimitError
from ..features.catalog import find_model
from ..features.maps import feature_grid, shared_direction
from ..image import Image
from ..keys import LevelView
from ..parameters import ParameterMap
from ..metrics.impact.config import impact_level
from ..metrics.protocol import IntensityMetric
from ..metrics.impact.static import feature_map_order
from .build import build_stage

FLOAT = 4  # bytes of a float32 voxel
WORK = 64 * 2 ** 20  # the least room batched work needs (a batch of patches, a feature-map tile, a prefilter slab)
MARGIN = 1.15  # for what is not counted: small tables, allocator slack (measured: 3.84 GiB peak for 3.5 estimated)


@dataclass
class Need:
    """Bytes a stage's level (or its result resampling, ``level`` None) holds on top of the process now."""

    stage: int
    level: int | None
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def where(self) -> str:
        return f"stage {self.stage} " + ("result image" if self.level is None else f"level {self.level}")


def _voxels(grid) -> int:
    return int(np.prod(grid.size))


def _resampling(pyramid) -> bool:
    return type(pyramid).__name__ != "SmoothingImagePyramid"


def _static_maps(config, view: LevelView, fixed: Image, moving: Image) -> tuple[int, int] | None:
    """Bytes of IMPACT Static's feature maps of both images at a level (values, B-spline coefficients,
    validity) and of the largest one map (copied once into the kernel's channel-last layout), or None when
    a model's channels are not catalogued (they are checked when the level starts)."""
    order = feature_map_order(view)
    copies = 2 if order >= 2 else 1
    total = largest = 0
    for image, models in ((fixed, config.fixed), (moving, config.moving)):
        for s in models:
            info = find_model(s.path)
            layers = s.selected_layers
            if info is None or not info.layers:
                return None
            grid = feature_grid(image.grid, shared_direction(fixed.grid, s.path, s.dimension), s.voxel_size)
            voxels = _voxels(grid)
            for layer in layers:
                channels, stride, _ = info.layers[min(layer, len(info.layers) - 1)]
                if info.name.startswith("MIND/"):
                    channels, stride = (12 if s.dimension == 3 else 4), 1
                out = math.prod(math.ceil(n / stride) for n in grid.size)
                total += out * FLOAT * (channels * copies + 1) + out
                largest = max(largest, out * FLOAT * channels)
            total += voxels * FLOAT * 2  # the image resampled to the voxel size, and its validity
    return total, largest


def stage_needs(index: int, pm: ParameterMap, fixed: Image, moving: Image, fixed_mask, moving_mask) -> list[Need]:
    """What each level of one stage holds, and its result resampling."""
    components = build_stage(pm)
    if getattr(components.registration, "dense", False):
        return []
    levels = pm.get("NumberOfResolutions")
    fixed_pyramid = components.fixed_pyramid.build(fixed, pm, levels)
    moving_pyramid = components.moving_pyramid.build(moving, pm, levels)
    metrics = [type(m).__name__ for m in components.metrics]
    needs = []
    for level in range(levels):
        view = LevelView(pm, level)
        f = _voxels(fixed_pyramid.level_grid(level)) * FLOAT
        m = _voxels(moving_pyramid.level_grid(level)) * FLOAT
        parts = {"pyramid images": f + m}
        if fixed_mask is not None or moving_mask is not None:
            parts["masks"] = (f // FLOAT if fixed_mask is not None else 0) + (m if moving_mask is not None else 0)
        if any(isinstance(metric, IntensityMetric) for metric in components.metrics) and components.interpolator.order(view) >= 2:
            parts["moving B-spline coefficients"] = m
        transient = max(f, m)
        if _resampling(fixed_pyramid) or _resampling(moving_pyramid):
            full = max(_voxels(fixed.grid), _voxels(moving.grid)) * FLOAT
            transient = max(transient, 3 * full + 6 * max(f, m))  # smoothed, its float64 copy, level points
        if "ImpactMetric" in metrics:
            config = impact_level(pm, level, fixed.dim, torch.device("cpu"))
            if config.mode == "Static":
                maps = _static_maps(config, view, fixed, moving)
                transient = max(transient, 2 * max(f, m))  # the anti-aliased image and its prefilter copy
                if maps is not None:
                    names = ", ".join(dict.fromkeys(m.path for m in config.fixed + config.moving))
                    parts[f"IMPACT feature maps of {names}"] = maps[0]
                    transient = max(transient, maps[1])
            else:
                parts["IMPACT patch images"] = f + m
        parts["largest transient"] = transient
        needs.append(Need(index, level, parts))
    if pm.get("WriteResultImage"):
        needs.append(Need(index, None, {"moving float64 coefficients": _voxels(moving.grid) * 8,
                                        "result image": _voxels(fixed.grid) * FLOAT}))
    return needs


def check_fits(maps: list[ParameterMap], fixed: Image, moving: Image, fixed_mask, moving_mask,
               budget: MemoryBudget) -> list[Need]:
    """Refuse, in one line, a registration whose largest level cannot fit in ``budget`` (a process budget):
    --memory-limit when given, else all the memory available now. Returns the needs it checked."""
    held = resident_bytes()
    ceiling = budget.bytes if budget.explicit or not budget.process else held + available_bytes("cpu")
    needs = []
    for index, pm in enumerate(maps):
        try:
            needs += stage_needs(index, pm, fixed, moving, fixed_mask, moving_mask)
        except ImpactRegError:
            continue  # a bad map is refused with its own line when its stage starts
    if not needs:
        return needs
    worst = max(needs, key=lambda n: n.total)
    wanted = held + int(MARGIN * worst.total) + WORK
    if wanted <= ceiling:
        return needs
    parts = ", ".join(f"{name} {format_bytes(b)}" for name, b in worst.parts.items() if b)
    limit = f"--memory-limit is {budget}" if budget.explicit else f"only {format_bytes(ceiling - held)} is available"
    fixes = [f"a --memory-limit of at least {format_bytes(wanted)}"]
    if any(name.startswith("IMPACT feature maps") for name in worst.parts):
        fixes.append("a larger ImpactVoxelSize or (ImpactMode \"Jacobian\")")
    if worst.level is not None and worst.parts.get("pyramid images", 0) >= (_voxels(fixed.grid) + _voxels(moving.grid)) * FLOAT:
        fixes.append("a shrinking pyramid ((FixedImagePyramid \"FixedRecursiveImagePyramid\") and its Moving twin)")
    fixes.append("images at a coarser voxel size")
    raise MemoryLimitError(
        f"{worst.where()} needs about {format_bytes(worst.total)} ({parts}) on top of the "
        f"{format_bytes(held)} the process holds (runtime and images) but {limit}; give {', or '.join(fixes)}")


def _file_voxels(path) -> tuple[int, tuple[int, ...], int] | None:
    """(voxels x components, size, bytes of the file's own pixel buffer) from an image file's header, or None
    (not a file, or a header ITK cannot read: the full read reports that)."""
    import SimpleITK as sitk

    from ..image import _itk_quiet

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_quiet():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = tuple(int(n) for n in reader.GetSize())
    elements = int(np.prod(size)) * reader.GetNumberOfComponents()
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    width = 8 if "64" in pixel or "double" in pixel else 2 if "16" in pixel else 1 if "8" in pixel else 4
    return elements, size, elements * width


def check_inputs_fit(inputs: dict, budget: MemoryBudget) -> None:
    """Before the images are read: refuse, in one line, image files that alone (as float32, plus the largest
    file's own buffer while it is converted) do not fit in an explicit --memory-limit beside what the process
    holds. (A suggested limit of twice that leaves room for their pyramids.)"""
    from pathlib import Path

    if not (budget.process and budget.explicit):
        return
    found = {}
    for what, value in inputs.items():
        if isinstance(value, (str, Path)) and Path(value).is_file():
            info = _file_voxels(value)
            if info is not None:
                found[what] = info
    if not found:
        return
    held = resident_bytes()
    need = sum(4 * elements for elements, _, _ in found.values()) + max(raw for _, _, raw in found.values())
    if held >= budget.bytes or held + need <= budget.bytes:
        return  # what the process holds already is the problem (refused with the levels' needs), or they fit
    listed = ", ".join(f"{what} {'x'.join(map(str, size))}" for what, (_, size, _) in found.items())
    raise MemoryLimitError(
        f"the images alone ({listed}) need about {format_bytes(need)} to be read as float32, on top of the "
        f"{format_bytes(held)} the process holds, but --memory-limit is {budget}; give a --memory-limit of at least "
        f"{format_bytes(held + 2 * need + WORK)} or images at a coarser voxel size")
