"""Benchmark suite: the cases of ../shared/data registered by elastix (Mattes MI, through itk-elastix),
impactreg with Mattes MI and impactreg with IMPACT, in one command. Writes a markdown table, the raw
numbers (JSON) and box plots to benchmarks/results/.

    python benchmarks/suite.py [--quick] [--cases brainweb lung mni abdomen brain]
                               [--methods elastix-mi impactreg-mi mind-static mind-jacobian m730-jacobian]
                               [--iterations N] [--jacobian-iterations J] [--samples S] [--name NAME]

Every case runs a linear Mattes MI stage (geometric-centre initialisation), then for deformable
cases a B-spline stage: the maps of engine_benchmark.py (common.mi_maps), the same in elastix and
impactreg. IMPACT methods (the configurations of impact_benchmark.py, common.impact_configs) replace
MI in the B-spline stage; in rigid cases they refine the MI rigid result with a second rigid stage
driven by IMPACT.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import DATA, DEFAULT_SUITE, SUITE_CASES  # noqa: E402
from common import (BENDING_ENERGY_WEIGHT, DEFAULT, QUICK, RESULTS, VOXELS, Settings, agreement, engine_transform,  # noqa: E402
                    impact_configs, machine, mi_maps, mi_stages, score, warm_up, workdir, write_maps)

from impactreg.presets import preset_maps  # noqa: E402
from impactreg.transforms import TranslationTransform  # noqa: E402


@dataclass(frozen=True)
class Method:
    label: str
    engine: str  # "elastix" or "impactreg"
    impact: str | None = None  # a configuration of common.impact_configs()
    dimensions: tuple[int, ...] = (2, 3)
    dense: str | None = None  # a dense preset whose dense stage replaces the B-spline stage
    initialisation: str | None = None  # AutomaticTransformInitializationMethod of the first stage (default: the maps')
    preset: str | None = None  # run impactreg's shipped preset (its own iterations) instead of the suite's maps

    @property
    def jacobian(self) -> bool:
        return self.impact is not None and self.impact.endswith("jacobian")


METHODS = {
    "elastix-mi": Method("elastix Mattes MI", "elastix"),
    "impactreg-mi": Method("impactreg Mattes MI", "impactreg"),
    "mind-static": Method("impactreg IMPACT MIND Static", "impactreg", "mind-static"),
    "mind-jacobian": Method("impactreg IMPACT MIND Jacobian", "impactreg", "mind-jacobian"),
    "m730-jacobian": Method("impactreg IMPACT M730 layer 1 Jacobian", "impactreg", "m730-jacobian", (3,)),  # a 3D model
    "m730-static": Method("impactreg IMPACT M730 layer 1 Static", "impactreg", "m730-static", (3,)),
    "dense-mind": Method("impactreg dense MIND (ConvexAdam)", "impactreg", dimensions=(3,), dense="dense-mind"),
    "dense-mr-ct": Method("impactreg dense MR/CT (ConvexAdam)", "impactreg", dimensions=(3,), dense="dense-mr-ct"),
    "impactreg-mi-search": Method("impactreg Mattes MI, Search initialisation", "impactreg", initialisation="Search"),
    "mind-static-search": Method("impactreg IMPACT MIND Static, Search initialisation", "impactreg", "mind-static",
                                 initialisation="Search"),
    "preset-bspline-mi": Method("impactreg preset bspline-mi", "impactreg", preset="bspline-mi"),
    "preset-bspline-mi-search": Method("impactreg preset bspline-mi, Search initialisation", "impactreg",
                                       preset="bspline-mi", initialisation="Search"),
    "preset-impact-mr-ct": Method("impactreg preset impact-mr-ct", "impactreg", preset="impact-mr-ct"),
    "preset-impact-mr-ct-centre": Method("impactreg preset impact-mr-ct, centres aligned", "impactreg",
                                         preset="impact-mr-ct", initialisation="GeometricalCenter"),
    "deepbet-static": Method("impactreg IMPACT deepbet LinkNet3d layer 2 Static", "impactreg", "deepbet-static", (3,)),
}
DEFAULT_METHODS = ["elastix-mi", "impactreg-mi", "mind-static", "mind-jacobian", "m730-jacobian"]
REFERENCE = "elastix-mi"
BASELINE = "no registration"


# parameter maps -----------------------------------------------------------------------------------

def for_dimension(stage: dict, dim: int) -> dict:
    """IMPACT patch and voxel sizes cut to the image dimension (the configurations are written for 3D)."""
    sizes = {k: v[:dim] for k, v in stage.items() if k.startswith(("ImpactPatchSize", "ImpactVoxelSize"))}
    return dict(stage, **sizes)


def impact_stage(final_mi_stage: dict, config: str, iterations: int, samples: int, dim: int) -> dict:
    """``final_mi_stage`` driven by an IMPACT configuration: what that configuration changes in the
    IMPACT benchmark's MI B-spline stage, applied to this stage."""
    mi_spline = mi_maps(iterations)[1]
    impact = impact_configs(iterations, samples)[config]
    stage = dict(final_mi_stage)
    stage.update({k: v for k, v in impact.items() if mi_spline.get(k) != v})
    stage.update(MaximumNumberOfIterations=iterations, AutomaticTransformInitialization="false")
    return for_dimension(stage, dim)


