"""Registration accuracy: target registration error and label overlap (Dice)."""
from __future__ import annotations

import numpy as np
import torch

from .image import Image


def dice(fixed_labels: Image, warped_labels: Image, labels=None) -> dict[int, float]:
    """Dice per label value between two label maps on the same grid (label 0 is background)."""
    a = fixed_labels.data[0].round().long()
    b = warped_labels.data[0].round().long()
    if labels is None:
        labels = sorted(set(torch.unique(a).tolist()) - {0})
    scores = {}
    for label in labels:
        x, y = a == label, b == label
        total = int(x.sum() + y.sum())
        scores[int(label)] = float(2 * (x & y).sum() / total) if total else float("nan")
    return scores


def mean_dice(scores: dict[int, float]) -> float:
    values = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
