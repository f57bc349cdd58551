"""The compiled CPU kernels compute exactly what the torch code computes."""
import numpy as np
import pytest
import torch

from impactreg import kernels
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.interpolation import Interpolator
from impactreg.metrics.intensity import MattesMutualInformation, NormalizedMutualInformation, ParzenHistogram
from impactreg.transforms import BSplineTransform


def _both(monkeypatch, compute):
    monkeypatch.setattr(kernels, "ENABLED", True)
    compiled = compute()
    monkeypatch.setattr(kernels, "ENABLED", False)
    return compiled, compute()


def _oblique_grid(dim, size, spacing, seed):
    direction = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))[0]
    return Grid(size[:dim], np.asarray(spacing[:dim]), np.array([3.0, -2.0, 5.0])[:dim], direction)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_image_sampling_matches_torch(monkeypatch, dim, order):
    grid = _oblique_grid(dim, (13, 11, 9), (1.2, 0.9, 2.0), 1)
    image = Image(torch.randn(2, *reversed(grid.size), generator=torch.Generator().manual_seed(0)), grid)
    index = torch.rand(3000, dim, dtype=torch.float64) * (torch.tensor(grid.size) + 2) - 1.5  # some outside
    points = torch.from_numpy(grid.index_to_world(index.numpy()))
    interp = Interpolator(image, order=order, dtype=torch.float64, default=-7.0)
    fast, slow = _both(monkeypatch, lambda: interp(points, gradient=True))
    assert torch.equal(fast.inside, slow.inside)
    assert 0 < int(fast.inside.sum()) < len(points)
    torch.testing.assert_close(fast.values, slow.values, rtol=0, atol=1e-11)
    torch.testing.assert_close(fast.gradients, slow.gradients, rtol=0, atol=1e-10)
    assert torch.all(fast.values[~fast.inside] == -7.0)


def test_image_sampling_keeps_the_interpolator_dtype(monkeypatch):
    grid = _oblique_grid(3, (9, 8, 7), (1.0, 1.0, 1.5), 2)
    image = Image(torch.randn(1, 7, 8, 9), grid)
    points = torch.from_numpy(grid.index_to_world(np.random.default_rng(0).uniform(0, 6, (500, 3))))
    interp = Interpolator(image, order=3, dtype=torch.float32)
    fast, slow = _both(monkeypatch, lambda: interp(points.float(), gradient=True))
    assert fast.values.dtype == slow.values.dtype == torch.float32
    torch.testing.assert_close(fast.values, slow.values, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_bspline_map_and_parameter_gradient_match_torch(monkeypatch, dim, order):
    grid = _oblique_grid(dim, (8, 7, 6), (10.0, 12.0, 9.0), 3)
    rng = np.random.default_rng(order)
    transform = BSplineTransform(grid, order, torch.from_numpy(rng.normal(size=dim * grid.num_voxels) * 3))
    index = rng.uniform(-1, np.asarray(grid.size) + 0.0, (3000, dim))  # some supports leave the grid
    points = torch.from_numpy(grid.index_to_world(index))
    d_points = torch.from_numpy(rng.normal(size=(3000, dim)))
    fast, slow = _both(monkeypatch, lambda: (transform.map(points), transform.parameter_gradient(points, d_points)))
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=1e-11)
    assert bool((fast[0] == points).all(dim=1).any())  # points outside the support are not displaced


def test_kernels_step_aside_for_autograd(monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", True)
    grid = _oblique_grid(3, (6, 6, 6), (10.0, 10.0, 10.0), 4)
    transform = BSplineTransform(grid, 3)
    params = torch.zeros(3 * grid.num_voxels, dtype=torch.float64, requires_grad=True)
    points = torch.from_numpy(grid.index_to_world(np.full((4, 3), 2.5)))
    transform.map(points, params).sum().backward()
    expected = transform.parameter_gradient(points, torch.ones(4, 3, dtype=torch.float64))
    torch.testing.assert_close(params.grad, expected)


@pytest.mark.parametrize("metric", [MattesMutualInformation, NormalizedMutualInformation])
@pytest.mark.parametrize("orders", [(0, 3), (1, 2), (3, 3)])
def test_parzen_histogram_matches_torch(monkeypatch, metric, orders):
    gen = torch.Generator().manual_seed(5)
    f = torch.rand(4000, generator=gen, dtype=torch.float64) * 100
    m = 0.5 * f + 8 * torch.randn(4000, generator=gen, dtype=torch.float64)  # beyond the moving range: soft limiter
    hist = ParzenHistogram((0.0, 100.0), (-10.0, 60.0), 32, 24, *orders)
    fast, slow = _both(monkeypatch, lambda: metric(hist).value_and_derivative(f, m))
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-13)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["Random", "RandomCoordinate"])
def test_random_samples_are_the_same_points(monkeypatch, kind):
    from impactreg.sampling import ImageSampler

    grid = _oblique_grid(3, (13, 11, 9), (1.2, 0.9, 2.0), 6)

    def draw():
        return ImageSampler(kind, grid, None, 700, generator=torch.Generator().manual_seed(3), dtype=torch.float64).sample()

    fast, slow = _both(monkeypatch, draw)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_gaussian_smoothing_matches_torch(monkeypatch, dim):
    from impactreg.filters import gaussian_smooth

    grid = _oblique_grid(dim, (21, 17, 12), (1.0, 1.5, 2.5), 7)
    image = Image(torch.randn(2, *reversed(grid.size), generator=torch.Generator().manual_seed(1)), grid)
    fast, slow = _both(monkeypatch, lambda: gaussian_smooth(image, [3.0, 2.0, 4.0][:dim]).data)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)


def test_kernels_handle_no_points_and_grad_free_contexts():
    grid = _oblique_grid(3, (120, 100, 100), (1.0, 1.0, 1.0), 8)  # large enough for the load-only pass
    interp = Interpolator(Image(torch.zeros(1, 100, 100, 120), grid), order=1)
    empty = interp(torch.zeros(0, 3), gradient=True)
    assert empty.values.shape == (0, 1) and empty.inside.shape == (0,)
    points = torch.from_numpy(grid.index_to_world(np.full((3, 3), 5.0))).float().requires_grad_(True)
    with torch.no_grad():  # a tensor that requires grad, in a context without autograd
        assert torch.all(interp(points).inside)
