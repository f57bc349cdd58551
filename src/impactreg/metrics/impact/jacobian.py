"""IMPACT Jacobian mode: around each sample x, a patch of PatchSize points VoxelSize mm apart along
the fixed image's axes (for a 2D model on a 3D image: a random oblique plane per sample). The fixed
patch is F(x + o), the moving patch M(T(x + o)); a sample counts only when its whole moving patch
lies inside the moving image (and mask). Both go through the model; the centre voxel of each
selected layer is compared on a random channel subset (the same for both images, redrawn each
evaluation). The gradient is exact: autograd through the model gives d value / d M(T(x + o)),
chained with the moving-image gradient and dT/dmu at every patch point.
"""
from __future__ import annotations

import math

import torch

from ...errors import ImageError
from ...interpolation import Interpolator
from ..distances import DISTANCES
from .config import ModelSettings
from .features import anti_alias, check_layers_mask, output_layers
from .level import ImpactInputs


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
        for s_f, s_m, mf, mm in zip(config.fixed, config.moving, x.fixed_models, x.moving_models):
            for model, s in ((mf, s_f), (mm, s_m)):
                check_layers_mask(model, s, output_layers(model, s, x.model_device))

    def _patch_points(self, k: int, points: torch.Tensor) -> torch.Tensor:
        settings = self.inputs.config.fixed[k]
        offsets = self.offsets[k]
        if settings.dimension == points.shape[1]:
            return points[:, None, :] + offsets[None]
        device = self.inputs.device
        rotations = random_rotations(points.shape[0], self.inputs.generator).to(device, torch.float32)
        planar = torch.cat([offsets, torch.zeros(offsets.shape[0], 1, device=device)], dim=1)  # (P, 3)
        return points[:, None, :] + planar[None] @ rotations.transpose(1, 2)

    def end_iteration(self, iteration: int) -> None:
        pass

    def value_and_gradient(self, transform, points: torch.Tensor):
        x = self.inputs
        config = x.config
        total = 0.0
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=x.device)
        valid_count = points.shape[0]
        for k, (settings, fmodel, mmodel) in enumerate(zip(config.fixed, x.fixed_models, x.moving_models)):
            patch_points = self._patch_points(k, points)  # (N, P, D)
            n, p, dim = patch_points.shape
            flat = patch_points.reshape(-1, dim)
            mapped = transform.map(flat)
            sampled = self.moving_interps[k](mapped, gradient=True)
            inside = sampled.inside
            if x.moving_mask is not None:
                inside = inside & (x.moving_mask(mapped).values[:, 0] > 0)
            keep = inside.reshape(n, p).all(dim=1)
            valid_count = min(valid_count, int(keep.sum()))
            if int(keep.sum()) < 2:
                continue
            shape = tuple(reversed(settings.patch_size))  # torch order of the (possibly planar) patch
            fixed_patch = self.fixed_interps[k](patch_points[keep].reshape(-1, dim)).values.reshape(-1, 1, *shape)
            moving_values = sampled.values.reshape(n, p)[keep]
            moving_patch = moving_values.detach().to(x.model_device).reshape(-1, 1, *shape).requires_grad_(True)
            layers = settings.selected_layers
            with torch.no_grad(), x.autocast():
                f_out = fmodel(fixed_patch.to(x.model_device), x.fixed_stats, x.fixed_direction, len(settings.layers_mask))
            with x.autocast():
                m_out = mmodel(moving_patch, x.moving_stats, x.moving_direction, len(config.moving[k].layers_mask))
            value = 0.0
            distance = DISTANCES[config.distances[k]]
            for w, lf, lm in zip(config.layer_weights[k], layers, config.moving[k].selected_layers):
                f = centre_features(f_out[lf]).float()
                m = centre_features(m_out[lm]).float()
                subset = x.subset(f.shape[1], config.subset_features[k])
                value = value + w * distance(f[:, subset], m[:, subset])
            d_patch, = torch.autograd.grad(value, moving_patch)
            total += float(value.detach())
            d_values = torch.zeros(n, p, dtype=torch.float32, device=x.device)
            d_values[keep] = d_patch.reshape(-1, p).to(x.device, torch.float32)
            d_points = d_values.reshape(-1, 1) * sampled.gradients[:, 0]
            grad = grad + transform.parameter_gradient(flat, d_points).to(torch.float64)
        return total, grad, valid_count
