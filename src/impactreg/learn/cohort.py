"""Training cohorts: pairs of files (a CSV, or an atlas plus a list) and their tensors on the model grid.

CSV columns (the names of `impactreg batch`'s cohort CSV): id, fixed, moving and optional fixed_mask,
moving_mask, fixed_labels, moving_labels, fixed_points, moving_points; relative paths are relative to
the CSV's folder; an empty cell means none.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..geometry import Grid
from ..image import Image, read_image
from ..points import read_points
from .grid import ModelGrid, field_of_view, on_grid, pair_grid

OPTIONAL = ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels", "fixed_points", "moving_points")


@dataclass
class PairFiles:
    id: str
    fixed: Path
    moving: Path
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    fixed_points: Path | None = None
    moving_points: Path | None = None


def _path(value: str | None, base: Path) -> Path | None:
    if value is None or not value.strip():
        return None
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else base / p


def read_pairs_csv(path: str | os.PathLike) -> list[PairFiles]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such cohort file; give a CSV with columns id,fixed,moving[,...]")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f"{path}: the cohort CSV has no rows")
    missing = {"fixed", "moving"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: the cohort CSV lacks the column(s) {', '.join(sorted(missing))}; "
                         f"columns: id,fixed,moving,fixed_mask,moving_mask,fixed_labels,moving_labels,fixed_points,moving_points")
    base = path.resolve().parent
    pairs = []
    for i, row in enumerate(rows):
        if not (row.get("fixed") or "").strip() or not (row.get("moving") or "").strip():
            raise InputError(f"{path}: row {i + 2} has no fixed or moving image")
        pairs.append(PairFiles((row.get("id") or "").strip() or f"pair{i:04d}", _path(row["fixed"], base),
                               _path(row["moving"], base), **{k: _path(row.get(k), base) for k in OPTIONAL}))
    _check_unique(pairs, path)
    return pairs


def atlas_pairs(atlas: str | os.PathLike, listing: str | os.PathLike, atlas_mask=None, atlas_labels=None,
                atlas_points=None) -> list[PairFiles]:
    """The atlas as the fixed image of every pair; ``listing`` is a text file with one moving image per
    line, or a CSV with columns image[,mask,labels,points]."""
    listing = Path(listing)
    if not listing.is_file():
        raise InputError(f"{listing}: no such image list; give a text file with one image path per line")
    base = listing.resolve().parent
    text = listing.read_text().splitlines()
    header = [c.strip() for c in text[0].split(",")] if text else []
    if "image" in header:
        with open(listing, newline="") as f:
            rows = [{k: v for k, v in r.items()} for r in csv.DictReader(f)]
    else:
        rows = [{"image": line} for line in text if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputError(f"{listing}: the image list is empty")
    pairs = [PairFiles(Path(_path(r["image"], base)).name.split(".")[0] + f"-{i}", Path(atlas), _path(r["image"], base),
                       fixed_mask=Path(atlas_mask) if atlas_mask else None, moving_mask=_path(r.get("mask"), base),
                       fixed_labels=Path(atlas_labels) if atlas_labels else None,
                       moving_labels=_path(r.get("labels"), base),
                       fixed_points=Path(atlas_points) if atlas_points else None,
                       moving_points=_path(r.get("points"), base))
             for i, r in enumerate(rows)]
    return pairs


def _check_unique(pairs: list[PairFiles], source) -> None:
    seen = set()
    for p in pairs:
        if p.id in seen:
            raise InputError(f"{source}: the id {p.id!r} appears twice; give each pair its own id")
        seen.add(p.id)


@dataclass
class PairData:
    """One pair on its pair grid: raw intensities (for the loss), normalised ones (the network's input),
    the loss mask, optional label maps (nearest) and corresponding world points (N, D)."""

    id: str
    grid: Grid
    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_input: torch.Tensor
    moving_input: torch.Tensor
    mask: torch.Tensor
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    fixed_points: np.ndarray | None = None
    moving_points: np.ndarray | None = None


def network_input(values: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Intensities scaled to [0, 1] between the 0.5th and 99.5th percentiles inside the field of view."""
    sample = values[inside] if bool(inside.any()) else values.reshape(-1)
    if sample.numel() > 1_000_000:
        sample = sample[torch.linspace(0, sample.numel() - 1, 1_000_000).long()]
    lo, hi = torch.quantile(sample.to(torch.float32), torch.tensor([0.005, 0.995]))
    return ((values - lo) / torch.clamp(hi - lo, min=1e-6)).clamp(0, 1) * inside


def _image(value, what: str) -> Image:
    return value if isinstance(value, Image) else read_image(value)


def _world_points(path, grid: Grid) -> np.ndarray:
    return read_points(path).world(grid)


def load_pair(files: PairFiles, model_grid: ModelGrid, labels_needed: bool = True) -> PairData:
    fixed, moving = _image(files.fixed, "fixed"), _image(files.moving, "moving")
    for what, img in (("fixed", fixed), ("moving", moving)):
        if img.dim != model_grid.dim:
            raise InputError(f"{getattr(files, what)}: a {img.dim}D image, but the model works on {model_grid.dim}D images")
    grid = pair_grid(model_grid, fixed.grid)
    fixed_fov, moving_fov = field_of_view(fixed, grid), field_of_view(moving, grid)
    f, m = on_grid(fixed, grid), on_grid(moving, grid)
    mask = fixed_fov.clone()
    if files.fixed_mask is not None:
        mask &= on_grid(_image(files.fixed_mask, "fixed mask"), grid, order=0) > 0
    fixed_labels = moving_labels = fixed_points = moving_points = None
    if labels_needed and files.fixed_labels is not None and files.moving_labels is not None:
        fixed_labels = on_grid(_image(files.fixed_labels, "fixed labels"), grid, order=0).round()
        moving_labels = on_grid(_image(files.moving_labels, "moving labels"), grid, order=0).round()
    if files.fixed_points is not None and files.moving_points is not None:
        fixed_points = _world_points(files.fixed_points, fixed.grid)
        moving_points = _world_points(files.moving_points, moving.grid)
        if fixed_points.shape != moving_points.shape:
            raise InputError(f"pair {files.id}: {len(fixed_points)} fixed and {len(moving_points)} moving points; "
                             f"give corresponding point lists")
    return PairData(files.id, grid, f, m, network_input(f, fixed_fov), network_input(m, moving_fov), mask.float(),
                    fixed_labels, moving_labels, fixed_points, moving_points)
