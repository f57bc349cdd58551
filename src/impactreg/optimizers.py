"""Optimisers on (scaled) transform parameters, and elastix's ASGD parameter estimation.

Parameters are optimised in scaled space: mu~ = mu * sqrt(scales), gradient g~ = g / sqrt(scales)
(elastix's Scales are squared scales). Each optimiser's ``step`` takes the scaled parameters
and the scaled gradient of iteration k and returns the new scaled parameters.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import compute
from .keys import NO_EFFECT, Key
from .sampling import exact_gradient_sampler
from .transforms.base import SparseJacobian

log = logging.getLogger("impactreg")

ZETA = 0.1  # elastix's SigmoidScaleFactor
MAX_SPARSE_JACOBIAN_POINTS = 2000  # ASGD estimation of a B-spline: its n x n Gram matrix of sample points


def sigmoid_time_step(x: float, fmax: float, fmin: float, omega: float) -> float:
    """ITK's sigmoid through zero: (fmax - fmin) / (1 + exp(-(x - beta) / omega)) + fmin."""
    beta = omega * math.log(-fmax / fmin)
    z = max(-700.0, min(700.0, -(x - beta) / omega))
    return (fmax - fmin) / (1.0 + math.exp(z)) + fmin


@dataclass
class ASGDSettings:
    a: float = 400.0
    A: float = 20.0
    alpha: float = 0.602
    fmax: float = 1.0
    fmin: float = -0.8
    omega: float = 1e-8
    adaptive: bool = True
    initial_time: float = 0.0


# keys and level setup shared by the optimiser components -------------------------------------------------------------------------

@dataclass
class LevelSetup:
    """What an optimiser component needs to configure itself at the start of a level."""

    transform: object  # the transform being optimised (with any initial transform), on the device
    fixed_grid: object  # this level's fixed-image Grid
    scales: torch.Tensor  # sqrt of elastix's Scales (P,)
    params: torch.Tensor  # the scaled starting parameters (P,)
    spacings: np.ndarray  # voxel sizes of both images (first two axes), mm
    gradient: Callable  # gradient(scaled params, exact_samples) -> scaled gradient; 0 samples = the registration's sampler
    noisy: bool  # whether the sampler draws new samples every iteration
    generator: torch.Generator
    evaluate: Callable | None = None  # evaluate(scaled params) -> (value, scaled gradient) on this iteration's samples
    random_region: bool = False  # whether the sampler draws in a random sample region (UseRandomSampleRegion)
    fixed_mask: torch.Tensor | None = None  # this level's fixed mask (bool, torch order), where dT/dmu is measured
    fixed_region: tuple | None = None  # elastix's fixed image region (start, size), x-y-z order; None: the whole image


ITERATION_KEY = Key("MaximumNumberOfIterations", "int", 500, "iterations per level", per_level=True, minimum=0)
_ITERATION_KEYS = (
    ITERATION_KEY,
    Key("MaximumStepLength", "float", None, "largest voxel displacement of one step in mm (default: mean voxel size "
        "x MaximumStepLengthRatio)", per_level=True, minimum=0),
    Key("MaximumStepLengthRatio", "float", 1.0, "default MaximumStepLength as a fraction of the mean voxel size",
        per_level=True, minimum=0, exclusive_minimum=True),
)
_GAIN_KEYS = (
    Key("SP_a", "float", 400.0, "gain a in a / (A + k + 1)^alpha", per_level=True, minimum=0),
    Key("SP_A", "float", 20.0, "gain offset A (StandardGradientDescent: 50 when absent, as elastix)", per_level=True,
        minimum=0),
    Key("SP_alpha", "float", 0.602, "gain decay exponent alpha (ASGD with AutomaticParameterEstimation: 1, the map's "
        "value ignored, as elastix)",
        per_level=True, minimum=0),
)


def _max_step(view, setup: LevelSetup) -> float:
    return view.get("MaximumStepLength") or float(setup.spacings.mean()) * view.get("MaximumStepLengthRatio")


