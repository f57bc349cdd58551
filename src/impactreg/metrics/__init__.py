"""Similarity metrics and penalties, by their elastix names."""
from .intensity import INTENSITY_METRICS, MattesMutualInformation, MeanSquares, NormalizedCorrelation, NormalizedMutualInformation
from .penalties import BendingEnergyPenalty

__all__ = ["INTENSITY_METRICS", "MeanSquares", "NormalizedCorrelation", "MattesMutualInformation",
           "NormalizedMutualInformation", "BendingEnergyPenalty"]
