"""Intensity metrics on sampled values, elastix's names and sign conventions (lower is better).

Each metric takes the fixed values f (N,) and moving values m (N,) of the valid samples.
``value_and_derivative`` returns the value and d value / d m (N,) in closed form, which the
engine chains with the moving-image gradient and the transform's parameter Jacobian (as elastix
does); calling the metric directly gives the same value as a differentiable torch expression.
"""
from __future__ import annotations

import torch

from .. import compute
from ..keys import NO_EFFECT, Key
from .protocol import IntensityMetric, LevelContext

# keys elastix's metrics accept that change nothing here
_ELASTIX_ONLY = (
    Key("UseFastAndLowMemoryVersion", "bool", True, NO_EFFECT, per_level=True),
    Key("UseJacobianPreconditioning", "bool", False, NO_EFFECT, per_level=True),
    Key("FiniteDifferenceDerivative", "bool", False, NO_EFFECT, per_level=True),
    Key("ShowExactMetricValue", "bool", False, NO_EFFECT + " (elastix prints an exact metric value on a grid)",
        per_level=True),
    Key("ExactMetricSampleGridSpacing", "int", 1, NO_EFFECT + " (grid of ShowExactMetricValue)", multi=True, minimum=1),
    Key("ExactMetricEveryXIterations", "int", 1, NO_EFFECT + " (period of ShowExactMetricValue)", per_level=True,
        minimum=1),
    Key("MovingImageDerivativeScales", "float", None, "multiply the moving image's gradient by these, one per world "
        "axis (e.g. 1 1 0: no motion along z is driven by the metric); absent axes 1", multi=True),
    Key("ScaleGradientWithRespectToMovingImageOrientation", "bool", False, "apply MovingImageDerivativeScales along "
        "the moving image's own axes instead of the world axes", per_level=True),
)


class MeanSquares(IntensityMetric):
    """AdvancedMeanSquares: mean (f - m)^2, optionally divided by the product of intensity ranges."""

    elastix_name = "AdvancedMeanSquares"
    keys = (Key("UseNormalization", "bool", False, "MeanSquares: divide by the squared intensity range", per_level=True),
            ) + _ELASTIX_ONLY

    def __init__(self, normalization: float = 1.0):
        self.normalization = normalization

    def configure(self, context: LevelContext) -> None:
        self.normalization = 1.0
        if context.view.get("UseNormalization"):
            fixed, moving = context.fixed.data, context.moving.data
            span = float(fixed.max() - fixed.min()) * float(moving.max() - moving.min())
            self.normalization = max(span, 1e-12)

    def linear_settings(self):
        return "mean_squares", self.normalization

    def __call__(self, f, m):
        return ((f - m) ** 2).mean() / self.normalization

    def value_and_derivative(self, f, m):
        diff = m - f
        n = f.shape[0]
        return (diff * diff).sum() / (n * self.normalization), 2.0 * diff / (n * self.normalization)


class NormalizedCorrelation(IntensityMetric):
    """AdvancedNormalizedCorrelation: -sum(f' m') / sqrt(sum f'^2 sum m'^2), primes = minus means."""

    elastix_name = "AdvancedNormalizedCorrelation"
    keys = (Key("SubtractMean", "bool", True, "NormalizedCorrelation: subtract the means", per_level=True),) + _ELASTIX_ONLY

    def __init__(self, subtract_mean: bool = True):
        self.subtract_mean = subtract_mean

    def configure(self, context: LevelContext) -> None:
        self.subtract_mean = context.view.get("SubtractMean")

    def linear_settings(self):
        return "normalized_correlation", self.subtract_mean

    def __call__(self, f, m):
        if self.subtract_mean:
            f = f - f.mean()
            m = m - m.mean()
        denom = torch.sqrt((f * f).sum() * (m * m).sum()).clamp_min(1e-12)
        return -(f * m).sum() / denom

    def value_and_derivative(self, f, m):
        if self.subtract_mean:
            f = f - f.mean()
            m = m - m.mean()
        sff, smm, sfm = (f * f).sum(), (m * m).sum().clamp_min(1e-12), (f * m).sum()
        root = torch.sqrt(sff * smm).clamp_min(1e-12)
        value = -sfm / root
        derivative = -(f / root - sfm * m / (root * smm))
        return value, derivative


