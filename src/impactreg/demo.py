"""`make demo`: a real registration on a real image, with nothing but PyPI packages.

The MNI152 2009a T1 template ships inside the nilearn wheel. The demo makes a T2-like image from
its tissue maps, deforms it with a known smooth random transform, registers the T1 (fixed) to
the T2 (moving) with impactreg's default preset (affine MI, then B-spline with IMPACT MIND), and reports the landmark TRE and the
grey/white-matter Dice before -> after, the wall time and where the outputs are.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import ImpactRegError, InputError
from .evaluation import dice, jacobian_statistics, mean_dice, target_registration_errors
from .filters import gaussian_smooth, resample_to_grid
from .image import Image, read_image, write_image
from .presets import DEFAULT, PRESETS, preset_maps
from .qc import write_qc
from .engine.registration import register
from .synthetic import labels_from_tissue, random_deformation, t2_like, warp_by_inverse
from .warp import map_points, resample
from .transforms import TranslationTransform

MNI = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
       "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
       "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}

def mni_folder() -> Path:
    """Where the MNI152 files are: inside the installed nilearn package, else $IMPACTREG_DATA/mni152."""
    spec = importlib.util.find_spec("nilearn")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data")
    candidates.append(Path(os.environ.get("IMPACTREG_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "mni152")
    for folder in candidates:
        if all((folder / name).is_file() for name in MNI.values()):
            return folder
    raise InputError("the MNI152 template was not found; install it with `pip install nilearn` (the demo reads the "
                     "template files shipped in its wheel)")


def downsample(image: Image, spacing_mm: float, order: int = 1) -> Image:
    factors = spacing_mm / image.grid.spacing
    smoothed = gaussian_smooth(image, 0.5 * spacing_mm) if order > 0 else image
    return resample_to_grid(smoothed, image.grid.shrunk(factors, centred=True), order=order)


def build_case(folder: Path, spacing_mm: float = 3.0, seed: int = 2026):
    """Fixed T1, moving T2-like image under a known transform, label maps, landmarks, the truth."""
    t1 = downsample(read_image(folder / MNI["t1"]), spacing_mm)
    gm = downsample(read_image(folder / MNI["gm"]), spacing_mm)
    wm = downsample(read_image(folder / MNI["wm"]), spacing_mm)
    labels = labels_from_tissue(gm, wm)
    truth = random_deformation(t1.grid, seed, rotation_degrees=5.0, translation_mm=6.0, bumps=8, bump_mm=5.0,
                               bump_width_mm=20.0)
    moving, moving_labels = warp_by_inverse([t2_like(t1, gm, wm, seed), labels], truth, order=[3, 0])
    inside = torch.nonzero(labels.data[0] > 0).numpy()[:, ::-1].astype(np.float64)
    pick = np.random.default_rng(seed).choice(len(inside), 300, replace=False)
    landmarks = labels.grid.index_to_world(inside[pick])
    return t1, moving, labels, moving_labels, landmarks, truth


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m impactreg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--spacing", type=float, default=3.0, help="voxel size of the demo images in mm")
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        out = Path(args.out)
        print("impactreg demo: MNI152 T1 (fixed) -> synthetic T2 under a known random deformation (moving)")
        fixed, moving, labels, moving_labels, landmarks, truth = build_case(mni_folder(), args.spacing)
        paths = {"fixed": write_image(fixed, out / "fixed_t1.nii.gz"), "moving": write_image(moving, out / "moving_t2.nii.gz"),
                 "fixed labels": write_image(labels, out / "fixed_labels.nii.gz"),
                 "moving labels": write_image(moving_labels, out / "moving_labels.nii.gz")}
        print(f"  images {fixed.grid.size} at {args.spacing:g} mm, built in {time.perf_counter() - start:.1f} s")
        t0 = time.perf_counter()
        result = register(fixed, moving, preset_maps(DEFAULT), out_dir=out / "registration", seed=0)
        seconds = time.perf_counter() - t0
        identity = TranslationTransform(fixed.dim)
        partners = map_points(truth, landmarks)  # the landmarks' true positions in the moving image
        tre_before = target_registration_errors(identity, landmarks, partners)
        tre_after = target_registration_errors(result.transform, landmarks, partners)
        dice_before = dice(labels, moving_labels)
        warped_labels = resample(moving_labels, result.transform, fixed.grid, order=0)
        dice_after = dice(labels, warped_labels)
        paths["warped labels"] = write_image(warped_labels, out / "warped_labels.nii.gz")
        folding = jacobian_statistics(result.transform, fixed.grid, labels.data[0] > 0)
        qc_png, qc_html = write_qc(fixed, moving, result.transform, out, {
            "TRE before (mm)": float(tre_before.mean()), "TRE after (mm)": float(tre_after.mean()),
            "mean Dice before": mean_dice(dice_before), "mean Dice after": mean_dice(dice_after),
            "registration time (s)": seconds})
        paths["QC picture"], paths["QC report"] = qc_png, qc_html
    except ImpactRegError as exc:
        print(f"impactreg demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"  registration with the default preset {DEFAULT!r} ({PRESETS[DEFAULT][0]}) took {seconds:.1f} s")
    print(f"  TRE on 300 landmarks: mean {tre_before.mean():.2f} mm -> {tre_after.mean():.2f} mm "
          f"(90th percentile {np.percentile(tre_before, 90):.2f} -> {np.percentile(tre_after, 90):.2f} mm)")
    print(f"  Dice grey matter {dice_before[1]:.3f} -> {dice_after[1]:.3f}, white matter {dice_before[2]:.3f} -> "
          f"{dice_after[2]:.3f}, mean {mean_dice(dice_before):.3f} -> {mean_dice(dice_after):.3f}")
    print(f"  Jacobian determinant in the brain: min {folding['jacobian_min']:.3f}, folded voxels "
          f"{100 * folding['folded_fraction']:.3f} %")
    print("  outputs:")
    for name, path in {**paths, **result.outputs}.items():
        print(f"    {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
