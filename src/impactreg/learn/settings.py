"""LearnSettings: everything that defines a trained registration model and how it was trained."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ParameterError

REGULARIZERS = ("diffusion", "bending")
SIMILARITIES = ("impact", "mi", "lncc")


@dataclass
class LearnSettings:
    # network (MONAI UNet predicting a field; integrated by scaling and squaring when integration_steps > 0)
    features: tuple[int, ...] = (16, 32, 32, 32)
    strides: tuple[int, ...] = (2, 2, 2)
    integration_steps: int = 7
    # similarity: impactreg.IMPACT on fixed vs warped moving ("mi", "lncc": MONAI's intensity losses, for comparison)
    similarity: str = "impact"
    models: str = "MIND/R1D2"
    layers_mask: str = "1"
    layer_weights: tuple[float, ...] | None = None
    distance: str = "L1"
    normalization: str = "none"
    feature_channels: int = 1
    slice_axis: int | None = None
    # regulariser on the network's field (voxel units) and optional Dice on labels
    regularizer: str = "diffusion"
    regularization_weight: float = 1.0
    dice_weight: float = 0.0
    labels: tuple[int, ...] = ()
    # optimisation
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1
    epochs: int = 10
    seed: int = 0
    mixed_precision: bool = True  # bfloat16 autocast of the network on CUDA; ignored on CPU
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = tuple(int(v) for v in self.features)
        self.strides = tuple(int(v) for v in self.strides)
        self.labels = tuple(int(v) for v in self.labels)
        if self.layer_weights is not None:
            self.layer_weights = tuple(float(v) for v in self.layer_weights)
        if self.similarity not in SIMILARITIES:
            raise ParameterError(f"similarity {self.similarity!r}: use one of {', '.join(SIMILARITIES)}")
        if self.regularizer not in REGULARIZERS:
            raise ParameterError(f"regulariser {self.regularizer!r}: use one of {', '.join(REGULARIZERS)}")
        if len(self.features) != len(self.strides) + 1:
            raise ParameterError(f"the network needs one more feature count than strides, got features "
                                 f"{self.features} and strides {self.strides}")
        if self.integration_steps < 0 or self.batch_size < 1 or self.epochs < 0:
            raise ParameterError("integration steps must be >= 0, batch size >= 1 and epochs >= 0")
        if self.dice_weight < 0 or self.regularization_weight < 0:
            raise ParameterError("loss weights must be >= 0")

    @property
    def total_stride(self) -> int:
        total = 1
        for s in self.strides:
            total *= s
        return total

    def as_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LearnSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
