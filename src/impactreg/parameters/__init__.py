"""elastix parameter maps: parsing and formatting of the ``(Key value ...)`` text syntax."""
from .parse import ParameterMap, format_parameter_map, parse_parameter_text, read_parameter_file, write_parameter_file

__all__ = ["ParameterMap", "format_parameter_map", "parse_parameter_text", "read_parameter_file", "write_parameter_file"]
