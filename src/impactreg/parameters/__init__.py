"""elastix parameter maps: the text/TOML syntax, the schema of every key, validated maps."""
from .map import ParameterMap, closest_key, load_parameter_maps, parse_toml_text
from .parse import format_parameter_map, parse_parameter_text
from .schema import KEYS, Key, all_keys, lookup

__all__ = ["ParameterMap", "load_parameter_maps", "closest_key", "parse_toml_text", "format_parameter_map",
           "parse_parameter_text", "KEYS", "Key", "all_keys", "lookup"]
