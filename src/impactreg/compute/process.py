"""This process's resources: its peak resident memory, and the C allocator's thresholds.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any glibc threshold turns
off glibc's dynamic mmap threshold, so every buffer above 128 KiB is mapped fresh and unmapped when
freed: a registration's per-iteration buffers then fault in their pages again every iteration
(measured on a 3 mm MNI pair: 20 M page faults, 36 s of system time for 44 s of user time, against
1 M faults and 2 s without it). ``reuse_freed_memory`` sets thresholds that keep such buffers in the
heap for reuse.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's ceiling for its dynamic threshold on 64-bit machines
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc pairs with it


def peak_resident_bytes() -> int:
    """This process's peak resident set size (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reuse_freed_memory() -> bool:
    """Where glibc's thresholds were pinned low by the environment (``MALLOC_TRIM_THRESHOLD_`` or
    ``MALLOC_MMAP_THRESHOLD_`` below 32 MiB), raise them to 32/64 MiB; True when they were changed."""
    pinned = [int(os.environ[name]) for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
              if os.environ.get(name, "").strip().isdigit()]
    if not pinned or min(pinned) >= MMAP_THRESHOLD:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: its variables mean nothing there
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
