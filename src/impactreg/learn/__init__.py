"""The learning path on MONAI: a VoxelMorph-style network trained with the IMPACT loss (``train``),
applied to new pairs in physical space with optional instance optimisation (``predict``)."""
from .cohort import PairFiles, atlas_pairs, read_pairs_csv
from .grid import ModelGrid, field_transform, pair_grid
from .network import TrainedModel, load_model, save_model
from .predict import PredictResult, instance_optimise, predict
from .settings import LearnSettings
from .train import TrainResult, train

__all__ = ["LearnSettings", "ModelGrid", "PairFiles", "PredictResult", "instance_optimise", "predict", "TrainResult", "TrainedModel", "atlas_pairs", "field_transform",
           "load_model", "pair_grid", "read_pairs_csv", "save_model", "train"]
