"""IMPACT Jacobian mode: around each sample x, a patch of PatchSize points VoxelSize mm apart along
the fixed image's axes (for a 2D model on a 3D image: a random oblique plane per sample). The fixed
patch is F(x + o), the moving patch M(T(x + o)); a sample counts only when its whole fixed patch
lies inside the fixed image (and mask) and its whole moving patch inside the moving image (and mask). Both go through the model; the centre voxel of each
selected layer is compared on a random channel subset (the same for both images, redrawn each
evaluation). The gradient is exact: autograd through the model gives d value / d M(T(x + o)),
chained with the moving-image gradient and dT/dmu at every patch point.

The patches go through the models in batches sized to the memory budget (halved on out-of-memory).
When they all fit, one pass does everything; otherwise a first pass keeps the centre features of
every patch (no autograd), the distance and d value / d moving features are computed on all of
them at once, and a second pass runs the moving model forward and backward per batch with those
feature gradients: the same value and gradient for every distance, NCC included.
"""
from __future__ import annotations

import math

import torch

from ...compute.memory import format_bytes, halving, is_out_of_memory, peak_rise
from ...errors import ImageError, MemoryLimitError
from ...interpolation import Interpolator
from ..distances import DISTANCES
from .config import ModelSettings
from .features import anti_alias, check_layers_mask, output_layers
from .level import ImpactInputs

POINT_BYTES = 320  # per patch point: its position, mapped position, samples, gradients and masks
PROBE_PATCHES = 64  # patches of the batch whose measured peak sizes the batches (when memory is short)


