"""Known-deformation test cases: smooth random transforms and images warped by them.

A case is a fixed image, a moving image and the true transform T (fixed -> moving, as the
registration estimates it): moving(T(x)) = fixed(x), so moving(y) = fixed(T^-1(y)), computed by
inverting T with Newton's method at every moving voxel. Landmarks p in the fixed image
correspond to T(p) in the moving image; the TRE of an estimate T' is |T'(p) - T(p)|:
``evaluation.target_registration_errors(T', p, transformix.map_points(T, p))``.
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
    centre = grid.centre
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


def warp_by_inverse(images, transform: Transform, default: float = 0.0, order: int = 3,
                    grid: Grid | None = None):
    """The image(s) M with M(T(x)) = image(x), on ``grid`` (default: the first image's grid).

    ``images`` is one Image or a list; ``order`` and ``default`` may be lists too (one per image).
    T is inverted once for all of them."""
    single = isinstance(images, Image)
    images = [images] if single else list(images)
    orders = order if isinstance(order, (list, tuple)) else [order] * len(images)
    defaults = default if isinstance(default, (list, tuple)) else [default] * len(images)
    grid = grid or images[0].grid
    points = grid.voxel_points()
    sources = torch.cat([transform.inverse_map(points[s:s + (1 << 16)]) for s in range(0, points.shape[0], 1 << 16)])
    warped = []
    for image, o, d in zip(images, orders, defaults):
        values = Interpolator(image, order=o, default=d, dtype=torch.float64)(sources).values
        warped.append(Image(values.T.reshape(image.channels, *grid.shape).to(torch.float32), grid, image.pixel_type))
    return warped[0] if single else warped


def t2_like(t1: Image, grey_matter: Image, white_matter: Image, seed: int = 0) -> Image:
    """A T2-weighted-looking image from a T1 and its tissue probability maps: cerebrospinal fluid
    bright, grey matter intermediate, white matter dark, plus a smooth bias field and noise."""
    rng = np.random.default_rng(seed)
    scale = float(max(grey_matter.data.max(), white_matter.data.max(), 1e-6))
    gm, wm = grey_matter.data[0] / scale, white_matter.data[0] / scale
    t1n = t1.data[0] / float(t1.data.max())
    head = t1n > 0.08
    csf = (1 - gm - wm).clamp(0, 1) * head * (t1n < 0.45)
    other = (1 - gm - wm - csf).clamp(0, 1) * head
    t2 = 1.0 * csf + 0.55 * gm + 0.3 * wm + 0.35 * other * (1 - t1n)
    bias = _smooth_field(t1.grid, rng, amplitude=0.15)
    noise = torch.from_numpy(rng.normal(scale=0.02, size=tuple(t2.shape))).float()
    return Image(((t2 * (1 + bias) + noise).clamp_min(0) * 1000)[None], t1.grid, "float32")


def cbct_like(ct: Image, seed: int = 0, noise_hu: float = 40.0, shift_hu: float = 60.0, cupping_hu: float = 150.0,
              streaks_hu: float = 60.0, fov_fraction: float | None = 0.85) -> Image:
    """A CBCT-looking copy of a CT: noise, streaks, cupping and shifted HU; with ``fov_fraction``
    also a cylindrical field of view about the image's z axis (outside it: -1000 HU)."""
    rng = np.random.default_rng(seed)
    grid = ct.grid
    idx = grid.voxel_indices().numpy().reshape(*grid.shape, grid.dim)
    centre = (np.asarray(grid.size) - 1) / 2.0
    rel = (idx - centre) * grid.spacing
    radius = np.sqrt(rel[..., 0] ** 2 + rel[..., 1] ** 2)
    r_max = (fov_fraction or 1.0) * 0.5 * min(grid.size[0] * grid.spacing[0], grid.size[1] * grid.spacing[1])
    angle = np.arctan2(rel[..., 1], rel[..., 0])
    streaks = np.zeros_like(radius)
    for _ in range(4):
        theta = rng.uniform(0, np.pi)
        streaks += np.exp(-((np.sin(angle - theta) * radius) ** 2) / (2 * 3.0 ** 2))
    data = ct.data[0].numpy().astype(np.float64)
    data = data + shift_hu - cupping_hu * (1 - (radius / r_max) ** 2).clip(0, 1) + streaks_hu * streaks
    data = data + rng.normal(scale=noise_hu, size=data.shape)
    if fov_fraction is not None:
        data[radius > r_max] = -1000.0
    return Image(torch.from_numpy(data).float()[None], grid, ct.pixel_type)


def crop_to_fraction(image: Image, fraction: float) -> Image:
    """The central part of an image, ``fraction`` of its size along x and y (a smaller field of view)."""
    size = np.asarray(image.grid.size)
    keep = size.copy()
    keep[:2] = np.maximum(1, np.round(size[:2] * fraction)).astype(int)
    start = (size - keep) // 2
    slices = tuple(slice(int(s), int(s + k)) for s, k in zip(reversed(start), reversed(keep)))
    grid = image.grid.region(start.astype(float), keep)
    return Image(image.data[(slice(None),) + slices].contiguous(), grid, image.pixel_type)


def _smooth_field(grid: Grid, rng, amplitude: float) -> torch.Tensor:
    idx = grid.voxel_indices().numpy()
    rel = (idx / np.maximum(np.asarray(grid.size) - 1, 1)) * 2 - 1
    coeffs = rng.normal(scale=amplitude / 2, size=(grid.dim, 2))
    field = sum(coeffs[d, 0] * rel[:, d] + coeffs[d, 1] * rel[:, d] ** 2 for d in range(grid.dim))
    return torch.from_numpy(field.reshape(grid.shape)).float()


def labels_from_tissue(grey_matter: Image, white_matter: Image) -> Image:
    """Label map 1 = grey matter, 2 = white matter where that tissue's probability exceeds 0.5."""
    scale = float(max(grey_matter.data.max(), white_matter.data.max(), 1e-6))
    gm, wm = grey_matter.data[0] / scale, white_matter.data[0] / scale
    labels = torch.zeros_like(gm)
    labels[(gm > 0.5) & (gm >= wm)] = 1
    labels[(wm > 0.5) & (wm > gm)] = 2
    return Image(labels[None], grey_matter.grid, "uint8")
