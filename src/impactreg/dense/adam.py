"""The fine stage: Adam on a displacement field u (mm, world axes) on its own grid, minimising the metric
between the fixed feature maps at x and the moving feature maps at T(x) plus a regulariser of u.

T(x) = A(x) + u(s(x)), with A the initial transform and s(x) = A(x) (HowToCombineTransforms "Compose",
elastix's current(initial(x))) or x ("Add"). The optimised parameters are smoothed by box filters before
use (``AdamFieldSmoothing``); with ``diffeomorphic`` they are a velocity field whose exponential (scaling
and squaring) is u. Samples whose T(x) leaves a moving feature map's field of view or the moving mask do
not count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..geometry import Grid
from ..metrics.distances import DISTANCES
from .components import DenseSettings
from .costvolume import compose_offsets
from .features import DenseFeatures
from .sampling import box_smooth, inside_index, sample_at_index, world_offsets_to_index


@dataclass
class FinePoints:
    """The fixed feature-grid voxels that count: their start A(x) and where the field is sampled."""

    start: torch.Tensor  # (N, D) A(x), world mm
    field_index: torch.Tensor  # (N, D) continuous index of s(x) in the field grid
    fixed: list[torch.Tensor]  # per feature pair, (C, N) fixed features at x

    def draw(self, count: int, generator: torch.Generator) -> "FinePoints":
        """``count`` of the points drawn uniformly (with replacement; all of them when count is 0 or too large)."""
        n = self.start.shape[0]
        if count <= 0 or count >= n:
            return self
        pick = torch.randint(n, (count,), generator=generator).to(self.start.device)
        return FinePoints(self.start[pick], self.field_index[pick], [f[:, pick] for f in self.fixed])


def fine_points(features: DenseFeatures, start: torch.Tensor, where: torch.Tensor, field_grid: Grid) -> FinePoints:
    keep = features.fixed_valid.reshape(-1)
    fixed = [p.fixed.reshape(p.fixed.shape[0], -1)[:, keep] for p in features.pairs]
    return FinePoints(start[keep].to(torch.float32), field_grid.world_to_index(where[keep]).to(torch.float32), fixed)


def field_from_parameters(params: torch.Tensor, grid: Grid, settings: DenseSettings) -> torch.Tensor:
    """The displacement field (D, *shape) in mm that parameters (D, *shape) stand for."""
    u = box_smooth(params, settings.smoothing)
    if settings.diffeomorphic:
        u = u / 2 ** settings.squaring_steps
        for _ in range(settings.squaring_steps):
            u = u + compose_offsets(u, world_offsets_to_index(grid, u))
    return u


def regularization(u: torch.Tensor, grid: Grid, kind: str) -> torch.Tensor:
    """Mean over the grid of the squared first (Diffusion) or second (Bending) derivatives of u, per mm."""
    dim = u.shape[0]
    spacing = [float(s) for s in reversed(grid.spacing)]  # torch axis order
    firsts = [torch.diff(u, dim=a + 1) / spacing[a] for a in range(dim)]
    if kind == "Diffusion":
        return sum((d ** 2).mean() for d in firsts)
    total = 0.0
    for a in range(dim):
        for b in range(a, dim):
            second = torch.diff(firsts[a], dim=b + 1) / spacing[b]
            total = total + (1 if a == b else 2) * (second ** 2).mean()
    return total


def moving_samples(features: DenseFeatures, mapped: torch.Tensor):
    """Per pair the moving features (C, N) at mapped points, and (N,) bool where every sample counts."""
    valid = torch.ones(mapped.shape[0], dtype=torch.bool, device=mapped.device)
    values = []
    for pair in features.pairs:
        index = pair.moving.grid.world_to_index(mapped)
        valid = valid & inside_index(index.detach(), pair.moving.grid.shape)
        values.append(sample_at_index(pair.moving.data, index))
    if features.moving_mask is not None:
        mask = features.moving_mask
        index = mask.grid.world_to_index(mapped.detach())
        inside = inside_index(index, mask.grid.shape)
        valid = valid & inside & (sample_at_index(mask.data.to(torch.float32), index, mode="nearest")[0] > 0.5)
    return values, valid


def adam_refine(initial_params: torch.Tensor, grid: Grid, points: FinePoints, features: DenseFeatures,
                settings: DenseSettings, generator: torch.Generator, progress: Callable | None = None,
                on_iteration: Callable | None = None) -> tuple[torch.Tensor, list[float]]:
    """(the displacement field (D, *shape) mm after Adam, the loss of every iteration). With
    ``settings.samples`` > 0 each iteration uses that many of the points, drawn with ``generator``."""
    params = initial_params.clone().to(torch.float32).requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=settings.learning_rate)
    values: list[float] = []
    bar = progress(total=settings.iterations, desc="dense Adam") if progress else None
    start = time.perf_counter()
    for k in range(settings.iterations):
        optimizer.zero_grad()
        u = field_from_parameters(params, grid, settings)
        draw = points.draw(settings.samples, generator)
        mapped = draw.start + sample_at_index(u, draw.field_index).T
        moving, valid = moving_samples(features, mapped)
        n_valid = int(valid.sum())
        similarity = torch.zeros((), dtype=torch.float32, device=mapped.device)
        if n_valid >= 2:
            for pair, f, m in zip(features.pairs, draw.fixed, moving):
                similarity = similarity + pair.weight * DISTANCES[pair.distance](f[:, valid].T, m[:, valid].T)
        penalty = regularization(u, grid, settings.regularizer)
        loss = similarity + settings.regularization_weight * penalty
        loss.backward()
        optimizer.step()
        values.append(float(loss.detach()))
        if on_iteration is not None:
            on_iteration(k, float(loss.detach()), [float(similarity.detach()), float(penalty.detach())],
                         float(params.grad.norm()), n_valid, time.perf_counter() - start)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"loss {values[-1]:.5g}", refresh=False)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        return field_from_parameters(params.detach(), grid, settings), values
