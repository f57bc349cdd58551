"""The cost of one level: the weighted sum of the stage's metrics, their gradients and the check
that enough samples counted."""
from __future__ import annotations

import torch

from ..metrics.protocol import Samples


class TooFewSamples(Exception):
    def __init__(self, found: int, wanted: int, required_ratio: float = 0.0):
        self.found, self.wanted, self.required_ratio = found, wanted, required_ratio


class Cost:
    """``weights`` are fixed; ``relative`` (elastix's UseRelativeWeights) replaces them at every evaluation by
    relative[i] * |g_0| / |g_i| (1 where |g_i| <= 1e-10), gradients taken before scaling."""

    def __init__(self, metrics: list, weights: list[float], required_ratio: float, relative: list[float] | None = None):
        self.metrics, self.weights, self.required_ratio, self.relative = metrics, weights, required_ratio, relative

    def value_and_gradient(self, transform, samples: Samples, check: bool = True):
        """(weighted value, per-metric values, valid sample count, d value / d params (P,) float64)."""
        wanted = samples.points.shape[0]
        values, gradients = [], []
        n_valid = wanted
        for metric in self.metrics:
            value, gradient, valid = metric.value_and_gradient(transform, samples)
            if metric.uses_samples:
                if (check and valid < self.required_ratio * wanted) or valid < 2:
                    raise TooFewSamples(valid, wanted, self.required_ratio if check else 0.0)
                n_valid = min(n_valid, valid)
            values.append(value)
            gradients.append(gradient)
        weights = self.weights if self.relative is None else self._relative_weights(gradients)
        total = sum(w * v for w, v in zip(weights, values))
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=samples.points.device)
        for weight, gradient in zip(weights, gradients):
            grad = grad + weight * gradient
        return total, values, n_valid, grad

    def _relative_weights(self, gradients: list[torch.Tensor]) -> list[float]:
        norms = [float(g.norm()) for g in gradients]
        return [0.0 if r == 0.0 else (r * norms[0] / n if n > 1e-10 else 1.0) for r, n in zip(self.relative, norms)]

    def end_iteration(self, iteration: int) -> bool:
        """Every metric's end of iteration; True when one of them now computes other values."""
        changed = [bool(metric.end_iteration(iteration)) for metric in self.metrics]
        return any(changed)
