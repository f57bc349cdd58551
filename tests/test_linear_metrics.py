"""The compiled path of the intensity metrics for transforms linear in the point (compute.linear_metrics:
Mattes MI, mean squares, normalized correlation) gives what the generic chain gives (sample_image, the
metric's value_and_derivative, the transform's parameter gradient): value, gradient and valid count,
in 2D and 3D, for every linear transform, with and without a moving mask, with derivative scales,
after a linear initial transform; and the closed-form derivatives of the linear transforms equal
autograd's."""
import numpy as np
import pytest
import torch

from impactreg.compute import dispatch
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.interpolation import Interpolator
from impactreg.keys import LevelView
from impactreg.metrics.intensity import MattesMutualInformation, MeanSquares, NormalizedCorrelation
from impactreg.metrics.protocol import LevelContext, Samples
from impactreg.parameters import ParameterMap
from impactreg.sampling import ImageSampler
from impactreg.transforms import (AffineTransform, BSplineTransform, CombinationTransform, EulerTransform,
                                  SimilarityTransform, TranslationTransform)


def _images(dim: int):
    size = (34, 30, 14)[:dim]
    direction = np.linalg.qr(np.random.default_rng(3).normal(size=(dim, dim)))[0]
    grid = Grid(size, np.array([1.2, 0.9, 1.7])[:dim], np.array([3.0, -2.0, 5.0])[:dim], direction)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij"), -1)[..., ::-1]
    rng = np.random.default_rng(dim)
    value = np.zeros(index.shape[:-1])
    for _ in range(10):
        centre = rng.uniform(2, np.array(size) - 2)
        value += rng.uniform(50, 150) * np.exp(-((index - centre) ** 2).sum(-1) / (2 * rng.uniform(2, 4) ** 2))
    fixed = Image(torch.from_numpy(value[None]).float(), grid)
    moving = Image(torch.from_numpy(np.sqrt(value[None] + 5.0) * 10.0).float(), grid)  # another contrast
    return fixed, moving


def _transforms(dim: int, centre):
    if dim == 2:
        return [TranslationTransform(2, torch.tensor([1.3, -0.7])),
                EulerTransform(2, torch.tensor([0.08, 1.1, -0.6]), centre),
                SimilarityTransform(2, torch.tensor([1.04, -0.06, 0.5, 0.9]), centre),
                AffineTransform(2, torch.tensor([1.02, 0.05, -0.04, 0.97, 0.8, -1.2]), centre)]
    return [TranslationTransform(3, torch.tensor([1.3, -0.7, 0.4])),
            EulerTransform(3, torch.tensor([0.05, -0.04, 0.07, 1.0, -0.5, 0.3]), centre),
            EulerTransform(3, torch.tensor([0.05, -0.04, 0.07, 1.0, -0.5, 0.3]), centre, compute_zyx=True),
            SimilarityTransform(3, torch.tensor([0.02, -0.03, 0.04, 0.7, -0.4, 0.9, 1.03]), centre),
            AffineTransform(3, torch.tensor([1.02, 0.05, -0.03, -0.04, 0.97, 0.02, 0.03, -0.01, 1.01, 0.8, -1.2, 0.5]),
                            centre)]


METRICS = {"mattes": (MattesMutualInformation, {}), "mean squares": (MeanSquares, {"UseNormalization": "true"}),
           "correlation": (NormalizedCorrelation, {}), "correlation, no means": (NormalizedCorrelation,
                                                                                {"SubtractMean": "false"})}


def _metric(dim: int, order: int, moving_mask: bool, scales=None, kind: str = "mattes"):
    fixed, moving = _images(dim)
    cls, settings = METRICS[kind]
    keys = {"BSplineInterpolationOrder": order, **settings}
    if scales is not None:
        keys["MovingImageDerivativeScales"] = scales
    mask = None
    if moving_mask:
        data = torch.zeros_like(moving.data)
        data[(slice(None),) + tuple(slice(2, n - 3) for n in moving.data.shape[1:])] = 1.0
        mask = moving.with_data(data)
    context = LevelContext(LevelView(ParameterMap(keys), 0), fixed, moving, None, mask, order,
                           torch.Generator().manual_seed(0), torch.device("cpu"))
    metric = cls()
    metric.begin_level(context)
    sampler = ImageSampler("RandomCoordinate", fixed.grid, None, 1500, generator=torch.Generator().manual_seed(1))
    points = sampler.sample()
    samples = Samples(points, Interpolator(fixed, order=1)(points).values[:, 0])
    return metric, samples, fixed.grid


