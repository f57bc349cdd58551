"""elastix's QuasiNewtonLBFGS optimiser and the More-Thuente line search it uses.

L-BFGS (Nocedal 1980) on the scaled parameters: the search direction is -H g with H the
two-loop recursion over the last ``LBFGSUpdateAccuracy`` pairs (s, y) and the initial scaling
s.y / y.y of the newest pair (the first direction is -g / |g|). Along it, a More-Thuente line
search (More & Thuente, ACM TOMS 20(3), 1994; the MINPACK routines elastix ports) looks for a
step that satisfies the strong Wolfe conditions

    f(x + a d) <= f(x) + LineSearchValueTolerance a g.d          (sufficient decrease)
    |g(x + a d).d| <= LineSearchGradientTolerance |g.d|          (curvature)

starting from a = StepLength, with at most MaximumNumberOfLineSearchIterations evaluations. The
optimiser stops, as elastix's does, after MaximumNumberOfIterations search directions, when
|g| / max(1, |x|) <= GradientMagnitudeTolerance, when a step is (nearly) zero, when s.y <= 0, or,
with StopIfWolfeNotSatisfied, when a line search ends without both Wolfe conditions.

Line searches evaluate the cost on the level's current samples. elastix's own note holds: L-BFGS
assumes one cost function, so use a deterministic sampler (Full, Grid) or
NewSamplesEveryIteration "false"; with new samples each direction is computed on a new draw.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import torch

from .keys import Key
from .optimizers import ITERATION_KEY, LevelSetup

log = logging.getLogger("impactreg")

_EPSILON = 2.220446049250313e-16  # machine epsilon: elastix's interval tolerance and zero-step threshold
_MIN_STEP, _MAX_STEP = 1e-20, 1e20  # elastix's bounds of the line-search step
_EXTRAPOLATE = 4.0  # before a minimum is bracketed, the next step is at most this times beyond the last


@dataclass
class LineSearchResult:
    step: float
    value: float
    gradient: torch.Tensor
    sufficient_decrease: bool
    curvature: bool
    stop: str


def _cubic_minimiser(a, fa, da, b, fb, db, clamp_root: bool = False):
    """The minimiser of the cubic through (a, fa, da) and (b, fb, db), written about ``a``; with
    ``clamp_root`` a negative discriminant counts as zero (the cubic may not have a minimum)."""
    theta = 3.0 * (fa - fb) / (b - a) + da + db
    s = max(abs(theta), abs(da), abs(db))
    discriminant = (theta / s) ** 2 - (da / s) * (db / s)
    gamma = s * math.sqrt(max(0.0, discriminant) if clamp_root else discriminant)
    if b < a:
        gamma = -gamma
    p = (gamma - da) + theta
    q = ((gamma - da) + gamma) + db
    return p, q


def safeguarded_step(stx, fx, dx, sty, fy, dy, stp, fp, dp, bracketed, stmin, stmax):
    """One update of the interval of uncertainty [stx, sty] and the next trial step (More-Thuente's
    four cases). Returns (stx, fx, dx, sty, fy, dy, new step, bracketed, ok); ok is False when the
    inputs are inconsistent (the caller then stops)."""
    if (bracketed and (stp <= min(stx, sty) or stp >= max(stx, sty))) or dx * (stp - stx) >= 0.0 or stmax < stmin:
        return stx, fx, dx, sty, fy, dy, stp, bracketed, False
    sign = dp * (dx / abs(dx))
    bound = False
    if fp > fx:  # case 1: a higher value; the minimum is bracketed
        bound = True
        p, q = _cubic_minimiser(stx, fx, dx, stp, fp, dp)
        cubic = stx + (p / q) * (stp - stx)
        quadratic = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        new = cubic if abs(cubic - stx) < abs(quadratic - stx) else cubic + (quadratic - cubic) / 2.0
        bracketed = True
    elif sign < 0.0:  # case 2: a lower value, derivatives of opposite sign; the minimum is bracketed
        p, q = _cubic_minimiser(stp, fp, dp, stx, fx, dx)
        cubic = stp + (p / q) * (stx - stp)
        secant = stp + (dp / (dp - dx)) * (stx - stp)
        new = cubic if abs(cubic - stp) > abs(secant - stp) else secant
        bracketed = True
    elif abs(dp) < abs(dx):  # case 3: a lower value, same sign, the derivative decreases in magnitude
        bound = True
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0.0 and gamma != 0.0:
            cubic = stp + r * (stx - stp)
        else:
            cubic = stmax if stp > stx else stmin
        secant = stp + (dp / (dp - dx)) * (stx - stp)
        if bracketed:
            new = cubic if abs(stp - cubic) < abs(stp - secant) else secant
        else:
            new = cubic if abs(stp - cubic) > abs(stp - secant) else secant
    else:  # case 4: a lower value, same sign, the derivative does not decrease
        if bracketed and not math.isfinite(fy):  # the far end could not be evaluated: bisect
            new = stp + 0.5 * (sty - stp)
        elif bracketed:
            p, q = _cubic_minimiser(stp, fp, dp, sty, fy, dy)
            new = stp + (p / q) * (sty - stp)
        else:
            new = stmax if stp > stx else stmin
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sign < 0.0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    new = min(stmax, max(stmin, new))
    if bracketed and bound:
        limit = stx + 0.66 * (sty - stx)
        new = min(limit, new) if sty > stx else max(limit, new)
    return stx, fx, dx, sty, fy, dy, new, bracketed, True


def more_thuente(evaluate, x: torch.Tensor, value: float, gradient: torch.Tensor, direction: torch.Tensor,
                 initial_step: float, value_tolerance: float, gradient_tolerance: float,
                 max_evaluations: int) -> LineSearchResult:
    """A step along ``direction`` from ``x`` (where the cost is ``value`` with ``gradient``) satisfying
    the strong Wolfe conditions, or the best step found. ``evaluate(x) -> (value, gradient)``; a
    non-finite value (e.g. too few valid samples) counts as a very high one."""
    dginit = float(gradient @ direction)
    if dginit >= 0.0:
        return LineSearchResult(0.0, value, gradient, False, False, "AscentSearchDirection")
    dgtest = value_tolerance * dginit
    width = _MAX_STEP - _MIN_STEP
    width1 = 2.0 * width
    bracketed, stage1, failed = False, True, False
    stx, fx, dgx, gx = 0.0, value, dginit, gradient
    sty, fy, dgy = 0.0, value, dginit
    step = initial_step
    iteration = 0
    while True:
        if bracketed:
            stmin, stmax = min(stx, sty), max(stx, sty)
        else:
            stmin, stmax = stx, step + _EXTRAPOLATE * (step - stx)
        step = min(_MAX_STEP, max(_MIN_STEP, step))
        if ((bracketed and (step <= stmin or step >= stmax)) or iteration >= max_evaluations - 1 or failed
                or (bracketed and stmax - stmin <= _EPSILON * stmax)):
            step = stx  # an unusual end: return the best step so far
        if step == stx:
            f, g = fx, gx
        else:
            f, g = evaluate(x + step * direction)
        if g is None or not math.isfinite(f):  # e.g. too few valid samples: a step too long, back off
            iteration += 1
            if iteration >= max_evaluations:
                return LineSearchResult(stx, fx, gx, False, False, "MetricError")
            bracketed, sty, fy, dgy = True, step, math.inf, 0.0
            step = stx + 0.5 * (step - stx)
            continue
        dg = float(g @ direction)
        sufficient = f <= value + step * dgtest
        curvature = abs(dg) <= gradient_tolerance * (-dginit)
        stop = ""
        if (bracketed and (step <= stmin or step >= stmax)) or failed:
            stop = "RoundingError"
        if step == _MAX_STEP and sufficient and dg <= dgtest:
            stop = "StepTooLarge"
        if step == _MIN_STEP and (not sufficient or dg >= dgtest):
            stop = "StepTooSmall"
        if iteration >= max_evaluations - 1:
            stop = "MaximumNumberOfIterations"
        if bracketed and stmax - stmin <= _EPSILON * stmax:
            stop = "IntervalTooSmall"
        if sufficient and curvature:
            stop = "StrongWolfeConditionsSatisfied"
        if stop:
            return LineSearchResult(step, f, g, sufficient, curvature, stop)
        iteration += 1
        if stage1 and sufficient and dg >= dginit * min(value_tolerance, gradient_tolerance):
            stage1 = False
        previous_best = stx
        if stage1 and f <= fx and not sufficient:
            # the modified function psi(a) = f(a) - f(0) - a dgtest until a step with psi <= 0, psi' >= 0
            stx, fxm, dgxm, sty, fym, dgym, step, bracketed, ok = safeguarded_step(
                stx, fx - stx * dgtest, dgx - dgtest, sty, fy - sty * dgtest, dgy - dgtest,
                step, f - step * dgtest, dg - dgtest, bracketed, stmin, stmax)
            fx, fy, dgx, dgy = fxm + stx * dgtest, fym + sty * dgtest, dgxm + dgtest, dgym + dgtest
        else:
            stx, fx, dgx, sty, fy, dgy, step, bracketed, ok = safeguarded_step(
                stx, fx, dgx, sty, fy, dgy, step, f, dg, bracketed, stmin, stmax)
        if stx != previous_best:
            gx = g  # the gradient at the best step, returned on an unusual end without evaluating again
        failed = not ok
        if bracketed:
            if abs(sty - stx) >= 0.66 * width1:
                step = stx + 0.5 * (sty - stx)
            width1 = width
            width = abs(sty - stx)


class QuasiNewtonLBFGS:
    """elastix's QuasiNewtonLBFGS (see the module docstring)."""

    elastix_name = "QuasiNewtonLBFGS"
    keys = (
        ITERATION_KEY,  # the shared declaration; elastix's default for this optimiser is 100 (begin_level)
        Key("LBFGSUpdateAccuracy", "int", 5, "QuasiNewtonLBFGS: (s, y) pairs kept for the Hessian approximation "
            "(0 = steepest descent with line search)", per_level=True, minimum=0),
        Key("StepLength", "float", 1.0, "QuasiNewtonLBFGS: first step tried by the line search",
            per_level=True, minimum=0, exclusive_minimum=True),
        Key("MaximumNumberOfLineSearchIterations", "int", 20, "QuasiNewtonLBFGS: cost evaluations per line search",
            per_level=True, minimum=1),
        Key("LineSearchValueTolerance", "float", 1e-4, "QuasiNewtonLBFGS: sufficient-decrease constant of the "
            "Wolfe conditions", per_level=True, minimum=0, exclusive_minimum=True),
        Key("LineSearchGradientTolerance", "float", 0.9, "QuasiNewtonLBFGS: curvature constant of the Wolfe "
            "conditions (> LineSearchValueTolerance)", per_level=True, minimum=0, exclusive_minimum=True),
        Key("GradientMagnitudeTolerance", "float", 1e-6, "QuasiNewtonLBFGS: stop when |g| / max(1, |x|) is below",
            per_level=True, minimum=0),
        Key("StopIfWolfeNotSatisfied", "bool", True, "QuasiNewtonLBFGS: stop when a line search ends without both "
            "Wolfe conditions", per_level=True),
        Key("GenerateLineSearchIterations", "bool", False, "QuasiNewtonLBFGS: elastix reports line-search steps as "
            "iterations; impactreg reports one iteration per search direction"),
    )

    def __init__(self):
        self.converged = False
        self.last_gain = 0.0
        self.stop_condition = ""

    def begin_level(self, view, setup: LevelSetup) -> dict:
        if setup.evaluate is None:
            raise ValueError("QuasiNewtonLBFGS needs LevelSetup.evaluate")
        self.evaluate = setup.evaluate
        # elastix's default is 100 search directions (the shared key's default serves the other optimisers)
        self.iterations = view.get("MaximumNumberOfIterations") if "MaximumNumberOfIterations" in view else 100
        self.memory = view.get("LBFGSUpdateAccuracy")
        self.initial_step = view.get("StepLength")
        self.evaluations = view.get("MaximumNumberOfLineSearchIterations")
        self.value_tolerance = view.get("LineSearchValueTolerance")
        self.gradient_tolerance = view.get("LineSearchGradientTolerance")
        if self.gradient_tolerance < self.value_tolerance:
            from .errors import ParameterError
            raise ParameterError(f"{view.source + ': ' if view.source else ''}LineSearchGradientTolerance "
                                 f"({self.gradient_tolerance:g}) must be at least LineSearchValueTolerance "
                                 f"({self.value_tolerance:g})")
        self.magnitude_tolerance = view.get("GradientMagnitudeTolerance")
        self.stop_if_wolfe_fails = view.get("StopIfWolfeNotSatisfied")
        self.pairs: deque = deque(maxlen=max(self.memory, 1))
        self.converged, self.stop_condition, self.last_gain, self.count = False, "", 0.0, 0
        if setup.noisy and view.level == 0:
            log.warning("QuasiNewtonLBFGS with NewSamplesEveryIteration \"true\": each search direction sees new "
                        "samples; L-BFGS assumes one cost function (use Full/Grid or NewSamplesEveryIteration \"false\")")
        return {"LBFGSUpdateAccuracy": self.memory, "StepLength": self.initial_step}

    def _stop(self, condition: str, params: torch.Tensor) -> torch.Tensor:
        self.converged, self.stop_condition = True, condition
        log.info("QuasiNewtonLBFGS stopped: %s", condition)
        return params

    def _small_gradient(self, params: torch.Tensor, gradient: torch.Tensor) -> bool:
        return float(gradient.norm()) / max(1.0, float(params.norm())) <= self.magnitude_tolerance

    def direction(self, gradient: torch.Tensor) -> torch.Tensor | None:
        """-H g by the two-loop recursion; None when the initial scaling s.y / y.y is not positive."""
        if not self.pairs or self.memory == 0:
            return -gradient / gradient.norm()
        s_new, y_new, rho_new = self.pairs[-1]
        scaling = 1.0 / (rho_new * float(y_new @ y_new))
        if not scaling > 0.0:
            return None
        q = -gradient.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * float(s @ q)
            q -= alpha * y
            alphas.append(alpha)
        q *= scaling
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas)):
            beta = rho * float(y @ q)
            q += (alpha - beta) * s
        return q

    def step(self, params: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
        params = params.double()
        value, gradient = self.evaluate(params)  # the engine's evaluation of this iteration, reused
        gradient = grad.double() if gradient is None else gradient.double()
        if self.count == 0 and (self.iterations <= 1 or self._small_gradient(params, gradient)):
            return self._stop("MaximumNumberOfIterations" if self.iterations <= 1 else "GradientMagnitudeTolerance",
                              params)
        direction = self.direction(gradient)
        if direction is None:
            return self._stop("InvalidDiagonalMatrix", params)
        found = more_thuente(self.evaluate, params, value, gradient, direction, self.initial_step,
                             self.value_tolerance, self.gradient_tolerance, self.evaluations)
        new = params + found.step * direction
        self.last_gain = found.step
        if self.memory > 0 and found.step > 0.0:
            s, y = found.step * direction, found.gradient.double() - gradient
            sy = float(s @ y)
            self.pairs.append((s, y, 1.0 / sy if sy != 0.0 else math.inf))
        self.count += 1
        if found.step < _EPSILON:
            return self._stop(f"ZeroStep ({found.stop})", new)
        if self.count >= self.iterations:
            return self._stop("MaximumNumberOfIterations", new)
        if self._small_gradient(new, found.gradient.double()):
            return self._stop("GradientMagnitudeTolerance", new)
        if self.stop_if_wolfe_fails and not (found.sufficient_decrease and found.curvature):
            return self._stop(f"Wolfe conditions not satisfied ({found.stop})", new)
        return new
