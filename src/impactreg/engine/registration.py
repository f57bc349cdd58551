"""The driver: parameter maps in sequence (each stage initialised by the previous one), each over
its resolution levels, each level a loop of iterations. Components come from the registries
(``build``), the cost is the weighted metric sum (``cost``), files are ``outputs``'s job.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..compute.memory import MemoryBudget
from ..devices import torch_device, use_threads
from ..errors import ImageError, ParameterError
from ..filters import erode
from ..geometry import Grid
from ..interpolation import Interpolator
from ..keys import LevelView
from ..metrics.protocol import LevelContext, Samples
from ..optimizers import LevelSetup
from ..parameters import ParameterMap, load_parameter_maps
from ..sampling import exact_gradient_sampler, fixed_image_region
from ..transforms import CombinationTransform, Transform
from ..transforms.components import warn_if_reflection
from .build import StageComponents, build_stage, make_sampler
from .cost import Cost, TooFewSamples
from .footprint import check_fits, check_inputs_fit
from .inputs import as_image, check_overlap, corresponding_points, mask_tensor, read_initial_transform, without_direction
from .outputs import IterationInfo, OutputFolder, transform_file_chain

log = logging.getLogger("impactreg")

DEFAULT_SEED = 121212
COMPUTE = torch.float32


@dataclass
class LevelResult:
    level: int
    iterations: int
    seconds: float
    values: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@dataclass
class StageResult:
    index: int
    transform: Transform
    levels: list[LevelResult]
    seconds: float
    parameter_map: ParameterMap


@dataclass
class RegistrationResult:
    """The final transform (the whole chain), per-stage and per-level timings and metric traces."""

    transform: Transform
    stages: list[StageResult]
    fixed_grid: Grid
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def metric_trace(self) -> list[float]:
        return [v for s in self.stages for lv in s.levels for v in lv.values]


@dataclass
class Run:
    """What every stage of one registration shares."""

    generator: torch.Generator
    device: torch.device
    callbacks: list
    progress: Callable | None
    memory: MemoryBudget | None = None
    fixed_points: torch.Tensor | None = None  # corresponding landmarks (-fp, -mp), world mm, float64
    moving_points: torch.Tensor | None = None
    device_given: bool = False  # the caller named the device (it overrides ImpactGPU)


def _too_few_samples_error(exc: TooFewSamples, stage: int, level: int, fixed_grid: Grid) -> ImageError:
    if exc.wanted < 2:
        size = "x".join(str(n) for n in fixed_grid.size)
        return ImageError(
            f"stage {stage} level {level}: only {exc.wanted} sample can be drawn from the fixed image ({size} voxels "
            f"at this level, inside its mask); give a larger image or mask, or fewer NumberOfResolutions")
    return ImageError(
        f"stage {stage} level {level}: too many samples map outside the moving image (or its mask): "
        f"{exc.found} / {exc.wanted} valid{_required(exc)}; usually the images barely overlap or the initial transform "
        f"is off: check origins and directions, give -t0, or set (AutomaticTransformInitialization \"true\"); when the "
        f"moving image covers only part of the fixed one (a slab), give a fixed mask of that part or lower "
        f"(RequiredRatioOfValidSamples ...)")


def _required(exc: TooFewSamples) -> str:
    return f" where (RequiredRatioOfValidSamples {exc.required_ratio:g}) asks for {exc.required_ratio:.0%}" \
        if exc.required_ratio > 0 else ""


class Level:
    """One resolution level: its samples, its cost, and the transform being optimised."""

    def __init__(self, view: LevelView, context: LevelContext, sampler, cost: Cost, transform: Transform):
        self.view, self.context, self.sampler, self.cost = view, context, sampler, cost
        self.transform = transform.to(context.device)
        self.fixed_interp = Interpolator(context.fixed, order=sampler.fixed_interpolation_order, device=context.device,
                                         dtype=COMPUTE)
        self._last = None  # the latest evaluation: (samples, check, params, result)
        self.samples = self.redraw()

    def samples_at(self, points: torch.Tensor) -> Samples:
        return Samples(points, self.fixed_interp.values)  # the fixed values when a metric first asks

    def redraw(self) -> Samples:
        self.samples = self.samples_at(self.sampler.sample())
        return self.samples

    def forget(self) -> None:
        """Drop the latest evaluation (a metric changed what it computes)."""
        self._last = None

    def value_and_gradient(self, params: torch.Tensor, samples: Samples | None = None, check: bool = True):
        """The cost at ``params``; asked again at the same parameters and samples (a line search's last
        point is the next iteration's start) it answers from the latest evaluation."""
        samples = samples or self.samples
        last = self._last
        if last is not None and last[0] is samples and last[1] == check and torch.equal(last[2], params):
            return last[3]
        transform = self.transform.with_parameters(params.to(self.context.device))
        result = self.cost.value_and_gradient(transform, samples, check)
        self._last = (samples, check, params.clone(), result)
        return result


def _level_masks(pm: ParameterMap, view: LevelView, components: StageComponents, fixed_mask, moving_mask, fixed_l, level):
    fmask = mask_tensor(fixed_mask, fixed_l.grid, "fixed mask") if fixed_mask is not None else None
    fixed_pyramid, moving_pyramid = components.fixed_pyramid, components.moving_pyramid
    if fmask is not None and view.get("ErodeFixedMask", view.get("ErodeMask")):
        spacing = fixed_pyramid.image.grid.spacing
        radius = np.ceil(fixed_pyramid.factors[level] * 0.5 * spacing / fixed_l.grid.spacing).astype(int)
        fmask = erode(fmask, tuple(reversed(radius.tolist())))
        if not bool(fmask.any()):
            raise ImageError(f"level {level}: the eroded fixed mask is empty; set (ErodeMask \"false\") or use a larger mask")
    mmask = moving_mask
    if mmask is not None and view.get("ErodeMovingMask", view.get("ErodeMask")):
        radius = np.ceil(moving_pyramid.factors[level] * 0.5).astype(int)
        mdata = erode(mmask.data[0] > 0, tuple(reversed(radius.tolist())))
        mmask = mmask.with_data(mdata[None].float())
    return fmask, mmask


def _run_level(stage: int, level: Level, scales: torch.Tensor, spacings: np.ndarray, optimizer, run: Run,
               rows: list) -> LevelResult:
    view, context = level.view, level.context
    params_s = level.transform.parameters.detach().cpu().double() * scales
    exact_samples: dict[int, Samples] = {}

    def gradient(ps: torch.Tensor, exact: int) -> torch.Tensor:
        """The scaled gradient at scaled parameters: on ``exact`` grid samples, or (0) on a new draw."""
        if exact:
            if exact not in exact_samples:
                sampler = exact_gradient_sampler(context.fixed.grid, context.fixed_mask, exact, context.device, COMPUTE,
                                                 level.sampler.fixed_region)
                exact_samples[exact] = level.samples_at(sampler.sample())
            _, _, _, g = level.value_and_gradient(ps / scales, exact_samples[exact], check=False)
        else:
            level.redraw()
            _, _, _, g = level.value_and_gradient(ps / scales, check=False)
        return g.cpu() / scales

    def evaluate(ps: torch.Tensor):
        """(value, scaled gradient) at scaled parameters on the current samples; (inf, None) when too few are valid."""
        try:
            value, _, _, g = level.value_and_gradient(ps / scales)
        except TooFewSamples:
            return math.inf, None
        return float(value), g.cpu() / scales

    setup = LevelSetup(level.transform, context.fixed.grid, scales, params_s, spacings, gradient,
                       level.sampler.new_samples, run.generator, evaluate, level.sampler.random_region,
                       context.fixed_mask, level.sampler.fixed_region)
    try:
        with level.sampler.estimating():
            settings = optimizer.begin_level(view, setup)  # ASGD's estimation evaluates gradients
    except TooFewSamples as exc:
        raise _too_few_samples_error(exc, stage, view.level, context.fixed.grid) from None
    iterations = view.get("MaximumNumberOfIterations")
    result = LevelResult(view.level, 0, 0.0, settings=settings)
    start = time.perf_counter()
    attempts = 0
    bar = run.progress(total=iterations, desc=f"stage {stage} level {view.level}") if run.progress else None
    k = 0
    while k < iterations:
        if k > 0 and level.sampler.new_samples:
            level.redraw()
        try:
            value, values, n_valid, g = level.value_and_gradient(params_s / scales)
        except TooFewSamples as exc:
            attempts += 1
            if attempts > level.sampler.attempts:
                raise _too_few_samples_error(exc, stage, view.level, context.fixed.grid) from None
            level.redraw()
            continue
        attempts = 0
        g_s = g.cpu() / scales
        params_s = optimizer.step(params_s, g_s, k)
        level.transform = level.transform.with_parameters((params_s / scales).to(context.device))
        if level.cost.end_iteration(k):
            level.forget()
        info = IterationInfo(stage, view.level, k, float(value), values, float(optimizer.last_gain),
                             float(g_s.norm()), n_valid, time.perf_counter() - start)
        result.values.append(info.value)
        rows.append(info)
        for cb in run.callbacks:
            cb(info)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"metric {info.value:.5g}", refresh=False)
        k += 1
        if optimizer.converged:
            break
    if bar is not None:
        bar.close()
    result.iterations = k
    result.seconds = time.perf_counter() - start
    level = context = None  # the optimiser may keep ``setup``: its closures must not keep this level's images alive
    exact_samples.clear()
    return result


