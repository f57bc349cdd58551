"""IMPACT: similarity of pretrained-network features of the fixed and moving images.

Jacobian mode: around each sample x, a patch of PatchSize points VoxelSize mm apart along the
fixed image's axes (for a 2D model on a 3D image: a random oblique plane per sample). The fixed
patch is F(x + o), the moving patch M(T(x + o)); a sample counts only when its whole moving patch
lies inside the moving image (and mask). Both go through the model; the centre voxel of each
selected layer is compared on a random channel subset (the same for both images, redrawn each
iteration). The gradient is exact: autograd through the model gives d value / d M(T(x + o)),
chained with the moving-image gradient and dT/dmu at every patch point.

Static mode: each level, both images are resampled to VoxelSize and the model runs once (tiled
when PatchSize is not 0); the selected layers become multi-channel images sampled at x and T(x)
every iteration, with the registration's interpolator (BSplineInterpolationOrder: 1 linear, 3 cubic). With FeaturesMapUpdateInterval N > 0 the moving
maps are recomputed every N iterations from the moving image warped by the current transform T_r
into fixed space, and then sampled at x + J_r(x)^-1 (T(x) - T_r(x)), so T is not applied twice.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ImageError, ModelError
from ..features.extractor import FeatureExtractor, image_stats, load_extractor
from ..features.inference import feature_maps
from ..filters import gaussian_smooth
from ..image import Image, write_image
from ..interpolation import Interpolator
from ..transformix import resample
from .distances import DISTANCES
from .impact_config import ImpactLevel, ModelSettings, impact_level

log = logging.getLogger("impactreg")


def patch_offsets(settings: ModelSettings, direction: np.ndarray) -> torch.Tensor:
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


class ImpactMetric:
    elastix_name = "Impact"

    def __init__(self, pm, level: int, fixed: Image, moving: Image, moving_mask: Interpolator | None,
                 order: int, generator: torch.Generator, device, base: Path | None = None, downloader=None):
        self.level, self.generator = level, generator
        self.device = torch.device(device)
        self.config: ImpactLevel = impact_level(pm, level, fixed.dim, self.device)
        self.model_device = self.config.device
        self.fixed, self.moving = fixed, moving
        self.moving_mask = moving_mask
        self.order = order
        kwargs = {"downloader": downloader} if downloader else {}
        self.fixed_models = [load_extractor(s.path, s.dimension, s.channels, s.normalization, self.model_device, base, **kwargs)
                             for s in self.config.fixed]
        self.moving_models = [load_extractor(s.path, s.dimension, s.channels, s.normalization, self.model_device, base, **kwargs)
                              for s in self.config.moving]
        self.fixed_stats = image_stats(fixed.data).to(self.model_device)
        self.moving_stats = image_stats(moving.data).to(self.model_device)
        self.fixed_direction = torch.tensor(np.round(fixed.grid.direction), dtype=torch.int64)
        self.moving_direction = torch.tensor(np.round(moving.grid.direction), dtype=torch.int64)
        self.iteration = 0
        if self.config.mode == "Jacobian":
            self._init_jacobian()
        else:
            self._init_static()

    # Jacobian mode ----------------------------------------------------------------------------

    def _init_jacobian(self):
        self.fixed_interps = [Interpolator(anti_alias(self.fixed, s.voxel_size), order=self.order, device=self.device)
                              for s in self.config.fixed]
        self.moving_interps = [Interpolator(anti_alias(self.moving, s.voxel_size), order=self.order, device=self.device)
                               for s in self.config.moving]
        self.offsets = [patch_offsets(s, self.fixed.grid.direction).to(self.device, torch.float32) for s in self.config.fixed]
        for s_f, s_m, mf, mm in zip(self.config.fixed, self.config.moving, self.fixed_models, self.moving_models):
            if s_f.patch_size != s_m.patch_size or s_f.voxel_size != s_m.voxel_size:
                raise ImageError("IMPACT Jacobian mode compares patches at the same points: give fixed and moving "
                                 "models the same PatchSize and VoxelSize")
            if any(p == 0 for p in s_f.patch_size):
                raise ImageError("IMPACT Jacobian mode needs a PatchSize > 0 (0 means the whole image, Static mode only)")
            for model, s in ((mf, s_f), (mm, s_m)):
                shapes = model.layer_shapes(tuple(reversed(s.patch_size)), self.model_device)
                _check_mask(model, s, len(shapes))

    def _patch_points(self, k: int, points: torch.Tensor) -> torch.Tensor:
        settings = self.config.fixed[k]
        offsets = self.offsets[k]
        if settings.dimension == points.shape[1]:
            return points[:, None, :] + offsets[None]
        rotations = random_rotations(points.shape[0], self.generator).to(self.device, torch.float32)
        planar = torch.cat([offsets, torch.zeros(offsets.shape[0], 1, device=self.device)], dim=1)  # (P, 3)
        return points[:, None, :] + planar[None] @ rotations.transpose(1, 2)

    def _jacobian_value_and_gradient(self, transform, points):
        total = 0.0
        grad = torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=self.device)
        valid_count = points.shape[0]
        for k, (settings, fmodel, mmodel) in enumerate(zip(self.config.fixed, self.fixed_models, self.moving_models)):
            patch_points = self._patch_points(k, points)  # (N, P, D)
            n, p, dim = patch_points.shape
            flat = patch_points.reshape(-1, dim)
            mapped = transform.map(flat)
            sampled = self.moving_interps[k](mapped, gradient=True)
            inside = sampled.inside
            if self.moving_mask is not None:
                inside = inside & (self.moving_mask(mapped).values[:, 0] > 0)
            keep = inside.reshape(n, p).all(dim=1)
            valid_count = min(valid_count, int(keep.sum()))
            if int(keep.sum()) < 2:
                continue
            shape = tuple(reversed(settings.patch_size))  # torch order of the (possibly planar) patch
            fixed_patch = self.fixed_interps[k](patch_points[keep].reshape(-1, dim)).values.reshape(-1, 1, *shape)
            moving_values = sampled.values.reshape(n, p)[keep]
            moving_patch = moving_values.detach().to(self.model_device).reshape(-1, 1, *shape).requires_grad_(True)
            layers = settings.selected_layers
            with torch.no_grad(), self._autocast():
                f_out = fmodel(fixed_patch.to(self.model_device), self.fixed_stats, self.fixed_direction, len(settings.layers_mask))
            with self._autocast():
                m_out = mmodel(moving_patch, self.moving_stats, self.moving_direction, len(self.config.moving[k].layers_mask))
            value = 0.0
            distance = DISTANCES[self.config.distances[k]]
            for w, lf, lm in zip(self.config.layer_weights[k], layers, self.config.moving[k].selected_layers):
                f = centre_features(f_out[lf]).float()
                m = centre_features(m_out[lm]).float()
                subset = self._subset(f.shape[1], self.config.subset_features[k])
                value = value + w * distance(f[:, subset], m[:, subset])
            d_patch, = torch.autograd.grad(value, moving_patch)
            total += float(value.detach())
            d_values = torch.zeros(n, p, dtype=torch.float32, device=self.device)
            d_values[keep] = d_patch.reshape(-1, p).to(self.device, torch.float32)
            d_points = d_values.reshape(-1, 1) * sampled.gradients[:, 0]
            grad = grad + transform.parameter_gradient(flat, d_points).to(torch.float64)
        return total, grad, valid_count

    def _subset(self, channels: int, wanted: int) -> torch.Tensor:
        if wanted <= 0 or wanted >= channels:
            return torch.arange(channels, device=self.model_device)
        return torch.randperm(channels, generator=self.generator)[:wanted].to(self.model_device)

    def _autocast(self):
        if self.config.mixed_precision and self.model_device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)

    # Static mode -------------------------------------------------------------------------------

    def _init_static(self):
        out_dir = Path(self.config.feature_map_dir) if self.config.feature_map_dir else None
        self.fixed_maps, self.moving_maps, self.projections = [], [], []
        self.reference = None
        for k, (s, model) in enumerate(zip(self.config.fixed, self.fixed_models)):
            resampled, maps = feature_maps(model, anti_alias(self.fixed, s.voxel_size), s.voxel_size, s.patch_size, s.layers_mask,
                                           self.fixed_stats, self.model_device)
            _check_mask(model, s, None)
            projections = [_pca(m, self.config.pca[k]) for m in maps]
            self.projections.append(projections)
            maps = [_project(m, pr) for m, pr in zip(maps, projections)]
            self.fixed_maps.append([Interpolator(m, order=self.order, device=self.device) for m in maps])
            if out_dir is not None:
                _write_maps(out_dir, "Fixed", self.level, k, s, resampled, maps)
        self._compute_moving_maps(None, out_dir)

    def _compute_moving_maps(self, transform, out_dir=None):
        """Moving feature maps; with a reference transform, of the moving image warped into fixed space."""
        self.moving_maps = []
        source, stats = self.moving, self.moving_stats
        if transform is not None:
            source = resample(self.moving, transform, self.fixed.grid, order=3, default=float(self.moving.data.min()),
                              device=self.device)
        for k, (s, model) in enumerate(zip(self.config.moving, self.moving_models)):
            resampled, maps = feature_maps(model, anti_alias(source, s.voxel_size), s.voxel_size, s.patch_size, s.layers_mask, stats, self.model_device)
            maps = [_project(m, pr) for m, pr in zip(maps, self.projections[k])]
            self.moving_maps.append([Interpolator(m, order=self.order, device=self.device) for m in maps])
            if out_dir is not None:
                _write_maps(out_dir, "Moving", self.level, k, s, resampled, maps)
        self.reference = transform

    def _static_value_and_gradient(self, transform, points):
        interval = self.config.update_interval
        if interval > 0 and self.iteration > 0 and self.iteration % interval == 0:
            self._compute_moving_maps(transform.with_parameters(transform.parameters.detach().clone()))
        mapped = transform.map(points)
        where = mapped
        pullback = None
        if self.reference is not None:  # maps of the warped moving image live in fixed space
            reference_map = self.reference.map(points)
            inverse = torch.linalg.inv(self.reference.spatial_jacobian(points))
            where = points + (inverse @ (mapped - reference_map).unsqueeze(-1)).squeeze(-1)
            pullback = inverse
        total = 0.0
        d_points = torch.zeros_like(points)
        valid = torch.ones(points.shape[0], dtype=torch.bool, device=self.device)
        samples = []
        for k in range(len(self.config.fixed)):
            for fixed_interp, moving_interp in zip(self.fixed_maps[k], self.moving_maps[k]):
                f = fixed_interp(points)
                m = moving_interp(where, gradient=True)
                valid = valid & f.inside & m.inside
                samples.append((k, f, m))
        if self.moving_mask is not None:
            valid = valid & (self.moving_mask(mapped).values[:, 0] > 0)
        n_valid = int(valid.sum())
        if n_valid < 2:
            return 0.0, torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=self.device), n_valid
        index = 0
        for k in range(len(self.config.fixed)):
            distance = DISTANCES[self.config.distances[k]]
            for w in self.config.layer_weights[k]:
                _, f, m = samples[index]
                index += 1
                subset = self._subset(f.values.shape[1], self.config.subset_features[k]).to(self.device)
                fv = f.values[valid][:, subset]
                mv = m.values[valid][:, subset].detach().requires_grad_(True)
                value = w * distance(fv, mv)
                dm, = torch.autograd.grad(value, mv)
                total += float(value.detach())
                contribution = (dm[:, :, None] * m.gradients[valid][:, subset]).sum(1)  # (n, D)
                d_points[valid] += contribution
        if pullback is not None:
            d_points = (pullback.transpose(1, 2) @ d_points.unsqueeze(-1)).squeeze(-1)
        grad = transform.parameter_gradient(points, d_points).to(torch.float64)
        return total, grad, n_valid

    # interface -------------------------------------------------------------------------------

    def value_and_gradient(self, transform, points: torch.Tensor):
        """(value, d value / d params (P,), valid samples) at fixed-space sample points (N, D)."""
        if self.config.mode == "Jacobian":
            result = self._jacobian_value_and_gradient(transform, points)
        else:
            result = self._static_value_and_gradient(transform, points)
        self.iteration += 1
        return result


def anti_alias(image: Image, voxel_size) -> Image:
    """The image low-pass filtered for sampling at ``voxel_size`` mm (along x-y-z; a 2D model's
    planar voxel size applies to every axis): Gaussian sigma 0.5 sqrt(v^2 - s^2) where v > s."""
    v = np.asarray(voxel_size, dtype=np.float64)
    if v.size != image.dim:
        v = np.full(image.dim, float(v.min()))
    sigma = 0.5 * np.sqrt(np.maximum(v ** 2 - image.grid.spacing ** 2, 0.0))
    return gaussian_smooth(image, sigma) if np.any(sigma > 0) else image


def _check_mask(model: FeatureExtractor, settings: ModelSettings, outputs: int | None):
    if outputs is not None and outputs != len(settings.layers_mask):
        raise ModelError(f"IMPACT LayersMask {settings.layers_mask!r} has {len(settings.layers_mask)} digit(s) but model "
                         f"{model.name} gives {outputs} output layer(s); use {outputs} digits")


def _pca(feature: Image, components: int):
    """Top principal directions (k, C) of a feature map's channels, with the channel mean."""
    if components <= 0 or components >= feature.channels:
        return None
    x = feature.data.reshape(feature.channels, -1).to(torch.float64)
    mean = x.mean(dim=1, keepdim=True)
    cov = (x - mean) @ (x - mean).T / max(x.shape[1] - 1, 1)
    _, vectors = torch.linalg.eigh(cov)
    return vectors[:, -components:].flip(1).T.to(torch.float32), mean.to(torch.float32)


def _project(feature: Image, projection) -> Image:
    if projection is None:
        return feature
    w, mean = projection
    x = feature.data.reshape(feature.channels, -1)
    y = w.to(x.device) @ (x - mean.to(x.device))
    return Image(y.reshape(w.shape[0], *feature.grid.shape), feature.grid, "float32")


def _write_maps(folder: Path, side: str, level: int, k: int, settings: ModelSettings, resampled: Image, maps: list[Image]):
    folder.mkdir(parents=True, exist_ok=True)
    sizes = "_".join(f"{v:g}" for v in resampled.grid.spacing)
    write_image(resampled, folder / f"{side}_{level}_{sizes}.mha")
    name = Path(settings.path).stem.replace("/", "_")
    for layer, feature in zip(settings.selected_layers, maps):
        write_image(feature, folder / f"{side}_{level}_{k}_{name}_layer{layer}.mha")
