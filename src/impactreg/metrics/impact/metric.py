"""The IMPACT metric component (elastix name "Impact")."""
from __future__ import annotations

import torch

from ...errors import ParameterError
from ...features.extractor import load_extractor
from ...image import Image
from ..protocol import LevelContext, Metric, Samples
from .config import KEYS, impact_level
from .jacobian import JacobianMode
from .level import ImpactInputs
from .static import STATIC_KEYS, StaticMode, feature_map_order


class ImpactMetric(Metric):
    elastix_name = "Impact"
    keys = KEYS + STATIC_KEYS

    def __init__(self, downloader=None):
        self.downloader = downloader
        self.mode: JacobianMode | StaticMode | None = None

    def begin_level(self, context: LevelContext) -> None:
        view = context.view
        try:
            config = impact_level(view.map, view.level, context.fixed.dim, torch.device(context.device),
                                  context.device_given)
        except ParameterError as exc:
            source = view.source
            raise ParameterError(f"{source}: {exc}" if source and source not in str(exc) else str(exc)) from None
        kwargs = {"downloader": self.downloader} if self.downloader else {}

        def load(settings):
            return [load_extractor(s.path, s.dimension, s.channels, s.normalization, config.device, context.base, **kwargs)
                    for s in settings]

        fixed_mask = None
        if context.fixed_mask is not None:
            fixed_mask = Image(context.fixed_mask.to(torch.float32)[None], context.fixed.grid, "float32")
        inputs = ImpactInputs(config, load(config.fixed), load(config.moving), context.fixed, context.moving,
                              context.moving_mask_interpolator(), context.interpolation_order, context.generator,
                              torch.device(context.device), context.memory, fixed_mask, context.moving_mask,
                              feature_map_order(view))
        self.mode = JacobianMode(inputs) if config.mode == "Jacobian" else StaticMode(inputs, view.level)

    def value_and_gradient(self, transform, samples: Samples):
        return self.mode.value_and_gradient(transform, samples.points)

    def end_iteration(self, iteration: int) -> bool | None:
        return self.mode.end_iteration(iteration)

    def end_level(self) -> None:
        self.mode = None