def _run_stage(index: int, pm: ParameterMap, fixed, moving, fixed_mask, moving_mask, initial: Transform | None,
               run: Run, rows: list) -> tuple[StageResult, StageComponents]:
    start = time.perf_counter()
    levels = pm.get("NumberOfResolutions")
    for key, image in (("FixedImageDimension", fixed), ("MovingImageDimension", moving)):
        if key in pm and pm.get(key) != image.dim:
            raise ParameterError(f"({key} {pm.get(key)}) but the image is {image.dim}D")
    components = build_stage(pm)
    if getattr(components.registration, "dense", False):  # the dense engine runs the whole stage
        return _run_dense_stage(index, pm, components, fixed, moving, fixed_mask, moving_mask, initial, run, rows)
    components.fixed_pyramid.build(fixed, pm, levels)
    components.moving_pyramid.build(moving, pm, levels)
    dim = fixed.dim
    spacings = np.concatenate([fixed.grid.spacing[:min(dim, 2)], moving.grid.spacing[:min(dim, 2)]])
    transform = components.transform
    transform.begin_stage(pm, fixed, moving, initial)
    how = pm.get("HowToCombineTransforms")
    base = Path(pm.source).parent if pm.source and Path(pm.source).is_file() else None
    results = []
    for level_index in range(levels):
        view = LevelView(pm, level_index)
        current = transform.begin_level(view)
        full = current if initial is None else CombinationTransform(initial, current, how)
        fixed_l, moving_l = components.fixed_pyramid.level(level_index), components.moving_pyramid.level(level_index)
        fmask, mmask = _level_masks(pm, view, components, fixed_mask, moving_mask, fixed_l, level_index)
        scales = transform.scales(current)
        sampler = make_sampler(view)
        # elastix samples the fixed image (and measures ASGD's gradients) only in its fixed image region
        sampler.fixed_region = fixed_image_region(components.fixed_pyramid.image.grid, fixed_l.grid)
        sampler.begin_level(view, fixed_l.grid, fmask, run.generator, run.device, COMPUTE)
        context = LevelContext(view, fixed_l, moving_l, fmask, mmask, components.interpolator.order(view), run.generator,
                               run.device, base, run.memory, run.fixed_points, run.moving_points,
                               device_given=run.device_given)
        for metric in components.metrics:
            metric.begin_level(context)
        count = len(components.metrics)
        cost = Cost(components.metrics, components.registration.weights(view, count), sampler.required_ratio,
                    components.registration.relative_weights(view, count))
        level = Level(view, context, sampler, cost, full)
        log.info("stage %d level %d: %d parameters, fixed %s", index, level_index, current.number_of_parameters,
                 fixed_l.grid.size)
        results.append(_run_level(index, level, scales, spacings, components.optimizer, run, rows))
        optimised = level.transform
        transform.end_level(optimised.current if isinstance(optimised, CombinationTransform) else optimised)
        for metric in components.metrics:
            metric.end_level()
        # this level's images, interpolators and feature maps go before the next level builds its own
        level = context = cost = sampler = fixed_l = moving_l = fmask = mmask = optimised = None
    current = transform.current
    warn_if_reflection(index, current)
    final = current if initial is None else CombinationTransform(initial, current, how)
    return StageResult(index, final, results, time.perf_counter() - start, pm), components


