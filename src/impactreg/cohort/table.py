"""The cohort table: one CSV row per pair of images to register.

Columns: ``id``, ``fixed``, ``moving`` (required) and optionally ``fixed_mask``, ``moving_mask``,
``fixed_points``, ``moving_points`` (landmarks for TRE), ``fixed_labels``, ``moving_labels`` (label maps
for Dice and HD95), ``initial_transform``. Any other column must be a parameter-map key: a non-empty
cell overrides that key in every stage's map for that row (values separated by spaces, as in elastix).
Relative paths are relative to the CSV file's folder.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ParameterError

REQUIRED = ("id", "fixed", "moving")
FILES = ("fixed", "moving", "fixed_mask", "moving_mask", "fixed_points", "moving_points", "fixed_labels",
         "moving_labels", "initial_transform")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class CohortPair:
    """One row: the pair's id (its output folder's name), its files (absolute paths or None) and its
    parameter overrides ((key, values) in column order)."""

    id: str
    files: tuple[tuple[str, Path | None], ...]
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def file(self, name: str) -> Path | None:
        return dict(self.files)[name]


def _override_columns(columns: list[str], source: str) -> list[str]:
    from ..parameters.schema import lookup

    extra = [c for c in columns if c not in FILES and c != "id"]
    for column in extra:
        if lookup(column) is None:
            raise ParameterError(f"{source}: column {column!r} is neither a file column ({', '.join(('id',) + FILES)}) "
                                 f"nor a parameter-map key (`impactreg parameters` lists them); rename or remove it")
    return extra


def _cell_values(text: str) -> tuple[str, ...]:
    return tuple(v.strip('"') for v in text.split())


def read_cohort(path: str | os.PathLike) -> list[CohortPair]:
    """The pairs of a cohort CSV, validated: known columns, unique ids usable as folder names."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise InputError(f"{path}: no such cohort file; give a CSV with columns id,fixed,moving[,...]")
    try:
        with csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the cohort CSV ({exc}); save it as plain-text CSV") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{path}: the header lacks column(s) {', '.join(missing)}; the first line must name "
                         f"at least id,fixed,moving")
    overrides = _override_columns(columns, str(path))
    base = csv_path.resolve().parent
    pairs, seen = [], set()
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        pid = row["id"]
        if not _SAFE_ID.match(pid):
            raise InputError(f"{path}, line {line}: id {pid!r} cannot name a folder; use letters, digits, '.', '_', "
                             f"'+' or '-', starting with a letter or digit")
        if pid in seen:
            raise InputError(f"{path}, line {line}: id {pid!r} appears twice; give every pair its own id")
        seen.add(pid)
        for needed in ("fixed", "moving"):
            if not row[needed]:
                raise InputError(f"{path}, line {line}: pair {pid} has no {needed} image; fill in the {needed} column")
        files = tuple((name, (base / row[name]) if row.get(name) else None) for name in FILES)
        values = tuple((key, _cell_values(row[key])) for key in overrides if row.get(key))
        pairs.append(CohortPair(pid, files, values))
    if not pairs:
        raise InputError(f"{path}: the cohort has no pairs; add one row per pair below the header")
    return pairs
