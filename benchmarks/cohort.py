"""Cohort throughput: 12 pairs (6 MNI T1 -> synthetic T2 and 6 lung CT -> CBCT-like, 3 mm, each under
its own known deformation), registered with the bspline-mi preset (affine + B-spline Mattes MI, 4 levels,
300/500 iterations, 2000 samples) four ways: sequential `impactreg register` in a shell loop (one process
per pair, as users script it today), `impactreg batch` with 1 worker x 2 threads and 2 workers x 1
thread, and elastix (itk-elastix) in a Python loop on the same maps. Prints pairs per minute, speed-up
against the shell loop, peak memory per worker, mean TRE and whether batch results equal the loop's.

    python benchmarks/cohort.py [--pairs 12] [--out benchmarks/results/cohort.md]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import impactreg  # noqa: F401  (first: the OpenMP wait policy users get)
import numpy as np

from cases import lung_ct_cbct, mni_t1_t2
from common import RESULTS, load_note, machine, workdir
from impactreg.demo import downsample
from impactreg.image import write_image
from impactreg.points import write_points
from impactreg.presets import preset_texts
from impactreg.warp import map_points

SPACING_MM = 3.0


def build_cohort(folder: Path, pairs: int) -> Path:
    """Write the pairs' images, labels and landmarks, and cohort.csv; returns the CSV."""
    rows = []
    for i in range(pairs):
        case = mni_t1_t2(seed=100 + i, spacing_mm=SPACING_MM) if i % 2 == 0 else lung_ct_cbct(seed=200 + i)
        pid = f"{'mni' if i % 2 == 0 else 'lung'}{i:02d}"
        fixed, moving = case.fixed, case.moving
        if i % 2:
            fixed, moving = downsample(fixed, SPACING_MM), downsample(moving, SPACING_MM)
        write_image(fixed, folder / f"{pid}_fixed.nii.gz")
        write_image(moving, folder / f"{pid}_moving.nii.gz")
        write_points(folder / f"{pid}_fixed.txt", case.landmarks)
        write_points(folder / f"{pid}_moving.txt", map_points(case.truth, case.landmarks))
        rows.append({"id": pid, "fixed": f"{pid}_fixed.nii.gz", "moving": f"{pid}_moving.nii.gz",
                     "fixed_points": f"{pid}_fixed.txt", "moving_points": f"{pid}_moving.txt"})
    path = folder / "cohort.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(cohort: Path) -> list[dict]:
    return list(csv.DictReader(cohort.open()))


def shell_loop(cohort: Path, out: Path) -> float:
    """One `impactreg register` process per pair, one after the other (default threads)."""
    folder = cohort.parent
    script = "\n".join(f"impactreg register -f {folder / r['fixed']} -m {folder / r['moving']} --preset bspline-mi "
                       f"-out {out / r['id']} -q" for r in read_rows(cohort))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    subprocess.run(["bash", "-e", "-c", script], check=True, env=env)
    return time.perf_counter() - start


def batch(cohort: Path, out: Path, workers: int, threads: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "impactreg", "batch", str(cohort), "-out", str(out), "--preset", "bspline-mi",
                    "--workers", str(workers), "--threads-per-worker", str(threads), "--no-qc", "-q"], check=False)
    return time.perf_counter() - start


def elastix_loop(cohort: Path, out: Path) -> float:
    import itk

    maps = []
    for i, text in enumerate(preset_texts("bspline-mi")):
        maps.append(out / f"stage{i}.txt")
        out.mkdir(parents=True, exist_ok=True)
        maps[-1].write_text(text.replace('(ResultImageFormat "nii.gz")', '(WriteResultImage "false")'))
    start = time.perf_counter()
    for r in read_rows(cohort):
        fixed = itk.imread(str(cohort.parent / r["fixed"]), itk.F)
        moving = itk.imread(str(cohort.parent / r["moving"]), itk.F)
        params = itk.ParameterObject.New()
        for m in maps:
            params.AddParameterFile(str(m))
        folder = out / r["id"]
        folder.mkdir()
        itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False,
                                        output_directory=str(folder))
    return time.perf_counter() - start


def mean_tre(cohort: Path, out: Path) -> float:
    from impactreg.evaluation import evaluate

    values = []
    for r in read_rows(cohort):
        last = sorted((out / r["id"]).glob("TransformParameters.*.txt"))[-1]
        values.append(evaluate(last, cohort.parent / r["fixed_points"], cohort.parent / r["moving_points"])["tre"]["mean"])
    return float(np.mean(values))


def parameters_of(folder: Path) -> list[np.ndarray]:
    """The (TransformParameters ...) of each stage's file in the pair's folder."""
    return [np.array(re.search(r"\(TransformParameters([^)]*)\)", f.read_text()).group(1).split(), dtype=float)
            for f in sorted(folder.glob("TransformParameters.*.txt"))]


