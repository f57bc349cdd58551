"""QuasiNewtonLBFGS and its More-Thuente line search on problems with known minima, and in a registration."""
import math

import numpy as np
import pytest
import torch

from impactreg import register
from impactreg.geometry import Grid
from impactreg.image import Image
from impactreg.keys import LevelView
from impactreg.optimizers import LevelSetup
from impactreg.parameters import ParameterMap
from impactreg.quasinewton import QuasiNewtonLBFGS, more_thuente


def rosenbrock(x: torch.Tensor):
    a, b = x[:-1], x[1:]
    value = float((100.0 * (b - a ** 2) ** 2 + (1 - a) ** 2).sum())
    grad = torch.zeros_like(x)
    grad[:-1] += -400.0 * a * (b - a ** 2) - 2.0 * (1 - a)
    grad[1:] += 200.0 * (b - a ** 2)
    return value, grad


class Counted:
    """A cost function that counts its evaluations and, like the engine's Level, answers a repeated
    question (the line search's last point is the next iteration's start) from memory."""

    def __init__(self, function):
        self.function, self.calls, self.last = function, 0, None

    def __call__(self, x):
        if self.last is not None and torch.equal(self.last[0], x):
            return self.last[1]
        self.calls += 1
        self.last = (x.clone(), self.function(x))
        return self.last[1]


def run_lbfgs(function, x0, text: str, iterations: int):
    """The engine's loop around the optimiser: evaluate, step, until converged or out of iterations."""
    optimizer = QuasiNewtonLBFGS()
    setup = LevelSetup(None, None, None, x0, np.ones(2), None, False, torch.Generator(), function)
    optimizer.begin_level(LevelView(ParameterMap.from_text('(Optimizer "QuasiNewtonLBFGS")\n' + text), 0), setup)
    x = x0
    for k in range(iterations):
        _, g = function(x)
        x = optimizer.step(x, g, k)
        if optimizer.converged:
            break
    return x, optimizer, k + 1


