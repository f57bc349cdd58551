"""IMPACT Jacobian mode against the machine's compute limit: per configuration, the seconds per
iteration of a B-spline level, the multiply-adds the model passes do per iteration (the forward convolutions of the fixed and the
moving patches counted with torch's flop formulas on real iterations, plus the moving patches' backward
to their input, which costs one forward: the counter cannot follow autograd.grad),
the achieved GMAC/s and its fraction of the machine's peak (a float32 matrix product on the same
threads, the best case for these cores' FMA units).

    python benchmarks/jacobian_rate.py [--iterations 20] [--samples 2000] [--threads 2] [--configs ...]

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
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from cases import CASES  # noqa: E402
from common import DATA, RESULTS, impact_spline_stage, load_note, machine, publish  # noqa: E402
from impactreg import register  # noqa: E402

CONFIGS = {  # name: (model, patch, normalisation, layers)
    "mind-jacobian": ("MIND/R1D2", 7, "none", "1"),
    "m730-layer1-jacobian": (str(DATA / "models" / "M730_1_Layers.pt"), 5, "zscore", "1"),
}


class ConvolutionCounter(TorchDispatchMode):
    """Floating-point operations of the forward convolutions that run while active (torch's FlopCounterMode
    tracks modules with hooks that autograd.grad refuses)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket is torch.ops.aten.convolution:
            self.flops += flop_registry[torch.ops.aten.convolution](*args, **kwargs, out_val=out)
        return out


def peak_gmacs(threads: int, n: int = 3072, repeats: int = 5) -> float:
    """The best multiply-add rate of an n x n float32 matrix product on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return n ** 3 / best / 1e9


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def one_level(case, config: str, iterations: int, samples: int) -> dict:
    model, patch, normalisation, layers = CONFIGS[config]
    spline = impact_spline_stage(iterations, samples, model, "Jacobian", patch, normalisation, layers=layers)
    spline.update(NumberOfResolutions=1, ImpactVoxelSize0=spline["ImpactVoxelSize3"], ImpactGPU=-1)
    return spline


def measure(case, config: str, iterations: int, samples: int, threads: int) -> dict:
    """Seconds per iteration (median over the level's iterations after the first) and model
    multiply-adds per iteration (counted on a separate, short run: the counter slows every op)."""
    spline = one_level(case, config, iterations, samples)
    stamps: list[float] = []
    register(case.fixed, case.moving, [spline], threads=threads, callbacks=[lambda info: stamps.append(time.perf_counter())])
    per_iteration = float(np.median(np.diff(stamps)[1:]))
    counter = ConvolutionCounter()

    def count_iterations_1_to_3(info):  # called after each iteration: counts exactly iterations 1, 2 and 3
        if info.iteration == 0:
            counter.__enter__()
        elif info.iteration == 3:
            counter.__exit__(None, None, None)

    register(case.fixed, case.moving, [dict(spline, MaximumNumberOfIterations=5)], threads=threads,
             callbacks=[count_iterations_1_to_3])
    forward = counter.flops / 2 / 3  # fixed and moving patches, per iteration
    macs = forward * 3 / 2  # + the moving patches' backward to their input, which costs what their forward does
    return {"config": config, "seconds": per_iteration, "gmac": macs / 1e9, "gmacs": macs / per_iteration / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--case", default="lung", choices=list(CASES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "jacobian-rate.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    peak = peak_gmacs(args.threads)
    case = CASES[args.case]()
    rows = [measure(case, name, args.iterations, args.samples, args.threads) for name in args.configs]
    load_after = os.getloadavg()[0]
    lines = [f"# IMPACT Jacobian mode against the compute limit ({case.name}, {args.samples} samples, "
             f"{args.threads} thread(s))", "",
             f"Command: `python benchmarks/jacobian_rate.py --iterations {args.iterations} --samples {args.samples} "
             f"--threads {args.threads}`  ",
             f"Machine: {machine()}; {load_note(load_before, load_after)}  ",
             f"Peak: float32 matrix product 3072^3 on {args.threads} thread(s): {peak:.1f} GMAC/s", "",
             "| configuration | s / iteration | model GMAC / iteration | achieved GMAC/s | fraction of peak |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["gmac"] == 0:  # MIND: shifted differences and box sums, no convolution to count
            lines.append(f"| {r['config']} | {r['seconds']:.3f} | n/a (no convolutions) | n/a | n/a |")
            continue
        lines.append(f"| {r['config']} | {r['seconds']:.3f} | {r['gmac']:.2f} | {r['gmacs']:.1f} | "
                     f"{r['gmacs'] / peak:.0%} |")
    publish(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