class AdaptiveStochasticGradientDescent:
    """mu~_{k+1} = mu~_k - a / (A + t_k + 1)^alpha g~_k, with t adapted from g_{k-1} . g_k (Klein 2009),
    with elastix's automatic estimation of the gain."""

    elastix_name = "AdaptiveStochasticGradientDescent"
    converged = False  # ASGD runs all its iterations
    keys = _ITERATION_KEYS + _GAIN_KEYS + (
        Key("AutomaticParameterEstimation", "bool", True, "ASGD: estimate SP_a (and SP_A, SP_alpha) from the data",
            per_level=True),
        Key("ASGDParameterEstimationMethod", "str", "Original", "ASGD: how the step size is estimated "
            "(OriginalButSigmoidToDefault: Original, keeping the Sigmoid* values of the map)",
            ("Original", "OriginalButSigmoidToDefault", "DisplacementDistribution")),
        Key("NoiseCompensation", "bool", True, "ASGD DisplacementDistribution: scale the gain by the gradient's "
            "signal-to-noise factor"),
        Key("UseAdaptiveStepSizes", "bool", True, "ASGD: adapt the time from successive gradient inner products",
            per_level=True),
        Key("SigmoidMax", "float", 1.0, "ASGD: maximum of the time-update sigmoid", per_level=True),
        Key("SigmoidMin", "float", -0.8, "ASGD: minimum of the time-update sigmoid", per_level=True),
        Key("SigmoidScale", "float", 1e-8, "ASGD: scale of the time-update sigmoid",
            per_level=True, minimum=0, exclusive_minimum=True),
        Key("SigmoidInitialTime", "float", 0.0, "ASGD: initial time", per_level=True, minimum=0),
        Key("NumberOfGradientMeasurements", "int", 0, "ASGD estimation: gradients measured (0 = automatic)",
            per_level=True, minimum=0),
        Key("NumberOfJacobianMeasurements", "int", 1000, "ASGD estimation: points where dT/dmu is measured (default "
            "max(1000, number of parameters))",
            per_level=True, minimum=1),
        Key("NumberOfSamplesForExactGradient", "int", 100000, "ASGD estimation: samples for the 'exact' gradient",
            per_level=True, minimum=1),
        Key("MaxBandCovSize", "int", 192, NO_EFFECT, per_level=True),
        Key("NumberOfBandStructureSamples", "int", 10, NO_EFFECT, per_level=True),
    )


    def __init__(self, settings: ASGDSettings | None = None):
        settings = settings or ASGDSettings()
        self.s = settings
        self.time = settings.initial_time
        self.previous: torch.Tensor | None = None
        self.last_gain = 0.0

    def step(self, params: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
        s = self.s
        self.last_gain = s.a / (s.A + self.time + 1.0) ** s.alpha
        new = params - self.last_gain * grad
        if not s.adaptive:  # elastix's UpdateCurrentTime: time += (fmax + fmin) / 2 after every step, the first too
            self.time = max(0.0, self.time + (s.fmax + s.fmin) / 2.0)
        elif k >= 1 and self.previous is not None:
            inner = -float((self.previous * grad).sum())  # below torch's parallel grain: no thread hand-off
            self.time = max(0.0, self.time + sigmoid_time_step(inner, s.fmax, s.fmin, s.omega))
        self.previous = grad.clone()
        return new


    def begin_level(self, view, setup: LevelSetup) -> dict:
        max_step = _max_step(view, setup)
        A = view.get("SP_A")
        if view.get("AutomaticParameterEstimation"):
            settings = self._estimate(view, setup, max_step, A)
        else:
            settings = ASGDSettings(a=view.get("SP_a"), A=A, alpha=view.get("SP_alpha"), fmax=view.get("SigmoidMax"),
                                    fmin=view.get("SigmoidMin"), omega=view.get("SigmoidScale"),
                                    adaptive=view.get("UseAdaptiveStepSizes"), initial_time=view.get("SigmoidInitialTime"))
        self.__init__(settings)
        s = settings
        return {"SP_a": s.a, "SP_A": s.A, "SP_alpha": s.alpha, "SigmoidMax": s.fmax, "SigmoidMin": s.fmin,
                "SigmoidScale": s.omega}

    def _estimate(self, view, setup: LevelSetup, max_step: float, A: float) -> ASGDSettings:
        # elastix's ComputeJacobianTerms: a grid of about NumberOfJacobianMeasurements (default max(1000, P)) points
        # over the fixed mask's box, centred, all of them; a B-spline's Gram matrix of them is n x n, so it keeps
        # a random MAX_SPARSE_JACOBIAN_POINTS of a larger grid
        P = setup.transform.number_of_parameters
        n_jac = view.get("NumberOfJacobianMeasurements") if "NumberOfJacobianMeasurements" in view else max(1000, P)
        jac_points = exact_gradient_sampler(setup.fixed_grid, setup.fixed_mask, n_jac, dtype=torch.float64,
                                            region=setup.fixed_region).sample()
        jacobian = setup.transform.to("cpu").parameter_jacobian(jac_points)
        if isinstance(jacobian, SparseJacobian) and jac_points.shape[0] > MAX_SPARSE_JACOBIAN_POINTS:
            pick = torch.randperm(jac_points.shape[0], generator=setup.generator)[:MAX_SPARSE_JACOBIAN_POINTS]
            jacobian = setup.transform.to("cpu").parameter_jacobian(jac_points[pick])
        exact_samples = view.get("NumberOfSamplesForExactGradient")

        def gradient(params, exact: bool):
            return setup.gradient(params, exact_samples if exact else 0)

        measurements = view.get("NumberOfGradientMeasurements")
        method = view.get("ASGDParameterEstimationMethod")
        if method in ("Original", "OriginalButSigmoidToDefault"):
            settings = estimate_original(jacobian_terms(jacobian, setup.scales), max_step, A, gradient, setup.params,
                                         measurements, setup.noisy, setup.generator)
        else:
            settings = estimate_displacement_distribution(jacobian, setup.scales, max_step, A, gradient, setup.params,
                                                          setup.noisy and view.get("NoiseCompensation"),
                                                          max(2, measurements))
        if method != "Original":  # elastix estimates a (and alpha) only; the sigmoid keeps the map's values
            settings.fmax, settings.fmin = view.get("SigmoidMax"), view.get("SigmoidMin")
            settings.omega = view.get("SigmoidScale")
        settings.adaptive = view.get("UseAdaptiveStepSizes")
        if settings.adaptive and setup.random_region and setup.noisy:  # as elastix's SampleGradients
            log.warning("UseAdaptiveStepSizes is turned off, because UseRandomSampleRegion is set to \"true\" "
                        "(as elastix does)")
            settings.adaptive = False
        return settings  # alpha 1 whatever SP_alpha says: elastix reads SP_alpha only without the estimation


class StandardGradientDescent(AdaptiveStochasticGradientDescent):
    """Gain a / (A + k + 1)^alpha without adaptation."""

    elastix_name = "StandardGradientDescent"
    keys = _ITERATION_KEYS + _GAIN_KEYS

    def __init__(self, a: float = 400.0, A: float = 20.0, alpha: float = 0.602):
        super().__init__(ASGDSettings(a=a, A=A, alpha=alpha, adaptive=False))

    DEFAULT_A = 50.0  # elastix's StandardGradientDescent reads SP_A with default 50 (ASGD: 20)

    def begin_level(self, view, setup: LevelSetup) -> dict:
        A = view.get("SP_A") if "SP_A" in view else self.DEFAULT_A
        self.__init__(view.get("SP_a"), A, view.get("SP_alpha"))
        return {"SP_a": self.s.a, "SP_A": self.s.A, "SP_alpha": self.s.alpha}

    def step(self, params, grad, k):
        self.last_gain = self.s.a / (self.s.A + k + 1.0) ** self.s.alpha
        return params - self.last_gain * grad


class RegularStepGradientDescent:
    """Steps of fixed length along -g/|g|, relaxed when the direction reverses (ITK's optimiser)."""

    elastix_name = "RegularStepGradientDescent"
    keys = _ITERATION_KEYS + (
        Key("MinimumStepLength", "float", 1e-6, "RegularStepGradientDescent: stop below this step (mm)",
            per_level=True, minimum=0),
        Key("MinimumGradientMagnitude", "float", 1e-8, "RegularStepGradientDescent: stop below this gradient",
            per_level=True, minimum=0),
        Key("RelaxationFactor", "float", 0.5, "RegularStepGradientDescent: step shrink on direction change",
            per_level=True, minimum=0, maximum=1),
    )


    def __init__(self, max_step: float = 1.0, min_step: float = 1e-6, min_gradient: float = 1e-8, relaxation: float = 0.5):
        self.step_length, self.min_step, self.min_gradient, self.relaxation = max_step, min_step, min_gradient, relaxation
        self.previous = None
        self.converged = False
        self.last_gain = max_step

    def step(self, params, grad, k):
        norm = float(grad.norm())
        if norm < self.min_gradient:
            self.converged = True
            return params
        if self.previous is not None and float(torch.dot(grad, self.previous)) < 0:
            self.step_length *= self.relaxation
        if self.step_length < self.min_step:
            self.converged = True
            return params
        self.previous = grad.clone()
        self.last_gain = self.step_length / norm
        return params - self.last_gain * grad


    def begin_level(self, view, setup: LevelSetup) -> dict:
        self.__init__(_max_step(view, setup), view.get("MinimumStepLength"), view.get("MinimumGradientMagnitude"),
                         view.get("RelaxationFactor"))
        return {"MaximumStepLength": self.step_length}


class Adam:
    """Adam on the scaled parameters; the learning rate is in scaled-parameter units (mm)."""

    elastix_name = "Adam"
    converged = False
    keys = _ITERATION_KEYS + (
        Key("LearningRate", "float", None, "Adam: step size in mm (default: MaximumStepLength / 2)",
            per_level=True, minimum=0, exclusive_minimum=True),
        Key("Beta1", "float", 0.9, "Adam: first-moment decay", per_level=True, minimum=0, maximum=1),
        Key("Beta2", "float", 0.999, "Adam: second-moment decay", per_level=True, minimum=0, maximum=1),
        Key("Epsilon", "float", 1e-8, "Adam: denominator floor", per_level=True, minimum=0),
    )


    def __init__(self, lr: float = 0.5, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m = self.v = None
        self.last_gain = lr

    def step(self, params, grad, k):
        if self.m is None:
            self.m, self.v = torch.zeros_like(grad), torch.zeros_like(grad)
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** (k + 1))
        v_hat = self.v / (1 - self.b2 ** (k + 1))
        return params - self.lr * m_hat / (v_hat.sqrt() + self.eps)


    def begin_level(self, view, setup: LevelSetup) -> dict:
        lr = view.get("LearningRate") or 0.5 * _max_step(view, setup)
        self.__init__(lr, view.get("Beta1"), view.get("Beta2"), view.get("Epsilon"))
        return {"LearningRate": lr}


# ASGD automatic parameter estimation -------------------------------------------------------

@dataclass
class JacobianTerms:
    """elastix's ComputeJacobianTerms over sample points: C = mean_j J_j^T J_j (scaled columns)."""

    trace_c: float
    trace_cc: float
    max_jj: float
    max_jcj: float


def jacobian_terms(jacobian, scales: torch.Tensor) -> JacobianTerms:
    """From a dense (n, D, P) parameter Jacobian or a SparseJacobian, with sqrt-scales (P,).

    maxJJ = max_j ||J_j||_F^2 + 2 sqrt(2) ||J_j J_j^T||_F and maxJCJ likewise with J_j C J_j^T.
    A B-spline's J_j is I_D (x) w_j, so everything follows from the Gram matrix G = [w_j . w_k]
    without forming C (P x P); a dense Jacobian has few parameters and C is formed directly.
    """
    root2 = 2 * math.sqrt(2)
    if isinstance(jacobian, SparseJacobian):
        n, dim = jacobian.weights.shape[0], jacobian.dim
        ncoef = jacobian.num_coefficients
        w = jacobian.weights.double()
        inv = 1.0 / scales.double()[:ncoef][jacobian.indices]  # B-spline scales are equal across axes
        gram = compute.sparse_gram(jacobian.indices, w * inv, ncoef)
        diag = gram.diagonal()
        jcj = (gram ** 2).sum(1) / n  # J_j C J_j^T = jcj_j I_D
        return JacobianTerms(trace_c=dim * float(diag.sum()) / n, trace_cc=dim * float((gram ** 2).sum()) / n ** 2,
                             max_jj=float((dim * diag + root2 * math.sqrt(dim) * diag).max()),
                             max_jcj=float((dim * jcj + root2 * math.sqrt(dim) * jcj).max()))
    J = jacobian.double() / scales.double()
    n = J.shape[0]
    C = torch.einsum("jap,jaq->pq", J, J) / n
    jj = J @ J.transpose(1, 2)
    jcj = J @ C @ J.transpose(1, 2)
    return JacobianTerms(trace_c=float(C.trace()), trace_cc=float((C ** 2).sum()),
                         max_jj=float((jj.diagonal(dim1=1, dim2=2).sum(-1) + root2 * jj.flatten(1).norm(dim=1)).max()),
                         max_jcj=float((jcj.diagonal(dim1=1, dim2=2).sum(-1) + root2 * jcj.flatten(1).norm(dim=1)).max()))


def estimate_original(terms: JacobianTerms, max_step: float, A: float, gradient: Callable, params: torch.Tensor,
                      measurements: int, noisy: bool, generator: torch.Generator) -> ASGDSettings:
    """elastix's 'Original' ASGD estimation (Klein et al. 2009).

    ``gradient(params, exact)`` returns the scaled gradient at scaled ``params``: exact = on many
    grid samples, else with the registration's own sampler.
    """
    if measurements <= 0:
        k = 1.5
        measurements = max(2, int(math.ceil(8 * terms.trace_cc / max(terms.trace_c, 1e-300) ** 2 / (k - 1) ** 2)))
    sigma4 = max_step / math.sqrt(max(terms.max_jj, 1e-300))
    gg = ee = 0.0
    for _ in range(measurements):
        perturbed = params + sigma4 * torch.randn(params.shape, generator=generator, dtype=params.dtype)
        exact = gradient(perturbed, True)
        gg += float((exact ** 2).sum())
        if noisy:
            ee += float(((exact - gradient(perturbed, False)) ** 2).sum())
    gg /= measurements
    ee /= measurements
    trace_c = max(terms.trace_c, 1e-300)
    sigma1 = math.sqrt(gg / trace_c)
    sigma3 = math.sqrt(ee / trace_c)
    noise = sigma1 ** 2 / (sigma1 ** 2 + sigma3 ** 2 + 1e-14)
    a = A * max_step / (max(sigma1, 1e-300) * math.sqrt(max(terms.max_jcj, 1e-300))) * noise
    return ASGDSettings(a=a, A=A, alpha=1.0, fmax=1.0, fmin=-0.99 + 0.98 * noise,
                        omega=max(1e-14, ZETA * sigma3 ** 2 * math.sqrt(terms.trace_cc)))


def estimate_displacement_distribution(jacobian, scales: torch.Tensor, max_step: float, A: float,
                                       gradient: Callable, params: torch.Tensor, noisy: bool,
                                       measurements: int = 2) -> ASGDSettings:
    """Qiao et al. 2016: the step that moves voxels by at most MaximumStepLength (mean + 2 sigma of |J g|)."""
    g = gradient(params, False)
    gs = g / scales.double()
    if isinstance(jacobian, SparseJacobian):
        coef = gs.reshape(jacobian.dim, -1)[:, jacobian.indices]  # (D, n, K)
        disp = (coef * jacobian.weights.double()).sum(-1).T
    else:
        disp = torch.einsum("jap,p->ja", jacobian.double(), gs)
    d = disp.norm(dim=1)
    jacg = float(d.mean() + 2 * d.std(unbiased=False))
    noise = 1.0
    if noisy:
        gg = ee = 0.0
        for _ in range(measurements):
            exact = gradient(params, True)
            approx = gradient(params, False)
            gg += float((exact ** 2).sum())
            ee += float(((exact - approx) ** 2).sum())
        noise = gg / (gg + ee + 1e-14)
    a = max_step * (A + 1.0) / (jacg + 1e-14) * noise
    return ASGDSettings(a=a, A=A, alpha=1.0)


