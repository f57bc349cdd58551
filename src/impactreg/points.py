"""Point files: elastix/transformix ``point``/``index`` files, CSV, and 3D Slicer ``.fcsv``.

A ``PointSet`` holds either world points in mm (LPS, x-y-z) or voxel indices (x-y-z) of some
image grid; ``world(grid)`` gives mm either way.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_write_text
from .geometry import Grid


@dataclass
class PointSet:
    values: np.ndarray  # (N, D) float64
    kind: str = "point"  # "point" (world mm) or "index" (voxel indices)

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def __len__(self) -> int:
        return self.values.shape[0]

    def world(self, grid: Grid) -> np.ndarray:
        """World points in mm; indices are rounded half up first and converted with ``grid``, as transformix does."""
        if self.kind == "point":
            return self.values
        return grid.index_to_world(np.floor(self.values + 0.5))


def read_points(path: str | os.PathLike) -> PointSet:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such point file; check the path")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{path}: cannot read the point file as text") from None
    name = p.name.lower()
    if name.endswith(".fcsv"):
        return _read_fcsv(text, path)
    if name.endswith(".csv"):
        return _read_csv(text, path)
    return _read_elastix(text, path)


def _read_elastix(text: str, path) -> PointSet:
    lines = [ln.split("//")[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{path}: empty point file; write 'point' or 'index', the count, then one point per line")
    kind = "index"
    if lines[0].lower() in ("point", "index"):
        kind = lines.pop(0).lower()
    try:
        count = int(lines.pop(0))
        rows = [[float(v) for v in ln.split()] for ln in lines]
    except (ValueError, IndexError):
        raise InputError(f"{path}: malformed point file; expected 'point' or 'index', the number of points, then one point per line") from None
    if count != len(rows):
        raise InputError(f"{path}: the header says {count} points but the file lists {len(rows)}")
    return _point_set(rows, kind, path)


def _read_csv(text: str, path) -> PointSet:
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path}: empty CSV point file")
    header = [c.strip().lower() for c in rows[0]]
    columns = None
    if not _numeric(rows[0]):
        rows = rows[1:]
        if {"x", "y"} <= set(header):
            columns = [header.index(a) for a in ("x", "y", "z") if a in header]
    try:
        if columns is None:
            values = [[float(c) for c in r if c.strip()] for r in rows]
        else:
            values = [[float(r[i]) for i in columns] for r in rows]
    except (ValueError, IndexError):
        raise InputError(f"{path}: CSV points must be numeric columns x,y[,z] (an optional header row may name them)") from None
    return _point_set(values, "point", path)


def _read_fcsv(text: str, path) -> PointSet:
    lps = "LPS" in text.split("\n# columns")[0] or "CoordinateSystem = 1" in text
    columns = None
    values = []
    for line in text.splitlines():
        if line.startswith("# columns"):
            names = [c.strip() for c in line.split("=", 1)[1].split(",")]
            columns = [names.index(a) for a in ("x", "y", "z")]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split(",")
        idx = columns or [1, 2, 3]
        try:
            values.append([float(cells[i]) for i in idx])
        except (ValueError, IndexError):
            raise InputError(f"{path}: malformed Slicer .fcsv row {line[:60]!r}") from None
    points = _point_set(values, "point", path)
    if not lps:  # Slicer's default is RAS: flip to ITK's LPS
        points.values[:, :2] *= -1
    return points


def _numeric(row) -> bool:
    try:
        [float(c) for c in row if c.strip()]
        return True
    except ValueError:
        return False


def _point_set(rows, kind, path) -> PointSet:
    if not rows:
        raise InputError(f"{path}: the point file lists no points")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() not in (2, 3):
        raise InputError(f"{path}: every point needs the same 2 or 3 coordinates")
    return PointSet(np.asarray(rows, dtype=np.float64), kind)


def write_points(path: str | os.PathLike, points: np.ndarray, kind: str = "point") -> Path:
    """Write an elastix point file (``point``/``index``, count, one point per line)."""
    points = np.asarray(points, dtype=np.float64)
    body = "\n".join(" ".join(f"{v:.6f}" if kind == "point" else f"{v:g}" for v in row) for row in points)
    return atomic_write_text(path, f"{kind}\n{len(points)}\n{body}\n")


def format_output_points(input_points: PointSet, world_in: np.ndarray, world_out: np.ndarray,
                         fixed_grid: Grid, moving_grid: Grid | None = None) -> str:
    """transformix's outputpoints.txt text for the given input and mapped points."""
    def vec(values, fmt):
        return "[ " + " ".join(fmt(v) for v in values) + " ]"

    def as_float(v):
        return f"{v:.6f}"

    def as_int(v):
        return str(int(v))

    def round_index(grid, pts):
        return np.floor(grid.world_to_index(pts) + 0.5)

    in_index = np.floor(input_points.values + 0.5) if input_points.kind == "index" else round_index(fixed_grid, world_in)
    out_fixed = round_index(fixed_grid, world_out)
    out_moving = round_index(moving_grid, world_out) if moving_grid is not None else None
    lines = []
    for i in range(len(world_in)):
        parts = [f"Point\t{i}", f"InputIndex = {vec(in_index[i], as_int)}",
                 f"InputPoint = {vec(world_in[i], as_float)}",
                 f"OutputIndexFixed = {vec(out_fixed[i], as_int)}",
                 f"OutputPoint = {vec(world_out[i], as_float)}",
                 f"Deformation = {vec(world_out[i] - world_in[i], as_float)}"]
        if out_moving is not None:
            parts.append(f"OutputIndexMoving = {vec(out_moving[i], as_int)}")
        lines.append("\t; ".join(parts))
    return "\n".join(lines) + "\n"


def read_output_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """InputPoint and OutputPoint arrays from a transformix outputpoints.txt."""
    inputs, outputs = [], []
    for line in Path(path).read_text().splitlines():
        if "OutputPoint" not in line:
            continue
        fields = dict(part.strip().split(" = ", 1) for part in line.split(";")[1:] if " = " in part)
        inputs.append([float(v) for v in fields["InputPoint"].strip("[] ").split()])
        outputs.append([float(v) for v in fields["OutputPoint"].strip("[] ").split()])
    return np.asarray(inputs), np.asarray(outputs)
