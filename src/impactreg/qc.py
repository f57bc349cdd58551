"""Visual quality control: a PNG montage and a small self-contained HTML report.

Rows: the three orthogonal mid-slices of the fixed grid (one row in 2D). Columns: fixed, moving
before (on the fixed grid, no transform), moving after, checkerboard of fixed and after, fixed
edges (red) over the moving image after, and the Jacobian determinant (blue < 1 < red, black
where the transform folds).
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .engine.outputs import StagedFolder
from .files import atomic_write_text
from .image import Image
from .warp import jacobian_determinant, resample
from .transforms import Transform, TranslationTransform

COLUMNS = ("fixed", "moving before", "moving after", "checkerboard", "fixed edges on after", "Jacobian determinant")
TILE = 220


def _slices(volume: np.ndarray, spacing) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """Mid-slices (rows, cols) with their pixel sizes (row, col) in mm; volume in torch order."""
    if volume.ndim == 2:
        return [(volume, (spacing[1], spacing[0]))]
    z, y, x = (n // 2 for n in volume.shape)
    sx, sy, sz = spacing
    return [(volume[z], (sy, sx)), (volume[:, y, :][::-1], (sz, sx)), (volume[:, :, x][::-1], (sz, sy))]


def _fit(tile: np.ndarray, pixel: tuple[float, float]) -> np.ndarray:
    """Nearest-neighbour resize to TILE x TILE keeping the physical aspect ratio (padded with black)."""
    height, width = tile.shape[0] * pixel[0], tile.shape[1] * pixel[1]
    scale = TILE / max(height, width)
    rows, cols = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    ri = np.minimum((np.arange(rows) / scale / pixel[0]).astype(int), tile.shape[0] - 1)
    ci = np.minimum((np.arange(cols) / scale / pixel[1]).astype(int), tile.shape[1] - 1)
    out = np.zeros((TILE, TILE) + tile.shape[2:], dtype=tile.dtype)
    r0, c0 = (TILE - rows) // 2, (TILE - cols) // 2
    out[r0:r0 + rows, c0:c0 + cols] = tile[ri][:, ci]
    return out


def _grey(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    g = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _jacobian_colours(det: np.ndarray) -> np.ndarray:
    t = np.clip(np.log2(np.clip(det, 1e-6, None)), -1, 1)  # halving .. doubling
    rgb = np.empty(det.shape + (3,), dtype=np.float64)
    rgb[..., 0] = np.where(t > 0, 1.0, 1.0 + t)
    rgb[..., 2] = np.where(t < 0, 1.0, 1.0 - t)
    rgb[..., 1] = 1.0 - np.abs(t)
    rgb[det <= 0] = 0.0
    return (rgb * 255).astype(np.uint8)


def _edges(a: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(a)
    magnitude = np.hypot(gx, gy)
    return magnitude > np.percentile(magnitude, 92)


def montage(fixed: Image, moving: Image, transform: Transform) -> np.ndarray:
    """The QC montage as an RGB uint8 array (rows x columns of TILE x TILE tiles)."""
    grid = fixed.grid
    before = resample(moving, TranslationTransform(fixed.dim), grid, order=1).data[0].numpy()
    after = resample(moving, transform, grid, order=1).data[0].numpy()
    det = jacobian_determinant(transform, grid).data[0].numpy()
    f = fixed.data[0].numpy()
    f_lo, f_hi = np.percentile(f, [1, 99])
    m_lo, m_hi = np.percentile(moving.data[0].numpy(), [1, 99])
    rows = []
    for (fs, pixel), (bs, _), (as_, _), (ds, _) in zip(*(_slices(v, grid.spacing) for v in (f, before, after, det))):
        fg, ag = _grey(fs, f_lo, f_hi), _grey(as_, m_lo, m_hi)
        block = max(4, min(fs.shape) // 8)
        checker = ((np.arange(fs.shape[0])[:, None] // block + np.arange(fs.shape[1])[None, :] // block) % 2).astype(bool)
        board = np.where(checker[..., None], fg, ag)
        edges = ag.copy()
        edges[_edges(fs)] = (255, 40, 40)
        tiles = [fg, _grey(bs, m_lo, m_hi), ag, board, edges, _jacobian_colours(ds)]
        row = [_fit(t, pixel) for t in tiles]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=40) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


def write_qc(fixed: Image, moving: Image, transform: Transform, out_dir: str | os.PathLike,
             numbers: dict | None = None, name: str = "qc", inputs: dict | None = None) -> tuple[Path, Path]:
    """Write <name>.png (the montage) and <name>.html (montage + numbers) into ``out_dir``; neither may
    replace one of ``inputs`` ({what: path}, the files the images and transform came from)."""
    names = (f"{name}.png", f"{name}.html")
    with StagedFolder(out_dir, names, inputs or {}) as folder:
        picture = montage(fixed, moving, transform)
        png = folder.path(names[0])
        sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(png))
        det = jacobian_determinant(transform, fixed.grid).data[0]
        stats = {"Jacobian determinant min": float(det.min()), "Jacobian determinant max": float(det.max()),
                 "folded voxels (%)": 100.0 * float((det <= 0).double().mean())}
        stats.update(numbers or {})
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in stats.items())
        header = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>impactreg QC</title>"
                f"<style>body{{font-family:sans-serif;background:#222;color:#eee}}td,th{{padding:2px 10px}}</style></head>"
                f"<body><h2>impactreg registration QC</h2><table><tr>{header}</tr></table>"
                f"<img alt='QC montage' src='data:image/png;base64,{encoded}'><h3>Numbers</h3><table>{rows}</table></body></html>")
        atomic_write_text(folder.path(names[1]), page)
        folder.commit()
    return Path(out_dir) / names[0], Path(out_dir) / names[1]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
