"""Image samplers: where in the fixed image the metric is evaluated (elastix's ImageSampler).

``Full``: every voxel; ``Grid``: every ``SampleGridSpacing``-th voxel; ``Random``: random voxels;
``RandomCoordinate``: random continuous positions (a random voxel plus a uniform offset inside
it). All honour the fixed mask and return world points (N, D). Cost per draw is proportional
to the number of samples, never to the image size.
"""
from __future__ import annotations

import numpy as np
import torch

from . import compute
from .errors import ImageError
from .geometry import Grid

SAMPLERS = ("Full", "Grid", "Random", "RandomCoordinate")


class ImageSampler:
    def __init__(self, kind: str, grid: Grid, mask: torch.Tensor | None = None, number_of_samples: int = 2000,
                 grid_spacing=(2,), generator: torch.Generator | None = None, device=None,
                 dtype: torch.dtype = torch.float32, grid_start=(0,)):
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind}")
        self.kind, self.grid, self.n = kind, grid, int(number_of_samples)
        self.generator = generator
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        voxels = torch.ones(grid.shape, dtype=torch.bool) if mask is None else mask.to("cpu").bool()
        if kind == "Grid":
            step = np.broadcast_to(np.asarray(grid_spacing, dtype=int), (grid.dim,))
            keep = torch.zeros_like(voxels)
            start = np.broadcast_to(np.asarray(grid_start, dtype=int), (grid.dim,))
            keep[tuple(slice(int(a), None, int(s)) for a, s in zip(reversed(start), reversed(step)))] = True
            voxels = voxels & keep
        flat = torch.nonzero(voxels.reshape(-1)).reshape(-1)
        if flat.numel() == 0:
            raise ImageError("the fixed mask is empty at this resolution: no voxel to sample; check the mask "
                             "(it must overlap the fixed image and have non-zero voxels)")
        self._candidates = flat.to(self.device)

    @property
    def number_of_candidates(self) -> int:
        return self._candidates.numel()

    def sample(self, n: int | None = None) -> torch.Tensor:
        """World points (N, D) of this draw."""
        if self.kind in ("Full", "Grid"):
            return self.grid.index_to_world(self.grid.unravel(self._candidates).to(self.dtype))
        n = self.n if n is None else n
        pick = torch.randint(0, self._candidates.numel(), (n,), generator=self.generator, device="cpu").to(self.device)
        jitter = None
        if self.kind == "RandomCoordinate":
            jitter = torch.rand((n, self.grid.dim), generator=self.generator, dtype=self.dtype, device="cpu") - 0.5
        return compute.voxel_world_points(self.grid, self._candidates[pick], jitter, self.dtype)


def exact_gradient_sampler(grid: Grid, mask: torch.Tensor | None, number_of_samples: int, device=None,
                           dtype: torch.dtype = torch.float32) -> ImageSampler:
    """elastix's sampler for ASGD's 'exact' gradients: a grid over the bounding box of the fixed
    mask (or the whole image) with the isotropic voxel step round((box voxels / N)^(1/D)), at least 1."""
    if mask is None:
        lo, size = np.zeros(grid.dim, dtype=int), np.asarray(grid.size)
    else:
        where = torch.nonzero(mask.to("cpu")).numpy()[:, ::-1]  # x-y-z order
        lo = where.min(axis=0)
        size = where.max(axis=0) - lo + 1
    step = max(1, int(np.floor((np.prod(size.astype(np.float64)) / max(number_of_samples, 1)) ** (1.0 / grid.dim) + 0.5)))
    return ImageSampler("Grid", grid, mask, grid_spacing=(step,), device=device, dtype=dtype, grid_start=tuple(lo))
