"""The multi-metric, multi-resolution registration loop (elastix's job).

``register`` runs parameter maps in sequence (each stage initialised by the previous one),
each over its resolution levels: pyramid images, a sampler, the weighted metrics, automatic
optimiser settings, then iterations. Per-iteration work is proportional to the number of
samples. Outputs are staged in a temporary folder and moved into ``out_dir`` only when the whole
registration succeeded, so a failure never leaves a half-written output folder.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import ImageError, ImpactRegError, InputError, ParameterError
from .files import atomic_write_text
from .filters import erode, resample_to_grid
from .geometry import Grid
from .image import Image, read_image, write_image
from .interpolation import Interpolator, bspline_coefficients
from .metrics.intensity import (MattesMutualInformation, MeanSquares, NormalizedCorrelation,
                                NormalizedMutualInformation, ParzenHistogram)
from .metrics.impact import ImpactMetric
from .metrics.penalties import BendingEnergyPenalty, bending_energy_value_and_gradient
from .optimizers import (Adam, AdaptiveStochasticGradientDescent, ASGDSettings, RegularStepGradientDescent,
                         StandardGradientDescent, estimate_displacement_distribution, estimate_original,
                         jacobian_terms)
from .parameters import ParameterMap, load_parameter_maps
from .pyramid import Pyramid, schedule
from .sampling import ImageSampler, exact_gradient_sampler
from .transformix import resample
from .transforms import (AffineTransform, BSplineTransform, CombinationTransform, EulerTransform, MatrixTransform,
                         SimilarityTransform, Transform, TranslationTransform, control_grid_for_image)
from .transforms.elastix_files import read_transform_file, write_transform_file

log = logging.getLogger("impactreg")

DEFAULT_SEED = 121212
COMPUTE = torch.float32


@dataclass
class IterationInfo:
    stage: int
    level: int
    iteration: int
    value: float
    metric_values: list[float]
    gain: float
    gradient_norm: float
    valid_samples: int
    seconds: float


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


# inputs ---------------------------------------------------------------------------------------

def _as_image(value, what: str) -> Image | None:
    if value is None or isinstance(value, Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_image(value)
    array = np.asarray(value)
    if array.ndim not in (2, 3):
        raise InputError(f"{what}: an array must be 2D or 3D, got shape {array.shape}")
    return Image.from_array(array.astype(np.float32))


def _mask_tensor(mask: Image, grid: Grid, what: str) -> torch.Tensor:
    """A mask resampled (nearest neighbour) onto ``grid`` as a bool tensor in torch order."""
    on_grid = resample_to_grid(mask, grid, order=0)
    result = on_grid.data[0] > 0
    if not bool(result.any()):
        raise ImageError(f"{what}: the mask has no non-zero voxel inside the image; give a mask that overlaps the image")
    return result


def _initial_transform(value, dim: int) -> Transform | None:
    if value is None or isinstance(value, Transform):
        return value
    tf = read_transform_file(value)
    if tf.transform.dim != dim:
        raise InputError(f"{value}: the initial transform is {tf.transform.dim}D but the images are {dim}D")
    return tf.transform


# transforms -----------------------------------------------------------------------------------

def _centre(grid: Grid) -> np.ndarray:
    return grid.index_to_world((np.asarray(grid.size) - 1) / 2.0)


def _centre_of_gravity(image: Image) -> np.ndarray:
    weights = image.data[0].double().clamp_min(0).reshape(-1)
    pts = image.grid.voxel_points()
    total = weights.sum()
    if total <= 0:
        return _centre(image.grid)
    return ((pts * weights[:, None]).sum(0) / total).numpy()


def _create_matrix_transform(pm: ParameterMap, name: str, fixed: Image, moving: Image,
                             initial: Transform | None) -> MatrixTransform:
    dim = fixed.dim
    cls = {"TranslationTransform": TranslationTransform, "EulerTransform": EulerTransform,
           "SimilarityTransform": SimilarityTransform, "AffineTransform": AffineTransform}[name]
    centre_values = pm.values("CenterOfRotationPoint")
    if centre_values is not None and len(centre_values) != dim:
        raise ParameterError(f"(CenterOfRotationPoint ...) needs {dim} values for {dim}D images")
    method = pm.get("AutomaticTransformInitializationMethod")
    if centre_values is not None:
        centre = np.asarray(centre_values, dtype=np.float64)
    elif pm.get("AutomaticTransformInitialization") and method == "CenterOfGravity":
        centre = _centre_of_gravity(fixed)
    else:
        centre = _centre(fixed.grid)
    kwargs = {"compute_zyx": pm.get("ComputeZYX")} if cls is EulerTransform else {}
    transform = cls(dim, None, centre, **kwargs) if cls is not TranslationTransform else cls(dim)
    if pm.get("AutomaticTransformInitialization"):
        if method == "CenterOfGravity":
            fixed_c, moving_c = _centre_of_gravity(fixed), _centre_of_gravity(moving)
        elif method == "Origins":
            fixed_c, moving_c = fixed.grid.origin, moving.grid.origin
        else:
            fixed_c, moving_c = _centre(fixed.grid), _centre(moving.grid)
        if initial is not None:
            with torch.no_grad():
                fixed_c = initial.map(torch.from_numpy(np.asarray(fixed_c, dtype=np.float64))[None])[0].numpy()
        params = transform.parameters.clone()
        params[transform.translation_indices()] = torch.from_numpy(np.asarray(moving_c - fixed_c, dtype=np.float64))
        transform = transform.with_parameters(params)
    return transform


def _grid_spacing(pm: ParameterMap, fixed_grid: Grid) -> np.ndarray:
    dim = fixed_grid.dim
    physical = pm.values("FinalGridSpacingInPhysicalUnits")
    voxels = pm.values("FinalGridSpacingInVoxels")
    if physical is not None and voxels is not None:
        raise ParameterError("give FinalGridSpacingInPhysicalUnits or FinalGridSpacingInVoxels, not both")
    values, unit = (physical, 1.0) if physical is not None else (voxels or [16.0], fixed_grid.spacing)
    if len(values) not in (1, dim):
        raise ParameterError(f"FinalGridSpacing needs 1 or {dim} values, got {len(values)}")
    spacing = np.broadcast_to(np.asarray(values, dtype=np.float64), (dim,)) * unit
    if np.any(spacing <= 0):
        raise ParameterError("the B-spline grid spacing must be positive")
    return spacing


def _upsample_bspline(old: BSplineTransform, new_grid: Grid) -> BSplineTransform:
    """Coefficients on ``new_grid`` whose spline interpolates the old displacement at the new nodes."""
    nodes = new_grid.voxel_points()
    with torch.no_grad():
        disp = old.map(nodes) - nodes  # (N, D)
    values = disp.T.reshape(old.dim, *new_grid.shape)
    coef = bspline_coefficients(values, old.order) if old.order >= 2 else values
    return BSplineTransform(new_grid, old.order, coef.reshape(-1))


def _scales(pm: ParameterMap, transform: Transform, fixed_grid: Grid) -> torch.Tensor:
    """sqrt of elastix's Scales: parameters are optimised as mu * sqrt(scales)."""
    P = transform.number_of_parameters
    given = pm.values("Scales")
    if given is not None:
        if len(given) not in (1, P):
            raise ParameterError(f"(Scales ...) needs 1 or {P} values for {transform.elastix_name}, got {len(given)}")
        scales = torch.tensor(given, dtype=torch.float64).expand(P).clone()
    elif isinstance(transform, (BSplineTransform, TranslationTransform)) and not pm.get("AutomaticScalesEstimation"):
        scales = torch.ones(P, dtype=torch.float64)
    else:
        # elastix's AutomaticScalesEstimation: mean over a grid of fixed points of sum_d (dT_d/dmu_p)^2;
        # also used for rotation-like parameters when no Scales are given.
        step = max(1, int(round((fixed_grid.num_voxels / 10000) ** (1 / fixed_grid.dim))))
        sampler = ImageSampler("Grid", fixed_grid, grid_spacing=(step,), dtype=torch.float64)
        jac = transform.parameter_jacobian(sampler.sample())
        if not isinstance(jac, torch.Tensor):
            jac = jac.to_dense()
        scales = (jac ** 2).sum(1).mean(0).clamp_min(1e-12)
    if torch.any(scales <= 0):
        raise ParameterError("(Scales ...) must be positive")
    return scales.sqrt()