def largest_difference(cohort: Path, a: Path, b: Path) -> float:
    """The largest difference between any transform parameter of the two runs, over all pairs and stages
    (0.0: bit-identical; a different number of threads sums in a different order, ~1e-15)."""
    worst = 0.0
    for r in read_rows(cohort):
        for pa, pb in zip(parameters_of(a / r["id"]), parameters_of(b / r["id"]), strict=True):
            worst = max(worst, float(np.abs(pa - pb).max(initial=0.0)))
    return worst


def batch_peak_mb(out: Path) -> float:
    import json

    return max(r.get("worker_peak_mb") or 0.0 for r in json.loads((out / "summary.json").read_text()))


def children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def ensemble_informativeness(members: int = 5) -> list[tuple[str, float, float, float]]:
    """(case, Spearman rho between uncertainty and TRE at the landmarks, p-value, mean TRE) for a lung and an
    MNI pair of the cohort (3 mm) with the impact-mind preset (MIND Static), ``members`` seeds."""
    from scipy.stats import spearmanr

    from impactreg.ensemble import register_ensemble
    from impactreg.interpolation import Interpolator
    from impactreg.presets import preset_maps
    from impactreg.evaluation import target_registration_errors
    import torch

    rows = []
    for case in (lung_ct_cbct(seed=201), mni_t1_t2(seed=100, spacing_mm=SPACING_MM)):
        fixed, moving = case.fixed, case.moving
        if fixed.grid.spacing.min() < SPACING_MM - 1e-6:  # the cohort's 3 mm images
            fixed, moving = downsample(fixed, SPACING_MM), downsample(moving, SPACING_MM)
        result = register_ensemble(fixed, moving, preset_maps("impact-mind"), members, seed=1)
        truth = map_points(case.truth, case.landmarks)
        tre = target_registration_errors(result.transform, case.landmarks, truth)
        sampled = Interpolator(result.fields.uncertainty, order=1, dtype=torch.float64)(
            torch.as_tensor(case.landmarks, dtype=torch.float64)).values[:, 0].numpy()
        rho, p = spearmanr(sampled, tre)
        rows.append((case.name, float(rho), float(p), float(np.mean(tre))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "cohort.md")
    parser.add_argument("--ensemble", type=int, default=5, help="ensemble members for the uncertainty part (0: skip)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-elastix", action="store_true", help="throughput without the elastix loop")
    args = parser.parse_args()
    lines = []
    if not args.skip_throughput:
        lines += throughput(args)
    if args.ensemble:
        lines += ["", f"## Ensemble uncertainty (K = {args.ensemble}, preset impact-mind: MIND Static; a lung and an MNI pair at 3 mm)", "",
                  "Spearman correlation, over the case's landmarks, between the uncertainty map at the landmark and "
                  "the landmark's TRE under the ensemble's mean field.", "",
                  "| case | Spearman rho | p-value | mean TRE of the mean field (mm) |", "|---|---:|---:|---:|"]
        for name, rho, p, tre in ensemble_informativeness(args.ensemble):
            lines.append(f"| {name} | {rho:.3f} | {p:.2g} | {tre:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


def throughput(args) -> list[str]:
    work = workdir()
    cohort = build_cohort(work, args.pairs)
    load_before = os.getloadavg()[0]
    rows = []
    seconds = shell_loop(cohort, work / "loop")
    rows.append(("impactreg register, shell loop (1 process per pair)", seconds, children_peak_mb(), mean_tre(cohort, work / "loop"), ""))
    print(rows[-1], file=sys.stderr, flush=True)
    for workers, threads in ((2, 1), (1, 2)):
        out = work / f"batch{workers}"
        seconds = batch(cohort, out, workers, threads)
        same = f"{largest_difference(cohort, work / 'loop', out):.1e}"
        rows.append((f"impactreg batch, {workers} worker(s) x {threads} thread(s)", seconds, batch_peak_mb(out),
                     mean_tre(cohort, out), same))
        print(rows[-1], file=sys.stderr, flush=True)
    if not args.skip_elastix:
        seconds = elastix_loop(cohort, work / "elastix")
        rows.append(("elastix (itk-elastix), Python loop", seconds, float("nan"), mean_tre(cohort, work / "elastix"), ""))
    load_after = os.getloadavg()[0]
    base = rows[0][1]
    lines = [f"# Cohort throughput ({args.pairs} pairs, 3 mm, preset bspline-mi)", "",
             f"Command: `python benchmarks/cohort.py {' '.join(sys.argv[1:])}`  ",
             f"Date: {time.strftime('%Y-%m-%dT%H:%M:%S')}; machine: {machine()}  ",
             f"Load: {load_note(load_before, load_after)}", "",
             "| method | wall time (s) | pairs / min | speed-up vs shell loop | peak memory per worker (MiB) | mean TRE (mm) | largest parameter difference to the loop's |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, secs, peak, tre, same in rows:
        lines.append(f"| {name} | {secs:.1f} | {60 * args.pairs / secs:.2f} | {base / secs:.2f} | "
                     f"{'' if peak != peak else f'{peak:.0f}'} | {tre:.2f} | {same} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
