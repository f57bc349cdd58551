"""The memory budget of a registration.

``--memory-limit`` (``memory_limit=`` of ``register``) bounds the whole process: its peak resident
set, images, pyramids, interpolators and feature maps included ("4G", "800M", "1.5GiB", bytes).
Without it the process may take what it holds when the registration starts plus a safe share of
what the machine has free: /proc/meminfo MemAvailable, capped by a cgroup (v2 or v1) limit when
one is set. Such a budget (``process=True``) leaves its batched and tiled work ``room()``: the
limit less the process's resident set now. A budget of ``process=False`` is working memory alone
(on CUDA: the device's, at most its free memory). Consumers (IMPACT's model passes, Static feature
maps) size batches and tiles with ``MemoryBudget.items``, run them through ``halving``, which
halves the batch on out-of-memory and retries, and raise one clear line when even one item
cannot fit.
"""
from __future__ import annotations

import ctypes
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ParameterError

log = logging.getLogger("impactreg")

DEFAULT_SHARE = 0.5  # of the memory available when the registration starts
CUDA_SHARE = 0.8  # of the device's free memory
UNITS = {"": 1, "B": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_memory(text: str | int | float) -> int:
    """Bytes of a size like "4G", "800M", "1.5GiB", "512MB" or a plain number of bytes (binary units)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ParameterError(f"--memory-limit {text!r}: not a size; write it like 4G, 800M or 1.5GiB")
        value = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if value < 2 ** 20:
        raise ParameterError(f"--memory-limit {text!r} is below 1M; give at least a few hundred megabytes, e.g. 800M")
    return value


def format_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_free() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1), or None when unlimited or unknown."""
    pairs = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    for limit_file, usage_file in pairs:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2 ** 60:
            return None
        return max(0, int(limit) - usage)
    return None


def _release_freed() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim), so that the resident set
    counts what is in use; a no-op elsewhere."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def resident_bytes() -> int:
    """This process's resident set size now (VmRSS, after freed heap pages are handed back; 0 where /proc
    is missing)."""
    _release_freed()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _vm_rss() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rise(run: Callable[[], object], interval: float = 0.001) -> int | None:
    """Bytes the resident set rose above its level before ``run()`` while it ran, sampled every ``interval``
    seconds by a thread (the process's own peak, VmHWM, is left alone); None where /proc is missing."""
    before = resident_bytes()
    if not before:
        run()
        return None
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _vm_rss())
            done.wait(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run()
    finally:
        peak[0] = max(peak[0], _vm_rss())
        done.set()
        watcher.join()
    return max(0, peak[0] - before)


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free now for this process: host (MemAvailable, cgroup), or the CUDA device's free memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    found = [v for v in (_meminfo_available(), _cgroup_free()) if v is not None]
    return min(found) if found else 4 * 2 ** 30


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes one registration may hold: the whole process (``process``), or its batched and tiled work."""

    bytes: int
    explicit: bool = False  # given by the user (--memory-limit), not the default share
    process: bool = False  # ``bytes`` bounds the process's resident set, not only the work sized to it

    @classmethod
    def for_process(cls, limit=None) -> "MemoryBudget":
        """The whole process's budget: ``limit`` (--memory-limit), else what the process holds now plus
        DEFAULT_SHARE of the memory available."""
        if isinstance(limit, MemoryBudget):
            return limit
        if limit is not None:
            return cls(parse_memory(limit), True, True)
        return cls(resident_bytes() + max(int(DEFAULT_SHARE * available_bytes("cpu")), 2 ** 28), False, True)

    @classmethod
    def resolve(cls, limit=None, device: torch.device | str = "cpu") -> "MemoryBudget":
        """The user's limit, else DEFAULT_SHARE of the host's available memory (CUDA_SHARE of the
        device's free memory when ``device`` is a GPU and that is smaller)."""
        if limit is not None:
            return limit if isinstance(limit, MemoryBudget) else cls(parse_memory(limit), True)
        share = int(DEFAULT_SHARE * available_bytes("cpu"))
        device = torch.device(device)
        if device.type == "cuda":
            share = min(share, int(CUDA_SHARE * available_bytes(device)))
        return cls(max(share, 2 ** 28))

    def on(self, device: torch.device | str) -> "MemoryBudget":
        """This budget for work on ``device``: a default budget shrinks to the GPU's free memory."""
        device = torch.device(device)
        if device.type != "cuda":
            return self
        if self.explicit:
            return MemoryBudget(self.bytes, True)
        return MemoryBudget(min(self.room(), int(CUDA_SHARE * available_bytes(device))))

    def room(self) -> int:
        """Bytes that work may still take now: the budget, less the process's resident set when it bounds the
        whole process."""
        return self.bytes - resident_bytes() if self.process else self.bytes

    def items(self, bytes_per_item: float, reserved: float = 0.0, most: int | None = None) -> int:
        """How many items of ``bytes_per_item`` fit in ``room()`` beside ``reserved`` bytes (0 when not even one)."""
        room = self.room() - reserved
        n = int(room // max(bytes_per_item, 1.0)) if room > 0 else 0
        return n if most is None else min(n, most)

    def describe(self) -> str:
        """The budget for a message: its size, and for a process budget what is left of it now."""
        if not self.process:
            return f"the memory budget is {self}"
        what = "--memory-limit" if self.explicit else "the default memory limit"
        return f"{format_bytes(max(self.room(), 0))} of {what} {self} is left (the process holds {format_bytes(resident_bytes())})"

    def __str__(self) -> str:
        return format_bytes(self.bytes)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def halving(run: Callable[[int, int], None], total: int, batch: int, too_large: Callable[[], Exception]) -> int:
    """Call ``run(start, stop)`` over ``range(total)`` in batches of at most ``batch``; on out-of-memory
    halve the batch and retry the failed batch; raise ``too_large()`` when a batch of one fails.
    Returns the batch size that worked last."""
    batch = max(1, min(batch, total)) if total else 1
    start = 0
    while start < total:
        stop = min(total, start + batch)
        try:
            run(start, stop)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if stop - start <= 1:
                raise too_large() from None
            batch = max(1, (stop - start) // 2)
            log.info("out of memory with a batch of %d; retrying with %d", stop - start, batch)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return batch
