"""The model grid: the physical lattice (size, spacing, direction) a registration network works on.

A trained model records one grid shape (``ModelGrid``). For each pair it is placed with its centre on
the fixed image's centre (``pair_grid``); fixed and moving images are both sampled on that same grid,
so a voxel of the network's input is one world point in both images. The network's displacement
``ddf`` (B, D, [Z,] Y, X) is MONAI's: in voxels of that grid, channel i along tensor axis i (z, y, x
in 3D). ``world_displacement`` turns it into millimetres along the world axes (x, y, z), fixed ->
moving: T(p) = p + u(p) for p on the pair grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..filters import resample_to_grid
from ..geometry import Grid
from ..image import Image
from ..interpolation import Interpolator
from ..transforms.deformation_field import DeformationFieldTransform


@dataclass(frozen=True)
class ModelGrid:
    """Size (x, y[, z]), spacing (mm) and direction (row-major D x D) of the network's input grid."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:  # plain Python numbers: the model file is read with weights_only=True
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in np.ravel(self.spacing)))
        object.__setattr__(self, "direction", tuple(float(v) for v in np.ravel(self.direction)))
        if len(self.spacing) != self.dim or len(self.direction) != self.dim ** 2:
            raise InputError(f"model grid: {self.dim} sizes need {self.dim} spacings and {self.dim ** 2} direction values")

    @property
    def dim(self) -> int:
        return len(self.size)

    def as_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelGrid":
        return cls(tuple(int(v) for v in d["size"]), tuple(float(v) for v in d["spacing"]),
                   tuple(float(v) for v in d["direction"]))

    @classmethod
    def covering(cls, grids: list[Grid], spacing=None, multiple: int = 8, direction=None) -> "ModelGrid":
        """The smallest grid at ``spacing`` (default: the first grid's) whose extent, along the axes of
        ``direction`` (default: the first grid's), covers every grid's extent; each size a multiple of
        ``multiple`` (the network's total stride)."""
        first = grids[0]
        dim = first.dim
        d = np.asarray(first.direction if direction is None else direction, dtype=np.float64).reshape(dim, dim)
        s = np.broadcast_to(np.asarray(first.spacing if spacing is None else spacing, dtype=np.float64), (dim,))
        if np.any(s <= 0):
            raise InputError(f"model grid spacing {tuple(s)} must be positive")
        extent = np.zeros(dim)
        for g in grids:
            if g.dim != dim:
                raise InputError(f"the cohort mixes {dim}D and {g.dim}D images; train one model per dimension")
            local = g.extent_corners() @ d  # coordinates along the model axes (d orthonormal)
            extent = np.maximum(extent, local.max(0) - local.min(0))
        size = [int(math.ceil(max(e / sp - 1e-6, 1) / multiple) * multiple) for e, sp in zip(extent, s)]
        return cls(tuple(size), tuple(float(v) for v in s), tuple(float(v) for v in d.ravel()))


def pair_grid(model_grid: ModelGrid, fixed_grid: Grid) -> Grid:
    """The model grid placed with its centre on the fixed image's centre."""
    if fixed_grid.dim != model_grid.dim:
        raise InputError(f"the model works on {model_grid.dim}D images, got a {fixed_grid.dim}D image")
    size = np.asarray(model_grid.size, dtype=np.float64)
    spacing = np.asarray(model_grid.spacing)
    direction = np.asarray(model_grid.direction).reshape(model_grid.dim, model_grid.dim)
    origin = fixed_grid.centre - direction @ (spacing * (size - 1) / 2.0)
    return Grid(model_grid.size, spacing, origin, direction)


def on_grid(image: Image, grid: Grid, order: int = 1) -> torch.Tensor:
    """The image's first channel sampled on ``grid`` (zero outside the image): (1, [Z,] Y, X) float32."""
    return resample_to_grid(image.channel(0) if image.channels > 1 else image, grid, order=order).data.to(torch.float32)


def field_of_view(image: Image, grid: Grid) -> torch.Tensor:
    """(1, [Z,] Y, X) bool: the voxels of ``grid`` inside the image's buffer."""
    interp = Interpolator(Image(torch.ones((1,) + tuple(image.grid.shape)), image.grid), order=0)
    return interp.inside(grid.voxel_points()).reshape(1, *grid.shape)


def world_displacement(ddf: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(D, [Z,] Y, X) voxel displacements along tensor axes (MONAI's ddf of one pair) -> mm along the
    world axes x, y[, z] (float64)."""
    dim = grid.dim
    index_xyz = ddf.to(torch.float64).flip(0).reshape(dim, -1)  # tensor axes (z, y, x) -> index axes (x, y, z)
    a = grid.tensors(torch.float64, ddf.device).index_to_world
    return (a @ index_xyz).reshape(ddf.shape)


def voxel_displacement(world: torch.Tensor, grid: Grid) -> torch.Tensor:
    """The inverse of ``world_displacement``: mm along world axes -> MONAI ddf in voxels (float32)."""
    dim = grid.dim
    w = grid.tensors(torch.float64, world.device).world_to_index
    index_xyz = (w @ world.to(torch.float64).reshape(dim, -1)).reshape(world.shape)
    return index_xyz.flip(0).to(torch.float32)


def field_transform(ddf: torch.Tensor, grid: Grid, output_grid: Grid | None = None) -> DeformationFieldTransform:
    """The transform p -> p + u(p) of a pair's ddf, as a DeformationFieldTransform on ``output_grid``
    (default: the pair grid). The displacement is sampled linearly at the output voxels; beyond the pair
    grid it continues with the value at the grid's border."""
    world = world_displacement(ddf.detach().cpu(), grid)
    field = Image(world.to(torch.float32), grid, "float32")
    if output_grid is None or output_grid.same_as(grid, tol=1e-9):
        return DeformationFieldTransform(field, order=1)
    index = grid.world_to_index(output_grid.voxel_points())
    upper = torch.as_tensor(grid.size, dtype=torch.float64) - 1
    clamped = torch.minimum(index.clamp_min(0.0), upper)
    values = Interpolator(field, order=1, dtype=torch.float64)(grid.index_to_world(clamped)).values
    sampled = values.T.reshape(grid.dim, *output_grid.shape).to(torch.float32)
    return DeformationFieldTransform(Image(sampled, output_grid, "float32"), order=1)