def method_stages(case, method: Method, settings: Settings) -> list[dict]:
    if method.preset is not None:
        stages = [dict(pm.as_dict(), **case.map_overrides) for pm in preset_maps(method.preset)]
    else:
        stages = mi_stages(case, settings)
    if method.dense is not None:  # the MI linear stage, then the preset's dense stage
        stages = stages[:-1] + [dict(preset_maps(method.dense)[-1].raw, **case.map_overrides)]
    if method.initialisation is not None:
        stages[0] = dict(stages[0], AutomaticTransformInitializationMethod=method.initialisation)
    if method.impact is None:
        return stages
    iterations = settings.jacobian_iterations if method.jacobian else settings.iterations
    final = impact_stage(stages[-1], method.impact, iterations, settings.samples, case.fixed.dim)
    return stages[:-1] + [final] if case.deformable else stages + [final]


# running -------------------------------------------------------------------------------------------

def run_method(case, key: str, settings: Settings, work: Path):
    """(row, transform) for one method on one case; a failure is a row, not an exception."""
    method = METHODS[key]
    row = {"case": case.name, "method": method.label, "key": key,
           "iterations": settings.jacobian_iterations if method.jacobian else settings.iterations}
    if case.fixed.dim not in method.dimensions or method.dense and not case.deformable:
        return dict(row, status="n/a"), None
    folder = work / key
    folder.mkdir()
    paths = write_maps(method_stages(case, method, settings), folder)
    try:
        transform, seconds = engine_transform(method.engine, case, paths, folder)
        return dict(row, status="ok", seconds=seconds, **score(case, transform)), transform
    except Exception as exc:  # one failed registration must not stop the suite
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return dict(row, status=f"failed: {reason}"), None


def run_case(key: str, methods: list[str], settings: Settings) -> tuple[list[dict], float]:
    start = time.perf_counter()
    case = SUITE_CASES[key]()
    built = time.perf_counter() - start
    print(f"[{key}] built {case.name} in {built:.1f} s", file=sys.stderr)
    identity = TranslationTransform(case.fixed.dim)
    rows = [{"case": case.name, "method": BASELINE, "key": "none", "status": "ok", **score(case, identity)}]
    transforms = [identity]
    work = workdir()
    for method in methods:
        row, transform = run_method(case, method, settings, work)
        rows.append(row)
        transforms.append(transform)
        print(f"[{key}] {row['method']}: {row['status']} {row.get('seconds', 0):.1f} s", file=sys.stderr)
    reference = dict(zip(methods, transforms[1:])).get(REFERENCE)
    if reference is not None and case.evaluation_points is not None:
        for row, transform in zip(rows, transforms):
            if transform is not None and row["key"] != REFERENCE:
                row["agreement_points"] = agreement(case, transform, reference)
                row["agreement"] = float(sum(row["agreement_points"]) / len(row["agreement_points"]))
    return rows, built


# reporting -----------------------------------------------------------------------------------------

