"""The VoxelMorph-style network on MONAI and the model file that holds it.

``RegistrationNetwork``: a MONAI ``UNet`` on (moving, fixed) predicts a field (voxels, MONAI's ddf
convention); with ``integration_steps`` > 0 it is a stationary velocity integrated by scaling and
squaring (MONAI ``DVF2DDF``) into a displacement; MONAI ``Warp`` resamples the moving image with it.

A model file (torch.save of plain types and tensors, read with ``weights_only=True``) holds the network
weights, the model grid and the settings: everything ``predict`` needs.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .grid import ModelGrid
from .settings import LearnSettings

MODEL_FORMAT = "impactreg.learn.model"
MODEL_VERSION = 1


def _monai():
    try:
        from monai.networks.blocks import DVF2DDF, Warp
        from monai.networks.nets import UNet
    except ImportError:
        raise ModelError("the learning path needs MONAI: pip install 'impactreg[learn]'") from None
    return UNet, DVF2DDF, Warp


class RegistrationNetwork(torch.nn.Module):
    """forward(moving, fixed) -> field (B, D, *spatial): the network's output (velocity or displacement).
    ``displacement(field)`` integrates it; ``warp(image, ddf)`` resamples with a displacement."""

    def __init__(self, dim: int, settings: LearnSettings):
        super().__init__()
        UNet, DVF2DDF, Warp = _monai()
        width = settings.features[0]
        self.unet = UNet(spatial_dims=dim, in_channels=2, out_channels=width, channels=settings.features,
                         strides=settings.strides, num_res_units=0, act=("leakyrelu", {"negative_slope": 0.2}),
                         norm=None)
        conv = torch.nn.Conv3d if dim == 3 else torch.nn.Conv2d
        self.flow = conv(width, dim, kernel_size=3, padding=1)
        torch.nn.init.normal_(self.flow.weight, std=1e-5)  # start near the identity, as VoxelMorph does
        torch.nn.init.zeros_(self.flow.bias)
        self.activation = torch.nn.LeakyReLU(0.2)
        with warnings.catch_warnings():  # MONAI says, every time, that it uses torch's grid_sample
            warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample")
            self.integrate = DVF2DDF(settings.integration_steps) if settings.integration_steps > 0 else None
            self.warp_linear = Warp(mode="bilinear", padding_mode="border")
            self.warp_nearest = Warp(mode="nearest", padding_mode="border")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self.flow(self.activation(self.unet(torch.cat([moving, fixed], dim=1))))

    def displacement(self, field: torch.Tensor) -> torch.Tensor:
        return self.integrate(field) if self.integrate is not None else field

    def warp(self, image: torch.Tensor, ddf: torch.Tensor, nearest: bool = False) -> torch.Tensor:
        """image(x + ddf(x)) on the pair grid; (B, C, *spatial)."""
        return (self.warp_nearest if nearest else self.warp_linear)(image, ddf)


def build_network(grid: ModelGrid, settings: LearnSettings) -> RegistrationNetwork:
    """The network, its weights drawn from ``settings.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return RegistrationNetwork(grid.dim, settings)


@dataclass
class TrainedModel:
    network: RegistrationNetwork
    grid: ModelGrid
    settings: LearnSettings
    history: list

    def to(self, device) -> "TrainedModel":
        self.network.to(device)
        return self


def save_model(path: str | os.PathLike, network: RegistrationNetwork, grid: ModelGrid, settings: LearnSettings,
               history: list | None = None) -> Path:
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "grid": grid.as_dict(),
               "settings": settings.as_dict(), "state_dict": state, "history": history or []}
    return atomic_save(payload, path)


def atomic_save(payload: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | os.PathLike, device="cpu") -> TrainedModel:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; train one with `impactreg train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a file that is not a model
        raise ModelError(f"{path}: not an impactreg model file ({type(exc).__name__}); give a file written by "
                         f"`impactreg train`") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: not an impactreg model file; give a file written by `impactreg train`")
    if payload.get("version", 0) > MODEL_VERSION:
        raise ModelError(f"{path}: model file version {payload['version']} is newer than this impactreg reads "
                         f"({MODEL_VERSION}); update impactreg")
    grid = ModelGrid.from_dict(payload["grid"])
    settings = LearnSettings.from_dict(payload["settings"])
    network = build_network(grid, settings)
    network.load_state_dict(payload["state_dict"])
    network.eval()
    return TrainedModel(network.to(device), grid, settings, list(payload.get("history", [])))
