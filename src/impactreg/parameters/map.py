"""A validated parameter map: elastix keys with typed, per-level access.

Every key must be known to the schema (``schema.py``); a wrong key or value raises a
ParameterError naming the key, the value, what is allowed and the closest known key.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from pathlib import Path

from ..errors import InputError, ParameterError
from .parse import format_parameter_map, parse_parameter_text
from ..keys import Key
from ..components import components_in_use, selector_keys
from .schema import all_keys, lookup

log = logging.getLogger("impactreg")

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


def _validate(name: str, values: list[str], key: Key, source: str) -> list:
    """The typed values of one known key; a wrong value is one ParameterError naming it and what is allowed."""
    where = f"{source}: " if source else ""
    if not values:
        raise ParameterError(f"{where}({name}) has no value")
    if key.allowed is not None and key.kind == "bool":
        if any(v.lower() not in key.allowed for v in values):
            raise ParameterError(f"{where}({name} {' '.join(values)}): only {', '.join(key.allowed)} is supported")
    if key.allowed is not None and key.kind == "int":
        if any(v not in key.allowed for v in values):
            raise ParameterError(f"{where}({name} {' '.join(values)}): {name} takes one of {', '.join(key.allowed)}")
    if len(values) > 1 and not (key.per_level or key.multi):
        raise ParameterError(f"{where}({name} {' '.join(values)}): {name} takes one value")
    return [_convert(key, name, v, source) for v in values]


def _unknown_key_error(name: str, source: str) -> ParameterError:
    near = closest_key(name)
    hint = f"; did you mean {near!r}?" if near else ""
    where = f"{source}: " if source else ""
    return ParameterError(f"{where}unknown parameter {name!r}{hint} (`impactreg parameters` lists every key)")


def _read_by(classes: list[type]):
    """A test: is a key name read by one of these component classes (or a selector key)?"""
    keys = [k for cls in classes for k in cls.keys] + selector_keys()
    names = {k.name for k in keys if k.pattern is None}
    patterns = [re.compile(k.pattern) for k in keys if k.pattern is not None]
    return lambda name: name in names or any(p.fullmatch(name) for p in patterns)


class ParameterMap:
    """One elastix parameter map (one registration stage), validated against the components it names.

    As in elastix, keys no component of the map reads do not stop it: keys impactreg does not know
    (``unknown``) and keys of components the map does not use (``unused``) are set aside, unvalidated,
    and listed by ``warn_ignored`` in one line. ``strict=True`` makes an unknown key an error and
    validates every known key (the behaviour of ``--strict``). A per-level key's value at a level
    beyond its list is its first value (elastix's rule).
    """

    def __init__(self, entries: dict, source: str = "", strict: bool = False):
        self.source, self.strict = source, strict
        self.raw: dict[str, list[str]] = {}
        self._typed: dict[str, list] = {}
        self.unknown: dict[str, list[str]] = {}
        self.unused: dict[str, list[str]] = {}
        self.extra_values: dict[str, list[str]] = {}
        texts = {name: [_as_text(v) for v in ([values] if not isinstance(values, (list, tuple)) else values)]
                 for name, values in entries.items()}
        read = _read_by(components_in_use(texts, source))
        for name, values in texts.items():
            key = lookup(name)
            if key is None:
                if strict:
                    raise _unknown_key_error(name, source)
                self.unknown[name] = values
            elif strict or read(name):
                if not strict and len(values) > 1 and not (key.per_level or key.multi):
                    self.extra_values[name] = values  # elastix reads entry 0 of a one-value key
                    values = values[:1]
                typed = _validate(name, values, key, source)
                if read(name):
                    self._typed[name], self.raw[name] = typed, values
                else:
                    self.unused[name] = values
            else:
                self.unused[name] = values

    def ignored_text(self) -> str:
        """The keys set aside, as one line ('' when none): unknown keys with the closest known key."""
        parts = []
        if self.unknown:
            names = [f"{n} (did you mean {near}?)" if (near := closest_key(n)) else n for n in self.unknown]
            parts.append(f"{len(names)} key(s) impactreg does not know: {', '.join(names)}")
        if self.unused:
            parts.append(f"{len(self.unused)} key(s) of components this map does not use: {', '.join(self.unused)}")
        if self.extra_values:
            parts.append("values after the first of one-value keys: " +
                         ", ".join(f"({n} {' '.join(v)})" for n, v in self.extra_values.items()))
        return "; ".join(parts)

    def check_strict(self) -> None:
        """What ``--strict`` refuses: a key impactreg does not know, or a wrong value of any known key."""
        for name in self.unknown:
            raise _unknown_key_error(name, self.source)
        for name, values in {**self.unused, **self.extra_values}.items():
            _validate(name, values, lookup(name), self.source)

    def warn_ignored(self, strict: bool = False) -> None:
        """One warning line listing the keys set aside as elastix would ignore them (an error when ``strict``)."""
        if strict or self.strict:
            self.check_strict()
            if self.short_per_level_keys():
                raise ParameterError(f"{self.source + ': ' if self.source else ''}{self.short_per_level_keys()} "
                                     f"(--strict refuses this: give one value or one per level)")
        parts = [f"ignored, as elastix ignores them: {text}" if (text := self.ignored_text()) else "",
                 self.short_per_level_keys()]
        if any(parts):
            log.warning("%s%s", f"{self.source}: " if self.source else "", "; ".join(p for p in parts if p))

    # construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, strict: bool = False) -> "ParameterMap":
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such parameter file; check the path")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            raise InputError(f"{path}: cannot read the parameter file as text") from None
        if p.suffix.lower() == ".toml":
            return cls(parse_toml_text(text, str(path)), str(path), strict)
        return cls(parse_parameter_text(text, str(path)), str(path), strict)

    @classmethod
    def from_text(cls, text: str, source: str = "<text>", strict: bool = False) -> "ParameterMap":
        return cls(parse_parameter_text(text, source), source, strict)

    # access ------------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._typed

    def keys(self):
        return self._typed.keys()

    def values(self, name: str) -> list | None:
        """All values of a key as typed list, or None when absent."""
        return self._typed.get(name)

    def get(self, name: str, level: int | None = None, default=None):
        """The value for ``level``: entry ``level`` if the list has one, else the first (elastix's rule);
        absent keys give ``default``, else the schema default."""
        values = self._typed.get(name)
        if values is None:
            key = lookup(name)
            return default if default is not None else (key.default if key else None)
        if level is None or level >= len(values):
            return values[0]
        return values[level]

    def short_per_level_keys(self) -> str:
        """Per-level keys whose count is neither 1 nor NumberOfResolutions, as one line ('' when none)."""
        levels = self.get("NumberOfResolutions")
        odd = [f"{name} ({len(values)})" for name, values in self._typed.items()
               if lookup(name).per_level and len(values) not in (1, levels)]
        if not odd:
            return ""
        return (f"per-level keys with a count other than 1 or {levels} (NumberOfResolutions): {', '.join(odd)}; "
                f"a level without its own value takes the first, as in elastix")

    def check_levels(self, levels: int) -> None:
        """Kept for callers of the earlier API: per-level counts fall back as in elastix and are not an error."""

    def set(self, name: str, values) -> None:
        """Replace a key's values (validated; the key must be one impactreg knows)."""
        key = lookup(name)
        if key is None:
            raise _unknown_key_error(name, self.source)
        values = [_as_text(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        self._typed[name] = _validate(name, values, key, self.source)
        self.raw[name] = values
        self.unused.pop(name, None)

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


def load_parameter_maps(sources, strict: bool = False) -> list[ParameterMap]:
    """Parameter maps from paths, texts of elastix syntax, dicts or ParameterMaps (``strict``: see ParameterMap)."""
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
            if strict:
                src.check_strict()
            maps.append(src)
        elif isinstance(src, dict):
            maps.append(ParameterMap(src, strict=strict))
        elif isinstance(src, str) and "(" in src and "\n" in src:
            maps.append(ParameterMap.from_text(src, strict=strict))
        else:
            maps.append(ParameterMap.from_file(src, strict))
    if not maps:
        raise ParameterError("no parameter map given; pass at least one -p MAP")
    return maps