def number(row: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    """A table cell: the value, 'n/a' or 'failed' for rows without results, blank when the case has no such measure."""
    if row["status"] != "ok":
        return "n/a" if row["status"] == "n/a" else "failed"
    value = row.get(key)
    if value is None:
        return ""
    return "–" if math.isnan(value) else format(value * scale, fmt)


def markdown_table(rows: list[dict]) -> str:
    reference = {r["case"]: r["seconds"] for r in rows if r["key"] == REFERENCE and r["status"] == "ok"}
    lines = ["| case | method | iterations / level | mean TRE (mm) | TRE 90% (mm) | mean Dice | mean HD95 (mm) | "
             "folded (%) | mean distance to elastix (mm) | wall time (s) | time / elastix |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        seconds = number(r, "seconds", ".1f")
        ratio = ""
        if r.get("seconds") and r["case"] in reference:
            ratio = f"{r['seconds'] / reference[r['case']]:.2f}"
        elif r["status"] != "ok":
            ratio = seconds
        agree = "reference" if r["key"] == REFERENCE and r["status"] == "ok" else number(r, "agreement", ".2f")
        lines.append(f"| {r['case']} | {r['method']} | {r.get('iterations', '')} | {number(r, 'tre', '.2f')} | {number(r, 'tre90', '.2f')} | "
                     f"{number(r, 'dice', '.3f')} | {number(r, 'hd95', '.2f')} | {number(r, 'folded_fraction', '.3f', 100)} | "
                     f"{agree} | {seconds} | {ratio} |")
    return "\n".join(lines)


def failures(rows: list[dict]) -> str:
    failed = [f"- {r['case']}, {r['method']}: {r['status'][len('failed: '):]}" for r in rows if r["status"].startswith("failed")]
    return ("\nFailed runs:\n\n" + "\n".join(failed) + "\n") if failed else ""


SHORT = {"elastix-mi": "elastix\nMI", "impactreg-mi": "impactreg\nMI", "mind-static": "MIND\nStatic",
         "mind-jacobian": "MIND\nJacobian", "m730-jacobian": "M730\nJacobian", "m730-static": "M730\nStatic",
         "deepbet-static": "deepbet\nStatic", "impactreg-mi-search": "impactreg\nMI search",
         "mind-static-search": "MIND Static\nsearch", "preset-bspline-mi": "preset\nbspline-mi",
         "preset-bspline-mi-search": "preset\nbspline-mi\nsearch", "preset-impact-mr-ct": "preset\nimpact-mr-ct",
         "preset-impact-mr-ct-centre": "preset\nimpact-mr-ct\ncentre"}

PLOTS = {  # measure: (per-point key, y label, log scale)
    "tre": ("tre_points", "TRE per landmark (mm)", True),
    "dice": ("dice_labels", "Dice per label / organ", False),
    "hd95": ("hd95_labels", "HD95 per label / organ (mm)", False),
    "agreement": ("agreement_points", "distance to elastix's transform per point (mm)", True),
}


def values_of(row: dict, key: str) -> list[float]:
    values = row.get(key)
    values = list(values.values()) if isinstance(values, dict) else values or []
    return [v for v in values if not math.isnan(v)]


def box_plot(rows: list[dict], measure: str, path: Path, columns: int = 3) -> bool:
    """One panel per case that has the measure, one box per method (points overlaid, the mean as a
    triangle); False when no case has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, NullFormatter

    key, ylabel, log = PLOTS[measure]
    registered = [r for r in rows if r["key"] != "none" and values_of(r, key)]
    cases = list(dict.fromkeys(r["case"] for r in registered))
    if not cases:
        return False
    ncols = min(columns, len(cases))
    nrows = -(-len(cases) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.0 + 3.8 * ncols, 4.0 * nrows), squeeze=False)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax, case in zip(axes.flat, cases):
        mine = [r for r in registered if r["case"] == case]
        data = [values_of(r, key) for r in mine]
        ax.boxplot(data, showfliers=False, widths=0.6, showmeans=True,
                   meanprops={"marker": "^", "markerfacecolor": "tab:red", "markeredgecolor": "tab:red", "markersize": 5})
        jitter = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + jitter.uniform(-0.15, 0.15, len(values)), values, s=6, alpha=0.4, color="tab:blue")
        ax.set_xticks(range(1, len(mine) + 1), [SHORT.get(r["key"], r["key"]) for r in mine], fontsize=8)
        ax.set_title(case, fontsize=9)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            span = max(map(max, data)) / max(min(map(min, data)), 1e-12)
            ax.yaxis.set_minor_formatter(plain if span < 30 else NullFormatter())  # few decades: label minor ticks too
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def code_version() -> str:
    """The git commit of the checkout, marked when src/ has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit, changed = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "src")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in src/" if changed else "")


def case_summaries(keys) -> list[str]:
    """One line per case: the first sentence of its builder's docstring."""
    lines = []
    for key in keys:
        text = " ".join(SUITE_CASES[key].__doc__.split())
        lines.append(f"- `{key}`: {text.split('. ')[0].rstrip('.')}.")
    return lines


def report(rows: list[dict], args, settings: Settings, built: dict[str, float], seconds: float, plots: list[str],
           code: str) -> str:
    command = "python benchmarks/suite.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    levels = "4 resolution levels (smoothing pyramid; brain T1 -> PD: recursive, i.e. downsampled)"
    return "\n".join([
        "# Benchmark suite", "",
        f"Command: `{command.strip()}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; whole run {seconds / 60:.1f} min "
        f"(building the cases: {', '.join(f'{k} {v:.0f} s' for k, v in built.items())})  ",
        f"Machine: {machine()}  ",
        f"Code: impactreg at git {code}", "",
        "Cases (`benchmarks/cases.py`, fixed seeds):", "", *case_summaries(args.cases), "",
        f"Iterations per resolution level: {settings.iterations} for Mattes MI stages and IMPACT Static, "
        f"{settings.jacobian_iterations} for IMPACT Jacobian; {settings.samples} random-coordinate samples per iteration; "
        f"{levels}; ASGD with automatic parameter estimation. "
        + (f"The budgets are NOT equal: IMPACT Jacobian's B-spline stage runs {settings.jacobian_iterations} iterations "
           f"per level against {settings.iterations} for the other methods (column 'iterations / level'); compare its "
           "accuracy and time with that in mind, or run with --jacobian-iterations equal to --iterations."
           if settings.jacobian_iterations != settings.iterations else "Every method runs the same iterations."),
        "IMPACT Static stages carry the presets' regulariser (TransformBendingEnergyPenalty, weight "
        f"{BENDING_ENERGY_WEIGHT:g}) and cubic feature maps; the Mattes MI and IMPACT Jacobian B-spline stages have no "
        "penalty.", "",
        "Stages: a linear Mattes MI stage (32 bins, geometric-centre initialisation; Euler for rigid cases, affine "
        "otherwise), then for deformable cases a B-spline stage (16 mm grid), with the same parameter maps in elastix "
        "(itk-elastix) and impactreg. IMPACT methods use Mattes MI for the linear stage and IMPACT in the B-spline stage; "
        "in rigid cases they add a second rigid stage with IMPACT after the MI one. IMPACT voxel sizes per level: "
        f"{', '.join(VOXELS)} mm (2D: the first two numbers); MIND R1D2 (Static: whole-image feature maps along the "
        "fixed image's axes, cubic interpolation, samples only where the receptive field lies inside both images; "
        "Jacobian: 7-voxel patches), M730 layer 1 (z-scored input, Jacobian: 5-voxel patches).", "",
        "Measures: TRE against the known transform over the case's landmarks (2D BrainWeb: a grid of points in the "
        "head every 8 px; lung, MNI: 300 points in the lung / brain); Dice and HD95 over the labels (lung mask; MNI grey "
        "and white matter; abdomen: the 20 organs of `shared_organs.json`) where the fixed image maps inside the moving "
        "image (the CBCT's smaller field of view, the MR slab); folded = fraction of fixed-grid voxels with det J <= 0 "
        "(deformable cases; blank for rigid ones). 'Mean distance to elastix' compares each "
        "transform with elastix's on the same points (brain T1 -> PD: 3000 brain points): agreement, not accuracy; "
        "it is the only measure for the brain T1 -> PD case, which has no ground truth.", "",
        "n/a: not applicable (M730 is a 3D model; the 2D case has no M730 rows). Blank: the case has no such measure "
        "(no landmarks, no labels, rigid). –: undefined (e.g. no overlap). Timings come from a shared 2-core machine and "
        "vary by up to 1.5x between runs; accuracy numbers are reproducible for one code version (fixed seeds).", "",
        markdown_table(rows), failures(rows), "",
        *[f"![{p}]({p})" for p in plots], "",
    ])


def jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


# command line --------------------------------------------------------------------------------------

def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(SUITE_CASES), default=DEFAULT_SUITE)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--iterations", type=int, help=f"per level, MI stages and IMPACT Static (default {DEFAULT.iterations})")
    parser.add_argument("--jacobian-iterations", type=int,
                        help=f"per level, IMPACT Jacobian (default {DEFAULT.jacobian_iterations})")
    parser.add_argument("--samples", type=int, help=f"spatial samples per iteration (default {DEFAULT.samples})")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny runs to check that everything works ({QUICK.iterations}/{QUICK.jacobian_iterations} "
                             f"iterations, {QUICK.samples} samples)")
    parser.add_argument("--name", help="stem of the output files in benchmarks/results (default suite, suite-quick)")
    return parser.parse_args(argv)


