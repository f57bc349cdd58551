"""B-spline free-form deformation: T(x) = x + sum_k c_k beta(u(x) - k), on a control-point grid.

The control grid is a ``Grid`` (elastix's GridSize, GridOrigin, GridSpacing, GridDirection).
Parameters are elastix's: all x coefficients, then all y (then all z), each in grid order with x
fastest. As in ITK, a point whose B-spline support does not lie wholly inside the control grid
is not displaced (and has zero parameter derivative).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import kernels
from ..geometry import Grid
from ..interpolation import bspline_kernel, bspline_kernel_derivative, bspline_kernel_second_derivative
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
        n = grid.dim * grid.num_voxels
        super().__init__(grid.dim, torch.zeros(n, dtype=torch.float64) if parameters is None else parameters)
        if self.parameters.numel() != n:
            raise ValueError(f"a B-spline transform on grid {grid.size} has {n} parameters, got {self.parameters.numel()}")

    @classmethod
    def over_image(cls, image_grid: Grid, spacing_mm, order: int = 3,
                   initial: Transform | None = None) -> "BSplineTransform":
        """A zero transform whose control grid covers ``image_grid`` at ``spacing_mm``, laid out as elastix does."""
        return cls(control_grid_for_image(image_grid, spacing_mm, order, initial), order)

    @property
    def num_coefficients(self) -> int:
        return self.grid.num_voxels

    def coefficients(self, parameters=None) -> torch.Tensor:
        """Coefficients as (D, [Z,] Y, X) displacement images in mm."""
        p = self.parameters if parameters is None else parameters
        return p.reshape(self.dim, *self.grid.shape)

    def _constants(self, device, dtype):
        key = (device, dtype)
        if getattr(self, "_const_key", None) != key:
            g = self.grid
            k = self.order + 1
            strides = np.cumprod((1,) + g.size[:-1])
            offsets = torch.zeros((k,) * self.dim, dtype=torch.long)
            for d in range(self.dim):
                shape = [1] * self.dim
                shape[d] = k
                offsets = offsets + (torch.arange(k) * int(strides[d])).reshape(shape)
            # offsets[kx, ky, kz] = kx + ky * sx + kz * sx * sy, flattened with the x tap slowest
            self._const = dict(
                w2i=torch.tensor(g.world_to_index_matrix, dtype=dtype, device=device),
                origin=torch.tensor(np.array(g.origin), dtype=dtype, device=device),
                taps=torch.arange(k, dtype=dtype, device=device),
                last_start=torch.tensor([n - 1 - self.order for n in g.size], dtype=dtype, device=device),
                strides=torch.tensor(strides, dtype=dtype, device=device),
                offsets=offsets.reshape(-1).to(device),
            )
            self._const_key = key
        return self._const

    def _support(self, points: torch.Tensor, derivative: bool = False):
        """Flat coefficient indices (N, K), weights (N, K), per-axis weights (N, D, k), their
        derivatives d/du (or None) and validity (N,). The last call's result is reused for the
        same points tensor (map and parameter_gradient of one iteration share it)."""
        cached = getattr(self, "_support_cache", None)
        if cached is not None and cached[0] is points and cached[1] == points._version and (cached[2][3] is not None or not derivative):
            return cached[2]
        c = self._constants(points.device, points.dtype)
        n = points.numel() // self.dim
        u = (points.reshape(-1, self.dim) - c["origin"]) @ c["w2i"].T
        start = torch.floor(u - (self.order - 1) / 2.0)
        t = (u - start)[:, :, None] - c["taps"]
        w = bspline_kernel(t, self.order)
        dw = bspline_kernel_derivative(t, self.order) if derivative else None
        valid = ((start >= 0) & (start <= c["last_start"])).all(dim=-1)
        first = (start * c["strides"]).sum(-1).long() * valid
        flat = first[:, None] + c["offsets"]
        weight = w[:, 0]
        for d in range(1, self.dim):
            weight = (weight[:, :, None] * w[:, d][:, None, :]).reshape(n, -1)
        result = (flat, weight, w, dw, valid)
        self._support_cache = (points, points._version, result)
        return result

    def _compiled(self, points, params, d_points=None):
        """T(points) (N, D), or with ``d_points`` the parameter gradient (P,), by the compiled kernel."""
        g = self.grid
        if getattr(self, "_kernel_grid", None) is None:
            self._kernel_grid = (np.asarray(g.size, dtype=np.int64), np.array(g.world_to_index_matrix),
                                 np.asarray(g.origin, dtype=np.float64))
        sizes, w2i, origin = self._kernel_grid
        pts = points.reshape(-1, self.dim).contiguous()
        if d_points is None:
            out = torch.empty_like(pts)
            kernels.bspline_map(params.detach().to(torch.float64).contiguous().numpy(), sizes, self.order, w2i, origin,
                                pts.numpy(), out.numpy())
            return out.reshape(points.shape)
        out = torch.zeros(self.number_of_parameters, dtype=torch.float64)
        kernels.bspline_scatter(out.numpy(), sizes, self.order, w2i, origin, pts.numpy(),
                                d_points.reshape(-1, self.dim).to(pts.dtype).contiguous().numpy())
        return out.to(d_points.dtype)

    def map(self, points, parameters=None):
        p = self._params(parameters, points)
        if kernels.usable(points, p):
            return self._compiled(points, p)
        flat, weight, _, _, valid = self._support(points)
        n, k = flat.shape
        coef = p.reshape(self.dim, -1).index_select(1, flat.reshape(-1)).reshape(self.dim, n, k)
        disp = torch.einsum("dnk,nk->nd", coef, weight * valid[:, None])
        return points + disp.reshape(points.shape)

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
        w2i = torch.tensor(self.grid.world_to_index_matrix, dtype=points.dtype, device=points.device)
        jac = d_disp_du @ w2i * valid[:, None, None].to(points.dtype)
        jac = jac + torch.eye(self.dim, dtype=points.dtype, device=points.device)
        return jac.reshape(*lead, self.dim, self.dim)

    def hessian_weights(self, points):
        """Flat coefficient indices (N, K), validity (N,) and index-space W (N, K, D, D) with
        d^2 T_d / du_e du_f = sum_k coef_d[k] W[n, k, e, f]; world units follow from
        u = world_to_index_matrix @ (x - origin)."""
        u = self.grid.world_to_index(points.reshape(-1, self.dim))
        start = torch.floor(u - (self.order - 1) / 2.0)
        taps = torch.arange(self.order + 1, device=u.device, dtype=u.dtype)
        t = u[:, :, None] - (start[:, :, None] + taps)
        kernels = [bspline_kernel(t, self.order), bspline_kernel_derivative(t, self.order),
                   bspline_kernel_second_derivative(t, self.order)]
        flat, _, _, _, valid = self._support(points)
        n = flat.shape[0]
        w_u = torch.zeros(n, flat.shape[1], self.dim, self.dim, dtype=points.dtype, device=points.device)
        for e in range(self.dim):
            for f in range(e, self.dim):
                orders = [int(a == e) + int(a == f) for a in range(self.dim)]
                w = kernels[orders[0]][:, 0]
                for a in range(1, self.dim):
                    w = (w[:, :, None] * kernels[orders[a]][:, a][:, None, :]).reshape(n, -1)
                w_u[:, :, e, f] = w
                w_u[:, :, f, e] = w
        return flat, valid, w_u * valid[:, None, None, None].to(points.dtype)

    def spatial_hessian(self, points, parameters=None):
        """d^2 T_d / dx_i dx_j at points (N, D) -> (N, D, D, D), differentiable in the parameters."""
        flat, _, weights = self.hessian_weights(points)
        coef = self._params(parameters, points).reshape(self.dim, -1).index_select(1, flat.reshape(-1))
        hess_u = torch.einsum("dnk,nkef->ndef", coef.reshape(self.dim, *flat.shape), weights)
        w2i = torch.tensor(self.grid.world_to_index_matrix, dtype=points.dtype, device=points.device)
        return torch.einsum("ndef,ei,fj->ndij", hess_u, w2i, w2i)

    def parameter_gradient(self, points, d_points):
        if kernels.usable(points, d_points):
            return self._compiled(points, None, d_points)
        flat, weight, _, _, valid = self._support(points)
        weight = weight * valid[:, None].to(weight.dtype)
        grad = torch.zeros(self.dim, self.num_coefficients, dtype=d_points.dtype, device=d_points.device)
        contributions = d_points.T[:, :, None] * weight.to(d_points.dtype)[None]  # (D, N, K)
        grad.index_add_(1, flat.reshape(-1), contributions.reshape(self.dim, -1))
        return grad.reshape(-1)

    def parameter_jacobian(self, points):
        flat, weight, _, _, valid = self._support(points)
        weight = weight * valid[:, None].to(weight.dtype)
        return SparseJacobian(weight, flat, self.num_coefficients, self.dim)


def control_grid_for_image(image_grid: Grid, spacing_mm, order: int = 3,
                           initial: Transform | None = None) -> Grid:
    """The control grid elastix lays over a fixed image for a grid spacing in mm.

    The grid shares the image's direction. Along image axis i (N voxels of spacing s), it has
    ceil(N s / g) + order nodes at spacing g, centred on the voxel centres' extent (N - 1) s.
    With an initial transform (composed before the B-spline), elastix first replaces the image
    box by the bounding box, in image-axis coordinates, of the mapped border voxels, scaling s
    and g by the same factor per axis; this is reproduced here.
    """
    dim = image_grid.dim
    n = np.asarray(image_grid.size, dtype=np.float64)
    s = image_grid.spacing.astype(np.float64).copy()
    o = image_grid.origin.astype(np.float64).copy()
    D = image_grid.direction
    g = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (dim,)).copy()
    if initial is not None:
        border = _border_voxel_points(image_grid)
        with torch.no_grad():
            mapped = initial.map(torch.from_numpy(border)).numpy()
        q = mapped @ np.linalg.inv(D).T
        lo, hi = q.min(axis=0), q.max(axis=0)
        ratio = np.where(n > 1, (hi - lo) / np.maximum(s * (n - 1), 1e-300), 1.0)
        o = np.where(n > 1, D @ lo, o)
        s, g = s * ratio, g * ratio
    size = np.array([int(math.ceil(n[i] * s[i] / g[i])) + order for i in range(dim)])
    local = o - ((size - 1) * g - (n - 1) * s) / 2.0
    origin = o + D @ (local - o)
    return Grid(tuple(int(v) for v in size), g, origin, D)


def _border_voxel_points(grid: Grid) -> np.ndarray:
    """World positions of every voxel with some index at 0 or N - 1."""
    index = grid.voxel_indices().numpy()
    size = np.asarray(grid.size)
    on_border = ((index == 0) | (index == size - 1)).any(axis=1)
    return grid.index_to_world(index[on_border])
