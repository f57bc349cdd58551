"""IMPACT Static mode: each level, both images are resampled to VoxelSize along shared axes (the fixed
image's, or the orientation a catalogued network was trained in) and the model runs once (tiled
when PatchSize is not 0); the selected layers become FeatureMaps, sampled at x and T(x) every
iteration with cubic B-splines (FeatureMapInterpolationOrder, as the elastix IMPACT metric). A sample
counts only where both maps are valid: the model's receptive field inside the image and its mask.

With FeaturesMapUpdateInterval N > 0 the moving maps are recomputed after every N-th optimiser
iteration from the moving image warped by the current transform T_r onto the fixed grid (valid
where T_r maps inside the moving image and its mask), and then sampled at x + J_r(x)^-1 (T(x) - T_r(x)),
so T is not applied twice.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...image import Image
from ...keys import Key
from ...warp import resample
from ..distances import DISTANCES
from .features import check_layers_mask, image_feature_maps, principal_directions, project, write_maps
from .level import ImpactInputs
from ...features.maps import shared_direction

ORDER_DOC = ("Static mode: B-spline order of the feature-map interpolation (0-5; 3 = cubic, as the elastix "
             "IMPACT metric; 1 = linear, cheaper, drifts more)")
STATIC_KEYS = (
    Key("FeatureMapInterpolationOrder", "int", 3, "IMPACT: " + ORDER_DOC, per_level=True, minimum=0, maximum=5),
    Key("ImpactFeatureMapInterpolationOrder", "int", 3, "IMPACT (elastix names): " + ORDER_DOC, per_level=True,
        minimum=0, maximum=5),
)


def feature_map_order(view) -> int:
    for name in ("ImpactFeatureMapInterpolationOrder", "FeatureMapInterpolationOrder"):
        if name in view:
            return int(view.get(name))
    return 3


class StaticMode:
    def __init__(self, inputs: ImpactInputs, level: int):
        self.inputs = x = inputs
        self.level = level
        self.out_dir = Path(x.config.feature_map_dir) if x.config.feature_map_dir else None
        self.fixed_maps, self.moving_maps, self.projections = [], [], []
        self.fixed_samplers, self.moving_samplers = [], []
        self.directions = [shared_direction(x.fixed.grid, model.name, s.dimension)
                           for s, model in zip(x.config.fixed, x.fixed_models)]
        self.reference = None
        self.update_due = False
        for k, (s, model) in enumerate(zip(x.config.fixed, x.fixed_models)):
            resampled, maps = image_feature_maps(model, x.fixed, x.fixed_mask, self.directions[k], s, x.fixed_stats,
                                                 x.model_device, x.budget)
            check_layers_mask(model, s, None)
            projections = [principal_directions(m, x.config.pca[k][j]) for j, m in enumerate(maps)]
            self.projections.append(projections)
            maps = [project(m, pr) for m, pr in zip(maps, projections)]
            self.fixed_maps.append(maps)
            self.fixed_samplers.append([m.sampler(x.feature_order, x.device) for m in maps])
            if self.out_dir is not None:
                write_maps(self.out_dir, "Fixed", level, k, s, resampled, maps)
        self._compute_moving_maps(None, self.out_dir)

    def _compute_moving_maps(self, transform, out_dir=None):
        """Moving feature maps; with a reference transform, of the moving image warped onto the fixed grid."""
        x = self.inputs
        source, mask = x.moving, x.moving_mask_image
        if transform is not None:
            source = resample(x.moving, transform, x.fixed.grid, order=3, default=float(x.moving.data.min()), device=x.device)
            mask = self._warped_validity(transform)
        self.moving_maps, self.moving_samplers = [], []
        for k, (s, model) in enumerate(zip(x.config.moving, x.moving_models)):
            resampled, maps = image_feature_maps(model, source, mask, self.directions[k], s, x.moving_stats,
                                                 x.model_device, x.budget)
            maps = [project(m, pr) for m, pr in zip(maps, self.projections[k])]
            self.moving_maps.append(maps)
            self.moving_samplers.append([m.sampler(x.feature_order, x.device) for m in maps])
            if out_dir is not None:
                write_maps(out_dir, "Moving", self.level, k, s, resampled, maps)
        self.reference = transform

    def _warped_validity(self, transform) -> Image:
        """1 on the fixed grid where ``transform`` maps inside the moving image (and its mask), else 0."""
        x = self.inputs
        ones = Image(torch.ones((1,) + tuple(x.moving.grid.shape)), x.moving.grid, "float32")
        inside = resample(ones, transform, x.fixed.grid, order=0, default=0.0, device=x.device)
        if x.moving_mask_image is not None:
            in_mask = resample(x.moving_mask_image, transform, x.fixed.grid, order=0, default=0.0, device=x.device)
            inside = inside.with_data(inside.data * (in_mask.data > 0))
        return inside

    def end_iteration(self, iteration: int) -> bool:
        interval = self.inputs.config.update_interval
        if interval > 0 and (iteration + 1) % interval == 0:
            self.update_due = True
        return self.update_due

    def value_and_gradient(self, transform, points: torch.Tensor):
        x = self.inputs
        if self.update_due:
            self._compute_moving_maps(transform.with_parameters(transform.parameters.detach().clone()))
            self.update_due = False
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
        valid = torch.ones(points.shape[0], dtype=torch.bool, device=x.device)
        samples = []
        for k in range(len(x.config.fixed)):
            for fixed_sampler, moving_sampler in zip(self.fixed_samplers[k], self.moving_samplers[k]):
                f = fixed_sampler(points)
                m = moving_sampler(where, gradient=True)
                valid = valid & f.inside & m.inside
                samples.append((k, f, m))
        if x.moving_mask is not None:
            valid = valid & (x.moving_mask(mapped).values[:, 0] > 0)
        n_valid = int(valid.sum())
        if n_valid < 2:
            return 0.0, torch.zeros(transform.number_of_parameters, dtype=torch.float64, device=x.device), n_valid
        everywhere = n_valid == points.shape[0]

        def counted(t: torch.Tensor, subset: torch.Tensor | None) -> torch.Tensor:
            t = t if everywhere else t[valid]
            return t if subset is None else t[:, subset]

        index = 0
        for k in range(len(x.config.fixed)):
            for j, w in enumerate(x.config.layer_weights[k]):
                distance = DISTANCES[x.config.distances[k][j]]
                _, f, m = samples[index]
                index += 1
                channels = f.values.shape[1]
                subset = x.subset(channels, x.config.subset_features[k][j]).to(x.device)
                subset = None if torch.equal(subset, torch.arange(channels, device=subset.device)) else subset
                fv = counted(f.values, subset)
                mv = counted(m.values, subset).detach().requires_grad_(True)
                value = w * distance(fv, mv)
                dm, = torch.autograd.grad(value, mv)
                total += float(value.detach())
                contribution = (dm[:, :, None] * counted(m.gradients, subset)).sum(1)  # (n, D)
                if everywhere:
                    d_points += contribution
                else:
                    d_points[valid] += contribution
        if pullback is not None:
            d_points = (pullback.transpose(1, 2) @ d_points.unsqueeze(-1)).squeeze(-1)
        grad = transform.parameter_gradient(points, d_points).to(torch.float64)
        return total, grad, n_valid