def patch_offsets(settings: ModelSettings, direction) -> torch.Tensor:
    """World offsets (P, D) of a patch grid along the image axes, listed in torch order of the patch."""
    dim = settings.dimension
    axes = [torch.arange(n, dtype=torch.float64) - (n // 2) for n in reversed(settings.patch_size)]
    zyx = torch.meshgrid(*axes, indexing="ij")
    idx = torch.stack([a.reshape(-1) for a in reversed(zyx)], dim=-1)  # x, y(, z)
    local = idx * torch.tensor(settings.voxel_size, dtype=torch.float64)
    if dim == direction.shape[0]:
        return local @ torch.tensor(direction).T
    return local  # planar patch for a 2D model on a 3D image; rotated per sample


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) rotations from three angles drawn uniformly in [0, 2 pi)."""
    a = torch.rand((n, 3), generator=generator, dtype=torch.float64) * 2 * math.pi
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], -1).view(n, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], -1).view(n, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], -1).view(n, 3, 3)
    return rz @ ry @ rx


def centre_features(layer: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C) at the centre voxel."""
    index = (slice(None), slice(None)) + tuple(n // 2 for n in layer.shape[2:])
    return layer[index]


class JacobianMode:
    def __init__(self, inputs: ImpactInputs):
        self.inputs = x = inputs
        config = x.config
        for s_f, s_m, mf, mm in zip(config.fixed, config.moving, x.fixed_models, x.moving_models):
            if s_f.patch_size != s_m.patch_size or s_f.voxel_size != s_m.voxel_size:
                raise ImageError("IMPACT Jacobian mode compares patches at the same points: give fixed and moving "
                                 "models the same PatchSize and VoxelSize")
            if any(p == 0 for p in s_f.patch_size):
                raise ImageError("IMPACT Jacobian mode needs a PatchSize > 0 (0 means the whole image, Static mode only)")
        self.fixed_interps = [Interpolator(anti_alias(x.fixed, s.voxel_size), order=x.order, device=x.device)
                              for s in config.fixed]
        self.moving_interps = [Interpolator(anti_alias(x.moving, s.voxel_size), order=x.order, device=x.device)
                               for s in config.moving]
        self.offsets = [patch_offsets(s, x.fixed.grid.direction).to(x.device, torch.float32) for s in config.fixed]
        self.patch_bytes = []  # estimated peak bytes per patch through both models and the geometry
        self.probed: set[int] = set()  # models whose patch bytes were measured on a batch
        for s_f, s_m, mf, mm in zip(config.fixed, config.moving, x.fixed_models, x.moving_models):
            per_patch = POINT_BYTES * math.prod(s_f.patch_size)
            for model, s, backward in ((mf, s_f, False), (mm, s_m, True)):
                check_layers_mask(model, s, output_layers(model, s, x.model_device))
                spatial = tuple(reversed(s.patch_size))
                per_patch += model.bytes_per_item(spatial, model.layer_shapes(spatial, x.model_device), backward)
            self.patch_bytes.append(per_patch)

    def _rotations(self, k: int, points: torch.Tensor) -> torch.Tensor | None:
        """Per-sample rotations of a planar patch (2D model on a 3D image), else None."""
        if self.inputs.config.fixed[k].dimension == points.shape[1]:
            return None
        return random_rotations(points.shape[0], self.inputs.generator).to(self.inputs.device, torch.float32)

    def _patch_points(self, k: int, points: torch.Tensor, rotations: torch.Tensor | None) -> torch.Tensor:
        offsets = self.offsets[k]
        if rotations is None:
            return points[:, None, :] + offsets[None]
        planar = torch.cat([offsets, torch.zeros(offsets.shape[0], 1, device=offsets.device)], dim=1)  # (P, 3)
        return points[:, None, :] + planar[None] @ rotations.transpose(1, 2)

    def _subset(self, subsets: dict, j: int, channels: int, wanted: int) -> torch.Tensor:
        """Layer j's channel subset, drawn once per evaluation (a retried batch reuses it)."""
        if j not in subsets:
            subsets[j] = self.inputs.subset(channels, wanted)
        return subsets[j]

    def _moving_samples(self, k: int, transform, patch_points: torch.Tensor, gradient: bool):
        """(flat points, moving samples, keep (N,)): a sample counts when its whole fixed patch lies inside
        the fixed image (and mask) and its whole moving patch inside the moving image (and mask)."""
        x = self.inputs
        n, p, dim = patch_points.shape
        flat = patch_points.reshape(-1, dim)
        mapped = transform.map(flat)
        sampled = self.moving_interps[k](mapped, gradient=gradient)
        inside = sampled.inside & self.fixed_interps[k].inside(flat)
        if x.moving_mask is not None:
            inside = inside & (x.moving_mask(mapped).values[:, 0] > 0)
        if x.fixed_mask_interpolator is not None:
            inside = inside & (x.fixed_mask_interpolator(flat).values[:, 0] > 0)
        return flat, sampled, inside.reshape(n, p).all(dim=1)

    def too_large(self, k: int) -> MemoryLimitError:
        x = self.inputs
        s = x.config.fixed[k]
        patch = "x".join(str(v) for v in s.patch_size)
        return MemoryLimitError(
            f"IMPACT Jacobian mode: one {patch} patch of model {x.moving_models[k].name} needs about "
            f"{format_bytes(self.patch_bytes[k])} but {x.budget.describe()}; use a smaller ImpactPatchSize, "
            f"fewer NumberOfSpatialSamples or a larger --memory-limit")

    def end_iteration(self, iteration: int) -> None:
        pass

    def value_and_gradient(self, transform, points: torch.Tensor):
        x = self.inputs
        total = 0.0
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=x.device)
        valid_count = points.shape[0]
        for k in range(len(x.config.fixed)):
            rotations = self._rotations(k, points)
            subsets: dict = {}
            n = points.shape[0]
            self._probe(k, transform, points, rotations)
            batch = x.budget.items(self.patch_bytes[k])
            if batch < 1:
                raise self.too_large(k)
            result = None
            if batch >= n:
                try:
                    result = self._one_batch(k, transform, points, rotations, subsets)
                except (RuntimeError, MemoryError) as exc:
                    if not is_out_of_memory(exc):
                        raise
                    batch = max(1, n // 2)
            if result is None:
                result = self._batched(k, transform, points, rotations, subsets, batch)
            value, gradient, kept = result
            valid_count = min(valid_count, kept)
            if gradient is not None:
                total += value
                grad = grad + gradient
        return total, grad, valid_count

    def _probe(self, k: int, transform, points: torch.Tensor, rotations) -> None:
        """With a process budget (the resident set is what it bounds), when all patches might not fit in a
        quarter of the room left, measure the peak of one small batch
        through both passes once per level and size the batches by it where it exceeds the estimate
        (models can hold far more than their layers' sizes suggest). The random generator is left as it was."""
        x = self.inputs
        if not x.budget.process or k in self.probed or points.shape[0] * self.patch_bytes[k] <= x.budget.room() / 4:
            return
        self.probed.add(k)
        n = min(points.shape[0], PROBE_PATCHES)
        state = x.generator.get_state()
        rise = peak_rise(lambda: self._batched(k, transform, points[:n], None if rotations is None else rotations[:n],
                                               {}, n))
        x.generator.set_state(state)
        if rise is not None and rise / n > self.patch_bytes[k]:
            self.patch_bytes[k] = int(rise / n)

    def _one_batch(self, k, transform, points, rotations, subsets):
        """(value, gradient or None, kept samples) of model k with every patch in one batch."""
        x = self.inputs
        config = x.config
        settings, fmodel, mmodel = config.fixed[k], x.fixed_models[k], x.moving_models[k]
        patch_points = self._patch_points(k, points, rotations)  # (N, P, D)
        n, p, dim = patch_points.shape
        flat, sampled, keep = self._moving_samples(k, transform, patch_points, gradient=True)
        kept = int(keep.sum())
        if kept < 2:
            return 0.0, None, kept
        shape = tuple(reversed(settings.patch_size))  # torch order of the (possibly planar) patch
        fixed_patch = self.fixed_interps[k](patch_points[keep].reshape(-1, dim)).values.reshape(-1, 1, *shape)
        moving_values = sampled.values.reshape(n, p)[keep]
        moving_patch = moving_values.detach().to(x.model_device).reshape(-1, 1, *shape).requires_grad_(True)
        with torch.no_grad(), x.autocast():
            f_out = fmodel(fixed_patch.to(x.model_device), x.fixed_stats, x.fixed_direction, len(settings.layers_mask))
        with x.autocast():
            m_out = mmodel(moving_patch, x.moving_stats, x.moving_direction, len(config.moving[k].layers_mask))
        value = 0.0
        layers = zip(config.layer_weights[k], settings.selected_layers, config.moving[k].selected_layers)
        for j, (w, lf, lm) in enumerate(layers):
            f = centre_features(f_out[lf]).float()
            m = centre_features(m_out[lm]).float()
            subset = self._subset(subsets, j, f.shape[1], config.subset_features[k][j])
            value = value + w * DISTANCES[config.distances[k][j]](f[:, subset], m[:, subset])
        d_patch, = torch.autograd.grad(value, moving_patch)
        d_values = torch.zeros(n, p, dtype=torch.float32, device=x.device)
        d_values[keep] = d_patch.reshape(-1, p).to(x.device, torch.float32)
        d_points = d_values.reshape(-1, 1) * sampled.gradients[:, 0]
        return float(value.detach()), transform.parameter_gradient(flat, d_points).to(torch.float64), kept

    def _batched(self, k, transform, points, rotations, subsets, batch):
        """``_one_batch`` in batches of at most ``batch`` samples: features first, then the gradient."""
        x = self.inputs
        config = x.config
        settings, fmodel, mmodel = config.fixed[k], x.fixed_models[k], x.moving_models[k]
        shape = tuple(reversed(settings.patch_size))
        p = math.prod(shape)
        pairs = list(zip(settings.selected_layers, config.moving[k].selected_layers))
        n = points.shape[0]
        keeps, f_parts, m_parts = [], [], []

        def patches(start, stop, gradient):
            rot = None if rotations is None else rotations[start:stop]
            patch_points = self._patch_points(k, points[start:stop], rot)
            flat, sampled, keep = self._moving_samples(k, transform, patch_points, gradient)
            moving = sampled.values.reshape(keep.shape[0], -1)[keep].to(x.model_device).reshape(-1, 1, *shape)
            return patch_points, flat, sampled, keep, moving

        def features(start, stop):
            patch_points, _, _, keep, moving = patches(start, stop, False)
            if not bool(keep.any()):
                keeps.append(keep)
                return
            fixed = self.fixed_interps[k](patch_points[keep].reshape(-1, patch_points.shape[-1])).values
            with torch.no_grad(), x.autocast():
                f_out = fmodel(fixed.to(x.model_device).reshape(-1, 1, *shape), x.fixed_stats, x.fixed_direction,
                               len(settings.layers_mask))
                m_out = mmodel(moving, x.moving_stats, x.moving_direction, len(config.moving[k].layers_mask))
                # copies: a view of the centre would keep every patch's whole output alive until the end
                f_centre = [centre_features(f_out[lf]).float().clone() for lf, _ in pairs]
                m_centre = [centre_features(m_out[lm]).float().clone() for _, lm in pairs]
            f_parts.append(f_centre)
            m_parts.append(m_centre)
            keeps.append(keep)

        batch = halving(features, n, batch, lambda: self.too_large(k))
        keep = torch.cat(keeps)
        kept = int(keep.sum())
        if kept < 2:
            return 0.0, None, kept
        value = 0.0
        leaves = []
        for j, w in enumerate(config.layer_weights[k]):
            f = torch.cat([part[j] for part in f_parts])
            m = torch.cat([part[j] for part in m_parts]).requires_grad_(True)
            subset = self._subset(subsets, j, f.shape[1], config.subset_features[k][j])
            value = value + w * DISTANCES[config.distances[k][j]](f[:, subset], m[:, subset])
            leaves.append(m)
        d_features = torch.autograd.grad(value, leaves)
        del f_parts, m_parts
        before = torch.cat([torch.zeros(1, dtype=torch.long, device=keep.device), keep.long().cumsum(0)]).tolist()
        grad = [torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=x.device)]

        def gradient(start, stop):
            if before[stop] == before[start]:
                return
            _, flat, sampled, keep_b, moving = patches(start, stop, True)
            moving.requires_grad_(True)
            with x.autocast():
                m_out = mmodel(moving, x.moving_stats, x.moving_direction, len(config.moving[k].layers_mask))
                outputs = [centre_features(m_out[lm]).float() for _, lm in pairs]
            seeds = [d[before[start]:before[stop]] for d in d_features]
            d_patch, = torch.autograd.grad(outputs, moving, grad_outputs=seeds)
            d_values = torch.zeros(keep_b.shape[0], p, dtype=torch.float32, device=x.device)
            d_values[keep_b] = d_patch.reshape(-1, p).to(x.device, torch.float32)
            d_points = d_values.reshape(-1, 1) * sampled.gradients[:, 0]
            grad[0] = grad[0] + transform.parameter_gradient(flat, d_points).to(torch.float64)

        halving(gradient, n, batch, lambda: self.too_large(k))
        return float(value.detach()), grad[0], kept
