"""The coarse discrete stage: a cost volume of feature distances over a window of displacements on a
coarse grid, made smooth by coupled-convex optimisation, optionally inverse-consistent (ConvexAdam).

Both feature maps lie on the same coarse fixed-space grid (the moving maps warped there by the initial
transform), so a displacement of k coarse voxels is a shift of the moving array: the cost volume is the
distance between the fixed array and every shift in the window, (K, *shape), K = (2r + 1)^D,
computed as batched tensor views (one plane of the window at a time). Displacements are x-y-z index
offsets in coarse voxels.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from .sampling import box_smooth, sample_at_index

EPS = 1e-8


def voxel_distance(name: str, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-voxel distance between feature vectors along dim 0: (C, ...) x (C, ...) -> (...); lower is better.
    The per-sample forms of metrics.distances (NCC is a statistic over samples and has none)."""
    if name == "L1":
        return (f - m).abs().mean(0)
    if name == "L2":
        return ((f - m) ** 2).mean(0)
    if name == "DotProduct":
        return -(f * m).sum(0)
    if name == "Dice":
        return -2 * (f * m).sum(0) / ((f + m).sum(0) + EPS)
    cos = (f * m).sum(0) / (f.norm(dim=0) * m.norm(dim=0)).clamp_min(EPS)
    if name == "Cosine":
        return -cos
    if name == "L1Cosine":
        return -cos * torch.exp(-0.1 * (f - m).abs()).mean(0)
    raise ParameterError(f"IMPACT Distance {name!r} has no per-voxel form for the dense engine's cost volume; "
                         f"use L1, L2, Cosine, L1Cosine, Dice or DotProduct")


def window(radius: int, dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Every displacement of the search window, (K, D) x-y-z index offsets; k runs x fastest."""
    steps = range(-radius, radius + 1)
    zyx = torch.tensor(list(itertools.product(steps, repeat=dim)), dtype=dtype, device=device)
    return zyx.flip(-1)


def cost_volume(fixed: list[torch.Tensor], moving: list[torch.Tensor], moving_valid: torch.Tensor,
                distances: list[str], weights: list[float], radius: int) -> torch.Tensor:
    """cost[k, v] = sum_p w_p d_p(fixed_p[:, v], moving_p[:, v + offset_k]) for every voxel v and window
    offset k (``window`` order). Shifts that leave the arrays or land where ``moving_valid`` is false cost
    the mean of that voxel's valid shifts, so they neither attract nor repel (a voxel without any valid
    shift costs 0 everywhere)."""
    shape = tuple(fixed[0].shape[1:])
    dim = len(shape)
    side = 2 * radius + 1
    pad = [radius] * (2 * dim)
    valid_pad = F.pad(moving_valid[None].float(), pad)[0]
    total = torch.zeros((side ** dim,) + shape, dtype=torch.float32, device=fixed[0].device)
    valid_all = _shifted(valid_pad[None], radius, dim)[0].reshape((side ** dim,) + shape) > 0.5
    for f, m, name, w in zip(fixed, moving, distances, weights):
        views = _shifted(F.pad(m[None], pad, mode="replicate")[0], radius, dim)  # (C, *window, *shape) view
        planes = []
        for first in range(side):  # one plane of the window at a time bounds the memory
            planes.append(voxel_distance(name, f.reshape(f.shape[0], *([1] * (dim - 1)), *shape), views[:, first]))
        total += w * torch.stack(planes).reshape((side ** dim,) + shape)
    count = valid_all.sum(0, keepdim=True)
    mean = torch.where(valid_all, total, torch.zeros_like(total)).sum(0, keepdim=True) / count.clamp_min(1)
    return torch.where(valid_all, total, mean.expand_as(total))


def _shifted(padded: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """A (C, *padded shape) array as the view (C, *window (2r+1 per axis, z first), *shape) of its shifts."""
    side = 2 * radius + 1
    view = padded
    for axis in range(1, dim + 1):
        view = view.unfold(axis, side, 1)  # appends the window axis
    # (C, *shape, *window) -> (C, *window, *shape)
    order = [0] + list(range(dim + 1, 2 * dim + 1)) + list(range(1, dim + 1))
    return view.permute(order)


def smooth_cost(cost: torch.Tensor) -> torch.Tensor:
    """Each displacement's cost averaged over 3-voxel boxes (ConvexAdam's aggregation), then scaled to a
    mean spread of 1 above each voxel's minimum, so coupling weights do not depend on the features' scale."""
    cost = box_smooth(cost, 1)
    above = cost - cost.amin(0, keepdim=True)
    return above / above.mean().clamp_min(EPS)


def coupled_convex(cost: torch.Tensor, radius: int, couplings: list[float]) -> torch.Tensor:
    """Displacements (D, *shape) in coarse voxels: the per-voxel argmin of the cost, then alternately the
    field smoothed (3-voxel boxes) and each voxel's argmin of cost + lambda |d - smoothed|^2 for each
    coupling weight lambda in turn. Ties prefer the smallest displacement."""
    dim = cost.dim() - 1
    offsets = window(radius, dim, device=cost.device)  # (K, D)
    length = (offsets ** 2).sum(1)
    tie = 1e-6 * length.reshape(-1, *([1] * dim))
    pick = (cost + tie).argmin(0)
    soft = box_smooth(offsets[pick].movedim(-1, 0), 1)
    for weight in couplings:
        # |d_k - s|^2 = |d_k|^2 - 2 d_k.s + |s|^2; the last term does not change the argmin
        cross = torch.einsum("kd,d...->k...", offsets, soft)
        coupled = cost + tie + weight * (length.reshape(-1, *([1] * dim)) - 2 * cross)
        pick = coupled.argmin(0)
        soft = box_smooth(offsets[pick].movedim(-1, 0), 1)
    return soft


def compose_offsets(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """outer sampled at x + inner(x): (D, *shape) index offsets, linear, borders clamped."""
    shape = tuple(inner.shape[1:])
    dim = len(shape)
    axes = [torch.arange(n, dtype=inner.dtype, device=inner.device) for n in shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], 0)  # (D, *shape) x-y-z
    at = (index + inner).reshape(dim, -1).T
    return sample_at_index(outer, at).reshape(dim, *shape)


def inverse_consistent(forward: torch.Tensor, backward: torch.Tensor, iterations: int) -> torch.Tensor:
    """The forward field made consistent with the backward one (ConvexAdam): each becomes half the difference
    between itself and the other composed with it, so forward ~ -backward o (id + forward)."""
    for _ in range(iterations):
        forward, backward = (0.5 * (forward - compose_offsets(backward, forward)),
                             0.5 * (backward - compose_offsets(forward, backward)))
    return forward
