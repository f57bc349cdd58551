"""Known-deformation test cases: smooth random transforms and images warped by them.

A case is a fixed image, a moving image and the true transform T (fixed -> moving, as the
registration estimates it): moving(T(x)) = fixed(x), so moving(y) = fixed(T^-1(y)), computed by
inverting T with Newton's method at every moving voxel. Landmarks p in the fixed image
correspond to T(p) in the moving image; the TRE of an estimate T' is |T'(p) - T(p)|.
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import Grid
from .image import Image
from .interpolation import Interpolator
from .transforms import BSplineTransform, CombinationTransform, EulerTransform, Transform


def random_deformation(grid: Grid, seed: int, rotation_degrees: float = 3.0, translation_mm: float = 3.0,
                       bumps: int = 8, bump_mm: float = 4.0, bump_width_mm: float = 30.0,
                       control_spacing_mm: float = 15.0) -> Transform:
    """A rigid part plus a sum of Gaussian displacement bumps (each of ``bump_mm`` peak), as a
    B-spline composed after an Euler transform about the image centre."""
    rng = np.random.default_rng(seed)
    dim = grid.dim
    centre = grid.index_to_world((np.asarray(grid.size) - 1) / 2.0)
    angles = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees, 1 if dim == 2 else 3))
    shift = rng.uniform(-translation_mm, translation_mm, dim)
    rigid = EulerTransform(dim, np.concatenate([angles, shift]), centre)
    spline = BSplineTransform.over_image(grid, control_spacing_mm, 3, initial=rigid)
    nodes = spline.grid.voxel_points().numpy()
    lo, hi = grid.extent_corners().min(0), grid.extent_corners().max(0)
    field = np.zeros_like(nodes)
    for _ in range(bumps):
        centre_b = rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))
        direction = rng.normal(size=dim)
        direction *= bump_mm / np.linalg.norm(direction)
        weight = np.exp(-((nodes - centre_b) ** 2).sum(1) / (2 * bump_width_mm ** 2))
        field += weight[:, None] * direction
    from .interpolation import bspline_coefficients
    values = torch.from_numpy(field.T.reshape(dim, *spline.grid.shape))
    spline = spline.with_parameters(bspline_coefficients(values, 3).reshape(-1))
    return CombinationTransform(rigid, spline)


def warp_by_inverse(image: Image, transform: Transform, default: float = 0.0, order: int = 3,
                    grid: Grid | None = None) -> Image:
    """The image M with M(T(x)) = image(x), on ``grid`` (default: the image's own grid)."""
    grid = grid or image.grid
    interp = Interpolator(image, order=order, default=default, dtype=torch.float64)
    parts = []
    points = grid.voxel_points()
    for start in range(0, points.shape[0], 1 << 16):
        chunk = points[start:start + (1 << 16)]
        parts.append(interp(transform.inverse_map(chunk)).values)
    values = torch.cat(parts).T.reshape(image.channels, *grid.shape).to(torch.float32)
    return Image(values, grid, image.pixel_type)


def target_registration_error(estimate: Transform, truth: Transform, points) -> np.ndarray:
    """|estimate(p) - truth(p)| in mm for fixed-space points p (N, D)."""
    p = torch.as_tensor(np.asarray(points, dtype=np.float64))
    with torch.no_grad():
        return (estimate.map(p) - truth.map(p)).norm(dim=1).numpy()
