"""A dense displacement field as a transform: elastix's ``DeformationFieldTransform``.

T(x) = x + u(x), with u a D-component image of displacements in mm along the world axes (fixed ->
moving) on its own grid, interpolated as elastix's DeformationFieldInterpolatingTransform does:
order 0 (nearest neighbour, ITK's default) or 1 (linear, neighbour indices clamped to the image).
Outside the field's buffer (ITK's IsInsideBuffer: continuous index in [-0.5, n - 0.5) on every axis)
the transform is the identity. The field is stored as float32 (elastix writes Vector<float, D>
pixels) and interpolated in float64, as ITK does.

elastix cannot optimise this transform; it is a result (the dense engine writes it) and an input
(transformix, or an initial transform). Its spatial Jacobian, which elastix does not give, is the
derivative of the linearly interpolated field for either order.
"""
from __future__ import annotations

import torch

from ..geometry import Grid
from ..image import Image
from ..interpolation import Interpolator
from .base import Transform

FIELD_ORDERS = (0, 1)


class DeformationFieldTransform(Transform):
    elastix_name = "DeformationFieldTransform"

    def __init__(self, field: Image, order: int = 1):
        if order not in FIELD_ORDERS:
            raise ValueError(f"DeformationFieldInterpolationOrder must be 0 or 1, got {order}")
        if field.channels != field.dim:
            raise ValueError(f"a {field.dim}D displacement field needs {field.dim} components, got {field.channels}")
        self.dim = field.dim
        self.field = Image(field.data.detach().to(torch.float32).cpu(), field.grid, "float32")
        self.order = order
        self._interpolators: dict = {}

    @classmethod
    def zero(cls, grid: Grid, order: int = 1) -> "DeformationFieldTransform":
        return cls(Image(torch.zeros(grid.dim, *grid.shape), grid), order)

    @property
    def grid(self) -> Grid:
        return self.field.grid

    @property
    def parameters(self) -> torch.Tensor:
        """The displacements, component-major ((D, [Z,] Y, X) flattened), float64."""
        return self.field.data.reshape(-1).to(torch.float64)

    @parameters.setter
    def parameters(self, value) -> None:  # Transform.__init__ is not used; kept for the interface
        raise AttributeError("set a DeformationFieldTransform's displacements with with_parameters")

    def with_parameters(self, parameters) -> "DeformationFieldTransform":
        values = torch.as_tensor(parameters).reshape(self.field.data.shape)
        return DeformationFieldTransform(self.field.with_data(values), self.order)

    def to(self, device) -> "DeformationFieldTransform":
        return self  # the field stays on the CPU; interpolators are made per device

    def _interpolator(self, device, order: int) -> Interpolator:
        key = (str(device), order)
        if key not in self._interpolators:
            self._interpolators[key] = Interpolator(self.field, order=order, default=0.0, device=device,
                                                    dtype=torch.float64)
        return self._interpolators[key]

    def displacement(self, points: torch.Tensor) -> torch.Tensor:
        """u(x) (..., D) in mm at world points (..., D); zero outside the field."""
        lead = points.shape[:-1]
        flat = points.reshape(-1, self.dim)
        sampled = self._interpolator(points.device, self.order)(flat.to(torch.float64))
        values = torch.where(sampled.inside[:, None], sampled.values, torch.zeros_like(sampled.values))
        return values.to(points.dtype).reshape(*lead, self.dim)

    def map(self, points: torch.Tensor, parameters: torch.Tensor | None = None) -> torch.Tensor:
        transform = self if parameters is None else self.with_parameters(parameters)
        return points + transform.displacement(points)

    def spatial_jacobian(self, points: torch.Tensor) -> torch.Tensor:
        lead = points.shape[:-1]
        flat = points.reshape(-1, self.dim).to(torch.float64)
        sampled = self._interpolator(points.device, 1)(flat, gradient=True)
        gradients = torch.where(sampled.inside[:, None, None], sampled.gradients, torch.zeros_like(sampled.gradients))
        eye = torch.eye(self.dim, dtype=torch.float64, device=points.device)
        return (eye + gradients).to(points.dtype).reshape(*lead, self.dim, self.dim)

    def parameter_jacobian(self, points: torch.Tensor):
        raise NotImplementedError("a DeformationFieldTransform is optimised by the dense engine "
                                  "((Registration \"DenseRegistration\")), not by parameter gradients")
