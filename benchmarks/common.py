"""What the benchmarks share: the parameter maps (Mattes MI stages, IMPACT configurations), running
impactreg and elastix (itk-elastix) side by side on a case, the warm-up, scoring and reporting.

The scripts (engine_benchmark.py, impact_benchmark.py, suite.py) import this module and cases.py,
never each other.
"""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import impactreg  # first: it sets the OpenMP wait policy users get, before torch loads
import numpy as np
import torch

from impactreg.compute.process import peak_resident_bytes  # noqa: F401  (re-exported for the scripts)
from impactreg.evaluation import dice, hausdorff95, jacobian_statistics, mean_dice, target_registration_errors
from impactreg.image import Image, write_image
from impactreg.parameters import format_parameter_map
from impactreg import register
from impactreg.warp import map_points, resample
from impactreg.transforms import Transform, TranslationTransform
from impactreg.transforms.elastix_files import read_transform_file

from cases import DATA, Case

RESULTS = Path(__file__).resolve().parent / "results"


# parameter maps ---------------------------------------------------------------------------------

def mi_maps(iterations: int) -> list[dict]:
    """The engine benchmark's maps: affine then B-spline, Mattes MI, 4 levels, 2000 random-coordinate samples."""
    common = {
        "Registration": "MultiResolutionRegistration", "Metric": "AdvancedMattesMutualInformation",
        "NumberOfHistogramBins": 32, "Optimizer": "AdaptiveStochasticGradientDescent",
        "AutomaticParameterEstimation": "true", "NumberOfResolutions": 4, "MaximumNumberOfIterations": iterations,
        "ImageSampler": "RandomCoordinate", "NumberOfSpatialSamples": 2000, "NewSamplesEveryIteration": "true",
        "Interpolator": "BSplineInterpolator", "BSplineInterpolationOrder": 1,
        "FixedImagePyramid": "FixedSmoothingImagePyramid", "MovingImagePyramid": "MovingSmoothingImagePyramid",
        "ResampleInterpolator": "FinalBSplineInterpolator", "FinalBSplineInterpolationOrder": 3,
        "WriteResultImage": "false", "RandomSeed": 1234,
    }
    affine = dict(common, Transform="AffineTransform", AutomaticTransformInitialization="true",
                  AutomaticScalesEstimation="true")
    spline = dict(common, Transform="BSplineTransform", FinalGridSpacingInPhysicalUnits=16)
    return [affine, spline]


VOXELS = ["6 6 6", "4 4 4", "3 3 3", "2 2 2"]  # IMPACT voxel sizes (mm) per resolution level


BENDING_ENERGY_WEIGHT = 50.0  # the IMPACT presets' weight of TransformBendingEnergyPenalty


def impact_spline_stage(iterations: int, samples: int, model: str, mode: str, patch: int, normalization: str,
                        order: int = 3, bending_energy: float = 0.0, layers: str = "1", voxels: list[str] = VOXELS) -> dict:
    """The B-spline stage of ``mi_maps`` with IMPACT; ``order`` interpolates the Jacobian patches or
    Static feature maps; ``bending_energy`` > 0 adds TransformBendingEnergyPenalty with that weight."""
    spline = dict(mi_maps(iterations)[1], Metric="Impact", NumberOfSpatialSamples=samples,
                  BSplineInterpolationOrder=order, NumberOfSamplesForExactGradient=samples)
    spline.update({"ImpactModelsPath0": model, "ImpactPatchSize0": [patch] * 3, "ImpactLayersMask0": layers,
                   "ImpactSubsetFeatures0": 32, "ImpactDistance0": "L2", "ImpactMode": mode,
                   "ImpactNormalization0": normalization})
    if mode == "Static":
        spline["ImpactFeatureMapInterpolationOrder"] = order
    if bending_energy > 0:
        spline.update(Registration="MultiMetricMultiResolutionRegistration",
                      Metric=["Impact", "TransformBendingEnergyPenalty"], Metric0Weight=1.0,
                      Metric1Weight=bending_energy)
    for level, voxel in enumerate(voxels):
        spline[f"ImpactVoxelSize{level}"] = voxel.split()
    return spline


