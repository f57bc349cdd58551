"""Running impactreg and elastix (itk-elastix) side by side on a case, and scoring the results."""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import impactreg
from impactreg.evaluation import dice, hausdorff95, jacobian_statistics, mean_dice, target_registration_errors
from impactreg.image import Image, write_image
from impactreg.parameters import format_parameter_map
from impactreg.registration import register
from impactreg.transformix import map_points, resample
from impactreg.transforms import Transform, TranslationTransform
from impactreg.transforms.elastix_files import read_transform_file

RESULTS = Path(__file__).resolve().parent / "results"


def write_maps(maps: list[dict], folder: Path) -> list[Path]:
    paths = []
    for i, m in enumerate(maps):
        path = folder / f"map{i}.txt"
        path.write_text(format_parameter_map({k: v if isinstance(v, list) else [v] for k, v in m.items()}))
        paths.append(path)
    return paths


# scoring ----------------------------------------------------------------------------------------

def tre_scores(case, transform: Transform) -> dict:
    tre = target_registration_errors(transform, case.landmarks, map_points(case.truth, case.landmarks))
    return {"tre_points": tre.tolist(), "tre": float(tre.mean()), "tre90": float(np.percentile(tre, 90))}


def warped_labels_and_view(case, transform: Transform) -> tuple[np.ndarray, np.ndarray]:
    """The moving labels warped onto the fixed grid, and where the fixed grid maps inside the moving image."""
    moving = case.moving_labels
    stacked = Image(torch.cat([moving.data, torch.ones_like(moving.data)]), moving.grid)
    warped = resample(stacked, transform, case.fixed.grid, order=0).data.round().long().numpy()
    return warped[0], warped[1] > 0


def overlap_scores(case, transform: Transform) -> dict:
    """Dice and HD95 (mm) per label and their means; with ``case.dice_in_moving_view`` both label maps
    are first cut to the fixed voxels that map inside the moving image."""
    fixed = case.fixed_labels.data[0].round().long().numpy()
    warped, view = warped_labels_and_view(case, transform)
    if case.dice_in_moving_view:
        fixed, warped = fixed * view, warped * view
    labels = sorted(case.label_names) if case.label_names else sorted(set(np.unique(fixed).tolist()) - {0})
    grid = case.fixed.grid
    per_label = dice(Image(torch.from_numpy(fixed)[None].float(), grid), Image(torch.from_numpy(warped)[None].float(), grid),
                     labels)
    hd95 = {label: hausdorff95(fixed == label, warped == label, grid.spacing) for label in labels}
    present = [v for v in hd95.values() if not np.isnan(v)]
    return {"dice_labels": per_label, "dice": mean_dice(per_label), "hd95_labels": hd95,
            "hd95": float(np.mean(present)) if present else float("nan")}


def folding_scores(case, transform: Transform) -> dict:
    """Folding over the fixed grid; none for rigid cases (det J = 1 there by construction)."""
    if not case.deformable:
        return {}
    stats = jacobian_statistics(transform, case.fixed.grid)
    return {"folded_fraction": stats["folded_fraction"], "jacobian_min": stats["jacobian_min"]}


def score(case, transform: Transform) -> dict:
    """Every measure the case allows: TRE (per point, mean, 90th percentile) where the truth is
    known, Dice and HD95 where there are labels, and folding (det J <= 0) over the fixed grid
    for deformable cases."""
    result = {}
    if case.truth is not None:
        result.update(tre_scores(case, transform))
    if case.fixed_labels is not None:
        result.update(overlap_scores(case, transform))
    result.update(folding_scores(case, transform))
    return result


def agreement(case, transform: Transform, reference: Transform) -> list[float]:
    """|T(p) - T_reference(p)| in mm over the case's evaluation points."""
    points = case.evaluation_points
    return np.linalg.norm(map_points(transform, points) - map_points(reference, points), axis=1).tolist()


def baseline(case) -> dict:
    return score(case, TranslationTransform(case.fixed.dim))


# running ----------------------------------------------------------------------------------------

def impactreg_transform(case, map_paths, seed=0) -> tuple[Transform, float]:
    start = time.perf_counter()
    result = register(case.fixed, case.moving, [str(p) for p in map_paths], seed=seed)
    return result.transform, time.perf_counter() - start


def elastix_transform(case, map_paths, work: Path) -> tuple[Transform, float]:
    """elastix (itk-elastix) on the case's images; the final transform read back from its files."""
    import itk

    fixed = itk.imread(str(write_image(case.fixed, work / "fixed.mha")), itk.F)
    moving = itk.imread(str(write_image(case.moving, work / "moving.mha")), itk.F)
    params = itk.ParameterObject.New()
    for p in map_paths:
        params.AddParameterFile(str(p))
    out = work / "elastix"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    itk.elastix_registration_method(fixed, moving, parameter_object=params, log_to_console=False, output_directory=str(out))
    seconds = time.perf_counter() - start
    last = sorted(out.glob("TransformParameters.*.txt"), key=lambda p: int(p.name.split(".")[1]))[-1]
    return read_transform_file(last).transform, seconds


def run_impactreg(case, map_paths, seed=0, label="impactreg") -> dict:
    transform, seconds = impactreg_transform(case, map_paths, seed)
    return {"method": label, "seconds": seconds, **score(case, transform)}


def run_elastix(case, map_paths, work: Path, label="elastix (itk-elastix)") -> dict:
    transform, seconds = elastix_transform(case, map_paths, work)
    return {"method": label, "seconds": seconds, **score(case, transform)}


# reporting --------------------------------------------------------------------------------------

def machine() -> str:
    import itk

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
