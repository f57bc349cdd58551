"""The IMPACT paper's Table VII on whatever device is here: the B-spline stage (4 levels x 500 iterations
x 2000 samples, after an affine Mattes MI stage that is not timed) on the lung CT -> CBCT-like case with
MSE, NCC, NMI, MIND Static and Jacobian, and M730 layer 1 / layer 2 Static and Jacobian, printed beside
the paper's RTX 3080 times. On CUDA, models run with float16 autocast (ImpactUseMixedPrecision) and the
engine on the GPU. M730 layer 2 needs TS/M730_2_Layers.pt in the model cache ($IMPACTREG_MODELS); its rows
say so when it cannot be had (no cache and no network). `--quick` (5 iterations x 500 samples per level) checks the script on a CPU.

    python benchmarks/gpu.py [--quick] [--device cuda:0] [--configs mse ncc ...] [--out benchmarks/results/gpu.md]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from cases import DATA, lung_ct_cbct  # noqa: E402
from common import RESULTS, VOXELS, machine, mi_maps, score, warm_up, workdir, write_maps  # noqa: E402
from impactreg import register  # noqa: E402
from impactreg.errors import ModelError  # noqa: E402
from impactreg.features import resolve_model_path  # noqa: E402

# (metric, IMPACT model, layers mask, mode, patch, normalisation) and the paper's RTX 3080 seconds
CONFIGS = {
    "mse": ("AdvancedMeanSquares", None, None, None, 0, None, 15.1),
    "ncc": ("AdvancedNormalizedCorrelation", None, None, None, 0, None, 16.5),
    "nmi": ("NormalizedMutualInformation", None, None, None, 0, None, 114.6),
    "mind-static": ("Impact", "MIND/R1D2", "1", "Static", 0, "none", 105.0),
    "mind-jacobian": ("Impact", "MIND/R1D2", "1", "Jacobian", 7, "none", 231.0),
    "m730-l1-static": ("Impact", "M730_1", "1", "Static", 0, "zscore", 160.8),
    "m730-l1-jacobian": ("Impact", "M730_1", "1", "Jacobian", 5, "zscore", 131.6),
    "m730-l2-static": ("Impact", "TS/M730_2_Layers.pt", "01", "Static", 0, "zscore", 170.6),
    "m730-l2-jacobian": ("Impact", "TS/M730_2_Layers.pt", "01", "Jacobian", 5, "zscore", 586.7),
}


def model_path(name: str) -> str:
    """A local model file for the configuration; raises ModelError when it cannot be had offline."""
    if name == "M730_1":
        return str(DATA / "models" / "M730_1_Layers.pt")
    if name.startswith("MIND/"):
        return name
    return str(resolve_model_path(name))  # the cache, else the hub (a ModelError offline)


def stage_map(key: str, iterations: int, samples: int, cuda: bool) -> dict:
    metric, model, mask, mode, patch, normalization, _ = CONFIGS[key]
    stage = dict(mi_maps(iterations)[1], Metric=metric, NumberOfSpatialSamples=samples)
    if metric != "Impact":
        return stage
    stage.update({"ImpactModelsPath0": model_path(model), "ImpactLayersMask0": mask, "ImpactMode": mode,
                  "ImpactPatchSize0": [patch] * 3, "ImpactSubsetFeatures0": 32, "ImpactDistance0": "L2",
                  "ImpactNormalization0": normalization, "BSplineInterpolationOrder": 3,
                  "NumberOfSamplesForExactGradient": samples})
    if cuda:
        stage.update({"ImpactGPU": 0, "ImpactUseMixedPrecision": "true"})
    for level, voxel in enumerate(VOXELS):
        stage[f"ImpactVoxelSize{level}"] = voxel.split()
    return stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 iterations x 500 samples per level (a CPU check)")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.md")
    args = parser.parse_args()
    iterations, samples = (5, 500) if args.quick else (500, 2000)
    cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if cuda else "CPU"
    warm_up(["impactreg"])
    case = lung_ct_cbct()
    work = workdir()
    affine = dict(mi_maps(300 if not args.quick else 5)[0], NumberOfSpatialSamples=samples)
    rows = []
    for key in args.configs:
        try:
            stage = stage_map(key, iterations, samples, cuda)
        except ModelError as exc:
            rows.append((key, None, None, None, CONFIGS[key][-1], str(exc)))
            continue
        folder = work / key
        folder.mkdir()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = register(case.fixed, case.moving, [str(p) for p in write_maps([affine, stage], folder)],
                          device=args.device, seed=1)
        total = time.perf_counter() - start
        stage_seconds = result.stages[-1].seconds
        rows.append((key, stage_seconds, total, score(case, result.transform)["tre"], CONFIGS[key][-1], ""))
        print(f"{key}: B-spline stage {stage_seconds:.1f} s", file=sys.stderr)
    lines = [f"# IMPACT paper Table VII layout on {device_name}", "",
             f"Command: `python benchmarks/gpu.py{' --quick' if args.quick else ''} --device {args.device}`  ",
             f"Date: {time.strftime('%Y-%m-%dT%H:%M:%S')}; machine: {machine()}  ",
             f"Case: {case.name}; B-spline stage: 4 levels x {iterations} iterations x {samples} samples, final grid "
             f"16 mm{'; mixed precision (float16 autocast) for the models' if cuda else ''}.", "",
             "| configuration | B-spline stage (s) | whole registration (s) | mean TRE (mm) | paper, RTX 3080 (s) | "
             "stage / paper | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for key, stage_s, total, tre, paper, note in rows:
        if stage_s is None:
            lines.append(f"| {key} |  |  |  | {paper:.1f} |  | skipped: {note} |")
        else:
            lines.append(f"| {key} | {stage_s:.1f} | {total:.1f} | {tre:.2f} | {paper:.1f} | {stage_s / paper:.2f} | |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
