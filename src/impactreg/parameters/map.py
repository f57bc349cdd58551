"""A validated parameter map: elastix keys with typed, per-level access.

Every key must be known to the schema (``schema.py``); a wrong key or value raises a
ParameterError naming the key, the value, what is allowed and the closest known key.
"""
from __future__ import annotations

import difflib
import math
import os
import tomllib
from pathlib import Path

from ..errors import InputError, ParameterError
from .parse import format_parameter_map, parse_parameter_text
from ..keys import Key
from .schema import all_keys, lookup

_TRUE, _FALSE = ("true",), ("false",)


def closest_key(name: str) -> str | None:
    names = [k.name for k in all_keys() if k.pattern is None]
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


def _convert(key: Key, name: str, raw: str, source: str):
    where = f"{source}: ({name} {raw})" if source else f"({name} {raw})"
    if key.kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ParameterError(f"{where}: {name} takes \"true\" or \"false\"")
    if key.kind in ("int", "float"):
        return _number(key, name, raw, where)
    if key.allowed is not None and raw not in key.allowed:
        suggestion = difflib.get_close_matches(raw, key.allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
        raise ParameterError(f"{where}: {raw!r} is not allowed for {name}; use one of {', '.join(key.allowed)}{hint}")
    return raw


def _number(key: Key, name: str, raw: str, where: str) -> int | float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    whole = key.kind == "int"
    if not math.isfinite(value) or whole and value != int(value):
        raise ParameterError(f"{where}: {name} takes {'a whole' if whole else 'a finite'} number")
    if not key.in_range(value):
        raise ParameterError(f"{where}: {name} takes {'a whole' if whole else 'a'} number {key.range_text()}")
    return int(value) if whole else value


class ParameterMap:
    """One elastix parameter map (one registration stage), validated against the schema."""

    def __init__(self, entries: dict, source: str = ""):
        self.source = source
        self.raw: dict[str, list[str]] = {}
        self._typed: dict[str, list] = {}
        for name, values in entries.items():
            values = [values] if not isinstance(values, (list, tuple)) else list(values)
            values = [_as_text(v) for v in values]
            key = lookup(name)
            if key is None:
                near = closest_key(name)
                hint = f"; did you mean {near!r}?" if near else ""
                where = f"{source}: " if source else ""
                raise ParameterError(f"{where}unknown parameter {name!r}{hint} (`impactreg parameters` lists every key)")
            if not values:
                raise ParameterError(f"{source + ': ' if source else ''}({name}) has no value")
            if key.allowed is not None and key.kind == "bool":
                if any(v.lower() not in key.allowed for v in values):
                    raise ParameterError(f"{source + ': ' if source else ''}({name} {' '.join(values)}): "
                                         f"only {', '.join(key.allowed)} is supported")
            if key.allowed is not None and key.kind == "int":
                if any(v not in key.allowed for v in values):
                    raise ParameterError(f"{source + ': ' if source else ''}({name} {' '.join(values)}): "
                                         f"{name} takes one of {', '.join(key.allowed)}")
            if len(values) > 1 and not (key.per_level or key.multi):
                raise ParameterError(f"{source + ': ' if source else ''}({name} {' '.join(values)}): {name} takes one value")
            self._typed[name] = [_convert(key, name, v, source) for v in values]
            self.raw[name] = values

    # construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ParameterMap":
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such parameter file; check the path")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            raise InputError(f"{path}: cannot read the parameter file as text") from None
        if p.suffix.lower() == ".toml":
            return cls(parse_toml_text(text, str(path)), str(path))
        return cls(parse_parameter_text(text, str(path)), str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> "ParameterMap":
        return cls(parse_parameter_text(text, source), source)

    # access ------------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._typed

    def keys(self):
        return self._typed.keys()

    def values(self, name: str) -> list | None:
        """All values of a key as typed list, or None when absent."""
        return self._typed.get(name)

    def get(self, name: str, level: int | None = None, default=None):
        """The value for ``level`` (one value means all levels), else ``default``, else the schema default."""
        values = self._typed.get(name)
        key = lookup(name)
        if values is None:
            return default if default is not None else (key.default if key else None)
        if level is None or len(values) == 1:
            return values[0]
        if level < len(values):
            return values[level]
        return values[-1]

    def check_levels(self, levels: int) -> None:
        """Per-level keys must give one value or one per level."""
        for name, values in self._typed.items():
            key = lookup(name)
            if key.per_level and len(values) not in (1, levels):
                raise ParameterError(f"{self.source + ': ' if self.source else ''}({name} {' '.join(self.raw[name])}): "
                                     f"give one value or {levels} (one per resolution level)")

    def set(self, name: str, values) -> None:
        """Replace a key's values (validated)."""
        other = ParameterMap({name: values}, self.source)
        self._typed[name] = other._typed[name]
        self.raw[name] = other.raw[name]

    def as_dict(self) -> dict[str, list[str]]:
        return dict(self.raw)

    def to_text(self) -> str:
        return format_parameter_map(self.raw)

    def __repr__(self) -> str:
        return f"ParameterMap({self.source or 'in memory'}, {len(self.raw)} keys)"


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_toml_text(text: str, source: str = "<toml>") -> dict[str, list[str]]:
    """elastix's TOML form: ``Key = value`` or ``Key = [values]``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{source}: invalid TOML ({exc})") from None
    result = {}
    for name, value in data.items():
        if isinstance(value, dict):
            raise ParameterError(f"{source}: [{name}] tables are not elastix parameters; write Key = value lines")
        values = value if isinstance(value, list) else [value]
        result[name] = [_as_text(v) for v in values]
    return result


def load_parameter_maps(sources) -> list[ParameterMap]:
    """Parameter maps from paths, texts of elastix syntax, dicts or ParameterMaps."""
    if isinstance(sources, (str, os.PathLike, dict, ParameterMap)):
        sources = [sources]
    if not isinstance(sources, (list, tuple)):
        raise InputError(f"parameter maps: got {type(sources).__name__}, not a parameter map; pass a file path, "
                         f"elastix text, a dict, a ParameterMap or a list of them")
    maps = []
    for src in sources:
        if not isinstance(src, (str, os.PathLike, dict, ParameterMap)):
            raise InputError(f"parameter maps: got {type(src).__name__}, not a parameter map; pass a file path, "
                             f"elastix text, a dict or a ParameterMap")
        if isinstance(src, ParameterMap):
            maps.append(src)
        elif isinstance(src, dict):
            maps.append(ParameterMap(src))
        elif isinstance(src, str) and "(" in src and "\n" in src:
            maps.append(ParameterMap.from_text(src))
        else:
            maps.append(ParameterMap.from_file(src))
    if not maps:
        raise ParameterError("no parameter map given; pass at least one -p MAP")
    return maps
