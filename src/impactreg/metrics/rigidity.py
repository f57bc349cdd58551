"""elastix's TransformRigidityPenalty (Staring, Klein & Pluim, Med. Phys. 34(11), 2007).

A penalty on a B-spline transform, evaluated on its control-point grid: the coefficient images
u_i (mm) are filtered with 3-tap separable operators (B-spline derivatives at the knots, edges
replicated as ITK's NeighborhoodOperatorImageFilter does), which give at each control point the
first derivatives du_i/dx_j and the second derivatives of the displacement. With F = I + du/dx:

- linearity condition LC: sum_i sum of the squared second derivatives of u_i;
- orthonormality condition OC: sum_{j<=k} ((F^T F)_jk - delta_jk)^2;
- properness condition PC: (det F - 1)^2;

each a sum over the control points weighted by the rigidity coefficient c(k) and divided by
sum_k c(k); the penalty is the weighted sum of the conditions in use. c is 1 everywhere unless
a fixed and/or moving rigidity image is given (the maximum of the two, looked up at the control
point and at the B-spline's image of it, after an optional grey dilation by a radius of
DilationRadiusMultiplier x grid spacing voxels along each axis).

The value is elastix's to the operator: the pure second derivatives carry elastix's factor
1/2 ([1 -2 1] / 2s^2) and the mixed ones the separable product of [-1 0 1] / 2(s_a s_b) along both
axes, hence a scale 1/(s_a s_b)^2. The gradient is the exact gradient of that value (autograd
through the filters). elastix's own derivative differs in two places: it scales the mixed terms by
1/(s_a s_b) instead, and it replicates edge values where the exact adjoint of the replicated
filter is needed, so it matches this gradient only away from the grid border and with
s_a s_b = 1. The rigidity coefficients are constant with respect to the parameters, as in elastix.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, ParameterError
from ..image import Image, read_image
from ..keys import Key
from .protocol import LevelContext, Metric, Samples
from ..transforms import BSplineTransform, CombinationTransform

log = logging.getLogger("impactreg")

_SMOOTH = (1.0 / 6.0, 4.0 / 6.0, 1.0 / 6.0)  # B-spline of order 3 at the knots -1, 0, 1


def _first(s: float):
    return (-0.5 / s, 0.0, 0.5 / s)


def _second(s: float):
    return (0.5 / s ** 2, -1.0 / s ** 2, 0.5 / s ** 2)


def derivative_operators(spacing) -> dict[str, list[tuple[float, float, float]]]:
    """elastix's separable operators, one 3-tap kernel per axis (x, y[, z]), by elastix's letter:
    A, B, C the first derivatives along x, y, z; D, E, F the second; G, H, I the mixed xy, xz, yz."""
    s = [float(v) for v in spacing]
    dim = len(s)

    def op(**along):
        return [along.get(a, _SMOOTH) for a in "xyz"[:dim]]

    ops = {"A": op(x=_first(s[0])), "B": op(y=_first(s[1])), "D": op(x=_second(s[0])), "E": op(y=_second(s[1])),
           "G": op(x=_first(s[0] * s[1]), y=_first(s[0] * s[1]))}
    if dim == 3:
        ops.update({"C": op(z=_first(s[2])), "F": op(z=_second(s[2])),
                    "H": op(x=_first(s[0] * s[2]), z=_first(s[0] * s[2])),
                    "I": op(y=_first(s[1] * s[2]), z=_first(s[1] * s[2]))})
    return ops


def _correlate_axis(images: torch.Tensor, kernel, axis: int) -> torch.Tensor:
    """out[k] = kernel[0] in[k-1] + kernel[1] in[k] + kernel[2] in[k+1] along torch ``axis``, edges replicated."""
    n = images.shape[axis]
    index = torch.arange(n, device=images.device)
    before = images.index_select(axis, (index - 1).clamp_min(0))
    after = images.index_select(axis, (index + 1).clamp_max(n - 1))
    return kernel[0] * before + kernel[1] * images + kernel[2] * after


def filter_separable(images: torch.Tensor, per_axis) -> torch.Tensor:
    """Coefficient images (D, [Z,] Y, X) filtered with one 3-tap kernel per world axis (x first)."""
    for axis, kernel in enumerate(per_axis):
        images = _correlate_axis(images, kernel, images.dim() - 1 - axis)
    return images


def rigidity_conditions(coefficients: torch.Tensor, spacing, weights: torch.Tensor, which=("LC", "OC", "PC")):
    """The weighted sums (not yet divided by sum(weights)) of the conditions in ``which``.

    ``coefficients``: (D, [Z,] Y, X) B-spline coefficients in mm; ``spacing``: control grid
    spacing (x, y[, z]) in mm; ``weights``: rigidity coefficients on the control grid ([Z,] Y, X).
    """
    dim = coefficients.shape[0]
    ops = derivative_operators(spacing)
    out = {}
    if "OC" in which or "PC" in which:
        first = torch.stack([filter_separable(coefficients, ops[letter]) for letter in "ABC"[:dim]], dim=1)
        f = first.movedim((0, 1), (-2, -1)) + torch.eye(dim, dtype=coefficients.dtype, device=coefficients.device)
        if "OC" in which:
            gram = f.transpose(-1, -2) @ f - torch.eye(dim, dtype=f.dtype, device=f.device)
            upper = torch.triu_indices(dim, dim, device=f.device)
            out["OC"] = (weights * (gram[..., upper[0], upper[1]] ** 2).sum(-1)).sum()
        if "PC" in which:
            out["PC"] = (weights * (torch.linalg.det(f) - 1.0) ** 2).sum()
    if "LC" in which:
        letters = "DEG" if dim == 2 else "DEGFHI"
        second = sum((filter_separable(coefficients, ops[letter]) ** 2).sum(0) for letter in letters)
        out["LC"] = (weights * second).sum()
    return out


def dilate(data: torch.Tensor, radii) -> torch.Tensor:
    """Grey dilation of ([Z,] Y, X) by a line of 2r+1 voxels along each axis in turn (radii x-y-z),
    outside the image not counting (ITK's GrayscaleDilateImageFilter with a ball of radius r on one axis)."""
    out = data[None, None]
    pool = F.max_pool2d if data.dim() == 2 else F.max_pool3d
    for axis, r in enumerate(radii):
        if r <= 0:
            continue
        kernel = [1] * data.dim()
        kernel[data.dim() - 1 - axis] = 2 * r + 1
        padding = [k // 2 for k in kernel]
        out = pool(out, tuple(kernel), stride=1, padding=tuple(padding))
    return out[0, 0]


def lookup_nearest(image: Image, dilated: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of ``dilated`` (on ``image``'s grid) at the voxels nearest to world ``points`` (N, D); 0 outside."""
    grid = image.grid
    index = torch.floor(grid.world_to_index(points.to(torch.float64)) + 0.5).long()
    size = torch.tensor(grid.size, device=index.device)
    inside = ((index >= 0) & (index < size)).all(-1)
    flat = (index.clamp_min(0).minimum(size - 1) * torch.tensor(grid.strides, device=index.device)).sum(-1)
    values = dilated.reshape(-1).to(index.device)[flat]
    return torch.where(inside, values, torch.zeros_like(values))


class TransformRigidityPenalty(Metric):
    """elastix's TransformRigidityPenalty on the B-spline's control grid (see the module docstring)."""

    elastix_name = "TransformRigidityPenalty"
    uses_samples = False
    keys = (
        Key("LinearityConditionWeight", "float", 1.0, "TransformRigidityPenalty: weight of the linearity condition",
            per_level=True, minimum=0),
        Key("OrthonormalityConditionWeight", "float", 1.0, "TransformRigidityPenalty: weight of the orthonormality "
            "condition", per_level=True, minimum=0),
        Key("PropernessConditionWeight", "float", 1.0, "TransformRigidityPenalty: weight of the properness condition",
            per_level=True, minimum=0),
        Key("UseLinearityCondition", "bool", True, "TransformRigidityPenalty: optimise the linearity condition",
            per_level=True),
        Key("UseOrthonormalityCondition", "bool", True, "TransformRigidityPenalty: optimise the orthonormality "
            "condition", per_level=True),
        Key("UsePropernessCondition", "bool", True, "TransformRigidityPenalty: optimise the properness condition",
            per_level=True),
        Key("CalculateLinearityCondition", "bool", True, "TransformRigidityPenalty: compute the linearity condition "
            "even when not used (reported only)", per_level=True),
        Key("CalculateOrthonormalityCondition", "bool", True, "TransformRigidityPenalty: compute the orthonormality "
            "condition even when not used (reported only)", per_level=True),
        Key("CalculatePropernessCondition", "bool", True, "TransformRigidityPenalty: compute the properness condition "
            "even when not used (reported only)", per_level=True),
        Key("DilateRigidityImages", "bool", True, "TransformRigidityPenalty: grey-dilate the rigidity images",
            per_level=True),
        Key("DilationRadiusMultiplier", "float", 1.0, "TransformRigidityPenalty: dilation radius in voxels = this x "
            "the B-spline grid spacing (mm, truncated)", per_level=True, minimum=0),
        Key("FixedRigidityImageName", "str", None, "TransformRigidityPenalty: rigidity coefficients (0..1) on the "
            "fixed image's space"),
        Key("MovingRigidityImageName", "str", None, "TransformRigidityPenalty: rigidity coefficients (0..1) on the "
            "moving image's space, looked up at the B-spline's image of each control point"),
        Key("UseFixedRigidityImage", "bool", True, "TransformRigidityPenalty (elastix 4 key): \"false\" ignores "
            "FixedRigidityImageName"),
        Key("UseMovingRigidityImage", "bool", True, "TransformRigidityPenalty (elastix 4 key): \"false\" ignores "
            "MovingRigidityImageName"),
    )

    def __init__(self):
        self._images: dict[str, Image] = {}
        self.condition_values: dict[str, float] = {}

    def begin_level(self, context: LevelContext) -> None:
        view = context.view
        self.device = context.device
        self.weights = {c: view.get(f"{name}ConditionWeight") for c, name in _CONDITIONS.items()}
        # tuples in _CONDITIONS' order: the weighted sum must not depend on string hashing (PYTHONHASHSEED)
        self.used = tuple(c for c, name in _CONDITIONS.items() if view.get(f"Use{name}Condition"))
        self.calculated = tuple(c for c, name in _CONDITIONS.items()
                                if c in self.used or view.get(f"Calculate{name}Condition"))
        self.dilate = view.get("DilateRigidityImages")
        self.multiplier = view.get("DilationRadiusMultiplier")
        self.rigidity = {}
        for role in ("Fixed", "Moving"):
            name = view.get(f"{role}RigidityImageName")
            if name and view.get(f"Use{role}RigidityImage"):
                self.rigidity[role] = self._image(role, name, context.base, view.source)
        if not self.rigidity and context.level == 0:
            log.warning("TransformRigidityPenalty: no FixedRigidityImageName or MovingRigidityImageName; the penalty "
                        "is evaluated on the whole transform domain (as elastix does)")
        self._level_grid = None

    def _image(self, role: str, name: str, base: Path | None, source: str) -> Image:
        path = Path(name)
        if not path.is_absolute() and not path.exists() and base is not None and (base / path).exists():
            path = base / path
        key = os.fspath(path)
        if key not in self._images:
            if not path.is_file():
                where = f"{source}: " if source else ""
                raise InputError(f"{where}({role}RigidityImageName \"{name}\"): no such image; give the path of the "
                                 f"rigidity coefficient image (relative to the working directory or to the map)")
            self._images[key] = read_image(path, dtype=torch.float64)
        return self._images[key]

    def _dilated(self, image: Image, grid_spacing: np.ndarray) -> torch.Tensor:
        data = image.data[0].to(self.device)
        if not self.dilate:
            return data
        radii = [int(self.multiplier * s) for s in grid_spacing]
        return dilate(data, radii)

    def _coefficient_image(self, spline: BSplineTransform) -> torch.Tensor:
        """The rigidity coefficients on the control grid ([Z,] Y, X), float64."""
        grid = spline.grid
        if not self.rigidity:
            return torch.ones(grid.shape, dtype=torch.float64, device=self.device)
        if self._level_grid is not grid:
            self._level_grid = grid
            self._nodes = grid.voxel_points(device=self.device)
            self._dilated_images = {role: self._dilated(image, grid.spacing) for role, image in self.rigidity.items()}
            self._fixed_values = None
            if "Fixed" in self.rigidity:
                self._fixed_values = lookup_nearest(self.rigidity["Fixed"], self._dilated_images["Fixed"], self._nodes)
        values = self._fixed_values
        if "Moving" in self.rigidity:
            with torch.no_grad():
                mapped = spline.map(self._nodes)
            moving = lookup_nearest(self.rigidity["Moving"], self._dilated_images["Moving"], mapped)
            values = moving if values is None else torch.maximum(values, moving)
        return values.reshape(grid.shape)

    def value_and_gradient(self, transform, samples: Samples):
        spline = transform.current if isinstance(transform, CombinationTransform) else transform
        if not isinstance(spline, BSplineTransform) or spline.order != 3:
            raise ParameterError("(Metric \"TransformRigidityPenalty\") needs a cubic B-spline transform (as in elastix): "
                                 "use (Transform \"BSplineTransform\") with (BSplineTransformSplineOrder 3), or remove "
                                 "the penalty")
        weights = self._coefficient_image(spline)
        total = float(weights.sum())
        gradient = torch.zeros(spline.number_of_parameters, dtype=torch.float64, device=self.device)
        if total < 1e-14:
            self.condition_values = {}
            return 0.0, gradient, spline.num_coefficients
        params = spline.parameters.to(device=self.device, dtype=torch.float64).detach().requires_grad_(True)
        with torch.enable_grad():
            sums = rigidity_conditions(spline.coefficients(params), spline.grid.spacing, weights, self.calculated)
            conditions = {c: v / total for c, v in sums.items()}
            value = sum((self.weights[c] * conditions[c] for c in self.used), params.sum() * 0.0)
            value.backward()
        self.condition_values = {c: float(v.detach()) for c, v in conditions.items()}
        return float(value.detach()), params.grad, spline.num_coefficients


_CONDITIONS = {"LC": "Linearity", "OC": "Orthonormality", "PC": "Properness"}