# the per-level cost function -------------------------------------------------------------------

class LevelProblem:
    """Everything one resolution level needs to evaluate the weighted metric and its gradient."""

    def __init__(self, pm: ParameterMap, level: int, fixed: Image, moving: Image, fixed_mask: torch.Tensor | None,
                 moving_mask: Image | None, transform: Transform, generator: torch.Generator, device, base=None):
        self.pm, self.level, self.device, self.base = pm, level, device, base
        self.transform = transform.to(device)
        self.generator = generator
        self.fixed, self.moving, self.fixed_mask = fixed, moving, fixed_mask
        metrics = pm.values("Metric")
        if not metrics:
            raise ParameterError("(Metric ...) is missing; name at least one metric, e.g. (Metric \"AdvancedMattesMutualInformation\")")
        if len(metrics) > 1 and pm.get("Registration") != "MultiMetricMultiResolutionRegistration":
            raise ParameterError(f"{len(metrics)} metrics need (Registration \"MultiMetricMultiResolutionRegistration\")")
        self.weights = [pm.get(f"Metric{i}Weight", level, 1.0) if pm.get(f"Metric{i}Use", level, True) else 0.0
                        for i in range(len(metrics))]
        sampler_kind = pm.get("ImageSampler", level)
        spacing = pm.values("SampleGridSpacing") or [2]
        self.sampler = ImageSampler(sampler_kind, fixed.grid, fixed_mask, pm.get("NumberOfSpatialSamples", level),
                                    spacing, generator, device, COMPUTE)
        self.new_samples = pm.get("NewSamplesEveryIteration", level) and sampler_kind in ("Random", "RandomCoordinate")
        self.required_ratio = pm.get("RequiredRatioOfValidSamples", level) if pm.get("CheckNumberOfSamples", level) else 0.0
        self.attempts = pm.get("MaximumNumberOfSamplingAttempts", level)
        self.fixed_order = 1 if sampler_kind == "RandomCoordinate" else 0
        self.fixed_interp = Interpolator(fixed, order=self.fixed_order, device=device, dtype=COMPUTE)
        interpolator = pm.get("Interpolator")
        order = 1 if interpolator == "LinearInterpolator" else 0 if interpolator == "NearestNeighborInterpolator" \
            else pm.get("BSplineInterpolationOrder", level)
        self.moving_interp = Interpolator(moving, order=order, device=device, dtype=COMPUTE)
        self.moving_mask = Interpolator(moving_mask, order=0, device=device, dtype=COMPUTE) if moving_mask is not None else None
        self.interpolation_order = order
        self.metrics = [self._metric(name, fixed, moving, fixed_mask) for name in metrics]
        self.intensity = any(not isinstance(m, (BendingEnergyPenalty, ImpactMetric)) for m in self.metrics)
        self.points = self.fixed_values = None
        self.redraw()

    def _metric(self, name: str, fixed: Image, moving: Image, fixed_mask):
        pm, level = self.pm, self.level
        if name == "TransformBendingEnergyPenalty":
            return BendingEnergyPenalty()
        if name == "Impact":
            try:
                return ImpactMetric(pm, level, fixed, moving, self.moving_mask, self.interpolation_order, self.generator,
                                    self.device, self.base)
            except ParameterError as exc:
                raise ParameterError(f"{pm.source}: {exc}" if pm.source and pm.source not in str(exc) else str(exc)) from None
        if name == "AdvancedMeanSquares":
            norm = 1.0
            if pm.get("UseNormalization", level):
                span = float(fixed.data.max() - fixed.data.min()) * float(moving.data.max() - moving.data.min())
                norm = max(span, 1e-12)
            return MeanSquares(norm)
        if name == "AdvancedNormalizedCorrelation":
            return NormalizedCorrelation(pm.get("SubtractMean", level))
        fvals = fixed.data[0][fixed_mask] if fixed_mask is not None else fixed.data[0]
        bins = pm.get("NumberOfHistogramBins", level)
        hist = ParzenHistogram((float(fvals.min()), float(fvals.max())), (float(moving.data.min()), float(moving.data.max())),
                               pm.get("NumberOfFixedHistogramBins", level) or bins,
                               pm.get("NumberOfMovingHistogramBins", level) or bins,
                               pm.get("FixedKernelBSplineOrder", level), pm.get("MovingKernelBSplineOrder", level),
                               pm.get("FixedLimitRangeRatio", level), pm.get("MovingLimitRangeRatio", level))
        if name == "AdvancedMattesMutualInformation":
            return MattesMutualInformation(hist)
        return NormalizedMutualInformation(hist)

    def _check_count(self, n_valid: int, wanted: int, check: bool) -> None:
        if (check and n_valid < self.required_ratio * wanted) or n_valid < 2:
            raise _TooFewSamples(n_valid, wanted)

    def redraw(self) -> None:
        self.points = self.sampler.sample()
        self.fixed_values = self.fixed_interp(self.points).values[:, 0]

    def value_and_gradient(self, params: torch.Tensor, points=None, fixed_values=None, check: bool = True):
        """Weighted metric value, per-metric values, valid sample count and d value / d params (P,).

        Intensity metrics give d value / d m in closed form; it is chained with the moving-image
        gradient at T(x) and the transform's parameter Jacobian, as elastix does.
        """
        points = self.points if points is None else points
        fixed_values = self.fixed_values if fixed_values is None else fixed_values
        transform = self.transform.with_parameters(params.to(self.device))
        total = 0.0
        values = []
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=self.device)
        n_valid = points.shape[0]
        if self.intensity:
            mapped = transform.map(points)
            sampled = self.moving_interp(mapped, gradient=True)
            valid = sampled.inside
            if self.moving_mask is not None:
                valid = valid & (self.moving_mask(mapped).values[:, 0] > 0)
            n_valid = int(valid.sum())
            self._check_count(n_valid, points.shape[0], check)
            all_valid = n_valid == points.shape[0]
            f = fixed_values if all_valid else fixed_values[valid]
            m = sampled.values[:, 0] if all_valid else sampled.values[valid, 0]
            dv_dm = torch.zeros_like(m)
        for weight, metric in zip(self.weights, self.metrics):
            if isinstance(metric, BendingEnergyPenalty):
                v, g = bending_energy_value_and_gradient(transform, points)
                grad = grad + weight * g.to(torch.float64)
            elif isinstance(metric, ImpactMetric):
                v, g, impact_valid = metric.value_and_gradient(transform, points)
                self._check_count(impact_valid, points.shape[0], check)
                n_valid = min(n_valid, impact_valid)
                grad = grad + weight * g
            else:
                v, d = metric.value_and_derivative(f, m)
                dv_dm = dv_dm + weight * d
                v = float(v)
            values.append(v)
            total += weight * v
        if self.intensity:
            if not all_valid:  # invalid samples contribute nothing; keep full-size arrays for the cached support
                dv_dm = torch.zeros(points.shape[0], dtype=m.dtype, device=m.device).index_put_((valid.nonzero()[:, 0],), dv_dm)
            d_points = dv_dm[:, None] * sampled.gradients[:, 0]
            grad = grad + transform.parameter_gradient(points, d_points).to(torch.float64)
        return total, values, n_valid, grad


