"""IMPACT benchmark: whole registrations (affine Mattes MI, then a 4-level B-spline stage with
IMPACT) on the 3D cases of the engine benchmark, side by side in one run with elastix's Mattes MI
(itk-elastix) for both stages. Configurations: MIND R1D2 Static, MIND R1D2 Jacobian (patch 7^3),
M730 layer 1 Jacobian (patch 5^3), M730 layer 1 Static. Writes benchmarks/results/impact.md.

    python benchmarks/impact_benchmark.py [--iterations 500] [--samples 2000] [--cases lung mni]
                                          [--configs mind-static mind-jacobian m730-jacobian m730-static]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES  # noqa: E402
from common import (RESULTS, VOXELS, baseline, impact_configs, machine, mi_maps, run_elastix, run_impactreg,  # noqa: E402
                    table, warm_up, workdir, write_maps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--configs", nargs="+", default=["mind-static", "mind-jacobian", "m730-jacobian", "m730-static"])
    args = parser.parse_args()
    warm_up(["elastix", "impactreg"])  # one-time costs (kernel compilation) on no case
    rows = []
    all_configs = impact_configs(args.iterations, args.samples)
    for key in args.cases:
        t = time.perf_counter()
        case = CASES[key]()
        print(f"built case {case.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        work = workdir()
        affine, mi_spline = mi_maps(args.iterations)
        rows.append({"case": case.name, "method": "no registration", **baseline(case)})
        rows.append({"case": case.name, **run_elastix(case, write_maps([affine, mi_spline], work), work)})
        for name in args.configs:
            folder = work / name
            folder.mkdir()
            paths = write_maps([affine, all_configs[name]], folder)
            rows.append({"case": case.name, **run_impactreg(case, paths, label=f"impactreg IMPACT {name}")})
            print(table(rows, "elastix (itk-elastix)"), file=sys.stderr)
    report = (f"# IMPACT benchmark\n\nAffine (Mattes MI) then B-spline (4 levels, {args.iterations} iterations, "
              f"{args.samples} samples, IMPACT voxel sizes {', '.join(VOXELS)} mm) in impactreg; the same two stages "
              f"with Mattes MI in elastix. One run, after an untimed warm-up registration.\n\nMachine: {machine()}\n\n{table(rows, 'elastix (itk-elastix)')}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"impact-{args.iterations}it-{'-'.join(args.configs)}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
