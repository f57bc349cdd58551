"""The training loss: IMPACT(fixed, warped moving) + lambda x regulariser(field) + w x Dice(labels).

For comparison the similarity can instead be MONAI's GlobalMutualInformationLoss ("mi") or
LocalNormalizedCrossCorrelationLoss ("lncc"), on the network's [0, 1]-scaled inputs (no mask).

The regulariser is MONAI's DiffusionLoss (mean squared first differences) or BendingEnergyLoss (second
differences) of the network's field in voxels of the model grid; the Dice term is MONAI's soft Dice
between the fixed labels and the moving labels (one-hot, warped linearly), background excluded.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..loss import IMPACT
from .settings import LearnSettings


class RegistrationLoss(torch.nn.Module):
    def __init__(self, settings: LearnSettings, dim: int, device="cpu"):
        super().__init__()
        from monai.losses import (BendingEnergyLoss, DiceLoss, DiffusionLoss, GlobalMutualInformationLoss,
                                  LocalNormalizedCrossCorrelationLoss)

        if settings.similarity == "mi":
            mi = GlobalMutualInformationLoss()
            self.similarity = lambda f, m, mask=None: mi(m, f)
        elif settings.similarity == "lncc":
            lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=dim, kernel_size=5)
            self.similarity = lambda f, m, mask=None: lncc(m, f)
        else:
            self.similarity = IMPACT(settings.models, dimension=dim if settings.slice_axis is None else 2,
                                     channels=settings.feature_channels, layers_mask=settings.layers_mask,
                                     weights=settings.layer_weights, distance=settings.distance,
                                     normalization=settings.normalization, device=device,
                                     slice_axis=settings.slice_axis)
        self.regularizer = DiffusionLoss() if settings.regularizer == "diffusion" else BendingEnergyLoss()
        self.dice = DiceLoss(include_background=False)
        self.settings = settings

    def images(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(fixed, moving) the similarity compares: raw intensities for IMPACT, [0, 1]-scaled for MI/LNCC."""
        if self.settings.similarity == "impact":
            return batch["fixed"], batch["moving"]
        return batch["fixed_input"], batch["moving_input"]

    def fixed_vectors(self, fixed: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor] | None:
        """IMPACT's features of the fixed image, to pass back to ``forward`` for that fixed image (None for MI/LNCC)."""
        return self.similarity.fixed_vectors(fixed, mask) if self.settings.similarity == "impact" else None

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, field: torch.Tensor, mask: torch.Tensor | None = None,
                fixed_onehot: torch.Tensor | None = None, warped_onehot: torch.Tensor | None = None,
                fixed_vectors: list[torch.Tensor] | None = None) -> dict:
        """The terms and their weighted sum ('loss'); tensors (B, C, *spatial). ``fixed_vectors``: from
        ``fixed_vectors(fixed, mask)`` (IMPACT), so that the fixed image's features are not computed again."""
        if fixed_vectors is not None:
            similarity = self.similarity(fixed, warped, mask, fixed_vectors=fixed_vectors)
        else:
            similarity = self.similarity(fixed, warped, mask)
        terms = {self.settings.similarity: similarity}
        with warnings.catch_warnings():  # MONAI's finite differences index with lists (torch deprecates it)
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
            terms["reg"] = self.regularizer(field)
        total = terms[self.settings.similarity] + self.settings.regularization_weight * terms["reg"]
        if self.settings.dice_weight > 0 and fixed_onehot is not None and warped_onehot is not None:
            terms["dice"] = self.dice(warped_onehot, fixed_onehot)
            total = total + self.settings.dice_weight * terms["dice"]
        terms["loss"] = total
        return terms


def one_hot(labels: torch.Tensor, values: tuple[int, ...]) -> torch.Tensor:
    """(B, 1, *spatial) label maps -> (B, 1 + len(values), *spatial) float, channel 0 the background."""
    index = torch.zeros_like(labels, dtype=torch.long)
    for k, value in enumerate(values, start=1):
        index[labels.round().long() == value] = k
    return F.one_hot(index[:, 0], len(values) + 1).movedim(-1, 1).to(torch.float32)
