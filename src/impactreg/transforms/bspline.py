"""B-spline free-form deformation: T(x) = x + sum_k c_k beta(u(x) - k), on a control-point grid.

The control grid is a ``Grid`` (elastix's GridSize, GridOrigin, GridSpacing, GridDirection).
Parameters are elastix's: all x coefficients, then all y (then all z), each in grid order with x
fastest. As in ITK, a point whose B-spline support does not lie wholly inside the control grid
is not displaced (and has zero parameter derivative).
"""
from __future__ import annotations

import torch

from .. import compute
from ..geometry import Grid
from .base import SparseJacobian, Transform


class BSplineTransform(Transform):
    elastix_name = "BSplineTransform"

    def __init__(self, grid: Grid, order: int = 3, parameters=None):
        if order not in (1, 2, 3):
            raise ValueError(f"B-spline transform order must be 1, 2 or 3, got {order}")
        if any(n < order + 1 for n in grid.size):
            raise ValueError(f"control grid {grid.size} is too small for spline order {order}")
        self.grid = grid
        self.order = order
        self.table = compute.SplineTable(grid, order)
        n = grid.dim * grid.num_voxels
        super().__init__(grid.dim, torch.zeros(n, dtype=torch.float64) if parameters is None else parameters)
        if self.parameters.numel() != n:
            raise ValueError(f"a B-spline transform on grid {grid.size} has {n} parameters, got {self.parameters.numel()}")

    @classmethod
    def over_image(cls, image_grid: Grid, spacing_mm, order: int = 3,
                   initial: Transform | None = None) -> "BSplineTransform":
        """A zero transform whose control grid covers ``image_grid`` at ``spacing_mm``, laid out as elastix does."""
        return cls(image_grid.control_grid(spacing_mm, order, initial), order)

    @property
    def num_coefficients(self) -> int:
        return self.grid.num_voxels

    def coefficients(self, parameters=None) -> torch.Tensor:
        """Coefficients as (D, [Z,] Y, X) displacement images in mm."""
        p = self.parameters if parameters is None else parameters
        return p.reshape(self.dim, *self.grid.shape)

    def _support(self, points: torch.Tensor, derivative: bool = False):
        """Flat coefficient indices (N, K), weights (N, K), per-axis weights (N, D, k), their
        derivatives d/du (or None) and validity (N,); see compute.SplineTable.support."""
        return self.table.support(points, derivative)

    def map(self, points, parameters=None):
        return compute.bspline_map(self.table, self._params(parameters, points), points)

    def displacement(self, points, parameters=None):
        return self.map(points, parameters) - points

    def spatial_jacobian(self, points):
        lead = points.shape[:-1]
        flat, _, w, dw, valid = self._support(points, derivative=True)
        n = flat.shape[0]
        coef = self._params(None, points).reshape(self.dim, -1).index_select(1, flat.reshape(-1)).reshape(self.dim, n, -1)
        grads = []
        for e in range(self.dim):
            we = dw[:, 0] if e == 0 else w[:, 0]
            for d in range(1, self.dim):
                wd = dw[:, d] if d == e else w[:, d]
                we = (we[:, :, None] * wd[:, None, :]).reshape(n, -1)
            grads.append((coef * we).sum(-1).T)  # (N, D): d disp / d u_e
        d_disp_du = torch.stack(grads, dim=-1)  # (N, D, D_u)
        w2i = self.grid.tensors(points.dtype, points.device).world_to_index
        jac = d_disp_du @ w2i * valid[:, None, None].to(points.dtype)
        jac = jac + torch.eye(self.dim, dtype=points.dtype, device=points.device)
        return jac.reshape(*lead, self.dim, self.dim)

    def hessian_weights(self, points):
        """Flat coefficient indices (N, K), validity (N,) and index-space W (N, K, D, D) with
        d^2 T_d / du_e du_f = sum_k coef_d[k] W[n, k, e, f]; see compute.SplineTable.hessian_weights."""
        return self.table.hessian_weights(points)

    def spatial_hessian(self, points, parameters=None):
        """d^2 T_d / dx_i dx_j at points (N, D) -> (N, D, D, D), differentiable in the parameters."""
        flat, _, weights = self.hessian_weights(points)
        coef = self._params(parameters, points).reshape(self.dim, -1).index_select(1, flat.reshape(-1))
        hess_u = torch.einsum("dnk,nkef->ndef", coef.reshape(self.dim, *flat.shape), weights)
        w2i = self.grid.tensors(points.dtype, points.device).world_to_index
        return torch.einsum("ndef,ei,fj->ndij", hess_u, w2i, w2i)

    def parameter_gradient(self, points, d_points):
        return compute.bspline_scatter(self.table, points, d_points)

    def parameter_jacobian(self, points):
        flat, weight, _, _, valid = self._support(points)
        weight = weight * valid[:, None].to(weight.dtype)
        return SparseJacobian(weight, flat, self.num_coefficients, self.dim)
