"""Where a computation runs: the torch device and the number of CPU threads, as the user names them."""
from __future__ import annotations

import numbers

import torch

from .errors import InputError


def torch_device(name: str | torch.device | None) -> torch.device:
    """The torch device ``name`` (default cpu), refused in one line when torch does not know it or it is absent."""
    try:
        device = torch.device(name or "cpu")
    except (RuntimeError, TypeError):
        raise InputError(f"--device {name}: not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: impactreg runs on cpu or cuda devices; use --device cpu or cuda:N")
    return device


def use_threads(threads: int | None) -> None:
    """Run torch's CPU work on ``threads`` threads (None: torch's default)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise InputError(f"-threads {threads}: give a whole number of CPU threads, at least 1")
    torch.set_num_threads(int(threads))
