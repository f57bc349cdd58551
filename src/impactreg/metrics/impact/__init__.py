"""IMPACT: similarity of pretrained-network features of the fixed and moving images.

``config`` reads the settings of a level from either family of key names, ``jacobian`` and
``static`` are the two modes, ``features`` computes Static mode's feature maps; ``ImpactMetric``
is the metric component (elastix name "Impact") that loads the models at the start of each level
and hands the evaluations to its mode.
"""
from .config import ImpactLevel, ModelSettings, impact_level
from .metric import ImpactMetric

__all__ = ["ImpactMetric", "ImpactLevel", "ModelSettings", "impact_level"]
