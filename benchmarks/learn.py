"""The learning path against intensity losses and the B-spline engine, on a cohort with known deformations.

Cohort (fixed seeds): the MNI152 T1 template (fixed) against synthetic T2-like images from its tissue
maps, each under its own smooth random deformation (rigid part + Gaussian bumps), at 3 mm; seeds
1000.. for training, 2000.. for held-out pairs. Trained on the training pairs: VoxelMorph-style
networks with IMPACT (MIND R1D2), with MONAI's global mutual information and with LNCC (same network,
regulariser, seed and steps). On the held-out pairs: TRE on 300 landmarks (true partners from the
known deformation), grey/white-matter Dice, folding (det J <= 0), inference time per pair, and the
IMPACT model with instance optimisation; against the B-spline engine: impactreg's default preset
(affine MI, then B-spline IMPACT MIND) and elastix (itk-elastix) with Mattes MI (affine + B-spline).

    PYTHONPATH=src python benchmarks/learn.py                       # the full run (long on 2 CPU cores)
    PYTHONPATH=src python benchmarks/learn.py --train 4 --held-out 2 --epochs 2 --bspline-pairs 1   # smoke run

Times are wall times on this machine; they mean something only on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import impactreg  # noqa: F401  (first: it sets the OpenMP wait policy, before torch loads)
import numpy as np
import torch

from cases import DATA, Case
from common import (QUICK, DEFAULT, RESULTS, load_note, machine, mi_stages, publish, run_elastix, run_impactreg,
                    score, workdir, write_maps)
from impactreg.demo import MNI, downsample
from impactreg.image import read_image, write_image
from impactreg.learn import LearnSettings, PairFiles, load_model, predict, train
from impactreg.points import write_points
from impactreg.presets import DEFAULT as DEFAULT_PRESET, preset_texts
from impactreg.synthetic import labels_from_tissue, random_deformation, t2_like, warp_by_inverse
from impactreg.warp import map_points


def mni_cohort(spacing_mm: float, seeds: list[int]) -> list[Case]:
    folder = DATA / "mni152"
    t1, gm, wm = (downsample(read_image(folder / MNI[k]), spacing_mm) for k in ("t1", "gm", "wm"))
    labels = labels_from_tissue(gm, wm)
    inside = torch.nonzero(labels.data[0] > 0).numpy()[:, ::-1].astype(np.float64)
    cases = []
    for seed in seeds:
        truth = random_deformation(t1.grid, seed, rotation_degrees=5.0, translation_mm=6.0, bumps=8, bump_mm=5.0,
                                   bump_width_mm=20.0)
        moving, moving_labels = warp_by_inverse([t2_like(t1, gm, wm, seed), labels], truth, order=[3, 0])
        pick = np.random.default_rng(seed).choice(len(inside), 300, replace=False)
        cases.append(Case(f"MNI T1 -> T2 #{seed}", t1, moving, truth, labels.grid.index_to_world(inside[pick]),
                          labels, moving_labels, label_names={1: "grey matter", 2: "white matter"}))
    return cases


def pair_files(case: Case, folder: Path) -> PairFiles:
    """The case written as a cohort row: images, label maps, landmarks and their true partners."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"fixed": folder / "fixed.mha", "moving": folder / "moving.mha", "fixed_labels": folder / "fixed_labels.mha",
             "moving_labels": folder / "moving_labels.mha", "fixed_points": folder / "fixed_points.txt",
             "moving_points": folder / "moving_points.txt"}
    write_image(case.fixed, paths["fixed"])
    write_image(case.moving, paths["moving"])
    write_image(case.fixed_labels, paths["fixed_labels"])
    write_image(case.moving_labels, paths["moving_labels"])
    write_points(paths["fixed_points"], case.landmarks)
    write_points(paths["moving_points"], map_points(case.truth, case.landmarks))
    return PairFiles(folder.name, **paths)


def learned_rows(label: str, model_path: Path, cases: list[Case], files: list[PairFiles], instance_steps: int) -> list[dict]:
    model = load_model(model_path)
    rows = []
    for case, f in zip(cases, files):
        start = time.perf_counter()
        result = predict(model, f.fixed, f.moving, instance_steps=instance_steps, result_image=False)
        rows.append({"case": case.name, "method": label, "seconds": time.perf_counter() - start,
                     **score(case, result.transform)})
    return rows


