"""Per-iteration cost against the number of B-spline parameters, at a fixed number of samples: the
impact-mr-ct preset (affine, then B-spline IMPACT MIND Static + bending energy) on the abdomen CT -> MR
case, its B-spline stage's last level run with final grid spacings from coarse to fine. The cost of an
iteration should follow the samples (2000), not the control points: elastix evaluates its metrics and
TransformBendingEnergyPenalty at the samples, and so does impactreg.

    python benchmarks/parameter_scaling.py [--spacings 32 16 8 4] [--iterations 60]

Times are wall times; they mean something only on a quiet machine (the load average is printed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import impactreg  # noqa: E402,F401  (first: the OpenMP wait policy users get)
import numpy as np  # noqa: E402

from cases import SUITE_CASES  # noqa: E402
from common import RESULTS, load_note, machine, publish  # noqa: E402
from impactreg import register  # noqa: E402
from impactreg.presets import preset_maps  # noqa: E402


def seconds_per_iteration(case, spacing_mm: float, iterations: int, initial) -> tuple[int, float]:
    """(B-spline parameters, median seconds per iteration of the last level) of the preset's B-spline
    stage from ``initial``, only its last level iterating."""
    spline = preset_maps("impact-mr-ct")[1]
    spline.set("FinalGridSpacingInPhysicalUnits", [str(spacing_mm)])
    spline.set("MaximumNumberOfIterations", ["1", "1", "1", str(iterations)])
    for key, value in case.map_overrides.items():
        spline.set(key, [str(value)])
    stamps: list[float] = []

    def last_level(info):
        if info.level == 3:
            stamps.append(time.perf_counter())

    result = register(case.fixed, case.moving, [spline], initial_transform=initial, callbacks=[last_level])
    return result.transform.current.number_of_parameters, float(np.median(np.diff(stamps)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacings", type=float, nargs="+", default=[32.0, 16.0, 8.0, 4.0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "parameter-scaling.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    case = SUITE_CASES["abdomen"]()
    affine = preset_maps("impact-mr-ct")[0]
    for key, value in case.map_overrides.items():
        affine.set(key, [str(value)])
    initial = register(case.fixed, case.moving, [affine]).transform
    rows = [(s, *seconds_per_iteration(case, s, args.iterations, initial)) for s in args.spacings]
    load_after = os.getloadavg()[0]
    base = rows[0][2]
    lines = [f"# Per-iteration cost against B-spline parameters ({case.name}, preset impact-mr-ct, 2000 samples)", "",
             f"Command: `python benchmarks/parameter_scaling.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}; {load_note(load_before, load_after)}", "",
             "| final grid spacing (mm) | B-spline parameters | s / iteration (last level) | relative to the coarsest |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {s:g} | {p} | {t:.4f} | {t / base:.2f} |" for s, p, t in rows]
    publish(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
