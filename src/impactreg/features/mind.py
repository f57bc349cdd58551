"""MIND-SSC, the modality independent neighbourhood descriptor (Heinrich et al.), built in.

RrDd = radius r, dilation d. For a pair (a, b) of neighbourhood offsets at squared distance 2
(3D: 12 pairs of the six-neighbourhood; 2D: 4 pairs of the four-neighbourhood),
D(x) = I(x + d a) - I(x + d b) on the replicate-padded image; ssd = box mean of D^2 over a
(2r+1)^dim window; mind = ssd - min_c ssd; var = mean_c mind, clamped to [0.001, 1000] x its
global mean (per batch item); output exp(-mind / var), the same size as the input. The input is min-max
normalised first: with the whole image's statistics when given (the new calling convention),
else per batch item. Field of view: 2 (r + d) + 1 voxels.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from ..errors import OutputError

MIND_NAME = re.compile(r"^(?:.*/)?MIND/R(\d+)D(\d+)(?:_([23])D)?(?:\.pt)?$")


def neighbour_pairs(dim: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Pairs of axis-neighbour offsets at squared distance 2, in torch axis order."""
    offsets = []
    for axis in range(dim):
        for sign in (-1, 1):
            o = [0] * dim
            o[axis] = sign
            offsets.append(tuple(o))
    return [(a, b) for a, b in itertools.combinations(offsets, 2)
            if sum((x - y) ** 2 for x, y in zip(a, b)) == 2]


class MIND(torch.nn.Module):
    """MIND-SSC as a feature extractor: forward(x, nb_layers, stats, direction) -> [descriptor].

    x: (B, 1, [Z,] Y, X). ``stats`` = [min, max, mean, std] of the whole raw image; when it is
    empty, each batch item is min-max normalised on its own.
    """

    def __init__(self, radius: int = 1, dilation: int = 2, dim: int = 3):
        super().__init__()
        if dim not in (2, 3) or radius < 0 or dilation < 1:
            raise ValueError(f"MIND needs dim 2 or 3, radius >= 0, dilation >= 1 (got {dim}, {radius}, {dilation})")
        self.radius, self.dilation, self.dim = radius, dilation, dim
        pairs = neighbour_pairs(dim)
        self.channels = len(pairs)
        # Shifts as pad-and-crop slices: for offset o, I(x + d o) = padded[d + d o : d + d o + n]
        self.first = [list(a) for a, _ in pairs]
        self.second = [list(b) for _, b in pairs]

    def _shift(self, padded: torch.Tensor, offset: List[int], shape: List[int]) -> torch.Tensor:
        d = self.dilation
        if self.dim == 3:
            z, y, x = offset[0], offset[1], offset[2]
            return padded[:, :, d + d * z:d + d * z + shape[0], d + d * y:d + d * y + shape[1], d + d * x:d + d * x + shape[2]]
        y, x = offset[0], offset[1]
        return padded[:, :, d + d * y:d + d * y + shape[0], d + d * x:d + d * x + shape[1]]

    def forward(self, x: torch.Tensor, nb_layers: torch.Tensor = torch.ones(1), stats: torch.Tensor = torch.zeros(0),
                direction: torch.Tensor = torch.zeros(0)) -> List[torch.Tensor]:
        x = x[:, :1].to(torch.float32)
        if stats.numel() >= 2:
            lo, hi = stats[0], stats[1]
            x = (x - lo) / torch.clamp(hi - lo, min=1e-6)
        else:
            flat = x.reshape(x.shape[0], -1)
            lo = flat.min(dim=1)[0].reshape([-1] + [1] * (x.dim() - 1))
            hi = flat.max(dim=1)[0].reshape([-1] + [1] * (x.dim() - 1))
            x = (x - lo) / torch.clamp(hi - lo, min=1e-6)
        shape = list(x.shape[2:])
        d, r = self.dilation, self.radius
        pad = [d] * (2 * self.dim)
        padded = F.pad(x, pad, mode="replicate")
        # without autograd one name at a time holds a 12-channel volume and the steps work in place: about two
        # such volumes at once instead of six (the same values as out of place)
        in_place = not (x.requires_grad and torch.is_grad_enabled())
        sq = torch.cat([self._shift(padded, self.first[i], shape) - self._shift(padded, self.second[i], shape)
                        for i in range(self.channels)], dim=1)
        sq = sq.pow_(2) if in_place else sq ** 2
        k = 2 * r + 1
        if r > 0:
            sq = F.pad(sq, [r] * (2 * self.dim), mode="replicate")
        sq = F.avg_pool3d(sq, k, stride=1) if self.dim == 3 else F.avg_pool2d(sq, k, stride=1)
        mind = sq.sub_(sq.min(dim=1, keepdim=True)[0]) if in_place else sq - sq.min(dim=1, keepdim=True)[0]
        var = mind.mean(dim=1, keepdim=True)
        mean_var = var.reshape(var.shape[0], -1).mean(dim=1).reshape([-1] + [1] * (var.dim() - 1))  # per batch item
        mean_var = torch.clamp(mean_var, min=1e-12)  # a constant patch has no variance: its descriptor is all ones
        var = torch.maximum(torch.minimum(var, mean_var * 1000.0), mean_var * 0.001)
        return [mind.div_(var).neg_().exp_()] if in_place else [torch.exp(-mind / var)]


def parse_mind_name(name: str, dimension: int | None = None) -> MIND | None:
    """A MIND module for names like 'MIND/R1D2' or 'MIND/R1D2_3D.pt', else None."""
    match = MIND_NAME.match(str(name).replace("\\", "/"))
    if not match:
        return None
    r, d, dim = int(match.group(1)), int(match.group(2)), match.group(3)
    return MIND(r, d, int(dim) if dim else (dimension or 3))


def export_mind(path: str | Path, radius: int = 1, dilation: int = 2, dim: int = 3) -> Path:
    """Write MIND RrDd as a TorchScript file with the forward(x, nb_layers, stats, direction) signature."""
    module = torch.jit.script(MIND(radius, dilation, dim))
    path = Path(path)
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"{path}: {blocking} is a file, not a folder; choose another output path")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name such as {path / 'MIND.pt'}")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        module.save(str(tmp))
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports the OS error in a RuntimeError
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).split("strerror:")[-1].strip()
        raise OutputError(f"{path}: cannot write the model file ({reason}); choose a writable folder") from None
    return path