def summary(rows: list[dict], train_seconds: dict) -> str:
    lines = ["| method | held-out pairs | mean TRE (mm) | TRE 90% (mm) | mean Dice | folded (%) | training (s) | "
             "inference / pair (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        mean = lambda k: float(np.mean([r[k] for r in mine]))  # noqa: E731
        train_s = f"{train_seconds[method]:.0f}" if method in train_seconds else ""
        lines.append(f"| {method} | {len(mine)} | {mean('tre'):.2f} | {mean('tre90'):.2f} | {mean('dice'):.3f} | "
                     f"{100 * mean('folded_fraction'):.3f} | {train_s} | {mean('seconds'):.2f} |")
    return "\n".join(lines)


def report(args, argv, rows: list[dict], train_seconds: dict, histories: dict, n_bspline: int, load_before: float,
           done: bool) -> None:
    """The table so far, written to ``args.out`` after every method (a run cut short keeps what it measured)."""
    reduced = [] if (args.train, args.held_out, args.epochs) == (24, 8, 30) or not args.similarities else [
        f"**Reduced schedule: {args.train} training pairs x {args.epochs} epochs (the issue's plan: 24 x 30), "
        f"{args.held_out} held-out pairs.**  "]
    title = (f"# The learning path: VoxelMorph-style training (IMPACT, MI, LNCC) against the B-spline engines "
             f"({args.train} training / {args.held_out} held-out MNI T1 -> T2-like pairs at {args.spacing:g} mm, "
             f"{args.epochs} epochs)") if args.similarities else (
        f"# The learning benchmark's B-spline engines on its {args.held_out} held-out MNI T1 -> T2-like pairs at "
        f"{args.spacing:g} mm")
    lines = [title, "",
             f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} PYTHONPATH=src python benchmarks/learn.py "
             f"{' '.join(argv)}`  ",
             *reduced,
             f"Date: {time.strftime('%Y-%m-%dT%H:%M:%S')}; machine: {machine()}  ",
             f"Load: {load_note(load_before, os.getloadavg()[0])}; the machine was BUSY (other jobs shared its 2 cores): "
             f"times are from a busy machine, accuracy numbers are not affected  ",
             f"Network: MONAI UNet {args.features}, strides 2, {args.integration_steps} scaling-and-squaring steps; "
             f"AdamW lr {args.lr:g}, diffusion regulariser lambda {args.regularization_weight:g}, batch 1, seed 0; "
             f"instance optimisation: {args.instance_steps} Adam steps (lr 0.1) of the training loss on the pair's field  ",
             f"B-spline engines at their default settings on {n_bspline} of the {args.held_out} held-out pairs"
             + ("" if done else "  \n**PARTIAL: the run had not finished when this was written.**"), "",
             summary(rows, train_seconds), ""]
    if histories:
        lines += ["Training loss (mean over the epoch's steps), first -> last epoch:", ""]
        for label, history in histories.items():
            first, last = history[0], history[-1]
            lines.append(f"- {label}: " + ", ".join(f"{k} {first[k]:.4g} -> {last[k]:.4g}" for k in first
                                                   if k not in ("epoch", "step")))
    publish(lines, args.out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--train", type=int, default=24, help="training pairs")
    parser.add_argument("--held-out", type=int, default=8, help="held-out pairs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lambda", dest="regularization_weight", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--similarities", nargs="*", default=["impact", "mi", "lncc"], choices=("impact", "mi", "lncc"),
                        help="the networks to train; none (with --train 0): the B-spline engines only")
    parser.add_argument("--instance-steps", type=int, default=100)
    parser.add_argument("--bspline-pairs", type=int, default=None, help="held-out pairs run through the B-spline "
                                                                         "engines (default: all)")
    parser.add_argument("--quick-bspline", action="store_true", help="B-spline engines with few iterations (smoke)")
    parser.add_argument("--models", type=Path, default=None, help="keep the trained models in this folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "learn.md", help="the report (markdown)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    defaults = LearnSettings()
    args.features, args.integration_steps = defaults.features, defaults.integration_steps
    load_before = os.getloadavg()[0]
    work = workdir()
    print(f"building {args.train} training and {args.held_out} held-out pairs at {args.spacing:g} mm ...", flush=True)
    training = mni_cohort(args.spacing, [1000 + i for i in range(args.train)])
    held = mni_cohort(args.spacing, [2000 + i for i in range(args.held_out)])
    train_files = [pair_files(c, work / f"train{i:02d}") for i, c in enumerate(training)]
    held_files = [pair_files(c, work / f"held{i:02d}") for i, c in enumerate(held)]
    rows = [{"case": c.name, "method": "identity", "seconds": 0.0, **score(c, impactreg.transforms.TranslationTransform(3))}
            for c in held]
    train_seconds, histories = {}, {}
    n = len(held) if args.bspline_pairs is None else min(args.bspline_pairs, len(held))
    labels = {"impact": "VoxelMorph + IMPACT (MIND)", "mi": "VoxelMorph + MI", "lncc": "VoxelMorph + LNCC"}
    for similarity in args.similarities:
        label = labels[similarity]
        settings = LearnSettings(similarity=similarity, epochs=args.epochs, seed=0, learning_rate=args.lr,
                                 regularization_weight=args.regularization_weight)
        model_path = (args.models or work) / f"model_{similarity}.pt"
        print(f"training {label} ...", flush=True)
        result = train(train_files, model_path, settings, spacing=args.spacing, validation_fraction=0.0,
                       checkpoint_every=0, report=lambda line: print("  " + line, flush=True))
        train_seconds[label], histories[label] = result.seconds, result.history
        rows += learned_rows(label, model_path, held, held_files, 0)
        report(args, argv, rows, train_seconds, histories, n, load_before, False)
        if similarity == "impact" and args.instance_steps:
            rows += learned_rows(f"{label} + {args.instance_steps} instance steps", model_path, held, held_files,
                                 args.instance_steps)
            report(args, argv, rows, train_seconds, histories, n, load_before, False)
    bench = QUICK if args.quick_bspline else DEFAULT
    for i, case in enumerate(held[:n]):
        print(f"B-spline engines on {case.name} ...", flush=True)
        folder = work / f"bspline{i}"
        folder.mkdir()
        preset = [folder / f"preset{j}.txt" for j, _ in enumerate(preset_texts(DEFAULT_PRESET))]
        for path, text in zip(preset, preset_texts(DEFAULT_PRESET)):
            path.write_text(text)
        rows.append({"case": case.name, **run_impactreg(case, preset,
                                                        label=f"B-spline impactreg ({DEFAULT_PRESET})")})
        rows.append({"case": case.name, **run_elastix(case, write_maps(mi_stages(case, bench), folder), folder,
                                                       label="B-spline elastix (Mattes MI)")})
        report(args, argv, rows, train_seconds, histories, n, load_before, False)
    report(args, argv, rows, train_seconds, histories, n, load_before, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
