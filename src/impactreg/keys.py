"""Parameter-map keys as components declare them, and the typed view a component reads them from.

A component (transform, metric, sampler, ...) lists the keys it reads as ``Key`` declarations;
the schema, the error messages and ``impactreg parameters`` are assembled from them
(``parameters/schema.py``). At the start of each level the component reads its keys from a
``LevelView``: the stage's parameter map seen at one resolution level, values typed, the declared
default where a key is absent.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # "str", "int", "float", "bool"
    default: object
    doc: str
    allowed: tuple[str, ...] | None = None
    per_level: bool = False
    multi: bool = False
    pattern: str | None = None  # regex for indexed names such as Metric<i>Weight
    minimum: float | None = None  # smallest value allowed (int and float keys)
    maximum: float | None = None  # largest value allowed
    exclusive_minimum: bool = False  # the minimum itself is not allowed (e.g. spacings > 0)

    def range_text(self) -> str:
        """The allowed range as a user reads it: '>= 1', '> 0', '0..5', '<= 10000000', or ''."""
        low = None if self.minimum is None else _number_text(self.minimum)
        high = None if self.maximum is None else _number_text(self.maximum)
        if low is not None and high is not None and not self.exclusive_minimum:
            return f"{low}..{high}"
        parts = ([f"{'>' if self.exclusive_minimum else '>='} {low}"] if low is not None else []) + \
                ([f"<= {high}"] if high is not None else [])
        return " and ".join(parts)

    def in_range(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if self.minimum is not None and (value < self.minimum or self.exclusive_minimum and value == self.minimum):
            return False
        return self.maximum is None or value <= self.maximum


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


NO_EFFECT = "accepted for elastix compatibility; no effect in impactreg"


class LevelView:
    """One parameter map at one resolution level: ``view.get("SP_a")`` is the typed value for this
    level (one value means every level), else the key's declared default."""

    def __init__(self, parameter_map, level: int):
        self.map, self.level = parameter_map, level
        self.source = parameter_map.source

    def get(self, name: str, default=None):
        return self.map.get(name, self.level, default)

    def values(self, name: str) -> list | None:
        """Every value given for a key (all levels), or None when absent."""
        return self.map.values(name)

    def __contains__(self, name: str) -> bool:
        return name in self.map