class _TooFewSamples(Exception):
    def __init__(self, found: int, wanted: int):
        self.found, self.wanted = found, wanted


def _too_few_samples_error(exc: _TooFewSamples, stage: int, level: int) -> ImageError:
    return ImageError(
        f"stage {stage} level {level}: too many samples map outside the moving image (or its mask): "
        f"{exc.found} / {exc.wanted} valid; usually the images barely overlap or the initial transform is off: "
        f"check origins and directions, give -t0, or set (AutomaticTransformInitialization \"true\")")


# the loop -----------------------------------------------------------------------------------------

def _make_optimizer(pm: ParameterMap, level: int, problem: LevelProblem, params_s: torch.Tensor, scales, max_step,
                    generator, gradient) -> tuple[object, dict]:
    name = pm.get("Optimizer")
    if name == "RegularStepGradientDescent":
        opt = RegularStepGradientDescent(pm.get("MaximumStepLength", level, max_step), pm.get("MinimumStepLength", level),
                                         pm.get("MinimumGradientMagnitude", level), pm.get("RelaxationFactor", level))
        return opt, {"MaximumStepLength": opt.step_length}
    if name == "Adam":
        lr = pm.get("LearningRate", level) or 0.5 * max_step
        return Adam(lr, pm.get("Beta1", level), pm.get("Beta2", level), pm.get("Epsilon", level)), {"LearningRate": lr}
    if name == "StandardGradientDescent":
        opt = StandardGradientDescent(pm.get("SP_a", level), pm.get("SP_A", level), pm.get("SP_alpha", level))
        return opt, {"SP_a": opt.s.a, "SP_A": opt.s.A, "SP_alpha": opt.s.alpha}
    A = pm.get("SP_A", level)
    if pm.get("AutomaticParameterEstimation", level):
        n_jac = pm.get("NumberOfJacobianMeasurements", level)
        n_jac = min(max(n_jac, problem.transform.number_of_parameters), 2000)
        step = max(1, int(math.floor((problem.fixed.grid.num_voxels / n_jac) ** (1 / problem.fixed.dim))))
        jac_points = ImageSampler("Grid", problem.fixed.grid, None, grid_spacing=(step,), dtype=torch.float64).sample()
        if jac_points.shape[0] > n_jac:
            pick = torch.randperm(jac_points.shape[0], generator=generator)[:n_jac]
            jac_points = jac_points[pick]
        jacobian = problem.transform.to("cpu").parameter_jacobian(jac_points)
        noisy = problem.new_samples
        if pm.get("ASGDParameterEstimationMethod") == "Original":
            settings = estimate_original(jacobian_terms(jacobian, scales), max_step, A, gradient, params_s,
                                         pm.get("NumberOfGradientMeasurements", level), noisy, generator)
        else:
            settings = estimate_displacement_distribution(jacobian, scales, max_step, A, gradient, params_s, noisy,
                                                          max(2, pm.get("NumberOfGradientMeasurements", level)))
        settings.adaptive = pm.get("UseAdaptiveStepSizes", level)
        if "SP_alpha" in pm:
            settings.alpha = pm.get("SP_alpha", level)
    else:
        settings = ASGDSettings(a=pm.get("SP_a", level), A=A, alpha=pm.get("SP_alpha", level),
                                fmax=pm.get("SigmoidMax", level), fmin=pm.get("SigmoidMin", level),
                                omega=pm.get("SigmoidScale", level), adaptive=pm.get("UseAdaptiveStepSizes", level),
                                initial_time=pm.get("SigmoidInitialTime", level))
    s = settings
    return AdaptiveStochasticGradientDescent(s), {"SP_a": s.a, "SP_A": s.A, "SP_alpha": s.alpha, "SigmoidMax": s.fmax,
                                                  "SigmoidMin": s.fmin, "SigmoidScale": s.omega}


