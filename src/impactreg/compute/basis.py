"""Centred B-spline basis functions and mirror indexing as torch code (the twins of the
``_kernel``, ``_kernel_derivative`` and ``_mirror`` helpers inside the compiled kernels).

All functions are elementwise: t (any shape) -> the same shape, differentiable by autograd.
"""
from __future__ import annotations

import math

import torch


def bspline_kernel(t: torch.Tensor, order: int) -> torch.Tensor:
    """Centred B-spline basis function of the given order evaluated at t."""
    if order == 0:
        return ((t >= -0.5) & (t < 0.5)).to(t.dtype)
    a = t.abs()
    if order == 1:
        return (1 - a).clamp_min(0)
    if order == 2:
        return torch.where(a < 0.5, 0.75 - a * a, 0.5 * (1.5 - a).clamp_min(0) ** 2)
    if order == 3:
        return torch.where(a < 1, (4 - 6 * a * a + 3 * a * a * a) / 6, (2 - a).clamp_min(0) ** 3 / 6)
    half = (order + 1) / 2.0
    out = torch.zeros_like(t)
    for k in range(order + 2):
        out = out + ((-1) ** k) * math.comb(order + 1, k) * torch.clamp(t + half - k, min=0) ** order
    return out / math.factorial(order)


def bspline_kernel_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    """d/dt of ``bspline_kernel(t, order)``."""
    if order == 3:
        a = t.abs()
        return torch.sign(t) * torch.where(a < 1, 1.5 * a * a - 2 * a, -0.5 * (2 - a).clamp_min(0) ** 2)
    return bspline_kernel(t + 0.5, order - 1) - bspline_kernel(t - 0.5, order - 1)


def bspline_kernel_second_derivative(t: torch.Tensor, order: int) -> torch.Tensor:
    """d^2/dt^2 of ``bspline_kernel(t, order)`` (zero below order 2)."""
    if order < 2:
        return torch.zeros_like(t)
    return bspline_kernel(t + 1.0, order - 2) - 2.0 * bspline_kernel(t, order - 2) + bspline_kernel(t - 1.0, order - 2)


def mirror_index(k: torch.Tensor, n: int) -> torch.Tensor:
    """Whole-sample mirror of integer indices k into 0..n-1 (k = -1 -> 1, k = n -> n - 2)."""
    if n == 1:
        return torch.zeros_like(k)
    period = 2 * n - 2
    k = torch.remainder(k, period)
    return torch.where(k >= n, period - k, k)
