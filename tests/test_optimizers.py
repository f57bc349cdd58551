import math

import numpy as np
import torch

from impactreg.geometry import Grid
from impactreg.optimizers import AdaptiveStochasticGradientDescent, ASGDSettings, jacobian_terms, sigmoid_time_step
from impactreg.transforms import BSplineTransform


def brute_force_terms(dense, scales):
    J = dense / scales
    n = J.shape[0]
    C = torch.einsum("jap,jaq->pq", J, J) / n
    jj = [J[j] @ J[j].T for j in range(n)]
    jcj = [J[j] @ C @ J[j].T for j in range(n)]
    r2 = 2 * math.sqrt(2)
    return (float(C.trace()), float((C ** 2).sum()), max(float(m.trace() + r2 * m.norm()) for m in jj),
            max(float(m.trace() + r2 * m.norm()) for m in jcj))


def test_bspline_jacobian_terms_match_the_dense_definition():
    grid = Grid((12, 10, 8), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    t = BSplineTransform.over_image(grid, 8.0)
    pts = grid.index_to_world(np.random.default_rng(0).uniform(0, 7, size=(60, 3)))
    sparse = t.parameter_jacobian(torch.from_numpy(pts))
    scales = torch.ones(t.number_of_parameters, dtype=torch.float64)
    got = jacobian_terms(sparse, scales)
    expected = brute_force_terms(sparse.to_dense(), scales)
    np.testing.assert_allclose([got.trace_c, got.trace_cc, got.max_jj, got.max_jcj], expected, rtol=1e-10)
    dense = jacobian_terms(sparse.to_dense(), scales)
    np.testing.assert_allclose([dense.trace_c, dense.trace_cc, dense.max_jj, dense.max_jcj], expected, rtol=1e-10)


def test_sigmoid_passes_through_zero_and_asgd_time_adapts():
    assert abs(sigmoid_time_step(0.0, 1.0, -0.8, 1e-3)) < 1e-12
    opt = AdaptiveStochasticGradientDescent(ASGDSettings(a=1.0, A=0.0, alpha=1.0, omega=1e-3))
    p = torch.zeros(2, dtype=torch.float64)
    p = opt.step(p, torch.tensor([1.0, 0.0], dtype=torch.float64), 0)
    assert opt.time == 0.0 and opt.last_gain == 1.0
    opt.step(p, torch.tensor([1.0, 0.0], dtype=torch.float64), 1)  # same direction: time decreases, floored at 0
    assert opt.time == 0.0
    opt.step(p, torch.tensor([-1.0, 0.0], dtype=torch.float64), 2)  # reversal: time grows
    assert opt.time > 0.9


def test_asgd_without_adaptive_steps_advances_time_after_every_step_as_elastix():
    """elastix's UpdateCurrentTime without adaptive step sizes: time += (SigmoidMax + SigmoidMin) / 2 after each
    step, the first included, so iteration 1 already uses a / (A + 0.1 + 1) with the default sigmoid."""
    import pytest

    opt = AdaptiveStochasticGradientDescent(ASGDSettings(a=80.0, A=20.0, alpha=1.0, fmax=1.0, fmin=-0.8, adaptive=False))
    params, grad = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    gains = []
    for k in range(3):
        params = opt.step(params, grad, k)
        gains.append(opt.last_gain)
    assert gains == pytest.approx([80 / 21.0, 80 / 21.1, 80 / 21.2], rel=1e-12)  # elastix's trace: 3.809524 3.791469 3.773585
