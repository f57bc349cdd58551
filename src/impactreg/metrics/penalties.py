"""Transform penalties (elastix's TransformBendingEnergyPenalty)."""
from __future__ import annotations

import torch

from .. import compute
from ..transforms import BSplineTransform, CombinationTransform, Transform
from .protocol import Metric, Samples

BENDING_BLOCK = 8192  # points per block of the bending energy: its weights take ~2 KiB x D^2 per point


def spline_and_pullback(transform: Transform, points: torch.Tensor):
    """(the optimised transform, where it is evaluated, the initial transform's Jacobian or None)."""
    if isinstance(transform, CombinationTransform) and transform.how == "Compose":
        return transform.current, transform.initial.map(points), transform.initial.spatial_jacobian(points)
    if isinstance(transform, CombinationTransform):
        return transform.current, points, None
    return transform, points, None


def bending_energy_value_and_gradient(transform: Transform, points: torch.Tensor):
    """Mean over samples of sum_{k,i,j} (d^2 T_k / dx_i dx_j)^2 (zero for linear transforms).

    For a B-spline composed after a linear initial transform A, the Hessian is that of the
    B-spline at A(x) pulled back through A; a non-linear initial transform's own curvature is a
    constant of the optimisation and is not included.

    The penalty's value and its gradient w.r.t. the (current) B-spline coefficients in closed
    form. With A = du/dx (times the initial transform's Jacobian when composed), the world Hessian
    is H = A^T H_u A and H_u is linear in the coefficients, so the gradient is the index-space
    weights contracted with A (2 H / N) A^T."""
    current = transform.current if isinstance(transform, CombinationTransform) else transform
    grad = torch.zeros(current.number_of_parameters, dtype=points.dtype, device=points.device)
    if not isinstance(current, BSplineTransform):
        return 0.0, grad
    n = points.shape[0]
    value = 0.0
    grad = grad.reshape(current.dim, -1)
    for block in torch.split(points, BENDING_BLOCK):  # the per-tap Hessian weights of all points at once need GBs
        value += _accumulate_bending_energy(current, transform, block, 2.0 / n, grad)
    return value / n, grad.reshape(-1)


def _accumulate_bending_energy(current, transform, points, scale: float, grad: torch.Tensor) -> float:
    """Adds ``scale`` x d/dcoef sum_n ||H_n||^2 / 2 over ``points`` into ``grad`` (D, coefficients); returns the sum."""
    _, at, pullback = spline_and_pullback(transform, points)
    dim = current.dim
    a = torch.tensor(current.grid.world_to_index_matrix, dtype=points.dtype, device=points.device)
    a = a @ pullback.to(points.dtype) if pullback is not None else a.expand(1, dim, dim)
    value, block_grad = compute.bending_energy(current.table, current.parameters, at, a, scale)
    grad += block_grad.reshape(dim, -1)
    return value


class BendingEnergyPenalty(Metric):
    """TransformBendingEnergyPenalty at the sample points (as elastix evaluates it)."""

    elastix_name = "TransformBendingEnergyPenalty"

    def value_and_gradient(self, transform, samples: Samples):
        value, gradient = bending_energy_value_and_gradient(transform, samples.points)
        return value, gradient.to(torch.float64), samples.points.shape[0]


class DisplacementMagnitudePenalty(Metric):
    """elastix's DisplacementMagnitudePenalty: the mean over the samples of ||T(x) - x||^2 (mm^2).

    T is the whole transform, initial transform included, so that with HowToCombineTransforms
    "Compose" it finds an inverse of the initial transform. A sample counts when T(x) lies inside
    the moving mask (all count without one); the gradient is (2 / n) sum (T(x) - x)^T dT/dmu.
    """

    elastix_name = "DisplacementMagnitudePenalty"

    def begin_level(self, context) -> None:
        self.moving_mask = context.moving_mask_interpolator()

    def value_and_gradient(self, transform, samples: Samples):
        points = samples.points
        displacement = transform.map(points) - points
        counted = points.shape[0]
        if self.moving_mask is not None:
            inside = self.moving_mask(points + displacement).values[:, 0] > 0
            displacement = displacement * inside[:, None].to(displacement.dtype)
            counted = int(inside.sum())
        scale = 1.0 / max(counted, 1)
        value = float((displacement.double() ** 2).sum()) * scale
        gradient = transform.parameter_gradient(points, displacement * (2.0 * scale))
        return value, gradient.to(torch.float64), counted
