"""Memory benchmark: peak resident set size of one registration, each in its own process, for
affine + B-spline Mattes MI (impactreg and elastix side by side), IMPACT MIND Static and IMPACT
MIND Jacobian (impactreg, with --memory-limit), on the 1 mm MNI brain (197x233x189) and on a
synthetic CT-sized volume (512x512x300 at 0.8 mm). Iterations are cut: peak memory, not time or
accuracy, is measured. Prints a markdown table with ratios to elastix's peak and writes it to
benchmarks/results/memory.md.

    python benchmarks/memory.py [--iterations 20] [--jacobian-iterations 3] [--memory-limit 4G] [--cases mni ct]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import ct_like_volume, mni_t1_t2  # noqa: E402
from common import RESULTS, impact_configs, machine, mi_maps, peak_resident_bytes, workdir, write_maps  # noqa: E402

CASES = {"mni": ("MNI T1 1 mm, 197x233x189", lambda: (lambda c: (c.fixed, c.moving))(mni_t1_t2(spacing_mm=1.0))),
         "ct": ("CT-like 512x512x300, 0.8 mm", ct_like_volume)}


def child(engine: str, fixed: str, moving: str, maps: list[str], limit: str | None) -> dict:
    """One registration in this process; its wall time and peak RSS."""
    start = time.perf_counter()
    if engine == "elastix":
        import itk

        params = itk.ParameterObject.New()
        for p in maps:
            params.AddParameterFile(p)
        itk.elastix_registration_method(itk.imread(fixed, itk.F), itk.imread(moving, itk.F), parameter_object=params,
                                        log_to_console=False)
    else:
        from impactreg import register

        register(fixed, moving, maps, memory_limit=limit)
    return {"seconds": time.perf_counter() - start, "peak": peak_resident_bytes()}


def measure(engine: str, fixed: Path, moving: Path, maps: list[Path], limit: str | None) -> dict:
    command = [sys.executable, __file__, "--child", engine, str(fixed), str(moving), json.dumps([str(m) for m in maps]),
               limit or ""]
    run = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if run.returncode != 0:
        killed = run.returncode < 0
        tail = (run.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"killed by signal {-run.returncode}" if killed else f"exit {run.returncode}: {tail}"}
    return json.loads(run.stdout.strip().splitlines()[-1])


def row_text(case: str, method: str, result: dict, reference: float | None, limit: str) -> str:
    if "error" in result:
        return f"| {case} | {method} | {limit} | | | {result['error']} |"
    gib = result["peak"] / 2 ** 30
    ratio = f"{result['peak'] / reference:.2f}" if reference else ""
    return f"| {case} | {method} | {limit} | {gib:.2f} | {ratio} | {result['seconds']:.0f} |"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        engine, fixed, moving, maps, limit = sys.argv[2:7]
        print(json.dumps(child(engine, fixed, moving, json.loads(maps), limit or None)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="per level, MI and IMPACT Static")
    parser.add_argument("--jacobian-iterations", type=int, default=3, help="per level, IMPACT Jacobian")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--memory-limit", default="4G")
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    args = parser.parse_args()
    from impactreg.image import write_image

    lines = ["| case | method | --memory-limit | peak RSS (GiB) | peak / elastix | wall time (s) |",
             "|---|---|---:|---:|---:|---:|"]
    loads = [os.getloadavg()[0]]
    for key in args.cases:
        name, build = CASES[key]
        work = workdir()
        fixed, moving = build()
        fixed_path, moving_path = write_image(fixed, work / "fixed.mha"), write_image(moving, work / "moving.mha")
        del fixed, moving
        (work / "mi").mkdir()
        mi = write_maps(mi_maps(args.iterations), work / "mi")
        affine = mi_maps(args.iterations)[0]
        configs = impact_configs(args.iterations, args.samples)
        jacobian = dict(configs["mind-jacobian"], MaximumNumberOfIterations=args.jacobian_iterations)
        runs = [("elastix (itk-elastix), Mattes MI", "elastix", mi, None),
                ("impactreg, Mattes MI", "impactreg", mi, None)]
        for label, stage in (("impactreg, IMPACT MIND Static", configs["mind-static"]),
                             ("impactreg, IMPACT MIND Jacobian", jacobian)):
            folder = work / label.split()[-1].lower()
            folder.mkdir()
            runs.append((label, "impactreg", write_maps([affine, stage], folder), args.memory_limit))
        reference = None
        for label, engine, maps, limit in runs:
            result = measure(engine, fixed_path, moving_path, maps, limit)
            loads.append(os.getloadavg()[0])
            if engine == "elastix" and "error" not in result:
                reference = result["peak"]
            lines.append(row_text(name, label, result, reference, limit or "default"))
            print(lines[-1], file=sys.stderr)
    iterations = (f"{args.iterations} iterations per level (IMPACT Jacobian {args.jacobian_iterations}), "
                  f"{args.samples} samples, 4 levels")
    report = (f"# Memory benchmark\n\nPeak resident set size (VmHWM) of one registration per process: affine + B-spline "
              f"(IMPACT: affine Mattes MI then the IMPACT B-spline stage of benchmarks/common.py). Iterations cut to "
              f"{iterations}: peak memory, not time, is measured. The ratio is to elastix's peak on the same case. "
              f"--memory-limit bounds the whole process's peak resident set (targets: Mattes MI within 1.5x of "
              f"elastix; IMPACT within --memory-limit).\n\n"
              f"Machine: {machine()}; load average (1 min) during the run {min(loads):.1f} to {max(loads):.1f}\n\n"
              + "\n".join(lines) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
