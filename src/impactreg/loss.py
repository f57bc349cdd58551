"""IMPACT as a PyTorch loss, for learning-based registration (VoxelMorph-style) and synthesis.

    loss_fn = impactreg.IMPACT("MIND/R1D2", dimension=3)
    loss = loss_fn(fixed, warped_moving)            # tensors (B, C, [D,] H, W)

Features of both inputs come from the same models as the registration metric (TorchScript path,
hub name or built-in MIND); each selected layer is compared voxel by voxel with the chosen
distance, optionally inside a mask, and the layers are summed with their weights. Differentiable
with respect to either input; the feature models' weights are frozen, so gradients reach the inputs
only (and, through them, the network being trained).

IMPACT-Synth, the loss as a perceptual term for synthesis networks: a 2D model (``dimension=2``) on 3D
volumes runs slice by slice along ``slice_axis`` (0 = the first spatial axis of the tensor, Z), with
each volume's statistics for the normalisation; ``channels=3`` replicates a grey image for RGB
models; ``weights`` weighs the selected layers; a mask is resampled (nearest) to each feature grid:

    perceptual = impactreg.IMPACT("encoder_2d.pt", dimension=2, channels=3, normalization="imagenet",
                                  layers_mask="011", weights=[1, 0.5], slice_axis=0)  # a 3-layer RGB model
    loss = F.l1_loss(synthetic, real) + 0.1 * perceptual(real, synthetic, body_mask)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ModelError
from .features.extractor import FeatureExtractor, load_extractor
from .metrics.distances import DISTANCES


class IMPACT(torch.nn.Module):
    def __init__(self, models="MIND/R1D2", dimension: int = 3, channels: int = 1, layers_mask="1",
                 weights=None, distance="L1", normalization="none", subset_features: int = 0, device="cpu",
                 downloader=None, slice_axis: int | None = None, slice_batch: int = 32):
        super().__init__()
        names = [models] if isinstance(models, str) else list(models)
        masks = [layers_mask] * len(names) if isinstance(layers_mask, str) else list(layers_mask)
        norms = [normalization] * len(names) if isinstance(normalization, str) else list(normalization)
        distances = [distance] * len(names) if isinstance(distance, str) else list(distance)
        if not (len(masks) == len(norms) == len(distances) == len(names)):
            raise ModelError("IMPACT loss: give one layers mask, normalisation and distance per model (or one for all)")
        for d in distances:
            if d not in DISTANCES:
                raise ModelError(f"IMPACT loss: unknown distance {d!r}; use one of {', '.join(DISTANCES)}")
        kwargs = {"downloader": downloader} if downloader else {}
        self.extractors: list[FeatureExtractor] = [load_extractor(n, dimension, channels, norm, device, **kwargs)
                                                   for n, norm in zip(names, norms)]
        for extractor in self.extractors:
            if isinstance(extractor.model, torch.nn.Module):  # ScriptModules refuse requires_grad_
                for parameter in extractor.model.parameters():
                    parameter.requires_grad_(False)
        self.normalizations, self.masks, self.distances = norms, masks, distances
        selected = sum(m.count("1") for m in masks)
        self.weights = list(weights) if weights is not None else [1.0] * selected
        if len(self.weights) != selected:
            raise ModelError(f"IMPACT loss: {len(self.weights)} weights for {selected} selected layer(s)")
        self.subset_features = subset_features
        self.dimension = dimension
        if slice_axis is not None and (dimension != 2 or slice_axis not in (0, 1, 2)):
            raise ModelError(f"IMPACT loss: slice_axis {slice_axis} needs a 2D model (dimension=2) and an axis 0, 1 or 2 "
                             f"of the volume's spatial axes")
        self.slice_axis, self.slice_batch = slice_axis, max(1, int(slice_batch))

    def _features(self, extractor: FeatureExtractor, x: torch.Tensor, nb_layers: int):
        outputs = []
        eye = torch.eye(self.dimension, dtype=torch.int64)
        for item in x:  # per image: normalisation and model statistics are those of that image (volume)
            stats = torch.stack([item.min(), item.max(), item.mean(), item.std()]).detach()
            if item.dim() == self.dimension + 1:
                outputs.append(extractor(item[None, :1], stats, eye, nb_layers))
            else:
                outputs.append(self._slice_features(extractor, item[None, :1], stats, eye, nb_layers))
        return [torch.cat([o[i] for o in outputs]) for i in range(len(outputs[0]))]

    def _slice_features(self, extractor: FeatureExtractor, volume: torch.Tensor, stats, eye, nb_layers: int):
        """A 2D model on the slices of a (1, 1, Z, Y, X) volume along slice_axis; each layer comes back
        as a volume (1, K, ...) with the slice axis where it was."""
        axis = 2 + self.slice_axis
        slices = volume.movedim(axis, 2)[0].transpose(0, 1)  # (S, 1, A, B)
        parts = [extractor(slices[i:i + self.slice_batch], stats, eye, nb_layers)
                 for i in range(0, slices.shape[0], self.slice_batch)]
        layers = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
        return [layer.transpose(0, 1)[None].movedim(2, axis) for layer in layers]

    def _vectors(self, x: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The selected layers' features of ``x``, each as (voxels inside the mask, channels)."""
        vectors = []
        for extractor, layers_mask in zip(self.extractors, self.masks):
            layers = self._features(extractor, x, len(layers_mask))
            if len(layers) != len(layers_mask):
                raise ModelError(f"IMPACT loss: layers mask {layers_mask!r} has {len(layers_mask)} digits but "
                                 f"{extractor.name} gives {len(layers)} layers")
            for index, flag in enumerate(layers_mask):
                if flag != "1":
                    continue
                f = layers[index]
                v = f.movedim(1, -1).reshape(-1, f.shape[1])
                if mask is not None:
                    resized = F.interpolate(mask.float(), size=f.shape[2:], mode="nearest")
                    v = v.index_select(0, torch.nonzero(resized.reshape(-1) > 0.5)[:, 0])
                vectors.append(v)
        return vectors

    def fixed_vectors(self, fixed: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The fixed image's features as ``forward`` compares them, without autograd: computed once, they
        can be passed back as ``forward(..., fixed_vectors=...)`` for every moving image against that fixed one."""
        with torch.no_grad():
            return self._vectors(fixed, mask)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None,
                fixed_vectors: list[torch.Tensor] | None = None) -> torch.Tensor:
        spatial = self.dimension + (1 if self.slice_axis is not None else 0)
        if fixed.shape != moving.shape or fixed.dim() != spatial + 2:
            raise ModelError(f"IMPACT loss expects two tensors (B, C, *spatial) of the same shape with {spatial} "
                             f"spatial axes, got {tuple(fixed.shape)} and {tuple(moving.shape)}")
        f_vectors = self._vectors(fixed, mask) if fixed_vectors is None else fixed_vectors
        m_vectors = self._vectors(moving, mask)
        distances = [d for layers_mask, d in zip(self.masks, self.distances) for flag in layers_mask if flag == "1"]
        total = fixed.new_zeros(())
        for fv, mv, weight, distance in zip(f_vectors, m_vectors, self.weights, distances):
            if self.subset_features and self.subset_features < fv.shape[1]:
                subset = torch.randperm(fv.shape[1], device=fv.device)[: self.subset_features]
                fv, mv = fv[:, subset], mv[:, subset]
            total = total + weight * DISTANCES[distance](fv, mv)
        return total