class _Binning:
    """elastix's Parzen binning of one image's intensities (ParzenWindowHistogramImageToImageMetric):
    range widened by ``ratio``, ``order // 2`` padding bins, hard (fixed) or exponential (moving)
    limiter beyond the true range. Binning values is compute's (``compute.parzen_joint``)."""

    def __init__(self, value_range, bins: int, order: int, ratio: float, soft: bool):
        true_min, true_max = float(value_range[0]), float(value_range[1])
        spread = true_max - true_min
        self.true_min, self.true_max = true_min, true_max
        self.min, self.max = true_min - ratio * spread, true_max + ratio * spread
        self.bins, self.order, self.soft = bins, order, soft
        pad = order // 2
        small = 0.001 * (self.max - self.min) / (bins - 2 * pad - 1)
        self.binsize = max((self.max - self.min + 2 * small) / (bins - 2 * pad - 1), 1e-12)
        self.nmin = (self.min - small) / self.binsize - pad


class ParzenHistogram:
    """Joint histogram p(i, j) = (1/N) sum_s w_f(i - term_f(s)) w_m(j - term_m(s)) with B-spline Parzen windows."""

    def __init__(self, fixed_range, moving_range, fixed_bins: int = 32, moving_bins: int = 32,
                 fixed_order: int = 0, moving_order: int = 3, fixed_limit_ratio: float = 0.01,
                 moving_limit_ratio: float = 0.01):
        self.fixed = _Binning(fixed_range, fixed_bins, fixed_order, fixed_limit_ratio, soft=False)
        self.moving = _Binning(moving_range, moving_bins, moving_order, moving_limit_ratio, soft=True)

    def joint(self, f, m, derivative: bool = False):
        """p (Bf, Bm) and the taps ``contract`` needs (compute.parzen_joint)."""
        return compute.parzen_joint(self.fixed, self.moving, f, m, derivative)

    def contract(self, dvalue_dp: torch.Tensor, parts: compute.ParzenParts, n: int) -> torch.Tensor:
        """d value / d m_s = (1/N) sum_ij dvalue/dp_ij w_f(i, s) w_m'(j, s)."""
        return compute.parzen_contract(dvalue_dp, parts, n)


def _xlogx_sum(p):
    return (p * torch.log(p.clamp_min(1e-16))).sum()


_HISTOGRAM_KEYS = (
    Key("NumberOfHistogramBins", "int", 32, "Mattes MI / NMI: histogram bins", per_level=True, minimum=4),
    Key("NumberOfFixedHistogramBins", "int", None, "Mattes MI: fixed-image bins (default NumberOfHistogramBins)",
        per_level=True, minimum=4),
    Key("NumberOfMovingHistogramBins", "int", None, "Mattes MI: moving-image bins (default NumberOfHistogramBins)",
        per_level=True, minimum=4),
    Key("FixedKernelBSplineOrder", "int", 0, "Mattes MI: fixed Parzen window B-spline order",
        per_level=True, minimum=0, maximum=3),
    Key("MovingKernelBSplineOrder", "int", 3, "Mattes MI: moving Parzen window B-spline order",
        per_level=True, minimum=0, maximum=3),
    Key("FixedLimitRangeRatio", "float", 0.01, "Mattes MI: fixed intensity range widening", per_level=True, minimum=0),
    Key("MovingLimitRangeRatio", "float", 0.01, "Mattes MI: moving intensity range widening",
        per_level=True, minimum=0),
) + _ELASTIX_ONLY


