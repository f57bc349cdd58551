"""One dense stage: features, the coarse discrete search, Adam on the field, the DeformationFieldTransform.

All work is in fixed space: the fixed feature grid G (from the features) holds the fixed maps and, warped
there by the initial transform A, the moving maps. The coarse stage pools both over cells of
ConvexGridSpacing and finds index offsets v (coupled-convex), so that T(x) ~ A(x + v(x)). The field grid
covers s(fixed image) (s = A for Compose, identity for Add) at DeformationFieldSpacing; Adam starts from
u(s(x)) = A(x + v(x)) - A(x) and refines u directly, so the transform written is the one optimised.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ImageError, ParameterError
from ..geometry import Grid
from ..image import Image
from ..transforms import CombinationTransform
from ..transforms.deformation_field import DeformationFieldTransform
from .adam import adam_refine, fine_points
from .costvolume import coupled_convex, cost_volume, inverse_consistent, smooth_cost
from .features import DenseFeatures, dense_features
from .sampling import covering_grid, index_offsets_to_world, inside_index, sample_at_index

CHUNK = 1 << 18


def _map(transform, points: torch.Tensor) -> torch.Tensor:
    if transform is None:
        return points
    with torch.no_grad():
        transform = transform.to(points.device)
        return torch.cat([transform.map(points[i:i + CHUNK]) for i in range(0, points.shape[0], CHUNK)])


def _warped_moving(features: DenseFeatures, start: torch.Tensor):
    """The moving maps sampled at A(x) for every voxel x of the fixed feature grid, and where they are valid."""
    grid = features.grid
    valid = torch.ones(start.shape[0], dtype=torch.bool, device=start.device)
    maps = []
    for pair in features.pairs:
        index = pair.moving.grid.world_to_index(start)
        valid &= inside_index(index, pair.moving.grid.shape)
        maps.append(sample_at_index(pair.moving.data, index.to(torch.float32)).reshape(-1, *grid.shape))
    if features.moving_mask is not None:
        mask = features.moving_mask
        index = mask.grid.world_to_index(start)
        valid &= inside_index(index, mask.grid.shape)
        valid &= sample_at_index(mask.data.to(torch.float32), index.to(torch.float32), mode="nearest")[0] > 0.5
    return maps, valid.reshape(grid.shape)


def _pool(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    pool = F.avg_pool3d if len(factors) == 3 else F.avg_pool2d
    return pool(x[None], factors, stride=factors, ceil_mode=True)[0]


def coarse_offsets(features: DenseFeatures, moving_maps, moving_valid, settings, log=None):
    """The coarse grid and the coupled-convex index offsets (D, *coarse shape) on it, in coarse voxels."""
    grid = features.grid
    factors = tuple(int(max(1, round(settings.grid_spacing / s))) for s in reversed(grid.spacing))  # torch order
    shape = tuple(math.ceil(n / f) for n, f in zip(grid.shape, factors))
    coarse = grid.shrunk(tuple(reversed(factors)), centred=False, size=tuple(reversed(shape)))
    fixed_c = [_pool(p.fixed, factors) for p in features.pairs]
    moving_c = [_pool(m, factors) for m in moving_maps]
    fixed_valid = _pool(features.fixed_valid[None].float(), factors)[0] > 0.5
    moving_valid_c = _pool(moving_valid[None].float(), factors)[0] > 0.5
    distances = [p.distance for p in features.pairs]
    weights = [p.weight for p in features.pairs]
    r = settings.radius

    def solve(a, b, b_valid, a_valid):
        cost = cost_volume(a, b, b_valid, distances, weights, r)
        cost = torch.where(a_valid[None], cost, torch.zeros_like(cost))  # no data: the coupling decides
        return coupled_convex(smooth_cost(cost), r, settings.couplings)

    forward = solve(fixed_c, moving_c, moving_valid_c, fixed_valid)
    if settings.symmetric:
        backward = solve(moving_c, fixed_c, fixed_valid, moving_valid_c)
        forward = inverse_consistent(forward, backward, settings.consistency_iterations)
    return coarse, forward


def field_grid(pm, fixed: Image, features: DenseFeatures, initial, how: str) -> Grid:
    """The grid of the written field: fixed-image axes, DeformationFieldSpacing (default: twice the feature
    grid's, as ConvexAdam optimises its field at half resolution), covering s(fixed image box) with a margin."""
    dim = fixed.dim
    spacing = pm.values("DeformationFieldSpacing")
    if spacing is not None and len(spacing) not in (1, dim):
        raise ParameterError(f"(DeformationFieldSpacing ...) needs 1 or {dim} values, got {len(spacing)}")
    spacing = np.broadcast_to(np.asarray(spacing if spacing else 2 * features.grid.spacing, dtype=np.float64), (dim,))
    box = np.concatenate([fixed.grid.extent_corners(), fixed.grid.shrunk(4, centred=True).border_voxel_points()])
    if initial is not None and how == "Compose":
        box = _map(initial, torch.from_numpy(box)).numpy()
    return covering_grid(box, spacing, fixed.grid.direction)


def initial_field(grid: Grid, coarse: Grid, offsets: torch.Tensor, initial, how: str) -> torch.Tensor:
    """u on ``grid`` (D, *shape) mm with u(s(x)) = A(x + v(x)) - A(x) for the coarse offsets v."""
    y = grid.voxel_points(device=offsets.device)
    x = y if initial is None or how != "Compose" else initial.to(y.device).inverse_map(y)
    world = index_offsets_to_world(coarse, offsets.to(torch.float64))
    v = sample_at_index(world, coarse.world_to_index(x)).T
    u = _map(initial, x + v) - _map(initial, x)
    return u.T.reshape(grid.dim, *grid.shape).to(torch.float32)


def run_dense(pm, fixed: Image, moving: Image, fixed_mask, moving_mask, initial, optimizer, device, generator,
              base=None, memory=None, progress=None, on_iteration=None):
    """(the stage's DeformationFieldTransform, the Adam losses, settings for the log)."""
    metric = pm.values("Metric")[0]
    settings = optimizer.settings(pm)
    how = pm.get("HowToCombineTransforms")
    features = dense_features(pm, metric, fixed, moving, fixed_mask, moving_mask, device, base, memory)
    grid = features.grid
    x = grid.voxel_points(device=torch.device(device))
    start = _map(initial, x)
    moving_maps, moving_valid = _warped_moving(features, start)
    if not bool((moving_valid & features.fixed_valid).any()):
        raise ImageError("the fixed and moving images do not overlap in physical space after the initial transform; "
                         "check their origins and directions, or give an initial transform (-t0)")
    coarse, offsets = coarse_offsets(features, moving_maps, moving_valid, settings)
    u_grid = field_grid(pm, fixed, features, initial, how)
    u0 = initial_field(u_grid, coarse, offsets, initial, how)
    where = start if how == "Compose" else x
    points = fine_points(features, start, where, u_grid)
    u, values = adam_refine(u0, u_grid, points, features, settings, generator, progress, on_iteration)
    order = pm.get("DeformationFieldInterpolationOrder")
    transform = DeformationFieldTransform(Image(u, u_grid), order)
    info = {"feature voxels": grid.num_voxels, "coarse voxels": coarse.num_voxels, "field voxels": u_grid.num_voxels}
    return transform, values, info


def run_dense_stage(pm, components, fixed, moving, fixed_mask, moving_mask, initial, run, on_iteration=None):
    """A whole dense stage: (the final transform, initial transform composed, the Adam losses, settings)."""
    if pm.get("Transform") != "DeformationFieldTransform":
        raise ParameterError("(Registration \"DenseRegistration\") optimises (Transform \"DeformationFieldTransform\"); "
                             f"got (Transform \"{pm.get('Transform')}\")")
    base = Path(pm.source).parent if pm.source and Path(pm.source).is_file() else None
    current, values, info = run_dense(pm, fixed, moving, fixed_mask, moving_mask, initial, components.optimizer,
                                      run.device, run.generator, base, run.memory, run.progress, on_iteration)
    how = pm.get("HowToCombineTransforms")
    final = current if initial is None else CombinationTransform(initial, current, how)
    return final, values, info
