"""Load benchmark: one registration (the engine benchmark's lung case: affine + B-spline Mattes MI,
4 levels, 2000 samples) alone, beside one and two CPU-bound processes, and two copies side by
side, for impactreg and elastix (itk-elastix), each run in its own process. Prints the slow-downs
against the same engine alone and writes benchmarks/results/load.md.

    python benchmarks/load.py [--iterations N] [--wait-policy passive active]

``--wait-policy active`` also runs impactreg with OpenMP threads that busy-wait (libgomp's default,
impactreg's behaviour before it set OMP_WAIT_POLICY=PASSIVE), to show what the policy changes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, mi_maps, write_maps, workdir  # noqa: E402

BUSY = "while True: pass"


def run_once(engine: str, work: Path) -> float:
    """One timed registration in this process (after an untimed warm-up for impactreg's kernels)."""
    maps = sorted(str(p) for p in work.glob("map*.txt"))
    if engine == "elastix":
        import itk

        fixed, moving = itk.imread(str(work / "fixed.mha"), itk.F), itk.imread(str(work / "moving.mha"), itk.F)
        params = itk.ParameterObject.New()
        for p in maps:
            params.AddParameterFile(p)
        out = work / f"elastix-{os.getpid()}"
        out.mkdir()
        start = time.perf_counter()
        itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False,
                                        output_directory=str(out))
        return time.perf_counter() - start
    import impactreg

    impactreg.register(work / "fixed.mha", work / "moving.mha", [work / "warmup.txt"])
    start = time.perf_counter()
    impactreg.register(work / "fixed.mha", work / "moving.mha", maps, seed=0)
    return time.perf_counter() - start


def _worker(engine: str, work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", engine, "--work", str(work)], env=env,
                            stdout=subprocess.PIPE, text=True)


def timed(engine: str, work: Path, env: dict, busy: int = 0, copies: int = 1) -> float:
    """Mean wall seconds of ``copies`` simultaneous registrations beside ``busy`` spinning processes."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        workers = [_worker(engine, work, env) for _ in range(copies)]
        seconds = [float(w.communicate()[0].strip().splitlines()[-1]) for w in workers]
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    return sum(seconds) / len(seconds)


def prepare(iterations: int) -> Path:
    from cases import CASES
    from impactreg.image import write_image

    work = workdir()
    case = CASES["lung"]()
    write_image(case.fixed, work / "fixed.mha")
    write_image(case.moving, work / "moving.mha")
    write_maps(mi_maps(iterations), work)
    (work / "warmup.txt").write_text('(Transform "TranslationTransform")\n(Metric "AdvancedMattesMutualInformation")\n'
                                     '(NumberOfResolutions 1)\n(MaximumNumberOfIterations 5)\n'
                                     '(NumberOfSpatialSamples 500)\n(WriteResultImage "false")\n')
    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--wait-policy", nargs="+", default=["passive"], choices=("passive", "active"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(f"{run_once(args.worker, Path(args.work)):.3f}")
        return 0
    work = prepare(args.iterations)
    load = os.getloadavg()[0]
    runs = [("elastix (itk-elastix)", "elastix", {})]
    runs += [(f"impactreg (OpenMP {p} wait)", "impactreg", {"OMP_WAIT_POLICY": p.upper()}) for p in args.wait_policy]
    lines = ["| engine | alone (s) | + 1 busy process | + 2 busy processes | 2 side by side |",
             "|---|---:|---:|---:|---:|"]
    for label, engine, extra in runs:
        env = dict(os.environ, **extra)
        alone = timed(engine, work, env)
        cells = [f"{alone:.1f}"]
        for busy, copies in ((1, 1), (2, 1), (0, 2)):
            t = timed(engine, work, env, busy, copies)
            cells.append(f"{t:.1f} ({t / alone:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr)
    report = (f"# Load benchmark\n\nThe engine benchmark's lung case (affine + B-spline Mattes MI, 4 levels, 2000 samples, "
              f"{args.iterations} iterations per level), each registration in its own process with the default threads "
              f"(impactreg: torch's, 2 on this machine; elastix: ITK's), alone, beside CPU-bound processes "
              f"(`{BUSY}`), and two copies at once (mean of the two). Slow-down against the same engine alone in "
              f"brackets. Load average before the run: {load:.2f} ({'quiet' if load < 0.5 else 'NOT quiet'}), "
              f"{os.cpu_count()} cores.\n\n" + "\n".join(lines) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