def histogram_for_level(context: LevelContext) -> ParzenHistogram:
    """The Parzen joint histogram over the intensity ranges of this level's images (fixed: inside its mask)."""
    view, fixed, moving = context.view, context.fixed, context.moving
    fvals = fixed.data[0][context.fixed_mask] if context.fixed_mask is not None else fixed.data[0]
    bins = view.get("NumberOfHistogramBins")
    return ParzenHistogram((float(fvals.min()), float(fvals.max())), (float(moving.data.min()), float(moving.data.max())),
                           view.get("NumberOfFixedHistogramBins") or bins, view.get("NumberOfMovingHistogramBins") or bins,
                           view.get("FixedKernelBSplineOrder"), view.get("MovingKernelBSplineOrder"),
                           view.get("FixedLimitRangeRatio"), view.get("MovingLimitRangeRatio"))


class MattesMutualInformation(IntensityMetric):
    """AdvancedMattesMutualInformation: -sum p(i,j) log(p(i,j) / (p_f(i) p_m(j)))."""

    elastix_name = "AdvancedMattesMutualInformation"
    keys = _HISTOGRAM_KEYS

    def __init__(self, histogram: ParzenHistogram | None = None):
        self.histogram = histogram

    def configure(self, context: LevelContext) -> None:
        self.histogram = histogram_for_level(context)

    def linear_settings(self):
        return "mattes_mi", self.histogram

    def __call__(self, f, m):
        return self._value(self.histogram.joint(f, m)[0])[0]

    @staticmethod
    def _value(p):
        pf, pm = p.sum(1), p.sum(0)
        outer = pf[:, None] * pm[None, :]
        keep = (p > 1e-16) & (outer > 1e-16)
        log_ratio = torch.where(keep, torch.log(p.clamp_min(1e-16)) - torch.log(outer.clamp_min(1e-16)), torch.zeros_like(p))
        return -(p * log_ratio).sum(), keep, pm

    def value_and_derivative(self, f, m):
        p, parts = self.histogram.joint(f, m, derivative=True)
        value, keep, pm = self._value(p)
        # d(-MI)/dp_ij = -(log p_ij - log pm_j); the fixed marginal does not depend on m
        dvalue_dp = torch.where(keep, -(torch.log(p.clamp_min(1e-16)) - torch.log(pm.clamp_min(1e-16))[None, :]),
                                torch.zeros_like(p))
        return value, self.histogram.contract(dvalue_dp, parts, f.shape[0]).to(m.dtype)


class NormalizedMutualInformation(IntensityMetric):
    """NormalizedMutualInformation: -(H(f) + H(m)) / H(f, m)."""

    elastix_name = "NormalizedMutualInformation"
    keys = _HISTOGRAM_KEYS

    def __init__(self, histogram: ParzenHistogram | None = None):
        self.histogram = histogram

    def configure(self, context: LevelContext) -> None:
        self.histogram = histogram_for_level(context)

    def __call__(self, f, m):
        p = self.histogram.joint(f, m)[0]
        hf, hm, hj = -_xlogx_sum(p.sum(1)), -_xlogx_sum(p.sum(0)), -_xlogx_sum(p)
        return -(hf + hm) / hj.clamp_min(1e-12)

    def value_and_derivative(self, f, m):
        p, parts = self.histogram.joint(f, m, derivative=True)
        pm = p.sum(0)
        hf, hm, hj = -_xlogx_sum(p.sum(1)), -_xlogx_sum(pm), -_xlogx_sum(p)
        hj = hj.clamp_min(1e-12)
        value = -(hf + hm) / hj
        # dH_m/dp_ij = -log pm_j - 1, dH_j/dp_ij = -log p_ij - 1 (the -1 terms cancel: sum_ij dp_ij = 0)
        log_pm = torch.log(pm.clamp_min(1e-16))[None, :]
        log_p = torch.log(p.clamp_min(1e-16))
        dvalue_dp = (log_pm * hj - (hf + hm) * log_p) / (hj * hj)
        dvalue_dp = torch.where(p > 1e-16, dvalue_dp, torch.zeros_like(p))
        return value, self.histogram.contract(dvalue_dp, parts, f.shape[0]).to(m.dtype)

