"""Intensity metrics on sampled values, elastix's names and sign conventions (lower is better).

Each metric is called with the fixed values f (N,) and the moving values m (N,) of the valid
samples; m carries the autograd graph back to the transform parameters.
"""
from __future__ import annotations

import torch

from ..interpolation import bspline_kernel


class MeanSquares:
    """AdvancedMeanSquares: mean (f - m)^2, optionally divided by the squared fixed range."""

    elastix_name = "AdvancedMeanSquares"

    def __init__(self, normalization: float = 1.0):
        self.normalization = normalization

    def __call__(self, f, m):
        return ((f - m) ** 2).mean() / self.normalization


class NormalizedCorrelation:
    """AdvancedNormalizedCorrelation: -sum(f' m') / sqrt(sum f'^2 sum m'^2), primes = minus means."""

    elastix_name = "AdvancedNormalizedCorrelation"

    def __init__(self, subtract_mean: bool = True):
        self.subtract_mean = subtract_mean

    def __call__(self, f, m):
        if self.subtract_mean:
            f = f - f.mean()
            m = m - m.mean()
        denom = torch.sqrt((f * f).sum() * (m * m).sum()).clamp_min(1e-12)
        return -(f * m).sum() / denom


class ParzenHistogram:
    """Joint histogram with B-spline Parzen windows (elastix's ParzenWindowHistogramImageToImageMetric)."""

    def __init__(self, fixed_range, moving_range, fixed_bins: int = 32, moving_bins: int = 32,
                 fixed_order: int = 0, moving_order: int = 3, fixed_limit_ratio: float = 0.01,
                 moving_limit_ratio: float = 0.01):
        self.fixed_bins, self.moving_bins = fixed_bins, moving_bins
        self.fixed_order, self.moving_order = fixed_order, moving_order
        self.fixed_min, self.fixed_scale, self.fixed_pad = self._binning(fixed_range, fixed_bins, fixed_order, fixed_limit_ratio)
        self.moving_min, self.moving_scale, self.moving_pad = self._binning(moving_range, moving_bins, moving_order, moving_limit_ratio)

    @staticmethod
    def _binning(value_range, bins, order, ratio):
        lo, hi = float(value_range[0]), float(value_range[1])
        width = max(hi - lo, 1e-12)
        lo, hi = lo - ratio * width, hi + ratio * width
        pad = order // 2 + 1 if order > 0 else 1  # keep the window support inside the histogram
        scale = (hi - lo) / max(bins - 2 * pad - 1, 1)
        return lo, scale, pad

    def _weights(self, values, vmin, scale, pad, bins, order):
        position = (values - vmin) / scale + pad  # continuous bin index
        position = position.clamp(pad, bins - 1 - pad)
        centres = torch.arange(bins, dtype=values.dtype, device=values.device)
        return bspline_kernel(centres[None, :] - position[:, None], order)  # (N, B)

    def joint(self, f, m):
        wf = self._weights(f, self.fixed_min, self.fixed_scale, self.fixed_pad, self.fixed_bins, self.fixed_order)
        wm = self._weights(m, self.moving_min, self.moving_scale, self.moving_pad, self.moving_bins, self.moving_order)
        joint = wf.T @ wm
        return joint / joint.sum().clamp_min(1e-12)


def _entropy(p):
    return -(p * torch.log(p.clamp_min(1e-30))).sum()


class MattesMutualInformation:
    """AdvancedMattesMutualInformation: -sum p(i,j) log(p(i,j) / (p_f(i) p_m(j)))."""

    elastix_name = "AdvancedMattesMutualInformation"

    def __init__(self, histogram: ParzenHistogram):
        self.histogram = histogram

    def __call__(self, f, m):
        p = self.histogram.joint(f, m)
        pf, pm = p.sum(1), p.sum(0)
        return -(_entropy(pf) + _entropy(pm) - _entropy(p))


class NormalizedMutualInformation:
    """NormalizedMutualInformation: -(H(f) + H(m)) / H(f, m)."""

    elastix_name = "NormalizedMutualInformation"

    def __init__(self, histogram: ParzenHistogram):
        self.histogram = histogram

    def __call__(self, f, m):
        p = self.histogram.joint(f, m)
        return -(_entropy(p.sum(1)) + _entropy(p.sum(0))) / _entropy(p).clamp_min(1e-12)


INTENSITY_METRICS = {c.elastix_name: c for c in (MeanSquares, NormalizedCorrelation, MattesMutualInformation,
                                                 NormalizedMutualInformation)}