def impact_configs(iterations: int, samples: int) -> dict[str, dict]:
    """The IMPACT configurations of the IMPACT benchmark and the suite, by name. Static mode, which only
    moves where features are looked up, drifts without a regulariser: its configurations carry the
    presets' bending-energy penalty and cubic feature maps."""
    m730 = str(DATA / "models" / "M730_1_Layers.pt")
    return {
        "mind-static": impact_spline_stage(iterations, samples, "MIND/R1D2", "Static", 0, "none",
                                           bending_energy=BENDING_ENERGY_WEIGHT),
        "mind-jacobian": impact_spline_stage(iterations, samples, "MIND/R1D2", "Jacobian", 7, "none"),
        "m730-jacobian": impact_spline_stage(iterations, samples, m730, "Jacobian", 5, "zscore"),
        "m730-static": impact_spline_stage(iterations, samples, m730, "Static", 0, "zscore",
                                           bending_energy=BENDING_ENERGY_WEIGHT),
        # deepbet's LinkNet3d (brain T1; impactreg[deepbet]), read from the installed wheel, normalised inside the
        # model: layer 2 (16 channels at stride 4, receptive field 43 voxels) at finer voxel sizes than MIND's (the
        # network was trained at ~0.7 mm; of layers 2, 9 and 11 tried on MNI T1 -> warped T1 the best)
        "deepbet-static": impact_spline_stage(iterations, samples, "deepbet/LinkNet3d", "Static", 0, "none", order=1,
                                              layers="01", voxels=["2 2 2", "1.5 1.5 1.5", "1 1 1", "1 1 1"],
                                              bending_energy=BENDING_ENERGY_WEIGHT),
    }


@dataclass(frozen=True)
class Settings:
    iterations: int  # per level, MI stages and IMPACT Static
    jacobian_iterations: int  # per level, IMPACT Jacobian
    samples: int  # per iteration, every stage


DEFAULT = Settings(iterations=250, jacobian_iterations=10, samples=2000)
QUICK = Settings(iterations=5, jacobian_iterations=2, samples=500)


def mi_stages(case, settings: Settings) -> list[dict]:
    """The case's registration with Mattes MI: the engine benchmark's linear stage with the case's
    transform, then its B-spline stage when the case is deformable."""
    linear, spline = mi_maps(settings.iterations)
    linear = dict(linear, Transform=case.linear, NumberOfSpatialSamples=settings.samples, **case.map_overrides)
    spline = dict(spline, NumberOfSpatialSamples=settings.samples, **case.map_overrides)
    return [linear, spline] if case.deformable else [linear]


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


def engine_transform(engine: str, case, map_paths, work: Path) -> tuple[Transform, float]:
    """(transform, seconds) of ``engine`` ("elastix" or "impactreg") on the case."""
    if engine == "elastix":
        return elastix_transform(case, map_paths, work)
    return impactreg_transform(case, map_paths)


def warm_up(engines) -> None:
    """Tiny untimed registrations (2D and 3D, float32 like the cases) per engine ("elastix",
    "impactreg"), scored like a case, so that one-time costs (loading libraries, compiling kernels)
    fall on no case. A failure here is ignored: the real runs report it."""
    engines = list(dict.fromkeys(engines))
    for dim, size in ((2, 48), (3, 24)):
        axes = np.meshgrid(*[np.linspace(-1.0, 1.0, size)] * dim, indexing="ij")
        blob = (100.0 * np.exp(-4.0 * sum((a - 0.1 * i) ** 2 for i, a in enumerate(axes)))).astype(np.float32)
        case = Case("warm-up", Image.from_array(blob), Image.from_array(np.roll(blob, 2, axis=-1)))
        for engine in engines:
            folder = workdir() / engine
            folder.mkdir()
            paths = write_maps(mi_stages(case, QUICK), folder)
            try:
                score(case, engine_transform(engine, case, paths, folder)[0])
            except Exception:  # as in the suite, a failed registration must not stop the run
                pass


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


# memory -----------------------------------------------------------------------------------------


def load_note(before: float, after: float) -> str:
    """The load average around a timed run, and whether the machine counted as quiet."""
    return f"load average before/after {before:.2f} / {after:.2f} ({'quiet' if before < 0.5 else 'NOT quiet: rerun'})"


def publish(lines: list[str], out: Path) -> None:
    """Print a benchmark's report and write it to ``out``."""
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
