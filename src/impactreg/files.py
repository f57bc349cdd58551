"""Atomic output: a file appears whole under its final name or not at all.

Temporary files and folders are created with the modes a plain ``open()`` or ``mkdir()`` gives
(0666 / 0777 less the umask), not ``tempfile``'s private 0600 / 0700, because they are renamed into
place and must stay readable by whoever may read the output folder (the host user of a Docker run).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def new_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>`` with mkdir's default mode."""
    while True:
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def _new_file(parent: Path, prefix: str) -> tuple[int, Path]:
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file in the same folder, then rename it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_file(p.parent, f".{p.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return p
