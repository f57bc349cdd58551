"""Transform penalties (elastix's TransformBendingEnergyPenalty)."""
from __future__ import annotations

import torch

from ..transforms import BSplineTransform, CombinationTransform, Transform


class BendingEnergyPenalty:
    """Mean over samples of sum_{k,i,j} (d^2 T_k / dx_i dx_j)^2 (zero for linear transforms).

    For a B-spline composed after a linear initial transform A, the Hessian is that of the
    B-spline at A(x) pulled back through A; a non-linear initial transform's own curvature is a
    constant of the optimisation and is not included.
    """

    elastix_name = "TransformBendingEnergyPenalty"

    def __call__(self, transform: Transform, points: torch.Tensor, parameters: torch.Tensor):
        current, at, pullback = transform, points, None
        if isinstance(transform, CombinationTransform):
            current = transform.current
            if transform.how == "Compose":
                at = transform.initial.map(points)
                pullback = transform.initial.spatial_jacobian(points)
        if not isinstance(current, BSplineTransform):
            return parameters.sum() * 0.0
        hess = current.spatial_hessian(at, parameters)  # (N, D, D, D)
        if pullback is not None:
            hess = torch.einsum("nkab,nai,nbj->nkij", hess, pullback, pullback)
        return (hess ** 2).sum(dim=(1, 2, 3)).mean()
