"""Every parameter-map key impactreg knows, assembled from the components' own declarations.

Keys follow elastix's names and meanings. ``per_level`` keys take one value per resolution level
or one value for all levels; ``multi`` keys take a list of any length (schedules, scales). Keys
that only tune elastix's internals (pixel types, threading) are accepted so that existing maps run
unchanged, and documented as having no effect.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..components import component_classes, selector_keys
from ..keys import Key


@lru_cache(maxsize=1)
def all_keys() -> list[Key]:
    keys: dict[str, Key] = {}
    for key in selector_keys():
        keys[key.name] = key
    for cls in component_classes():
        for key in cls.keys:
            keys.setdefault(key.name, key)
    return list(keys.values())


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, Key], list[Key]]:
    keys = all_keys()
    return {k.name: k for k in keys if k.pattern is None}, [k for k in keys if k.pattern is not None]


def lookup(name: str) -> Key | None:
    plain, patterns = _tables()
    key = plain.get(name)
    if key is not None:
        return key
    for k in patterns:
        if re.fullmatch(k.pattern, name):
            return k
    return None
