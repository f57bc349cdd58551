"""The backend dispatcher: the compiled CPU kernels compute what their torch twins compute, for
every operation kind, and with kernels off no compiled kernel runs at all."""
import os
import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from impactreg import compute
from impactreg.compute import dispatch, kernels, linear_metrics, point_sampler, random_coordinates
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.interpolation import Interpolator
from impactreg.metrics.intensity import MattesMutualInformation, NormalizedMutualInformation, ParzenHistogram
from impactreg.transforms import BSplineTransform


def _both(monkeypatch, compute):
    monkeypatch.setattr(dispatch, "ENABLED", True)
    compiled = compute()
    monkeypatch.setattr(dispatch, "ENABLED", False)
    return compiled, compute()


def _oblique_grid(dim, size, spacing, seed):
    direction = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))[0]
    return Grid(size[:dim], np.asarray(spacing[:dim]), np.array([3.0, -2.0, 5.0])[:dim], direction)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [0, 1, "1 mirrored", 2, 3, 4, 5])
def test_image_sampling_matches_torch(monkeypatch, dim, order):
    grid = _oblique_grid(dim, (13, 11, 9), (1.2, 0.9, 2.0), 1)
    image = Image(torch.randn(2, *reversed(grid.size), generator=torch.Generator().manual_seed(0)), grid)
    index = torch.rand(3000, dim, dtype=torch.float64) * (torch.tensor(grid.size) + 2) - 1.5  # some outside
    points = torch.from_numpy(grid.index_to_world(index.numpy()))
    mirror = order == "1 mirrored"
    interp = Interpolator(image, order=1 if mirror else order, dtype=torch.float64, default=-7.0, mirror_linear=mirror)
    fast, slow = _both(monkeypatch, lambda: interp(points, gradient=True))
    assert torch.equal(fast.inside, slow.inside)
    assert 0 < int(fast.inside.sum()) < len(points)
    torch.testing.assert_close(fast.values, slow.values, rtol=0, atol=1e-11)
    torch.testing.assert_close(fast.gradients, slow.gradients, rtol=0, atol=1e-10)
    assert torch.all(fast.values[~fast.inside] == -7.0)



@pytest.mark.parametrize("order, channels", [(3, 12), (3, 1), (1, 4), (4, 5)])
@pytest.mark.parametrize("gradient", [False, True])
def test_parallel_image_sampling_equals_serial(order, channels, gradient):
    """The same bits on 1 and on 2 threads, for more chunks than points too (with several channels, on a
    map large enough for the load-only pass)."""
    grid = _oblique_grid(3, (70, 64, 60), (1.2, 0.9, 2.0), 9)
    coef = torch.randn(channels, grid.num_voxels, generator=torch.Generator().manual_seed(1))
    table = compute.ImageTable(coef, grid, order, -3.0)
    arrays = table.kernel_arrays()
    assert (arrays[0].size > kernels.PREFETCH_ABOVE) == (channels > 1)
    index = np.random.default_rng(order).uniform(-2, np.asarray(grid.size) + 1.0, (997, 3))
    points = grid.index_to_world(index)
    results = []
    for threads in (None, 2, 1500):
        n = len(points)
        values, grads, inside = np.empty((n, channels)), np.empty((n, channels, 3)), np.empty(n, dtype=np.bool_)
        args = (*arrays, points, gradient, -3.0, values, grads, inside, False)
        args = (arrays[0], order) + args[1:]
        if threads is None:
            kernels.sample_image(*args)
        else:
            kernels.sample_image_threads(threads, *args)
        results.append((values, grads if gradient else None, inside))
    assert 0 < results[0][2].sum() < len(points)
    for values, grads, inside in results[1:]:
        np.testing.assert_array_equal(values, results[0][0])
        np.testing.assert_array_equal(inside, results[0][2])
        if gradient:
            np.testing.assert_array_equal(grads, results[0][1])