def chosen_settings(args) -> Settings:
    base = QUICK if args.quick else DEFAULT
    return Settings(iterations=args.iterations or base.iterations,
                    jacobian_iterations=args.jacobian_iterations or base.jacobian_iterations,
                    samples=args.samples or base.samples)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if not DATA.is_dir():
        print(f"benchmark suite: the data folder {DATA} is missing; set IMPACTREG_DATA", file=sys.stderr)
        return 2
    settings = chosen_settings(args)
    name = args.name or ("suite-quick" if args.quick else "suite")
    methods = list(dict.fromkeys([REFERENCE] + args.methods)) if REFERENCE in args.methods else args.methods
    code = code_version()
    start = time.perf_counter()
    warm_up(METHODS[m].engine for m in methods)  # one-time costs (kernel compilation) on no case
    rows, built = [], {}
    for key in args.cases:
        case_rows, built[key] = run_case(key, methods, settings)
        rows += case_rows
        print(markdown_table(rows), file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    plots = [f"{name}-{measure}.png" for measure in PLOTS if box_plot(rows, measure, RESULTS / f"{name}-{measure}.png")]
    text = report(rows, args, settings, built, time.perf_counter() - start, plots, code)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(jsonable({"settings": settings.__dict__, "machine": machine(), "code": code,
                                                                "rows": rows}), indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
