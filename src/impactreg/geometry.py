"""Physical image grids: size, origin, spacing and direction, and index <-> world conversion.

Conventions (ITK's): world points are millimetres in LPS, stored as (..., D) arrays in x, y, z
order; continuous indices are also x, y, z ordered; a voxel with index i lies at
``origin + direction @ (spacing * i)``. Tensors holding voxel data are channel-first and in
torch order, (C, Z, Y, X) in 3D, so ``Grid.shape`` is ``size`` reversed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .errors import ImageError


@dataclass(frozen=True, eq=False)
class Grid:
    """The sampling lattice of an image in physical space (float64 geometry)."""

    size: tuple[int, ...]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        dim = len(size)
        spacing = np.asarray(self.spacing, dtype=np.float64).reshape(dim)
        origin = np.asarray(self.origin, dtype=np.float64).reshape(dim)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(dim, dim)
        if dim not in (2, 3):
            raise ImageError(f"only 2D and 3D images are supported, got a {dim}D grid")
        if any(s < 1 for s in size):
            raise ImageError(f"grid size {size} has an empty axis")
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise ImageError(f"grid spacing {tuple(spacing)} must be positive and finite")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ImageError(f"grid direction {direction.ravel().tolist()} is singular")
        for name, value in (("size", size), ("spacing", spacing), ("origin", origin), ("direction", direction)):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def identity(cls, size, spacing=None, origin=None) -> "Grid":
        dim = len(size)
        return cls(tuple(size), np.ones(dim) if spacing is None else spacing,
                   np.zeros(dim) if origin is None else origin, np.eye(dim))

    @property
    def dim(self) -> int:
        return len(self.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in torch order (Z, Y, X)."""
        return tuple(reversed(self.size))

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    @cached_property
    def index_to_world_matrix(self) -> np.ndarray:
        """A in p = origin + A @ index: direction @ diag(spacing)."""
        return _read_only(self.direction @ np.diag(self.spacing))

    @cached_property
    def world_to_index_matrix(self) -> np.ndarray:
        return _read_only(np.linalg.inv(self.index_to_world_matrix))

    def index_to_world(self, index):
        """Continuous indices (..., D), x-y-z order, to world points (numpy or torch)."""
        A, o = self.index_to_world_matrix, self.origin
        if isinstance(index, torch.Tensor):
            A_t = torch.tensor(A, dtype=index.dtype, device=index.device)
            o_t = torch.tensor(np.array(o), dtype=index.dtype, device=index.device)
            return index @ A_t.T + o_t
        return np.asarray(index, dtype=np.float64) @ A.T + o

    def world_to_index(self, points):
        """World points (..., D) to continuous indices (numpy or torch)."""
        M, o = self.world_to_index_matrix, self.origin
        if isinstance(points, torch.Tensor):
            M_t = torch.tensor(M, dtype=points.dtype, device=points.device)
            o_t = torch.tensor(np.array(o), dtype=points.dtype, device=points.device)
            return (points - o_t) @ M_t.T
        return (np.asarray(points, dtype=np.float64) - o) @ M.T

    def voxel_indices(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """Indices (N, D) of every voxel, x-y-z ordered, listed in torch memory order (X fastest)."""
        axes = [torch.arange(n, dtype=dtype, device=device) for n in self.shape]
        zyx = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([a.reshape(-1) for a in reversed(zyx)], dim=-1)

    def voxel_points(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """World points (N, D) of every voxel in torch memory order (X fastest)."""
        return self.index_to_world(self.voxel_indices(dtype=dtype, device=device))

    def corners(self) -> np.ndarray:
        """World positions (2^D, D) of the centres of the corner voxels."""
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.size], indexing="ij"))
        return self.index_to_world(corners.reshape(self.dim, -1).T)

    def extent_corners(self) -> np.ndarray:
        """World positions (2^D, D) of the outer corners of the voxel boxes (index -0.5, n-0.5)."""
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in self.size], indexing="ij"))
        return self.index_to_world(corners.reshape(self.dim, -1).T)

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        return (self.size == other.size
                and np.allclose(self.spacing, other.spacing, atol=tol, rtol=0)
                and np.allclose(self.origin, other.origin, atol=tol, rtol=0)
                and np.allclose(self.direction, other.direction, atol=tol, rtol=0))

    def __eq__(self, other) -> bool:
        return isinstance(other, Grid) and self.same_as(other, tol=0.0)

    def __repr__(self) -> str:
        def fmt(a):
            return "(" + ", ".join(f"{v:.6g}" for v in np.ravel(a)) + ")"
        return (f"Grid(size={self.size}, spacing={fmt(self.spacing)}, origin={fmt(self.origin)}, "
                f"direction={fmt(self.direction)})")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
