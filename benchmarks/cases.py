"""3D benchmark cases built from ../shared/data with fixed seeds (see ../shared/data/README.md).

Each case: fixed and moving images, the true transform (fixed -> moving), landmarks in the fixed
image (their true partners are truth(p)), and label maps for Dice (fixed labels, and moving
labels on the moving grid).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from impactreg.demo import build_case
from impactreg.filters import resample_to_grid
from impactreg.image import Image, read_image
from impactreg.synthetic import cbct_like, crop_to_fraction, random_deformation, warp_by_inverse
from impactreg.transforms import Transform

DATA = Path(os.environ.get("IMPACTREG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Case:
    name: str
    fixed: Image
    moving: Image
    truth: Transform
    landmarks: np.ndarray
    fixed_labels: Image
    moving_labels: Image


def _inside(labels: Image, n: int, seed: int) -> np.ndarray:
    index = torch.nonzero(labels.data[0] > 0).numpy()[:, ::-1].astype(np.float64)
    pick = np.random.default_rng(seed).choice(len(index), min(n, len(index)), replace=False)
    return labels.grid.index_to_world(index[pick])


def lung_ct_cbct(seed: int = 11) -> Case:
    """Lung CT (fixed) against a CBCT-like copy under a breathing-like deformation, on a smaller
    field of view (the image is already a crop of one lung, so the FOV is a crop, not a cylinder)."""
    ct = read_image(DATA / "lung_ct" / "3DCT_lung_baseline_small.mha")
    mask = resample_to_grid(read_image(DATA / "lung_ct" / "3DCT_lung_baseline_mask.mha"), ct.grid, order=0)
    truth = random_deformation(ct.grid, seed, rotation_degrees=2.0, translation_mm=4.0, bumps=8, bump_mm=6.0,
                               bump_width_mm=35.0)
    moving_grid = crop_to_fraction(ct, 0.85).grid
    moving, moving_mask = warp_by_inverse([cbct_like(ct, seed, fov_fraction=None), mask], truth, default=[-1000.0, 0.0], order=[3, 0],
                                          grid=moving_grid)
    return Case("lung CT -> CBCT-like", ct, moving, truth, _inside(mask, 300, seed), mask, moving_mask)


def mni_t1_t2(seed: int = 12, spacing_mm: float = 2.0) -> Case:
    """MNI152 T1 (fixed) against a synthetic T2 from its tissue maps under a known warp (the demo's case)."""
    t1, moving, labels, moving_labels, landmarks, truth = build_case(DATA / "mni152", spacing_mm, seed)
    return Case("MNI T1 -> synthetic T2", t1, moving, truth, landmarks, labels, moving_labels)


CASES = {"lung": lung_ct_cbct, "mni": mni_t1_t2}
