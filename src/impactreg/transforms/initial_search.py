"""Automatic initialisation by exhaustive search, for images whose fields of view differ (an MR slab
against a whole-body CT), where centring the images starts far from the answer.

As ANTs' ``antsAI``: candidate transforms x -> R (x - c) + c + t (R from Euler angles, t a grid of
translations covering every overlap of the two images' boxes) are scored with mutual information on
coarse, smoothed copies of the images, all candidates of a round at once (batched lookups and joint
histograms); the best are refined in two more rounds at half and a quarter of the step.

Samples are the voxels of the smaller image (in physical volume), so that a slab keeps all of its
samples while it moves through the larger image; with an initial transform they are the fixed
image's, mapped through it first. A candidate counts only when at least ``minimum_overlap`` of the
samples fall inside the other image.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..filters import gaussian_smooth, resample_to_grid
from ..image import Image
from .base import Transform
from .matrix import AffineTransform, EulerTransform, MatrixTransform, SimilarityTransform, TranslationTransform

KEEP = (8, 4, 1)  # candidates kept after each round (the last: the answer)
BINS = 16
SAMPLES = (2000, 4000, 8000)  # samples per round
LOOKUPS_PER_BATCH = 2 ** 22  # candidate x sample lookups per batch (bounds memory: ~100 MB)


@dataclass(frozen=True)
class SearchSettings:
    step_mm: float = 20.0  # translation step of the first round
    range_mm: tuple[float, ...] | None = None  # half-width of the translations per world axis; None: every overlap
    rotation_degrees: float = 0.0  # largest rotation about each axis (0: translations only)
    rotation_step_degrees: float = 15.0
    minimum_overlap: float = 0.5  # fraction of the samples that must fall inside the other image


@dataclass
class SearchResult:
    rotation: torch.Tensor  # (D, D), float64
    translation: torch.Tensor  # (D,) mm, in x -> R (x - c) + c + t
    angles: torch.Tensor  # (1,) in 2D, (3,) in 3D, radians
    score: float  # mutual information (nats)
    candidates: int  # scored in all rounds


def euler_matrices(angles: torch.Tensor, compute_zyx: bool = False) -> torch.Tensor:
    """Rotation matrices (B, D, D) of Euler angles (B, 1) in 2D or (B, 3) in 3D, elastix's
    EulerTransform convention (3D: R = Rz Rx Ry, or Rz Ry Rx with ComputeZYX)."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    if angles.shape[1] == 1:
        return torch.stack([torch.stack([c[:, 0], -s[:, 0]], -1), torch.stack([s[:, 0], c[:, 0]], -1)], -2)

    def rotation(axis):
        ca, sa = c[:, axis], s[:, axis]
        rows = {0: [[one, zero, zero], [zero, ca, -sa], [zero, sa, ca]],
                1: [[ca, zero, sa], [zero, one, zero], [-sa, zero, ca]],
                2: [[ca, -sa, zero], [sa, ca, zero], [zero, zero, one]]}[axis]
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx, ry, rz = rotation(0), rotation(1), rotation(2)
    return rz @ ry @ rx if compute_zyx else rz @ rx @ ry


def _coarse(image: Image, voxel_mm: float) -> Image:
    """The image smoothed for ``voxel_mm`` and resampled to that voxel size (over the same box)."""
    spacing = image.grid.spacing
    sigma = 0.5 * np.sqrt(np.maximum(voxel_mm ** 2 - spacing ** 2, 0.0))
    smooth = gaussian_smooth(image, sigma) if np.any(sigma > 0) else image
    grid = image.grid.with_voxel_size(np.maximum(spacing, voxel_mm))
    return resample_to_grid(smooth, grid, order=1, dtype=torch.float32)


