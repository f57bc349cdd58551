"""Transform penalties (elastix's TransformBendingEnergyPenalty)."""
from __future__ import annotations

import torch

from ..transforms import BSplineTransform, CombinationTransform, Transform


def _spline_and_pullback(transform: Transform, points: torch.Tensor):
    """(the optimised transform, where it is evaluated, the initial transform's Jacobian or None)."""
    if isinstance(transform, CombinationTransform) and transform.how == "Compose":
        return transform.current, transform.initial.map(points), transform.initial.spatial_jacobian(points)
    if isinstance(transform, CombinationTransform):
        return transform.current, points, None
    return transform, points, None


class BendingEnergyPenalty:
    """Mean over samples of sum_{k,i,j} (d^2 T_k / dx_i dx_j)^2 (zero for linear transforms).

    For a B-spline composed after a linear initial transform A, the Hessian is that of the
    B-spline at A(x) pulled back through A; a non-linear initial transform's own curvature is a
    constant of the optimisation and is not included.
    """

    elastix_name = "TransformBendingEnergyPenalty"

    def value_and_gradient(self, transform: Transform, points: torch.Tensor):
        """(value, d value / d current parameters) at fixed points (N, D), in closed form
        (``bending_energy_value_and_gradient``; the tests check it against autograd)."""
        return bending_energy_value_and_gradient(transform, points)


def bending_energy_value_and_gradient(transform: Transform, points: torch.Tensor):
    """The penalty's value and its gradient w.r.t. the (current) B-spline coefficients in closed
    form. With A = du/dx (times the initial transform's Jacobian when composed), the world Hessian
    is H = A^T H_u A and H_u is linear in the coefficients, so the gradient is the index-space
    weights contracted with A (2 H / N) A^T."""
    current, at, pullback = _spline_and_pullback(transform, points)
    grad = torch.zeros(current.number_of_parameters, dtype=points.dtype, device=points.device)
    if not isinstance(current, BSplineTransform):
        return 0.0, grad
    flat, _, weights = current.hessian_weights(at)  # (N, K), (N, K, D, D) in index space
    n, k = flat.shape
    dim = current.dim
    a = current.grid.tensors(points.dtype, points.device).world_to_index.expand(n, dim, dim)
    if pullback is not None:
        a = a @ pullback.to(points.dtype)
    coef = current.parameters.to(points.dtype).reshape(dim, -1).index_select(1, flat.reshape(-1)).reshape(dim, n, k)
    hess_u = torch.einsum("dnk,nkef->ndef", coef, weights)
    hess = a.transpose(1, 2)[:, None] @ hess_u @ a[:, None]  # (N, D, D, D): A^T H_u A per output axis
    value = float((hess ** 2).sum()) / n
    d_hess_u = a[:, None] @ (hess * (2.0 / n)) @ a.transpose(1, 2)[:, None]
    per_tap = torch.einsum("ndef,nkef->dnk", d_hess_u, weights)
    grad = grad.reshape(dim, -1)
    grad.index_add_(1, flat.reshape(-1), per_tap.reshape(dim, -1))
    return value, grad.reshape(-1)