def test_lbfgs_minimises_rosenbrock():
    function = Counted(rosenbrock)
    x0 = torch.tensor([-1.2, 1.0, -1.2, 1.0], dtype=torch.float64)
    x, optimizer, steps = run_lbfgs(function, x0, "(MaximumNumberOfIterations 200)\n(GradientMagnitudeTolerance 1e-9)\n"
                                    "(StopIfWolfeNotSatisfied \"false\")\n", 200)
    assert torch.allclose(x, torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert optimizer.stop_condition == "GradientMagnitudeTolerance" and steps < 100
    assert function.calls < 3 * steps  # strong Wolfe steps are usually accepted at once


def test_lbfgs_on_a_quadratic_needs_few_directions_and_stops_as_elastix():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    hessian = torch.from_numpy(q @ np.diag([1, 2, 5, 10, 20, 50.0]) @ q.T)
    target = torch.arange(6, dtype=torch.float64)

    def quadratic(x):
        d = x - target
        return float(0.5 * d @ hessian @ d), hessian @ d

    x, optimizer, steps = run_lbfgs(Counted(quadratic), torch.zeros(6, dtype=torch.float64),
                                    "(LBFGSUpdateAccuracy 6)\n(GradientMagnitudeTolerance 1e-10)\n", 100)
    assert torch.allclose(x, target, atol=1e-8) and optimizer.stop_condition == "GradientMagnitudeTolerance"
    assert steps <= 40
    # MaximumNumberOfIterations counts search directions; 1 takes none (elastix's test before the first one)
    _, capped, steps = run_lbfgs(quadratic, torch.zeros(6, dtype=torch.float64), "(MaximumNumberOfIterations 3)\n", 100)
    assert capped.count == 3 and capped.stop_condition == "MaximumNumberOfIterations"
    x, single, _ = run_lbfgs(quadratic, torch.zeros(6, dtype=torch.float64), "(MaximumNumberOfIterations 1)\n", 100)
    assert single.count == 0 and not bool(x.any())
    # memory 0: steepest descent with a line search; the quasi-Newton directions do far better
    slow, plain, _ = run_lbfgs(Counted(quadratic), torch.zeros(6, dtype=torch.float64),
                               "(LBFGSUpdateAccuracy 0)\n(MaximumNumberOfIterations 20)\n(StopIfWolfeNotSatisfied \"false\")\n", 20)
    fast, _, _ = run_lbfgs(Counted(quadratic), torch.zeros(6, dtype=torch.float64), "(MaximumNumberOfIterations 20)\n", 20)
    assert plain.count == 20 and quadratic(fast)[0] < 1e-4 * quadratic(slow)[0] < quadratic(torch.zeros(6))[0]


def test_more_thuente_satisfies_the_strong_wolfe_conditions():
    def f(x):  # a 1-D function along d with a minimum near 1.8
        t = float(x[0])
        return t ** 4 / 4 - t ** 3 / 3 - 2 * t ** 2 + 3, torch.tensor([t ** 3 - t ** 2 - 4 * t], dtype=torch.float64)

    x = torch.tensor([0.2], dtype=torch.float64)
    value, gradient = f(x)
    direction = torch.tensor([1.0], dtype=torch.float64)
    for first in (0.01, 1.0, 50.0):  # too short (extrapolate), about right, far too long (bracket and interpolate)
        found = more_thuente(f, x, value, gradient, direction, first, 1e-4, 0.1, 30)
        assert found.stop == "StrongWolfeConditionsSatisfied", (first, found)
        new_value, new_gradient = f(x + found.step * direction)
        assert new_value <= value + 1e-4 * found.step * float(gradient @ direction)
        assert abs(float(new_gradient @ direction)) <= 0.1 * abs(float(gradient @ direction))
    ascent = more_thuente(f, x, value, gradient, -direction, 1.0, 1e-4, 0.9, 20)  # f decreases along +1 at 0.2
    assert ascent.stop == "AscentSearchDirection" and ascent.step == 0.0


def test_line_search_backs_off_from_steps_that_cannot_be_evaluated():
    def f(x):  # undefined beyond 3 (e.g. every sample mapped outside the moving image)
        t = float(x[0])
        if t > 3.0:
            return math.inf, None
        return (t - 2.0) ** 2, torch.tensor([2 * (t - 2.0)], dtype=torch.float64)

    x = torch.zeros(1, dtype=torch.float64)
    found = more_thuente(f, x, *f(x), torch.ones(1, dtype=torch.float64), 10.0, 1e-4, 0.9, 20)
    assert 0.0 < found.step <= 3.0 and found.sufficient_decrease


def blobs(shift=(0.0, 0.0), n=48, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(float)
    image = np.zeros((n, n))
    for _ in range(10):
        cx, cy = rng.uniform(10, n - 10, 2)
        s = rng.uniform(3, 6)
        image += rng.uniform(50, 100) * np.exp(-((x - cx - shift[0]) ** 2 + (y - cy - shift[1]) ** 2) / (2 * s * s))
    return Image(torch.from_numpy(image[None].astype(np.float32)), Grid((n, n), (1.0, 1.0), (0.0, 0.0), np.eye(2)))


@pytest.mark.parametrize("sampler", ["Full", "RandomCoordinate"])
def test_lbfgs_registration_recovers_a_translation(sampler):
    """Mean squares, a shifted image: the translation found to 0.01 mm in a handful of directions; with a
    random sampler the samples are drawn once per level (NewSamplesEveryIteration "false")."""
    fixed, moving = blobs(), blobs(shift=(2.5, -1.5))
    parameter_map = {"Transform": "TranslationTransform", "Metric": "AdvancedMeanSquares", "Optimizer": "QuasiNewtonLBFGS",
                     "NumberOfResolutions": "1", "MaximumNumberOfIterations": "40", "ImageSampler": sampler,
                     "NumberOfSpatialSamples": "1500"}
    result = register(fixed, moving, parameter_map)
    np.testing.assert_allclose(result.transform.parameters.numpy(), [2.5, -1.5], atol=0.01)
    assert result.stages[0].levels[0].iterations < 40
