import numpy as np
import pytest
import torch

from impactreg.metrics.intensity import (MattesMutualInformation, MeanSquares, NormalizedCorrelation,
                                         NormalizedMutualInformation, ParzenHistogram)


def pair(seed=0, n=3000):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, generator=g, dtype=torch.float64) * 100
    m = (100 - f) * 0.5 + torch.randn(n, generator=g, dtype=torch.float64) * 3  # inverted contrast, noisy
    return f, m


def metrics(f, m):
    hist = ParzenHistogram((float(f.min()), float(f.max())), (float(m.min()) + 5, float(m.max()) - 5))
    return [MeanSquares(), NormalizedCorrelation(), MattesMutualInformation(hist), NormalizedMutualInformation(hist)]


@pytest.mark.parametrize("index", range(4))
def test_closed_form_derivatives_equal_autograd(index):
    f, m = pair()
    metric = metrics(f, m)[index]
    mm = m.clone().requires_grad_(True)
    metric(f, mm).backward()
    value, derivative = metric.value_and_derivative(f, m)
    assert abs(float(value) - float(metric(f, m))) < 1e-12
    np.testing.assert_allclose(derivative.numpy(), mm.grad.numpy(), atol=1e-12, rtol=1e-9)


def test_mutual_information_prefers_the_aligned_pair():
    f, m = pair()
    mi = metrics(f, m)[2]
    shuffled = m[torch.randperm(len(m), generator=torch.Generator().manual_seed(1))]
    assert float(mi(f, m)) < float(mi(f, shuffled)) - 0.5
    joint = mi.histogram.joint(f, m)[0]
    assert abs(float(joint.sum()) - 1.0) < 1e-9


def bending_energy_autograd(transform, points, parameters):
    """The bending energy as differentiable torch code: the oracle of the closed form in the package."""
    from impactreg.metrics.penalties import spline_and_pullback
    from impactreg.transforms import BSplineTransform

    current, at, pullback = spline_and_pullback(transform, points)
    if not isinstance(current, BSplineTransform):
        return parameters.sum() * 0.0
    hess = current.spatial_hessian(at, parameters)  # (N, D, D, D)
    if pullback is not None:
        hess = torch.einsum("nkab,nai,nbj->nkij", hess, pullback, pullback)
    return (hess ** 2).sum(dim=(1, 2, 3)).mean()


def test_bending_energy_value_and_gradient():
    from impactreg.geometry import Grid
    from impactreg.transforms import AffineTransform, BSplineTransform, CombinationTransform

    grid = Grid((20, 16), (1.0, 1.5), (0.0, 0.0), np.eye(2))
    spline = BSplineTransform.over_image(grid, 6.0)
    points = grid.index_to_world(torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 15)
    penalty = bending_energy_autograd
    zero = torch.zeros(spline.number_of_parameters, dtype=torch.float64)
    assert float(penalty(spline, points, zero)) == 0.0  # no curvature without displacement
    # the value is the mean squared norm of the spatial Hessian: compare with second derivatives of map()
    mu0 = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    bent = spline.with_parameters(mu0)
    expected = 0.0
    for p in points[:20]:
        for k in range(2):
            h = torch.autograd.functional.hessian(lambda x: bent.map(x[None])[0, k], p)
            expected += float((h ** 2).sum())
    assert float(penalty(bent, points[:20], mu0)) == pytest.approx(expected / 20, rel=1e-8)
    # gradient against finite differences, also through a composed affine
    composed = CombinationTransform(AffineTransform(2, [1.1, 0.1, 0.0, 0.9, 1.0, 2.0], [10.0, 12.0]), spline)
    mu = (torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.5)
    mu.requires_grad_(True)
    penalty(composed, points, mu).backward()
    for i in (3, 40, 90):
        e = torch.zeros_like(mu)
        e[i] = 1e-5
        fd = (penalty(composed, points, mu.detach() + e) - penalty(composed, points, mu.detach() - e)) / 2e-5
        assert float(fd) == pytest.approx(float(mu.grad[i]), rel=1e-4, abs=1e-10)


def test_bending_energy_closed_form_gradient_equals_autograd():
    from impactreg.geometry import Grid
    from impactreg.metrics.penalties import bending_energy_value_and_gradient
    from impactreg.transforms import AffineTransform, BSplineTransform, CombinationTransform

    grid = Grid((14, 12, 10), (1.0, 1.5, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    spline = BSplineTransform.over_image(grid, 7.0)
    mu = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    points = grid.index_to_world(torch.rand(150, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 12)
    affine = AffineTransform(3, np.concatenate([(np.eye(3) * 1.05).ravel(), [0.5, -0.5, 1.0]]), [7.0, 9.0, 10.0])
    for transform in (spline.with_parameters(mu), CombinationTransform(affine, spline.with_parameters(mu))):
        m = mu.clone().requires_grad_(True)
        expected = bending_energy_autograd(transform, points, m)
        expected.backward()
        value, grad = bending_energy_value_and_gradient(transform, points)
        assert value == pytest.approx(float(expected.detach()), rel=1e-10)
        np.testing.assert_allclose(grad.numpy(), m.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_bending_energy_in_blocks_equals_one_block(monkeypatch):
    from impactreg.geometry import Grid
    from impactreg.metrics import penalties
    from impactreg.transforms import AffineTransform, BSplineTransform, CombinationTransform

    grid = Grid((14, 12, 10), (1.0, 1.5, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    spline = BSplineTransform.over_image(grid, 7.0)
    mu = torch.randn(spline.number_of_parameters, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    points = grid.index_to_world(torch.rand(301, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 12)
    affine = AffineTransform(3, np.concatenate([(np.eye(3) * 0.95).ravel(), [0.5, 0.0, -1.0]]), [7.0, 9.0, 10.0])
    transform = CombinationTransform(affine, spline.with_parameters(mu))
    whole = penalties.bending_energy_value_and_gradient(transform, points)
    monkeypatch.setattr(penalties, "BENDING_BLOCK", 64)
    blocks = penalties.bending_energy_value_and_gradient(transform, points)
    assert blocks[0] == pytest.approx(whole[0], rel=1e-12)
    np.testing.assert_allclose(blocks[1].numpy(), whole[1].numpy(), rtol=1e-10, atol=1e-14)
