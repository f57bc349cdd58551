"""Running impactreg and elastix (itk-elastix) side by side on a case, and reporting."""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import impactreg
from impactreg.evaluation import dice, mean_dice
from impactreg.image import write_image
from impactreg.parameters import format_parameter_map
from impactreg.registration import register
from impactreg.synthetic import target_registration_error
from impactreg.transformix import resample
from impactreg.transforms import TranslationTransform
from impactreg.transforms.elastix_files import read_transform_file

RESULTS = Path(__file__).resolve().parent / "results"


def write_maps(maps: list[dict], folder: Path) -> list[Path]:
    paths = []
    for i, m in enumerate(maps):
        path = folder / f"map{i}.txt"
        path.write_text(format_parameter_map({k: v if isinstance(v, list) else [v] for k, v in m.items()}))
        paths.append(path)
    return paths


def score(case, transform) -> dict:
    tre = target_registration_error(transform, case.truth, case.landmarks)
    warped = resample(case.moving_labels, transform, case.fixed.grid, order=0)
    return {"tre": float(tre.mean()), "tre90": float(np.percentile(tre, 90)), "dice": mean_dice(dice(case.fixed_labels, warped))}


def baseline(case) -> dict:
    return score(case, TranslationTransform(case.fixed.dim))


def run_impactreg(case, map_paths, seed=0, label="impactreg") -> dict:
    start = time.perf_counter()
    result = register(case.fixed, case.moving, [str(p) for p in map_paths], seed=seed)
    seconds = time.perf_counter() - start
    return {"method": label, "seconds": seconds, **score(case, result.transform)}


def run_elastix(case, map_paths, work: Path, label="elastix (itk-elastix)") -> dict:
    import itk

    fixed_path = write_image(case.fixed, work / "fixed.mha")
    moving_path = write_image(case.moving, work / "moving.mha")
    fixed = itk.imread(str(fixed_path), itk.F)
    moving = itk.imread(str(moving_path), itk.F)
    params = itk.ParameterObject.New()
    for p in map_paths:
        params.AddParameterFile(str(p))
    out = work / "elastix"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False, output_directory=str(out))
    seconds = time.perf_counter() - start
    last = sorted(out.glob("TransformParameters.*.txt"), key=lambda p: int(p.name.split(".")[1]))[-1]
    return {"method": label, "seconds": seconds, **score(case, read_transform_file(last).transform)}


def machine() -> str:
    import itk
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), impactreg {impactreg.__version__}, itk-elastix {itk.Version.GetITKVersion()}")


def table(rows: list[dict], reference: str) -> str:
    ref = {r["case"]: r["seconds"] for r in rows if r["method"] == reference}
    lines = ["| case | method | wall time (s) | time / elastix | mean TRE (mm) | TRE 90% (mm) | mean Dice |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['seconds'] / ref[r['case']]:.2f}" if r.get("seconds") and r["case"] in ref else ""
        secs = f"{r['seconds']:.1f}" if r.get("seconds") else ""
        lines.append(f"| {r['case']} | {r['method']} | {secs} | {ratio} | {r['tre']:.2f} | {r['tre90']:.2f} | {r['dice']:.3f} |")
    return "\n".join(lines)


def workdir() -> Path:
    """A scratch folder for one case, removed when the benchmark process exits."""
    path = Path(tempfile.mkdtemp(prefix="impactreg-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path
