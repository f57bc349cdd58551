"""elastix's CorrespondingPointsEuclideanDistanceMetric: landmarks pull the transform.

The fixed landmarks x_i (``-fp``) should map onto the moving landmarks y_i (``-mp``): the value is
the mean Euclidean distance (1/n) sum_i ||y_i - T(x_i)|| in mm (not squared, as in elastix), over
the landmarks whose T(x_i) lies inside the moving mask (all without one). Its gradient is
-(1/n) sum_i u_i^T dT/dmu (x_i) with u_i the unit vector from T(x_i) to y_i (zero for a landmark
already on its target). The metric does not use the image samples.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .protocol import LevelContext, Metric, Samples

_EPSILON = torch.finfo(torch.float64).eps


class CorrespondingPointsEuclideanDistance(Metric):
    elastix_name = "CorrespondingPointsEuclideanDistanceMetric"
    uses_samples = False

    def begin_level(self, context: LevelContext) -> None:
        if context.fixed_points is None or context.moving_points is None:
            missing = " and ".join(flag for flag, points in (("-fp", context.fixed_points), ("-mp", context.moving_points))
                                   if points is None)
            raise InputError(f"{context.view.source + ': ' if context.view.source else ''}(Metric \"{self.elastix_name}\") "
                             f"needs corresponding landmarks: give {missing} (elastix point files; Python: "
                             f"fixed_points=, moving_points=)")
        self.fixed = context.fixed_points.to(device=context.device, dtype=torch.float64)
        self.moving = context.moving_points.to(device=context.device, dtype=torch.float64)
        self.moving_mask = context.moving_mask_interpolator()

    def value_and_gradient(self, transform, samples: Samples):
        mapped = transform.map(self.fixed)
        difference = self.moving - mapped
        counted = torch.ones(len(self.fixed), dtype=torch.bool, device=mapped.device)
        if self.moving_mask is not None:
            counted = self.moving_mask(mapped.to(torch.float32)).values[:, 0] > 0
        distance = difference.norm(dim=1)
        n = int(counted.sum())
        if n == 0:
            return 0.0, torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=mapped.device), 0
        value = float(distance[counted].sum()) / n
        pulls = counted & (distance > _EPSILON)
        unit = torch.where(pulls[:, None], difference / distance.clamp_min(_EPSILON)[:, None], torch.zeros_like(difference))
        gradient = transform.parameter_gradient(self.fixed, unit * (-1.0 / n))
        return value, gradient.to(torch.float64), n
