"""The cost of one level: the weighted sum of the stage's metrics, their gradients and the check
that enough samples counted."""
from __future__ import annotations

import torch

from ..metrics.protocol import Samples


class TooFewSamples(Exception):
    def __init__(self, found: int, wanted: int):
        self.found, self.wanted = found, wanted


class Cost:
    def __init__(self, metrics: list, weights: list[float], required_ratio: float):
        self.metrics, self.weights, self.required_ratio = metrics, weights, required_ratio

    def value_and_gradient(self, transform, samples: Samples, check: bool = True):
        """(weighted value, per-metric values, valid sample count, d value / d params (P,) float64)."""
        wanted = samples.points.shape[0]
        total = 0.0
        values = []
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=samples.points.device)
        n_valid = wanted
        for weight, metric in zip(self.weights, self.metrics):
            value, gradient, valid = metric.value_and_gradient(transform, samples)
            if metric.uses_samples:
                if (check and valid < self.required_ratio * wanted) or valid < 2:
                    raise TooFewSamples(valid, wanted)
                n_valid = min(n_valid, valid)
            grad = grad + weight * gradient
            values.append(value)
            total += weight * value
        return total, values, n_valid, grad

    def end_iteration(self, iteration: int) -> bool:
        """Every metric's end of iteration; True when one of them now computes other values."""
        changed = [bool(metric.end_iteration(iteration)) for metric in self.metrics]
        return any(changed)
