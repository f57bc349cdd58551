"""User-facing errors. Each carries one line that names the problem and the fix.

The CLI prints ``str(error)`` and exits with code 2; nothing else is shown unless ``--debug``.
"""


class ImpactRegError(Exception):
    """Base of every error impactreg raises on bad input."""

    exit_code = 2


class InputError(ImpactRegError):
    """A missing or unreadable input file, or an unsupported format."""


class ImageError(ImpactRegError):
    """An image that cannot be used: wrong dimension, no overlap, empty mask, ..."""


class TransformFileError(ImpactRegError):
    """A malformed or unsupported elastix transform parameter file."""


class ParameterError(ImpactRegError):
    """A wrong key or value in a parameter map."""


class ModelError(ImpactRegError):
    """A feature-extraction model that cannot be found, loaded or called."""


class OutputError(ImpactRegError):
    """An output that cannot be written where it was asked for."""


class MemoryLimitError(ImpactRegError):
    """Work that cannot fit in the memory budget (--memory-limit) even in its smallest batch or tile."""