def _run_level(pm, stage, level, problem: LevelProblem, scales, max_step, generator, callbacks, progress, iteration_rows):
    transform = problem.transform
    params_s = (transform.parameters.detach().cpu().double() * scales)
    exact_points = None

    def gradient(ps: torch.Tensor, exact: bool) -> torch.Tensor:
        nonlocal exact_points
        mu = ps / scales
        if exact:
            if exact_points is None:
                sampler = exact_gradient_sampler(problem.fixed.grid, problem.fixed_mask,
                                                 pm.get("NumberOfSamplesForExactGradient", level), problem.device, COMPUTE)
                pts = sampler.sample()
                exact_points = (pts, problem.fixed_interp(pts).values[:, 0])
            _, _, _, g = problem.value_and_gradient(mu, *exact_points, check=False)
        else:
            problem.redraw()
            _, _, _, g = problem.value_and_gradient(mu, check=False)
        return g.cpu() / scales

    optimizer, settings = _make_optimizer(pm, level, problem, params_s, scales, max_step, generator, gradient)
    iterations = pm.get("MaximumNumberOfIterations", level)
    result = LevelResult(level, 0, 0.0, settings=settings)
    start = time.perf_counter()
    attempts = 0
    bar = progress(total=iterations, desc=f"stage {stage} level {level}") if progress else None
    k = 0
    while k < iterations:
        if k > 0 and problem.new_samples:
            problem.redraw()
        try:
            value, values, n_valid, g = problem.value_and_gradient(params_s / scales)
        except _TooFewSamples as exc:
            attempts += 1
            if attempts > problem.attempts:
                raise _too_few_samples_error(exc, stage, level) from None
            problem.redraw()
            continue
        attempts = 0
        g_s = g.cpu() / scales
        params_s = optimizer.step(params_s, g_s, k)
        problem.transform = problem.transform.with_parameters((params_s / scales).to(problem.device))
        info = IterationInfo(stage, level, k, float(value), values, float(getattr(optimizer, "last_gain", 0.0)),
                             float(g_s.norm()), n_valid, time.perf_counter() - start)
        result.values.append(info.value)
        iteration_rows.append(info)
        for cb in callbacks:
            cb(info)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"metric {info.value:.5g}", refresh=False)
        k += 1
        if getattr(optimizer, "converged", False):
            break
    if bar is not None:
        bar.close()
    result.iterations = k
    result.seconds = time.perf_counter() - start
    return result


