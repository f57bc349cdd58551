"""What both IMPACT modes share at one resolution level: the settings, the loaded models and the
images they look at."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...compute.memory import MemoryBudget
from ...features.extractor import FeatureExtractor, image_stats
from ...image import Image
from ...interpolation import Interpolator
from .config import ImpactLevel


@dataclass
class ImpactInputs:
    config: ImpactLevel
    fixed_models: list[FeatureExtractor]
    moving_models: list[FeatureExtractor]
    fixed: Image
    moving: Image
    moving_mask: Interpolator | None
    order: int  # interpolation order of images and feature maps
    generator: torch.Generator
    device: torch.device  # where points and transforms live
    memory: MemoryBudget | None = None  # the registration's budget (None: the default share)
    fixed_mask: Image | None = None  # where fixed features and patches may reach (the fixed level grid)
    moving_mask_image: Image | None = None  # the moving mask itself, for the validity of moving feature maps
    feature_order: int = 3  # Static mode: B-spline order of the feature maps (the elastix metric's: 3)

    def __post_init__(self):
        self.model_device = self.config.device
        self.budget = MemoryBudget.resolve(self.memory).on(self.model_device)
        self.fixed_stats = image_stats(self.fixed.data).to(self.model_device)
        self.moving_stats = image_stats(self.moving.data).to(self.model_device)
        self.fixed_direction = self.fixed.grid.axis_direction()
        # Jacobian mode samples both patches along the fixed image's axes (the moving one at T(x + o)):
        # a model that reorients by direction must see the same axes for both
        self.moving_direction = self.fixed_direction
        self.fixed_mask_interpolator = (None if self.fixed_mask is None else
                                        Interpolator(self.fixed_mask, order=0, device=self.device, dtype=torch.float32))

    def subset(self, channels: int, wanted: int) -> torch.Tensor:
        """The channels compared this evaluation: all, or ``wanted`` drawn at random."""
        if wanted <= 0 or wanted >= channels:
            return torch.arange(channels, device=self.model_device)
        return torch.randperm(channels, generator=self.generator)[:wanted].to(self.model_device)

    def autocast(self):
        if self.config.mixed_precision and self.model_device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)
