"""The one metric protocol, and the chain rule the intensity metrics share.

Every metric and penalty is a component (installed by its elastix name in ``components.py``):

    metric.begin_level(context)                      # read keys, load models, build what the level needs
    value, gradient, valid = metric.value_and_gradient(transform, samples)
    metric.end_iteration(iteration)                  # after the optimiser's step of that iteration; True when
                                                     # the metric now gives other values for the same inputs
    metric.end_level()                               # drop what begin_level built (images, interpolators, maps)

``value`` is a float (lower is better), ``gradient`` d value / d transform parameters (P,) in
float64, ``valid`` the number of samples that counted. The engine's cost is the weighted sum of
its metrics; it never asks which kind it holds. Constructors take no arguments and do no I/O.
A metric that is not evaluated at the samples (corresponding points, a penalty on the control
grid) sets ``uses_samples = False``: its ``valid`` is not held against the sampler's count.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import compute
from ..compute.memory import MemoryBudget
from ..image import Image
from ..interpolation import Interpolator
from ..keys import Key, LevelView


@dataclass
class LevelContext:
    """What a metric sees at the start of a resolution level (images are this level's pyramid images)."""

    view: LevelView
    fixed: Image
    moving: Image
    fixed_mask: torch.Tensor | None  # bool, on the fixed level grid, torch order
    moving_mask: Image | None
    interpolation_order: int  # the moving-image interpolator's order (Interpolator component)
    generator: torch.Generator
    device: torch.device
    base: Path | None = None  # folder of the parameter file, for relative model paths
    memory: MemoryBudget | None = None  # bytes batched and tiled work may hold at once (None: the default share)
    fixed_points: torch.Tensor | None = None  # corresponding landmarks (N, D) in mm, float64: fixed space (-fp)
    moving_points: torch.Tensor | None = None  # and moving space (-mp), row i corresponds to row i
    device_given: bool = False  # the user named ``device`` (--device): it overrides a map's device keys (ImpactGPU)
    _shared: dict = field(default_factory=dict, repr=False)

    @property
    def level(self) -> int:
        return self.view.level

    def moving_interpolator(self) -> Interpolator:
        """The moving image's interpolator of this level (one, shared by the metrics). At order 1 it mirrors
        beyond the outermost voxel centres, as elastix's BSplineInterpolator and LinearInterpolator do."""
        if "moving" not in self._shared:
            self._shared["moving"] = Interpolator(self.moving, order=self.interpolation_order, device=self.device,
                                                  dtype=torch.float32, mirror_linear=True)
        return self._shared["moving"]

    def moving_mask_interpolator(self) -> Interpolator | None:
        if self.moving_mask is None:
            return None
        if "mask" not in self._shared:
            self._shared["mask"] = Interpolator(self.moving_mask, order=0, device=self.device, dtype=torch.float32)
        return self._shared["mask"]


@dataclass
class Samples:
    """One draw of fixed-space sample points (N, D) in mm, with the fixed image's values there (N,).

    The values may be given as a function of the points, evaluated when a metric first asks
    (metrics of features, penalties and point sets never do). Metrics that sample the moving image
    at the same mapped points share one evaluation per transform through ``moving``.
    """

    points: torch.Tensor
    fixed: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def fixed_values(self) -> torch.Tensor:
        if callable(self.fixed):
            self.fixed = self.fixed(self.points)
        return self.fixed

    def moving(self, transform, interpolator: Interpolator, mask: Interpolator | None):
        """(mapped points, moving samples with gradients, valid bool (N,)) for ``transform``."""
        key = (id(transform), id(interpolator), id(mask))
        hit = self._cache.get(key)
        if hit is not None and hit[0] is transform:
            return hit[1]
        mapped = transform.map(self.points)
        sampled = interpolator(mapped, gradient=True)
        valid = sampled.inside
        if mask is not None:
            valid = valid & (mask(mapped).values[:, 0] > 0)
        self._cache = {key: (transform, (mapped, sampled, valid))}
        return mapped, sampled, valid


class Metric:
    """Base of every metric and penalty component."""

    elastix_name = ""
    keys: tuple[Key, ...] = ()
    uses_samples = True  # evaluated at the sampler's points (its valid count must reach the required ratio)

    def begin_level(self, context: LevelContext) -> None:
        pass

    def value_and_gradient(self, transform, samples: Samples) -> tuple[float, torch.Tensor, int]:
        raise NotImplementedError

    def end_iteration(self, iteration: int) -> bool | None:
        """After the optimiser's step; return True when values at the same parameters and samples change
        from now on (e.g. refreshed feature maps), so that earlier evaluations are not reused."""

    def end_level(self) -> None:
        """The level is over: drop what ``begin_level`` built that is as large as the images (interpolators,
        feature maps), so that the next level's do not come on top of them."""


class IntensityMetric(Metric):
    """A metric of fixed and moving intensities at the samples. Subclasses give the value and
    d value / d m in closed form (``value_and_derivative(f, m)``); it is chained here, once for all of
    them, with the moving-image gradient at T(x) and the transform's parameter Jacobian, as elastix does.
    """

    linear_settings = None  # with a compiled linear path: () -> (its kernel in compute.linear_metrics, settings)

    def begin_level(self, context: LevelContext) -> None:
        self.moving_interpolator = context.moving_interpolator()
        self.moving_mask = context.moving_mask_interpolator()
        self.derivative_scales = _derivative_scales(context)
        self._linear_work = {}  # the compiled linear path's arrays of this level
        self.configure(context)

    def configure(self, context: LevelContext) -> None:
        """Read this metric's keys for the level."""

    def end_level(self) -> None:
        self.moving_interpolator = self.moving_mask = None
        self._linear_work = {}

    def value_and_derivative(self, f: torch.Tensor, m: torch.Tensor):
        raise NotImplementedError

    def linear_value_and_gradient(self, transform, samples: Samples):
        """(value, gradient, valid) in one compiled call (``compute.linear_intensity``) where the metric has one
        (``linear_settings``) for a transform linear in the point (``Transform.linear_form``) and it can run
        here; None: the generic chain below. It gives what the chain gives, to float rounding."""
        form = transform.linear_form() if self.linear_settings is not None else None
        if form is None:
            return None
        found = compute.linear_intensity(*self.linear_settings(), self.moving_interpolator.table,
                                         None if self.moving_mask is None else self.moving_mask.table,
                                         getattr(self, "derivative_scales", None), form, samples.points,
                                         samples.fixed_values, self.__dict__.setdefault("_linear_work", {}))
        if found is None:
            return None
        value, valid, moments = found
        dim = moments.shape[1]
        if valid < 2:
            return 0.0, torch.zeros(transform.number_of_parameters, dtype=torch.float64), valid
        return float(value), form.gradient(moments[:dim], moments[dim]), valid

    def value_and_gradient(self, transform, samples: Samples):
        fused = self.linear_value_and_gradient(transform, samples)
        if fused is not None:
            return fused
        points = samples.points
        _, sampled, valid = samples.moving(transform, self.moving_interpolator, self.moving_mask)
        n_valid = int(valid.sum())
        if n_valid < 2:
            return 0.0, torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=points.device), n_valid
        all_valid = n_valid == points.shape[0]
        f = samples.fixed_values if all_valid else samples.fixed_values[valid]
        m = sampled.values[:, 0] if all_valid else sampled.values[valid, 0]
        value, dv_dm = self.value_and_derivative(f, m)
        if not all_valid:  # invalid samples contribute nothing; keep full-size arrays for the cached support
            dv_dm = torch.zeros(points.shape[0], dtype=m.dtype, device=m.device).index_put_((valid.nonzero()[:, 0],), dv_dm)
        gradients = sampled.gradients[:, 0]
        if getattr(self, "derivative_scales", None) is not None:
            gradients = gradients @ self.derivative_scales.to(gradients)
        d_points = dv_dm[:, None] * gradients
        return float(value), transform.parameter_gradient(points, d_points).to(torch.float64), n_valid


def _derivative_scales(context: LevelContext) -> torch.Tensor | None:
    """elastix's MovingImageDerivativeScales as the (D, D) matrix the world gradient (a row) is multiplied by:
    diag(scales) on the world axes, or M diag(scales) M^T on the moving image's axes (M its direction)
    with ScaleGradientWithRespectToMovingImageOrientation; None when the key is absent."""
    values = context.view.values("MovingImageDerivativeScales")
    if values is None:
        return None
    dim = context.moving.dim
    scales = torch.tensor([float(values[d]) if d < len(values) else 1.0 for d in range(dim)], dtype=torch.float64)
    matrix = torch.diag(scales)
    if context.view.get("ScaleGradientWithRespectToMovingImageOrientation"):
        m = torch.as_tensor(context.moving.grid.direction, dtype=torch.float64)
        matrix = m @ matrix @ m.T
    return matrix.to(device=context.device, dtype=torch.float32)