def _run_stage(index: int, pm: ParameterMap, fixed: Image, moving: Image, fixed_mask: Image | None,
               moving_mask: Image | None, initial: Transform | None, generator, device, callbacks, progress,
               iteration_rows) -> StageResult:
    start = time.perf_counter()
    levels = pm.get("NumberOfResolutions")
    if levels < 1:
        raise ParameterError(f"(NumberOfResolutions {levels}) must be at least 1")
    pm.check_levels(levels)
    dim = fixed.dim
    for key, image in (("FixedImageDimension", fixed), ("MovingImageDimension", moving)):
        if key in pm and pm.get(key) != image.dim:
            raise ParameterError(f"({key} {pm.get(key)}) but the image is {image.dim}D")
    name = pm.get("Transform")
    if name is None:
        raise ParameterError("(Transform ...) is missing; e.g. (Transform \"BSplineTransform\")")
    fixed_pyramid = Pyramid.from_parameters("Fixed", fixed, pm)
    moving_pyramid = Pyramid.from_parameters("Moving", moving, pm)
    spacings = np.concatenate([fixed.grid.spacing[:min(dim, 2)], moving.grid.spacing[:min(dim, 2)]])
    default_step = float(spacings.mean()) * pm.get("MaximumStepLengthRatio")
    is_spline = name in ("BSplineTransform", "RecursiveBSplineTransform")
    if is_spline:
        order = pm.get("BSplineTransformSplineOrder")
        final_spacing = _grid_spacing(pm, fixed.grid)
        grid_schedule = schedule(pm.values("GridSpacingSchedule"), levels, dim, "GridSpacingSchedule")
        how = pm.get("HowToCombineTransforms")
        current: Transform | None = None
    else:
        current = _create_matrix_transform(pm, name, fixed, moving, initial)
    results = []
    for level in range(levels):
        if is_spline:
            grid = control_grid_for_image(fixed.grid, final_spacing * grid_schedule[level], order,
                                          initial if how == "Compose" else None)
            current = BSplineTransform(grid, order) if current is None else _upsample_bspline(current, grid)
            current.elastix_name = name
        full = current if initial is None else CombinationTransform(initial, current, pm.get("HowToCombineTransforms"))
        fixed_l, moving_l = fixed_pyramid.level(level), moving_pyramid.level(level)
        fmask = _mask_tensor(fixed_mask, fixed_l.grid, "fixed mask") if fixed_mask is not None else None
        mmask = moving_mask
        erode_fixed = pm.get("ErodeFixedMask", level, pm.get("ErodeMask", level))
        if fmask is not None and erode_fixed:
            radius = np.ceil(fixed_pyramid.factors[level] * 0.5 * fixed.grid.spacing / fixed_l.grid.spacing).astype(int)
            fmask = erode(fmask, tuple(reversed(radius.tolist())))
            if not bool(fmask.any()):
                raise ImageError(f"level {level}: the eroded fixed mask is empty; set (ErodeMask \"false\") or use a larger mask")
        if mmask is not None and pm.get("ErodeMovingMask", level, pm.get("ErodeMask", level)):
            radius = np.ceil(moving_pyramid.factors[level] * 0.5).astype(int)
            mdata = erode(mmask.data[0] > 0, tuple(reversed(radius.tolist())))
            mmask = mmask.with_data(mdata[None].float())
        scales = _scales(pm, current, fixed.grid)
        base = Path(pm.source).parent if pm.source and Path(pm.source).is_file() else None
        problem = LevelProblem(pm, level, fixed_l, moving_l, fmask, mmask, full, generator, device, base)
        max_step = pm.get("MaximumStepLength", level) or default_step
        log.info("stage %d level %d: %d parameters, fixed %s", index, level, current.number_of_parameters, fixed_l.grid.size)
        results.append(_run_level(pm, index, level, problem, scales, max_step, generator, callbacks, progress, iteration_rows))
        optimised = problem.transform
        current = optimised.current if isinstance(optimised, CombinationTransform) else optimised
        current = current.to("cpu")
    final = current if initial is None else CombinationTransform(initial, current, pm.get("HowToCombineTransforms"))
    return StageResult(index, final, results, time.perf_counter() - start, pm)


