"""Engine benchmark: the same elastix parameter maps (affine then B-spline, Mattes MI, 4 levels,
2000 random-coordinate samples, 500 iterations) in impactreg and in elastix (itk-elastix), on
3D cases built from ../shared/data, in one run. Prints a markdown table and writes it to
benchmarks/results/engine.md.

    python benchmarks/engine_benchmark.py [--iterations N] [--cases lung mni]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES  # noqa: E402
from common import (RESULTS, baseline, machine, mi_maps, run_elastix, run_impactreg, table, warm_up,  # noqa: E402
                    workdir, write_maps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    args = parser.parse_args()
    warm_up(["elastix", "impactreg"])  # one-time costs (kernel compilation) on no case
    rows = []
    for key in args.cases:
        t = time.perf_counter()
        case = CASES[key]()
        print(f"built case {case.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        work = workdir()
        paths = write_maps(mi_maps(args.iterations), work)
        rows.append({"case": case.name, "method": "no registration", **baseline(case)})
        rows.append({"case": case.name, **run_elastix(case, paths, work)})
        rows.append({"case": case.name, **run_impactreg(case, paths)})
        print(table(rows, "elastix (itk-elastix)"), file=sys.stderr)
    report = (f"# Engine benchmark\n\nSame parameter maps (affine + B-spline, Mattes MI, 4 levels, 2000 samples, "
              f"{args.iterations} iterations) in both tools, one run, after an untimed warm-up registration.\n\nMachine: {machine()}\n\n"
              f"{table(rows, 'elastix (itk-elastix)')}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