def _both(metric, transform, samples):
    fast = metric.linear_value_and_gradient(transform, samples)
    assert fast is not None, "the compiled path did not run"
    metric.linear_value_and_gradient = lambda t, s: None  # the generic chain
    try:
        generic = metric.value_and_gradient(transform, Samples(samples.points, samples.fixed_values))
    finally:
        del metric.linear_value_and_gradient
    return fast, generic


def _assert_equal(fast, generic):
    value, gradient, valid = fast
    assert valid == generic[2] and valid > 100
    assert value == pytest.approx(generic[0], rel=2e-6, abs=2e-6)
    assert gradient.dtype == torch.float64 and gradient.shape == generic[1].shape
    torch.testing.assert_close(gradient, generic[1], rtol=0, atol=2e-5 * float(generic[1].abs().max()))


@pytest.mark.parametrize("kind", list(METRICS))
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("moving_mask", [False, True], ids=["no mask", "moving mask"])
def test_compiled_linear_metric_equals_the_generic_chain(kind, dim, order, moving_mask):
    metric, samples, grid = _metric(dim, order, moving_mask, kind=kind)
    centre = grid.index_to_world((np.asarray(grid.size) - 1) / 2.0)
    for transform in _transforms(dim, centre):
        fast, generic = _both(metric, transform, samples)
        _assert_equal(fast, generic)
        # some samples map outside the image (and the mask): they do not count on either path
        assert fast[2] < samples.points.shape[0]


@pytest.mark.parametrize("kind", ["mattes", "correlation"])
def test_compiled_linear_metric_with_derivative_scales_and_an_initial_transform(kind):
    metric, samples, grid = _metric(3, 1, True, scales=[1.0, 0.5, 0.0], kind=kind)
    centre = grid.index_to_world((np.asarray(grid.size) - 1) / 2.0)
    initial = AffineTransform(3, torch.tensor([1.01, 0.02, 0.0, -0.02, 0.99, 0.01, 0.0, 0.01, 1.0, 0.4, 0.2, -0.3]),
                              centre + 1.0)
    current = EulerTransform(3, torch.tensor([0.03, -0.02, 0.05, 0.6, -0.3, 0.2]), centre)
    fast, generic = _both(metric, CombinationTransform(initial, current, "Compose"), samples)
    _assert_equal(fast, generic)
    assert float(fast[1][5].abs()) == pytest.approx(0.0, abs=1e-12)  # z moves nothing: scale 0 on z
    # Add is not linear in the current transform's form: the generic chain runs
    assert CombinationTransform(initial, current, "Add").linear_form() is None


def test_the_generic_chain_runs_where_the_compiled_path_cannot(monkeypatch):
    metric, samples, grid = _metric(2, 1, False)
    assert metric.linear_value_and_gradient(BSplineTransform.over_image(grid, 8.0), samples) is None
    euler = EulerTransform(2, torch.tensor([0.05, 0.3, 0.2]), grid.index_to_world(np.array([10.0, 10.0])))
    monkeypatch.setattr(dispatch, "ENABLED", False)
    assert metric.linear_value_and_gradient(euler, samples) is None
    monkeypatch.setattr(dispatch, "ENABLED", True)
    metric2, samples2, _ = _metric(2, 2, False)  # order 2: no compiled point sampler
    assert metric2.linear_value_and_gradient(euler, samples2) is None


@pytest.mark.parametrize("dim", [2, 3])
def test_closed_form_derivatives_equal_autograd(dim):
    centre = np.array([3.0, -4.0, 5.0])[:dim]
    for transform in _transforms(dim, centre):
        p = transform.parameters.clone()
        A, t, dA, dt = transform.derivatives(p.numpy())
        A0, t0 = transform.matrix_translation(p)
        jA, jt = torch.autograd.functional.jacobian(transform.matrix_translation, p)  # (D, D, P), (D, P)
        np.testing.assert_allclose(A, A0.numpy(), atol=1e-15)
        np.testing.assert_allclose(t, t0.numpy(), atol=1e-15)
        np.testing.assert_allclose(dA, jA.permute(2, 0, 1).numpy(), atol=1e-14)
        np.testing.assert_allclose(dt, jt.T.numpy(), atol=1e-14)
        x = torch.randn(40, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        d = torch.randn(40, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        jacobian = transform.parameter_jacobian(x)
        torch.testing.assert_close(torch.einsum("ndp,nd->p", jacobian, d), transform.parameter_gradient(x, d))
        eps = 1e-6  # and the Jacobian against finite differences of map
        for k in range(p.numel()):
            step = torch.zeros_like(p)
            step[k] = eps
            fd = (transform.map(x, p + step) - transform.map(x, p - step)) / (2 * eps)
            torch.testing.assert_close(jacobian[:, :, k], fd, rtol=0, atol=1e-7)