def _check_overlap(fixed: Image, moving: Image, transform: Transform | None) -> None:
    step = max(1, int(round((fixed.grid.num_voxels / 4096) ** (1 / fixed.dim))))
    pts = ImageSampler("Grid", fixed.grid, grid_spacing=(step,), dtype=torch.float64).sample()
    with torch.no_grad():
        mapped = transform.map(pts) if transform is not None else pts
    inside = Interpolator(moving, order=0, dtype=torch.float64).inside(mapped)
    if not bool(inside.any()):
        raise ImageError("the fixed and moving images do not overlap in physical space; check their origins and "
                         "directions, or give an initial transform (-t0) or (AutomaticTransformInitialization \"true\")")


def register(fixed, moving, parameter_maps, *, fixed_mask=None, moving_mask=None, initial_transform=None,
             out_dir: str | os.PathLike | None = None, device: str | None = None, seed: int | None = None,
             threads: int | None = None, callbacks: list[Callable[[IterationInfo], None]] | tuple = (),
             progress=None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with elastix parameter maps (paths, dicts or ParameterMaps).

    Images may be paths, ``Image``s or arrays. Returns the transform mapping fixed-space points to
    moving-space points. With ``out_dir``: TransformParameters.<i>.txt, result.<i>.<ext>,
    IterationInfo.<i>.R<level>.txt (when asked for) and impactreg.log, written only on success.
    """
    total_start = time.perf_counter()
    maps = load_parameter_maps(parameter_maps)
    fixed_image = _as_image(fixed, "fixed image")
    moving_image = _as_image(moving, "moving image")
    if fixed_image.dim != moving_image.dim:
        raise ImageError(f"the fixed image is {fixed_image.dim}D and the moving image {moving_image.dim}D; register images of the same dimension")
    if fixed_image.channels != 1 or moving_image.channels != 1:
        fixed_image = fixed_image.channel(0) if fixed_image.channels > 1 else fixed_image
        moving_image = moving_image.channel(0) if moving_image.channels > 1 else moving_image
        log.warning("multi-component (e.g. RGB) image given: registering its first component")
    fmask = _as_image(fixed_mask, "fixed mask")
    mmask = _as_image(moving_mask, "moving mask")
    for mask, image, what in ((fmask, fixed_image, "fixed mask"), (mmask, moving_image, "moving mask")):
        if mask is not None:
            if mask.dim != image.dim:
                raise ImageError(f"the {what} is {mask.dim}D but its image is {image.dim}D")
            _mask_tensor(mask, image.grid, what)
    initial = _initial_transform(initial_transform, fixed_image.dim)
    for pm in maps:
        pm.check_levels(pm.get("NumberOfResolutions"))
    needs_init = any(pm.get("AutomaticTransformInitialization") for pm in maps[:1])
    if not needs_init:
        _check_overlap(fixed_image, moving_image, initial)
    if threads:
        torch.set_num_threads(int(threads))
    seed = seed if seed is not None else next((pm.get("RandomSeed") for pm in maps if "RandomSeed" in pm), DEFAULT_SEED)
    generator = torch.Generator().manual_seed(int(seed))
    device = torch.device(device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")

    staging = None
    if out_dir is not None:
        out = Path(out_dir).resolve()
        if out.exists() and not out.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; give an output folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    stages: list[StageResult] = []
    rows: list[IterationInfo] = []
    outputs: dict[str, Path] = {}
    logger_handler = None
    try:
        if staging is not None:
            logger_handler = logging.FileHandler(staging / "impactreg.log")
            logger_handler.setLevel(logging.INFO)
            logger_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(logger_handler)
            if log.getEffectiveLevel() > logging.INFO:
                log.setLevel(logging.INFO)
        current = initial
        previous_file = Path(initial_transform).resolve() if isinstance(initial_transform, (str, os.PathLike)) else None
        for index, pm in enumerate(maps):
            stage_rows: list[IterationInfo] = []
            stage = _run_stage(index, pm, fixed_image, moving_image, fmask, mmask, current, generator, device,
                               list(callbacks), progress, stage_rows)
            rows.extend(stage_rows)
            stages.append(stage)
            current = stage.transform
            if staging is not None:
                previous_file = _write_stage_outputs(stage, pm, fixed_image, moving_image, staging, out, previous_file,
                                                     stage_rows, outputs)
        if staging is not None:
            log.info("registration finished in %.1f s", time.perf_counter() - total_start)
            log.removeHandler(logger_handler)
            logger_handler.close()
            logger_handler = None
            out.mkdir(parents=True, exist_ok=True)
            for item in sorted(staging.iterdir()):
                os.replace(item, out / item.name)
            outputs = {name: out / path.name for name, path in outputs.items()}
            outputs["log"] = out / "impactreg.log"
    finally:
        if logger_handler is not None:
            log.removeHandler(logger_handler)
            logger_handler.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return RegistrationResult(current, stages, fixed_image.grid, outputs, time.perf_counter() - total_start)


def _write_stage_outputs(stage: StageResult, pm: ParameterMap, fixed: Image, moving: Image, staging: Path, out: Path,
                         previous_file: Path | None, rows: list[IterationInfo], outputs: dict) -> Path:
    i = stage.index
    transform = stage.transform
    current = transform.current if isinstance(transform, CombinationTransform) else transform
    resample_keys = {k: pm.raw[k] for k in ("ResampleInterpolator", "FinalBSplineInterpolationOrder", "DefaultPixelValue",
                                             "ResultImageFormat", "ResultImagePixelType", "CompressResultImage") if k in pm}
    name = f"TransformParameters.{i}.txt"
    how = pm.get("HowToCombineTransforms")
    write_transform_file(staging / name, current, fixed.grid, previous_file, how, resample_keys)
    outputs[name] = staging / name
    if pm.get("WriteResultImage"):
        order = {"FinalNearestNeighborInterpolator": 0, "FinalLinearInterpolator": 1}.get(
            pm.get("ResampleInterpolator"), pm.get("FinalBSplineInterpolationOrder"))
        warped = resample(moving, transform, fixed.grid, order, pm.get("DefaultPixelValue"))
        result = f"result.{i}.{pm.get('ResultImageFormat')}"
        write_image(warped, staging / result, _pixel_type(pm.get("ResultImagePixelType")), pm.get("CompressResultImage"))
        outputs[result] = staging / result
    if pm.get("WriteIterationInfo"):
        for level in {r.level for r in rows}:
            level_rows = [r for r in rows if r.level == level]
            n_metrics = len(level_rows[0].metric_values) if level_rows else 0
            header = "\t".join(["1:ItNr", "2:Metric"] + [f"2:Metric{m}" for m in range(n_metrics)] +
                               ["3:StepSize", "4:||Gradient||", "5:ValidSamples", "Time[ms]"])
            lines = [header] + ["\t".join([str(r.iteration), f"{r.value:.6g}"] + [f"{v:.6g}" for v in r.metric_values] +
                                          [f"{r.gain:.6g}", f"{r.gradient_norm:.6g}", str(r.valid_samples),
                                           f"{r.seconds * 1000:.1f}"]) for r in level_rows]
            info = f"IterationInfo.{i}.R{level}.txt"
            atomic_write_text(staging / info, "\n".join(lines) + "\n")
            outputs[info] = staging / info
    for lv in stage.levels:
        log.info("stage %d level %d: %d iterations in %.2f s, final metric %.6g, %s", i, lv.level, lv.iterations,
                 lv.seconds, lv.values[-1] if lv.values else float("nan"),
                 ", ".join(f"{k} {v:.6g}" for k, v in lv.settings.items()))
    return out / name


def _pixel_type(name: str) -> str:
    return {"char": "int8", "unsigned char": "uint8", "short": "int16", "unsigned short": "uint16", "int": "int32",
            "unsigned int": "uint32", "long": "int64", "unsigned long": "uint64", "float": "float32",
            "double": "float64"}.get(name, name)
