"""Feature extractors for IMPACT: TorchScript models (path or hub), the built-in MIND, the catalogue."""
from .catalog import CATALOG, ModelInfo
from .extractor import NORMALIZATIONS, FeatureExtractor, image_stats, load_extractor, normalize
from .maps import FeatureMap, FeatureSampler, compute_feature_maps, shared_direction
from .mind import MIND, export_mind, parse_mind_name
from .torchscript import cache_dir, hub_download, resolve_model_path

__all__ = ["CATALOG", "ModelInfo", "FeatureMap", "FeatureSampler", "compute_feature_maps", "shared_direction",
           "FeatureExtractor", "load_extractor", "normalize", "image_stats",
           "NORMALIZATIONS", "MIND", "export_mind", "parse_mind_name", "cache_dir", "hub_download", "resolve_model_path"]
