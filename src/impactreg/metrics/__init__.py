"""Similarity metrics and penalties (elastix's intensity metrics and the bending-energy penalty)."""
from .intensity import MattesMutualInformation, MeanSquares, NormalizedCorrelation, NormalizedMutualInformation
from .penalties import BendingEnergyPenalty

__all__ = ["MeanSquares", "NormalizedCorrelation", "MattesMutualInformation",
           "NormalizedMutualInformation", "BendingEnergyPenalty"]