def _bin(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bin numbers 0 .. BINS-1 of ``values`` over the 1-99 % range of ``reference``."""
    sample = reference.reshape(-1)
    if sample.numel() > 1_000_000:
        sample = sample[:: sample.numel() // 1_000_000 + 1]
    lo, hi = torch.quantile(sample.to(torch.float32), torch.tensor([0.01, 0.99]))
    scaled = (values - lo) / torch.clamp(hi - lo, min=1e-6) * BINS
    return scaled.floor().clamp(0, BINS - 1).long()


def _extent(image: Image) -> tuple[np.ndarray, np.ndarray]:
    corners = image.grid.extent_corners()
    return corners.min(0), corners.max(0)


class _Scorer:
    """Mutual information of the two coarse images under batches of candidate (R, t). The other
    image is binned once and looked up at the nearest voxel (the images are smoothed to the voxel size)."""

    def __init__(self, fixed: Image, moving: Image, voxel_mm: float, centre: torch.Tensor, initial: Transform | None,
                 sample_fixed: bool, samples: int):
        fixed_c, moving_c = _coarse(fixed, voxel_mm), _coarse(moving, voxel_mm)
        self.sample_fixed, self.centre = sample_fixed, centre.to(torch.float32)
        sampled, other = (fixed_c, moving_c) if sample_fixed else (moving_c, fixed_c)
        points = sampled.grid.voxel_points()
        values = sampled.data[0].reshape(-1)
        if points.shape[0] > samples:  # a regular subset: no randomness, the same on every machine
            pick = torch.linspace(0, points.shape[0] - 1, samples).round().long()
            points, values = points[pick], values[pick]
        if sample_fixed and initial is not None:
            with torch.no_grad():
                points = initial.map(points)
        self.points = points.to(torch.float32)
        self.sample_bins = _bin(values, sampled.data)
        self.other_bins = _bin(other.data[0], other.data).reshape(-1)
        t = other.grid.tensors(torch.float32)
        self.world_to_index, self.origin = t.world_to_index, t.origin
        self.size = torch.tensor(other.grid.size)
        self.strides = torch.tensor(other.grid.strides, dtype=torch.float32)  # exact below 2^24 voxels

    def _indices(self, rotations: torch.Tensor, translations: torch.Tensor) -> torch.Tensor:
        """(B, N, D) continuous indices of the samples in the other image: W (R p + c - R c + t) - W o
        (sampling fixed points p), or W (R^T (p - c - t) + c) - W o (sampling moving points p); the
        (N, D) product with each distinct rotation is computed once."""
        c, w = self.centre, self.world_to_index
        if not self.sample_fixed:
            rotations = rotations.transpose(1, 2)
        unique, which = torch.unique(rotations.reshape(rotations.shape[0], -1), dim=0, return_inverse=True)
        unique = unique.reshape(-1, *rotations.shape[1:])
        rotated = self.points @ (w @ unique).transpose(1, 2)  # (K, N, D): W R p
        if self.sample_fixed:
            shift = (c - rotations @ c + translations) @ w.T - self.origin @ w.T
        else:
            shift = (c - (rotations @ (c + translations)[..., None])[..., 0]) @ w.T - self.origin @ w.T
        return rotated[which] + shift[:, None, :]

    def __call__(self, rotations: torch.Tensor, translations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mutual information, fraction of samples inside the other image) per candidate."""
        n = self.points.shape[0]
        batch = max(1, LOOKUPS_PER_BATCH // n)
        scores, overlaps = [], []
        upper = (self.size - 1).to(torch.float32)
        for start in range(0, rotations.shape[0], batch):
            r = rotations[start:start + batch].to(torch.float32)
            t = translations[start:start + batch].to(torch.float32)
            index = self._indices(r, t).add_(0.5).floor_()  # nearest voxel, x-y-z
            inside = ((index >= 0) & (index <= upper)).all(-1)
            flat = (torch.minimum(index.clamp_(min=0), upper) @ self.strides).long()
            joint_index = self.sample_bins[None] * BINS + self.other_bins[flat]
            weight = inside.to(torch.float32)
            joint = torch.zeros(r.shape[0], BINS * BINS).scatter_add_(1, joint_index, weight)
            scores.append(_mutual_information(joint.to(torch.float64)))
            overlaps.append(weight.mean(1))
        return torch.cat(scores), torch.cat(overlaps)


def _mutual_information(joint: torch.Tensor) -> torch.Tensor:
    """MI (nats) of joint histograms (B, BINS * BINS)."""
    total = joint.sum(1, keepdim=True).clamp_min(1.0)
    p = (joint / total).reshape(-1, BINS, BINS)
    entropy = lambda q: -torch.special.xlogy(q, q).flatten(1).sum(1)  # noqa: E731
    return entropy(p.sum(2)) + entropy(p.sum(1)) - entropy(p)


def _angle_grid(dims: int, largest: float, step: float) -> torch.Tensor:
    """Euler angles (K, dims) in radians: every combination of multiples of ``step`` up to ``largest``."""
    if largest <= 0 or step <= 0:
        return torch.zeros(1, dims, dtype=torch.float64)
    k = int(math.floor(largest / step + 1e-9))
    values = torch.arange(-k, k + 1, dtype=torch.float64) * math.radians(step)
    return torch.cartesian_prod(*[values] * dims).reshape(-1, dims)


def _offset_grid(half_width: np.ndarray, step: float) -> torch.Tensor:
    """Translations (M, D): multiples of ``step`` within +-``half_width`` per axis."""
    axes = [torch.arange(-math.floor(h / step + 1e-9), math.floor(h / step + 1e-9) + 1, dtype=torch.float64) * step
            for h in half_width]
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def _best(scores: torch.Tensor, overlaps: torch.Tensor, minimum: float, keep: int) -> torch.Tensor:
    ranked = torch.where(overlaps >= minimum, scores, torch.full_like(scores, -math.inf))
    order = torch.argsort(ranked, descending=True)[:keep]
    return order[torch.isfinite(ranked[order])]


def search(fixed: Image, moving: Image, centre, settings: SearchSettings, initial: Transform | None = None,
           compute_zyx: bool = False) -> SearchResult | None:
    """The best candidate (R, t) of x -> R (x - c) + c + t, ``x`` fixed points (after ``initial``);
    None when no candidate overlaps enough."""
    dim = fixed.dim
    centre = torch.as_tensor(np.asarray(centre, dtype=np.float64))
    fixed_lo, fixed_hi = _extent(fixed)
    moving_lo, moving_hi = _extent(moving)
    fixed_centre = torch.as_tensor((fixed_lo + fixed_hi) / 2)
    if initial is not None:
        with torch.no_grad():
            fixed_centre = initial.map(fixed_centre[None])[0]
    base = torch.as_tensor((moving_lo + moving_hi) / 2) - fixed_centre  # box centres aligned
    sample_fixed = initial is not None or np.prod(fixed_hi - fixed_lo) <= np.prod(moving_hi - moving_lo)
    if settings.range_mm is not None:
        half = np.broadcast_to(np.asarray(settings.range_mm, dtype=np.float64), (dim,))
    else:
        # every shift at which the boxes overlap by at least the minimum fraction of the sampled one, per axis
        fixed_extent, moving_extent = fixed_hi - fixed_lo, moving_hi - moving_lo
        sampled_extent = fixed_extent if sample_fixed else moving_extent
        half = np.maximum((fixed_extent + moving_extent) / 2 - settings.minimum_overlap * sampled_extent, 0.0)
    rotation_dims = 1 if dim == 2 else 3
    angles = _angle_grid(rotation_dims, settings.rotation_degrees, settings.rotation_step_degrees)
    offsets = _offset_grid(half, settings.step_mm)
    candidates_angles = angles.repeat_interleave(offsets.shape[0], 0)
    candidates_t = base + offsets.repeat(angles.shape[0], 1)
    step, rotation_step, total = settings.step_mm, settings.rotation_step_degrees, 0
    chosen = None
    for round_, keep in enumerate(KEEP):
        voxel = max(step / 2, float(min(fixed.grid.spacing.min(), moving.grid.spacing.min())))
        scorer = _Scorer(fixed, moving, voxel, centre, initial, sample_fixed, SAMPLES[round_])
        scores, overlaps = scorer(euler_matrices(candidates_angles, compute_zyx), candidates_t)
        total += scores.shape[0]
        chosen = _best(scores, overlaps, settings.minimum_overlap, keep)
        if chosen.numel() == 0:
            return None
        best_angles, best_t, best_scores = candidates_angles[chosen], candidates_t[chosen], scores[chosen]
        if round_ == len(KEEP) - 1:
            break
        step, rotation_step = step / 2, rotation_step / 2
        local_t = _offset_grid(np.full(dim, step), step)
        local_a = _angle_grid(rotation_dims, rotation_step if settings.rotation_degrees > 0 else 0.0, rotation_step)
        around = torch.tensor(list(itertools.product(range(local_a.shape[0]), range(local_t.shape[0]))))
        limit = math.radians(settings.rotation_degrees)
        candidates_angles = (best_angles[:, None] + local_a[around[:, 0]][None]).reshape(-1, rotation_dims).clamp(-limit, limit)
        candidates_t = (best_t[:, None] + local_t[around[:, 1]][None]).reshape(-1, dim)
    angles_best = best_angles[0]
    return SearchResult(euler_matrices(angles_best[None], compute_zyx)[0], best_t[0], angles_best,
                        float(best_scores[0]), total)


def versor(rotation: torch.Tensor) -> torch.Tensor:
    """Vector part (x, y, z) of the unit quaternion (w >= 0) of a 3D rotation matrix."""
    r = rotation.to(torch.float64)
    w = torch.sqrt(torch.clamp(1 + r.trace(), min=1e-12)) / 2
    if w > 1e-3:
        return torch.stack([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (4 * w)
    i = int(torch.argmax(torch.diagonal(r)))  # a half turn: take the largest diagonal entry
    j, k = (i + 1) % 3, (i + 2) % 3
    v = torch.zeros(3, dtype=torch.float64)
    v[i] = torch.sqrt(torch.clamp(1 + r[i, i] - r[j, j] - r[k, k], min=0)) / 2
    v[j] = (r[j, i] + r[i, j]) / (4 * v[i])
    v[k] = (r[k, i] + r[i, k]) / (4 * v[i])
    return v


def matrix_parameters(transform: MatrixTransform, rotation: torch.Tensor, angles: torch.Tensor,
                      translation: torch.Tensor) -> torch.Tensor:
    """The parameters of ``transform``'s kind for x -> R (x - c) + c + t (c its centre)."""
    t = translation.to(torch.float64)
    if isinstance(transform, TranslationTransform):
        return t.clone()
    if isinstance(transform, EulerTransform):
        return torch.cat([angles.to(torch.float64), t])
    if isinstance(transform, SimilarityTransform):
        if transform.dim == 2:
            return torch.cat([torch.ones(1, dtype=torch.float64), angles.to(torch.float64), t])
        return torch.cat([versor(rotation), t, torch.ones(1, dtype=torch.float64)])
    if isinstance(transform, AffineTransform):
        return torch.cat([rotation.to(torch.float64).reshape(-1), t])
    raise TypeError(f"no search initialisation for {type(transform).__name__}")
