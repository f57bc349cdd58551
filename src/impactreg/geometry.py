"""Physical image grids: size, origin, spacing and direction, and all grid arithmetic.

Conventions (ITK's): world points are millimetres in LPS, stored as (..., D) arrays in x, y, z
order; continuous indices are also x, y, z ordered; a voxel with index i lies at
``origin + direction @ (spacing * i)``. Tensors holding voxel data are channel-first and in
torch order, (C, Z, Y, X) in 3D, so ``Grid.shape`` is ``size`` reversed; flat voxel indices run
x fastest (``Grid.strides``).

Everything derived from a grid is written here once: the index <-> world matrices (numpy, and
torch per dtype and device, both cached), the centre, and the grids made from a grid (shrunk
pyramid levels, voxel-size grids, regions, B-spline control grids).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch

from .errors import ImageError


class GridTensors(NamedTuple):
    """A grid's geometry as torch tensors of one dtype and device."""

    index_to_world: torch.Tensor  # (D, D): direction @ diag(spacing)
    world_to_index: torch.Tensor  # (D, D): its inverse
    origin: torch.Tensor  # (D,)
    size: torch.Tensor  # (D,) int64, x-y-z order
    strides: torch.Tensor  # (D,) int64: Grid.strides


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

    @cached_property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    @cached_property
    def strides(self) -> tuple[int, ...]:
        """Flat-index step of each axis (x, y[, z]): voxel i is at flat index sum(i * strides), x fastest."""
        return tuple(int(v) for v in np.cumprod((1,) + self.size[:-1]))

    @property
    def centre(self) -> np.ndarray:
        """World position (D,) of the centre of the voxel centres' extent, index (size - 1) / 2."""
        return self.index_to_world((np.asarray(self.size) - 1) / 2.0)

    @cached_property
    def index_to_world_matrix(self) -> np.ndarray:
        """A in p = origin + A @ index: direction @ diag(spacing)."""
        return _read_only(self.direction @ np.diag(self.spacing))

    @cached_property
    def world_to_index_matrix(self) -> np.ndarray:
        return _read_only(np.linalg.inv(self.index_to_world_matrix))

    def tensors(self, dtype: torch.dtype = torch.float64, device=None) -> GridTensors:
        """The index <-> world matrices and the origin as tensors (cached per dtype and device)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        cache = self.__dict__.setdefault("_tensors", {})
        found = cache.get((dtype, device))
        if found is None:
            found = cache[(dtype, device)] = GridTensors(
                torch.tensor(self.index_to_world_matrix, dtype=dtype, device=device),
                torch.tensor(self.world_to_index_matrix, dtype=dtype, device=device),
                torch.tensor(np.array(self.origin), dtype=dtype, device=device),
                torch.tensor(self.size, device=device), torch.tensor(self.strides, device=device))
        return found

    def unravel(self, flat: torch.Tensor) -> torch.Tensor:
        """Voxel indices (N, D) int64, x-y-z order, of flat voxel indices (N,) (x fastest)."""
        t = self.tensors(device=flat.device)
        return (flat[:, None] // t.strides) % t.size

    def index_to_world(self, index):
        """Continuous indices (..., D), x-y-z order, to world points (numpy or torch, same dtype)."""
        if isinstance(index, torch.Tensor):
            t = self.tensors(index.dtype, index.device)
            return index @ t.index_to_world.T + t.origin
        return np.asarray(index, dtype=np.float64) @ self.index_to_world_matrix.T + self.origin

    def world_to_index(self, points):
        """World points (..., D) to continuous indices (numpy or torch, same dtype)."""
        if isinstance(points, torch.Tensor):
            t = self.tensors(points.dtype, points.device)
            return (points - t.origin) @ t.world_to_index.T
        return (np.asarray(points, dtype=np.float64) - self.origin) @ self.world_to_index_matrix.T

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

    # grids made from this grid ------------------------------------------------------------

    def region(self, start, size=None) -> "Grid":
        """The grid whose voxel 0 is this grid's (continuous) index ``start`` (x, y[, z]), same
        spacing and direction; ``size`` defaults to this grid's."""
        start = np.asarray(start, dtype=np.float64)
        return Grid(self.size if size is None else tuple(int(n) for n in size), self.spacing,
                    self.index_to_world(start), self.direction)

    def shrunk(self, factors, centred: bool, size=None) -> "Grid":
        """The grid of an image shrunk by ``factors`` (x, y[, z]): spacing x factor, size
        max(1, floor(size / factor)) unless ``size`` is given. ``centred`` keeps the physical
        centre (ITK's ShrinkImageFilter); otherwise the first output voxel covers the first block
        of input voxels (elastix's generic pyramid, a network layer of that stride: origin +
        D (spacing_out - spacing_in) / 2)."""
        factors = np.broadcast_to(np.asarray(factors, dtype=np.float64), (self.dim,))
        n = np.asarray(self.size, dtype=np.float64)
        m = np.maximum(1, np.floor(n / factors)) if size is None else np.asarray(size)
        if centred:
            shift = (n - 1) / 2.0 - (m - 1) / 2.0 * factors
        else:
            shift = (factors - 1.0) / 2.0
        return Grid(tuple(int(v) for v in m), self.spacing * factors, self.index_to_world(shift), self.direction)

    def with_voxel_size(self, voxel_size, direction=None) -> "Grid":
        """A grid of whole voxels of ``voxel_size`` mm inside this grid's physical box (the voxel boxes,
        index -0.5 .. n - 0.5), along this grid's axes or those of ``direction``: per axis
        max(1, floor(extent / voxel size)) voxels, centred in the box, so no voxel centre lies outside
        it. Along another direction the box is the bounding box, in that direction's axes, of this
        grid's box: exact for flips and permutations of the axes; an oblique one covers corners
        outside this grid (for the caller to mark)."""
        direction = self.direction if direction is None else np.asarray(direction, dtype=np.float64)
        v = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (self.dim,))
        along = self.extent_corners() @ np.linalg.inv(direction).T  # coordinates along the target axes
        low, high = along.min(axis=0), along.max(axis=0)
        size = np.maximum(1, np.floor((high - low) / v + 1e-6)).astype(int)
        first = low + (high - low - size * v) / 2.0 + v / 2.0
        return Grid(tuple(int(s) for s in size), v, direction @ first, direction)

    def control_grid(self, spacing_mm, order: int = 3, initial=None) -> "Grid":
        """The B-spline control grid elastix lays over this (fixed image) grid for a grid spacing in mm.

        The grid shares the image's direction. Along image axis i (N voxels of spacing s), it has
        ceil(N s / g) + order nodes at spacing g, centred on the voxel centres' extent (N - 1) s.
        With an ``initial`` transform (composed before the B-spline; anything with ``map`` on
        (N, D) float64 tensors), elastix first replaces the image box by the bounding box, in
        image-axis coordinates, of the mapped border voxels, scaling s and g by the same factor
        per axis; this is reproduced here.
        """
        dim = self.dim
        n = np.asarray(self.size, dtype=np.float64)
        s = self.spacing.astype(np.float64).copy()
        o = self.origin.astype(np.float64).copy()
        D = self.direction
        g = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (dim,)).copy()
        if initial is not None:
            with torch.no_grad():
                mapped = initial.map(torch.from_numpy(self.border_voxel_points())).numpy()
            q = mapped @ np.linalg.inv(D).T
            lo, hi = q.min(axis=0), q.max(axis=0)
            ratio = np.where(n > 1, (hi - lo) / np.maximum(s * (n - 1), 1e-300), 1.0)
            o = np.where(n > 1, D @ lo, o)
            s, g = s * ratio, g * ratio
        size = np.array([int(math.ceil(n[i] * s[i] / g[i])) + order for i in range(dim)])
        local = o - ((size - 1) * g - (n - 1) * s) / 2.0
        origin = o + D @ (local - o)
        return Grid(tuple(int(v) for v in size), g, origin, D)

    def sample_step(self, samples: int, rounding=round) -> int:
        """The voxel step of a regular grid of about ``samples`` points over this grid (at least 1)."""
        return max(1, int(rounding((self.num_voxels / samples) ** (1 / self.dim))))

    def axis_direction(self) -> torch.Tensor:
        """The direction matrix rounded to the nearest signed permutation (int64): which world axis
        each array axis follows, as networks that know orientations take it."""
        return torch.tensor(np.round(self.direction), dtype=torch.int64)

    def border_voxel_points(self) -> np.ndarray:
        """World positions (M, D) of every voxel with some index at 0 or N - 1, each once, face by
        face (never listing the other voxels: a large image's voxel list would not fit)."""
        size = self.size
        faces = []
        for d in range(self.dim):
            axes = [sorted({0, size[d] - 1}) if e == d else range(1, size[e] - 1) if e < d else range(size[e])
                    for e in range(self.dim)]  # an earlier axis's ends are on that axis's faces already
            faces.append(np.stack(np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij"),
                                  axis=-1).reshape(-1, self.dim))
        return self.index_to_world(np.concatenate(faces))

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


def sizes_along(sizes, from_direction: np.ndarray, to_direction: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) given along the axes of ``from_direction``, seen along each axis of
    ``to_direction``: sqrt(sum_i ((f_i . t_j) s_i)^2); exact for flips and permutations of the axes."""
    cosines = np.asarray(from_direction, dtype=np.float64).T @ np.asarray(to_direction, dtype=np.float64)  # (i, j)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1, 1)
    return np.sqrt(((cosines * s) ** 2).sum(axis=0))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