@pytest.mark.parametrize("channels", [1, 4, 12])
def test_sampled_values_do_not_depend_on_the_gradient(channels):
    """The same bits with and without gradients (a metric of two maps of one image compares values
    sampled both ways: L1 at identical images must have no gradient)."""
    grid = _oblique_grid(3, (20, 18, 16), (1.2, 0.9, 2.0), 11)
    coef = torch.randn(channels, grid.num_voxels, generator=torch.Generator().manual_seed(2))
    interp = compute.ImageTable(coef, grid, 3, 0.0)
    points = torch.from_numpy(grid.index_to_world(np.random.default_rng(3).uniform(-1, 17, (800, 3)))).float()
    plain, _, _ = compute.sample_image(interp, points)
    with_gradient, gradients, _ = compute.sample_image(interp, points, gradient=True)
    assert torch.equal(plain, with_gradient) and bool(gradients.abs().sum() > 0)

def test_large_samplings_run_on_the_faster_way(monkeypatch):
    """With 2 torch threads a large sampling tries both ways and then keeps the faster one (here
    the split one: the serial one is made slow); a small one, or one thread, always runs serially."""
    from impactreg.compute import parallel

    import time

    calls = []
    monkeypatch.setattr(kernels, "sample_image_threads", lambda threads, *a: calls.append("split"))
    monkeypatch.setattr(kernels, "sample_image", lambda *a: calls.append("serial") or time.sleep(0.05))
    monkeypatch.setattr(dispatch, "ENABLED", True)
    grid = Grid.identity((40, 40, 40))
    table = compute.ImageTable(torch.zeros(12, grid.num_voxels), grid, 3, 0.0)
    small = compute.ImageTable(torch.zeros(1, grid.num_voxels), grid, 1, 0.0)
    points = torch.full((2000, 3), 20.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        compute.sample_image(small, points, gradient=True)
        assert calls == ["serial"]
        calls.clear()
        for _ in range(parallel.PROBE_EVERY):
            compute.sample_image(table, points, gradient=True)
        assert calls[:2] == ["split", "serial"]  # each way once, then the faster, the slower as a probe
        assert calls[2:] == ["split"] * (parallel.PROBE_EVERY - 3) + ["serial"]
        torch.set_num_threads(1)
        calls.clear()
        compute.sample_image(table, points, gradient=True)
        assert calls == ["serial"]
    finally:
        torch.set_num_threads(threads)


def test_thread_choice_follows_the_measured_times():
    from impactreg.compute.parallel import PROBE_EVERY, ThreadChoice

    choice = ThreadChoice()
    seconds = {True: 0.002, False: 0.001}
    ways = []
    for _ in range(3 * PROBE_EVERY):
        way = choice.parallel()
        ways.append(way)
        choice.rate[way] = seconds[way]  # as run() records, without the clock
    assert ways[:2] == [True, False] and ways.count(True) == 4  # tried first, then probed 3 times
    seconds[True] = 0.0005  # the other cores became free: the next probe finds it
    for _ in range(PROBE_EVERY + 1):
        way = choice.parallel()
        choice.rate[way] = seconds[way]
    assert choice.parallel() is True

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



@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_bending_energy_matches_torch(monkeypatch, dim, order):
    """Value and parameter gradient of the bending energy, alone and composed after an affine
    transform (a Jacobian per point), some supports leaving the control grid."""
    from impactreg.metrics.penalties import bending_energy_value_and_gradient
    from impactreg.transforms import AffineTransform, CombinationTransform

    grid = _oblique_grid(dim, (8, 7, 6), (10.0, 12.0, 9.0), 5)
    rng = np.random.default_rng(10 + order)
    spline = BSplineTransform(grid, order, torch.from_numpy(rng.normal(size=dim * grid.num_voxels) * 3))
    points = torch.from_numpy(grid.index_to_world(rng.uniform(-1, np.asarray(grid.size) + 0.0, (500, dim))))
    matrix = np.eye(dim) * 1.05 + rng.normal(size=(dim, dim)) * 0.05
    affine = AffineTransform(dim, np.concatenate([matrix.ravel(), rng.normal(size=dim)]), grid.origin)
    assert not bool(spline.table.support(points)[4].all())
    for transform in (spline, CombinationTransform(affine, spline)):
        fast, slow = _both(monkeypatch, lambda: bending_energy_value_and_gradient(transform, points))
        assert slow[0] > 0
        assert fast[0] == pytest.approx(slow[0], rel=1e-12)
        torch.testing.assert_close(fast[1], slow[1], rtol=1e-10, atol=1e-12 * float(slow[1].abs().max()))

def test_kernels_step_aside_for_autograd(monkeypatch):
    monkeypatch.setattr(dispatch, "ENABLED", True)
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


def test_sparse_gram_matches_torch(monkeypatch):
    rng = np.random.default_rng(9)
    columns = 50
    indices = torch.from_numpy(np.stack([rng.choice(columns, 8, replace=False) for _ in range(300)]))
    weights = torch.from_numpy(rng.normal(size=(300, 8)))
    fast, slow = _both(monkeypatch, lambda: compute.sparse_gram(indices, weights, columns))
    dense = torch.zeros(300, columns, dtype=torch.float64).scatter_(1, indices, weights)
    torch.testing.assert_close(fast, dense @ dense.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(slow, fast, rtol=0, atol=1e-12)


def test_parzen_contraction_follows_the_histogram_backend(monkeypatch):
    """One decision per Parzen histogram: the contraction runs where the histogram was built."""
    hist = ParzenHistogram((0.0, 1.0), (0.0, 1.0), 16, 16, 0, 3)
    f = torch.rand(200, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(dispatch, "ENABLED", True)
    p, parts = hist.joint(f, f.sqrt(), derivative=True)
    assert parts.compiled and p.dtype == torch.float64
    monkeypatch.setattr(dispatch, "ENABLED", False)
    _, twin_parts = hist.joint(f, f.sqrt(), derivative=True)
    assert not twin_parts.compiled
    torch.testing.assert_close(hist.contract(p, parts, 200), hist.contract(p, twin_parts, 200), rtol=0, atol=1e-15)


KERNELS = [(kernels, name) for name in ("sample_image", "bspline_map", "bspline_scatter", "parzen_taps", "parzen_joint",
                                         "parzen_contract", "convolve_axis", "voxel_world_points", "sparse_gram")] + \
    [(linear_metrics, "mattes_mi"), (random_coordinates, "box_coordinates"), (point_sampler, "values")]


def _short_bspline_registration():
    from impactreg import register

    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    blob = lambda cx, cy: torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 60.0)  # noqa: E731
    fixed = Image((100 * blob(20, 18) + 60 * blob(32, 26))[None], Grid.identity((48, 40)))
    moving = Image((100 * blob(22, 19) + 60 * blob(31, 24))[None], Grid.identity((48, 40)))
    rigid = {"Transform": "EulerTransform", "Metric": "AdvancedMattesMutualInformation", "NumberOfResolutions": 1,
             "MaximumNumberOfIterations": 8, "NumberOfSpatialSamples": 300, "ImageSampler": "Random",
             "NewSamplesEveryIteration": "true", "WriteResultImage": "false"}
    pm = {"Transform": "BSplineTransform", "Metric": "AdvancedMattesMutualInformation", "NumberOfResolutions": 2,
          "FinalGridSpacingInPhysicalUnits": 12, "MaximumNumberOfIterations": 8, "NumberOfSpatialSamples": 300,
          "ImageSampler": "RandomCoordinate", "NewSamplesEveryIteration": "true", "WriteResultImage": "false"}
    return torch.cat([register(fixed, moving, [rigid], seed=0).transform.parameters,
                      register(fixed, moving, [pm], seed=0).transform.parameters])


def test_kernels_off_runs_no_compiled_kernel(monkeypatch):
    """IMPACTREG_KERNELS=0 turns every compiled kernel off: a registration that, with kernels on,
    calls each of them (MI, B-spline, random coordinates, pyramid smoothing, ASGD estimation)
    calls none, and ends where the compiled run ends (and a rigid MI registration: the linear MI kernel)."""
    calls = dict.fromkeys((name for _, name in KERNELS), 0)
    for module, name in KERNELS:
        def counted(*args, _name=name, _kernel=getattr(module, name)):
            calls[_name] += 1
            return _kernel(*args)
        monkeypatch.setattr(module, name, counted)
    monkeypatch.setattr(dispatch, "ENABLED", True)
    compiled = _short_bspline_registration()
    assert all(calls.values()), calls  # the registration exercises every operation kind

    def refuse(*args):
        raise AssertionError("a compiled kernel ran with kernels off")
    for module, name in KERNELS:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(dispatch, "ENABLED", False)
    twin = _short_bspline_registration()
    torch.testing.assert_close(twin, compiled, rtol=0, atol=1e-3)


def test_the_environment_switch_turns_kernels_off():
    code = "from impactreg.compute import dispatch; print(dispatch.ENABLED)"
    env = dict(os.environ, IMPACTREG_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_dispatcher_chooses_a_backend():
    """No module outside compute/ reaches for a kernel or a twin, or decides between them."""
    package = pathlib.Path(compute.__file__).parents[1]
    forbidden = {"kernels", "twins", "usable", "_compiled", "ENABLED"}
    for path in package.rglob("*.py"):
        if path.parent.name == "compute":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = {getattr(node, "id", None), getattr(node, "attr", None), getattr(node, "module", None)}
            names |= {a.name.split(".")[-1] for a in getattr(node, "names", ()) if isinstance(a, ast.alias)}
            assert not names & forbidden, f"{path}:{node.lineno}"


def test_kernels_handle_no_points_and_grad_free_contexts():
    grid = _oblique_grid(3, (120, 100, 100), (1.0, 1.0, 1.0), 8)  # large enough for the load-only pass
    interp = Interpolator(Image(torch.zeros(1, 100, 100, 120), grid), order=1)
    empty = interp(torch.zeros(0, 3), gradient=True)
    assert empty.values.shape == (0, 1) and empty.inside.shape == (0,)
    points = torch.from_numpy(grid.index_to_world(np.full((3, 3), 5.0))).float().requires_grad_(True)
    with torch.no_grad():  # a tensor that requires grad, in a context without autograd
        assert torch.all(interp(points).inside)


@pytest.mark.parametrize("dim", [2, 3])
def test_box_coordinates_match_torch(monkeypatch, dim):
    """The compiled draw equals, bit for bit, the tensor operations it replaced (rounding half to even, then
    the compiled voxel_world_points), and the torch twin to float32 rounding."""
    grid = _oblique_grid(dim, (13, 11, 9), (1.2, 0.9, 2.0), 4)
    jitter = torch.rand((5000, dim), generator=torch.Generator().manual_seed(0))
    jitter[:4] = torch.tensor([0.5, 0.25, 0.75, 0.0])[:, None]  # positions half-way between voxels: ties to even
    low = torch.tensor([1.0, 0.0, 2.0][:dim])
    high = torch.tensor([11.0, 10.0, 7.0][:dim])
    fast, slow = _both(monkeypatch, lambda: compute.box_coordinates(grid, low, high, jitter, torch.float32))
    assert fast.dtype == slow.dtype == torch.float32
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)
    monkeypatch.setattr(dispatch, "ENABLED", True)
    position = low + jitter * (high - low)
    index = torch.round(position)
    flat = (index.to(torch.int64) * torch.tensor(grid.strides)).sum(1)
    assert torch.equal(fast, compute.voxel_world_points(grid, flat, position - index, torch.float32))
    index = torch.from_numpy(grid.world_to_index(fast.double().numpy()))
    assert bool(((index >= low - 1e-4) & (index <= high + 1e-4)).all())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [1, "1 mirrored", 3, 0, 2])
def test_sample_values_match_sample_image(monkeypatch, dim, order):
    """One channel's values by the single-channel point sampler (orders 1 and 3; others through sample_image)
    equal sample_image's, and the torch twin's."""
    grid = _oblique_grid(dim, (13, 11, 9), (1.2, 0.9, 2.0), 5)
    image = Image(torch.randn(1, *reversed(grid.size), generator=torch.Generator().manual_seed(1)), grid)
    index = torch.rand(3000, dim, dtype=torch.float64) * (torch.tensor(grid.size) + 2) - 1.5  # some outside
    points = torch.from_numpy(grid.index_to_world(index.numpy())).float()
    mirror = order == "1 mirrored"
    interp = Interpolator(image, order=1 if mirror else order, dtype=torch.float32, default=-7.0, mirror_linear=mirror)
    monkeypatch.setattr(dispatch, "ENABLED", True)
    reference = interp(points).values[:, 0]
    fast, slow = _both(monkeypatch, lambda: interp.values(points))
    assert fast.dtype == torch.float32 and fast.shape == reference.shape
    torch.testing.assert_close(fast, reference, rtol=0, atol=2e-6)
    torch.testing.assert_close(slow, reference, rtol=0, atol=1e-5)
    assert bool((fast == -7.0).any())