def resolve_seed(maps, seed: int | None = None) -> int:
    """The registration's random seed: ``seed``, else the first map's RandomSeed, else DEFAULT_SEED."""
    return int(seed) if seed is not None else int(next((pm.get("RandomSeed") for pm in maps if "RandomSeed" in pm),
                                                       DEFAULT_SEED))
def _run_dense_stage(index, pm, components, fixed, moving, fixed_mask, moving_mask, initial, run, rows):
    from ..dense.stage import run_dense_stage

    start = time.perf_counter()
    learning_rate = components.optimizer.settings(pm).learning_rate

    def on_iteration(k, value, metric_values, gradient_norm, valid, seconds):
        info = IterationInfo(index, 0, k, value, metric_values, learning_rate, gradient_norm, valid, seconds)
        rows.append(info)
        for callback in run.callbacks:
            callback(info)

    final, values, info = run_dense_stage(pm, components, fixed, moving, fixed_mask, moving_mask, initial, run,
                                          on_iteration)
    seconds = time.perf_counter() - start
    return StageResult(index, final, [LevelResult(0, len(values), seconds, values, info)], seconds, pm), components


def register(fixed, moving, parameter_maps, *, fixed_mask=None, moving_mask=None, initial_transform=None,
             out_dir: str | os.PathLike | None = None, device: str | None = None, seed: int | None = None,
             threads: int | None = None, callbacks: list[Callable[[IterationInfo], None]] | tuple = (),
             progress=None, memory_limit: str | int | None = None, strict: bool = False, fixed_points=None,
             moving_points=None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with elastix parameter maps (paths, dicts or ParameterMaps).

    Images may be paths, ``Image``s or arrays. Returns the transform mapping fixed-space points to
    moving-space points. With ``out_dir``: TransformParameters.<i>.txt, result.<i>.<ext>,
    IterationInfo.<i>.R<level>.txt (when asked for) and impactreg.log, written only on success.
    ``memory_limit`` ("4G", "800M", bytes) bounds the process's peak resident set (images included); a
    configuration that cannot fit is refused before the work; default: a safe share of free memory.
    Keys elastix would ignore (unknown ones, those of components a map does not use) are listed in one
    warning line per map; ``strict=True`` makes them an error.
    ``fixed_points``/``moving_points`` (elastix's -fp/-mp: point files, PointSets or (N, D) arrays in mm)
    are the corresponding landmarks of CorrespondingPointsEuclideanDistanceMetric.
    """
    total_start = time.perf_counter()
    device_given = device is not None
    device = torch_device(device)
    use_threads(threads)
    budget = MemoryBudget.for_process(memory_limit)  # the whole process; GPU work narrows it with budget.on(device)
    maps = load_parameter_maps(parameter_maps, strict)
    for pm in maps:
        if strict:
            pm.warn_ignored(strict)  # refuses before any work
    check_inputs_fit({"fixed image": fixed, "moving image": moving, "fixed mask": fixed_mask, "moving mask": moving_mask},
                     budget)
    fixed_image = as_image(fixed, "fixed image", required=True)
    moving_image = as_image(moving, "moving image", required=True)
    if fixed_image.dim != moving_image.dim:
        raise ImageError(f"the fixed image is {fixed_image.dim}D and the moving image {moving_image.dim}D; register images of the same dimension")
    if fixed_image.channels != 1 or moving_image.channels != 1:
        fixed_image = fixed_image.channel(0) if fixed_image.channels > 1 else fixed_image
        moving_image = moving_image.channel(0) if moving_image.channels > 1 else moving_image
        log.warning("multi-component (e.g. RGB) image given: registering its first component")
    fmask = as_image(fixed_mask, "fixed mask")
    mmask = as_image(moving_mask, "moving mask")
    for mask, image, what in ((fmask, fixed_image, "fixed mask"), (mmask, moving_image, "moving mask")):
        if mask is not None:
            if mask.dim != image.dim:
                raise ImageError(f"the {what} is {mask.dim}D but its image is {image.dim}D")
            mask_tensor(mask, image.grid, what)
    initial = read_initial_transform(initial_transform, fixed_image.dim)
    landmarks = corresponding_points(fixed_points, moving_points, fixed_image, moving_image)
    if not any(pm.get("AutomaticTransformInitialization") for pm in maps[:1]):
        check_overlap(fixed_image, moving_image, initial)
    check_fits(maps, fixed_image, moving_image, fmask, mmask, budget)
    seed = resolve_seed(maps, seed)
    run = Run(torch.Generator().manual_seed(int(seed)), device, list(callbacks), progress, budget, *landmarks,
              device_given=device_given)
    stages: list[StageResult] = []
    outputs: dict[str, Path] = {}
    current = initial
    previous_file = Path(initial_transform).resolve() if isinstance(initial_transform, (str, os.PathLike)) else None
    inputs = {"fixed image": fixed, "moving image": moving, "fixed mask": fixed_mask, "moving mask": moving_mask,
              "initial transform": transform_file_chain(initial_transform), "parameter map": parameter_maps,
              "fixed points": fixed_points, "moving points": moving_points}
    with OutputFolder(out_dir, maps, inputs) if out_dir is not None else contextlib.nullcontext() as folder:
        for pm in maps if not strict else ():
            pm.warn_ignored()  # also into impactreg.log
        for index, pm in enumerate(maps):
            rows: list[IterationInfo] = []
            images = (fixed_image, moving_image, fmask, mmask)
            if not pm.get("UseDirectionCosines"):  # elastix registers the images as if their directions were identity
                images = tuple(without_direction(image) for image in images)
            stage, components = _run_stage(index, pm, *images, current, run, rows)
            stages.append(stage)
            current = stage.transform
            if folder is not None:
                original = None if pm.get("UseDirectionCosines") else fixed_image.grid.direction
                previous_file = folder.write_stage(stage, components, images[0], images[1], previous_file, rows,
                                                   original)
        if folder is not None:
            log.info("registration finished in %.1f s", time.perf_counter() - total_start)
            outputs = folder.commit()
    return RegistrationResult(current, stages, fixed_image.grid, outputs, time.perf_counter() - total_start)
