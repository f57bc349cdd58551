import numpy as np
import pytest
import torch
from scipy import ndimage

from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.interpolation import Interpolator, bspline_coefficients, sample
from test_geometry import oblique


def random_image(dim, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    size = (13, 11, 9)[:dim]
    grid = Grid(size, (0.8, 1.7, 2.3)[:dim], (5.0, -3.0, 100.0)[:dim], oblique(dim, seed + 3))
    data = torch.from_numpy(rng.normal(size=(channels, *reversed(size))))
    return Image(data, grid)


def world_points_inside(image, n, margin=0.0, seed=1):
    rng = np.random.default_rng(seed)
    size = np.array(image.grid.size)
    idx = rng.uniform(-0.5 + margin, size - 0.5 - margin - 1e-9, size=(n, image.dim))
    return torch.from_numpy(image.grid.index_to_world(idx)), idx


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order,mode", [(1, "nearest"), (3, "mirror"), (2, "mirror"), (5, "mirror")])
def test_matches_scipy_map_coordinates(dim, order, mode):
    image = random_image(dim, channels=2)
    pts, idx = world_points_inside(image, 400)
    got = sample(image, pts, order=order)
    assert got.inside.all()
    for c in range(2):
        ref = ndimage.map_coordinates(image.data[c].numpy(), idx[:, ::-1].T, order=order, mode=mode)
        np.testing.assert_allclose(got.values[:, c].numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("compiled", [True, False], ids=["recursive", "fir"])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(2, 6, 30, 3), (1, 1, 2, 41), (3, 9, 7)])
def test_prefilter_matches_scipy_spline_filter(monkeypatch, compiled, order, shape):
    """Both prefilters (the compiled recursive one on the CPU, the torch FIR elsewhere) give scipy's
    mirror-boundary coefficients, on lines from 1 voxel (left as they are) to longer than the
    recursion's horizon, channel by channel."""
    import impactreg.compute.dispatch as dispatch

    monkeypatch.setattr(dispatch, "ENABLED", compiled and dispatch.ENABLED)
    data = torch.from_numpy(np.random.default_rng(4).normal(size=shape))
    coef = bspline_coefficients(data, order)
    for c in range(shape[0]):
        ref = ndimage.spline_filter(data[c].numpy(), order=order, mode="mirror")
        np.testing.assert_allclose(coef[c].numpy(), ref, atol=1e-10)


def test_recursive_prefilter_in_float32_is_closer_to_float64_than_the_fir():
    import impactreg.compute.dispatch as dispatch

    data = torch.from_numpy(np.random.default_rng(5).normal(size=(2, 20, 24, 28)).astype(np.float32))
    exact = bspline_coefficients(data.double(), 3, torch.float64)
    recursive = bspline_coefficients(data, 3, torch.float32)
    dispatch.ENABLED, enabled = False, dispatch.ENABLED
    try:
        fir = bspline_coefficients(data, 3, torch.float32)
    finally:
        dispatch.ENABLED = enabled
    assert recursive.dtype == torch.float32
    assert float((recursive.double() - exact).abs().max()) < float((fir.double() - exact).abs().max()) < 1e-4


def test_nearest_rounds_half_up_and_matches_scipy_inside():
    image = random_image(3)
    pts, idx = world_points_inside(image, 300, seed=5)
    got = sample(image, pts, order=0).values[:, 0].numpy()
    ref = image.data[0].numpy()[tuple(np.floor(idx[:, ::-1] + 0.5).astype(int).clip(0, None).T)]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("order", [1, 3])
def test_outside_points_get_default_value(order):
    image = random_image(3)
    size = np.array(image.grid.size)
    idx = np.array([[-0.51, 2, 2], [size[0] - 0.49, 2, 2], [3, 3, -2.0], [1, 1, 1], [-0.499, 0, 0]])
    pts = torch.from_numpy(image.grid.index_to_world(idx))
    got = sample(image, pts, order=order, default=-7.0)
    assert got.inside.tolist() == [False, False, False, True, True]
    assert torch.all(got.values[:3] == -7.0)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [1, 3])
def test_spatial_gradient_in_world_units(dim, order):
    image = random_image(dim, channels=2)
    pts, _ = world_points_inside(image, 100, margin=1.0, seed=7)
    interp = Interpolator(image, order=order, dtype=torch.float64)
    got = interp(pts, gradient=True)
    eps = 1e-6
    for d in range(dim):
        step = torch.zeros(dim, dtype=torch.float64)
        step[d] = eps
        fd = (interp(pts + step).values - interp(pts - step).values) / (2 * eps)
        # linear interpolation is piecewise: compare where no cell boundary is crossed
        ok = (fd - got.gradients[..., d]).abs() < 1e-4 if order == 1 else torch.ones_like(fd, dtype=torch.bool)
        assert ok.float().mean() > 0.95
        np.testing.assert_allclose(fd[ok].numpy(), got.gradients[..., d][ok].numpy(), atol=1e-5)
    p = pts.clone().requires_grad_(True)
    interp(p).values[:, 1].sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), got.gradients[:, 1].numpy(), atol=1e-10)


def test_points_keep_leading_shape():
    image = random_image(3)
    pts, _ = world_points_inside(image, 24)
    got = sample(image, pts.reshape(2, 3, 4, 3), order=3, gradient=True)
    assert got.values.shape == (2, 3, 4, 1) and got.gradients.shape == (2, 3, 4, 1, 3)
    assert got.inside.shape == (2, 3, 4)


def test_prefilter_of_half_precision_data_runs_the_fir():
    """numba compiles no kernel for bfloat16: such coefficients come from the torch FIR, not an error."""
    data = torch.from_numpy(np.random.default_rng(6).normal(size=(1, 5, 6, 7)))
    coef = bspline_coefficients(data.to(torch.bfloat16), 3, torch.bfloat16)
    exact = bspline_coefficients(data, 3, torch.float64)
    assert coef.dtype == torch.bfloat16
    assert float((coef.double() - exact).abs().max()) < 0.3  # bfloat16 keeps 8 bits
