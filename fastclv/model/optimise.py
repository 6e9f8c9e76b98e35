"""The general optimiser: L-BFGS-B, Newton polishing and a verdict on the end point.

It minimises any smooth objective over well-scaled log parameters (:data:`Objective`: value
and gradient), polishes the optimum with Newton steps to near machine precision, and judges
whether the end point is a usable maximum-likelihood estimate (:func:`minimise`). Large
inputs are searched on a sample of the rows first (:func:`sample_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from fastclv.model.params import FloatArray, IndexArray

#: (value, gradient) of what to minimise (a mean negative log-likelihood) in log parameters.
Objective = Callable[[FloatArray], tuple[float, FloatArray]]

# A well-scaled parameter (time rescaled so that max T = 1, money relative to the mean
# spend) outside this range means the likelihood keeps improving towards 0 or infinity:
# the maximum is on the boundary and the parameter is not identified by the data.
_PARAM_MIN = 1e-8
_PARAM_MAX = 1e6
# The optimiser's box is wider than the acceptance range, so that a run-off parameter
# visibly lands outside the range instead of stopping exactly on it.
_LOG_BOX = (float(np.log(1e-10)), float(np.log(1e8)))
# At a maximum, the gradient of the mean negative log-likelihood per customer and the
# Newton step (in log parameters, i.e. relative) to the quadratic model's optimum are
# this small; after polishing they are typically below 1e-10.
_GRAD_TOL = 1e-5
_STEP_TOL = 1e-5
# Hessian eigenvalues below this fraction of the largest mean a flat direction (a ridge of
# equally good parameters): the optimum is not unique.
_FLAT_RATIO = 1e-8
_MAX_ITER = 2000
_NEWTON_STEPS = 10
# Above this many distinct rows, the search runs on a random sample of this size first.
_SAMPLE_ROWS = 32_768
_HESSIAN_STEP = 1e-5
# lifetimes starts every log-parameter at 0.1; starting at the same point keeps us on the
# same optimum should the likelihood ever have several.
_LOG_START = 0.1


@dataclass(frozen=True)
class _Optimum:
    u: FloatArray  # optimiser coordinates at the end
    value: float
    iterations: int
    problem: str | None  # why the end point is not a usable optimum


def minimise(
    objective: Objective, names: tuple[str, ...], sample_objective: Objective | None = None
) -> _Optimum:
    """Minimise ``objective`` over well-scaled log parameters and judge the end point.

    L-BFGS-B does the search; Newton steps with the finite-difference Hessian of the
    analytic gradient then polish the optimum to near machine precision, so the
    estimate does not depend on the optimiser's stopping rule. The Newton step also
    tells whether the end point is a maximum of the likelihood at all (``_judge``).

    With ``sample_objective`` (the same objective on a random sample of the rows) the
    search runs on the sample, and Newton on all rows finishes from the sample's
    optimum: about 15 full evaluations instead of 35. Should that not reach a usable
    maximum, L-BFGS-B runs on all rows after all.
    """
    start = np.full(len(names), _LOG_START)
    iterations = 0
    if sample_objective is not None:
        warm = _lbfgsb(sample_objective, start, rough=True)
        iterations += int(warm.nit)
        if np.all(np.isfinite(warm.x)):
            polished = _polish(objective, np.asarray(warm.x, dtype=np.float64))
            problem = _judge(polished, names, int(warm.nit), str(warm.message))
            # Accept only a fully polished optimum, so both paths give the same digits.
            if problem is None and polished.step is not None and _max_abs(polished.step) < 1e-9:
                return _Optimum(polished.u, polished.value, iterations + polished.steps, None)
    res = _lbfgsb(objective, start)
    polished = _polish(objective, np.asarray(res.x, dtype=np.float64))
    iterations += int(res.nit) + polished.steps
    problem = _judge(polished, names, iterations, str(res.message))
    return _Optimum(polished.u, polished.value, iterations, problem)


def _lbfgsb(objective: Objective, start: FloatArray, *, rough: bool = False) -> optimize.OptimizeResult:
    # A warm start need only be in Newton's basin: sampling error dwarfs 1e-8 anyway.
    ftol, gtol = (1e-8, 1e-6) if rough else (1e-15, 1e-10)
    return optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[_LOG_BOX] * start.shape[0],
        options={"maxiter": _MAX_ITER, "ftol": ftol, "gtol": gtol},
    )


@dataclass(frozen=True)
class _Polished:
    u: FloatArray
    value: float
    grad: FloatArray
    hess: FloatArray
    step: FloatArray | None  # the next Newton step: its size says how far the optimum is
    steps: int  # Newton steps taken


def _polish(objective: Objective, u: FloatArray) -> _Polished:
    """Newton steps from ``u``: one finite-difference Hessian, then BFGS updates.

    The updates make the steps converge superlinearly from a warm start a few percent
    off, without another 2k gradient evaluations per Hessian. The unmodified Hessian
    is what ``_judge`` inspects.
    """
    value, grad = objective(u)
    hess = _hessian(objective, u)
    model = hess.copy()
    step = _newton_step(model, grad)
    steps = 0
    while steps < _NEWTON_STEPS and step is not None and np.isfinite(value) and _max_abs(step) > 1e-12:
        trial = np.clip(u + step, *_LOG_BOX)
        trial_value, trial_grad = objective(trial)
        # Near the optimum the change in value is rounding noise (~1e-15): there the
        # gradient decides.
        noise = 1e-13 * max(1.0, abs(value))
        if not (
            np.isfinite(trial_value)
            and (
                trial_value <= value
                or (trial_value <= value + noise and _max_abs(trial_grad) < _max_abs(grad))
            )
        ):
            break
        moved, change = trial - u, trial_grad - grad
        curvature = float(change @ moved)
        if curvature > 0:  # keeps the model positive definite
            bs = model @ moved
            model = model + np.outer(change, change) / curvature - np.outer(bs, bs) / float(moved @ bs)
        u, value, grad = trial, trial_value, trial_grad
        step = _newton_step(model, grad)
        steps += 1
    return _Polished(u, value, grad, hess, step, steps)


def _newton_step(hess: FloatArray, grad: FloatArray) -> FloatArray | None:
    if not (np.all(np.isfinite(hess)) and np.all(np.isfinite(grad))):
        return None
    try:
        return np.asarray(np.linalg.solve(hess, -grad), dtype=np.float64)
    except np.linalg.LinAlgError:
        return None


def _judge(p: _Polished, names: tuple[str, ...], iterations: int, message: str) -> str | None:
    """Why the end point is not a usable maximum-likelihood estimate, or None.

    Usable means: a finite log-likelihood; every parameter inside [1e-8, 1e6] (outside,
    the likelihood improves towards 0 or infinity, so the estimate is arbitrary); a
    positive definite Hessian (a flat direction means many parameter vectors fit
    equally well); and a vanishing gradient *and* Newton step. The last catches the
    subtle case: an optimiser that stops on a nearly flat slope still heading for the
    boundary has a small gradient but a large Newton step.
    """
    if not (np.isfinite(p.value) and np.all(np.isfinite(p.grad))):
        return "the log-likelihood is not finite at the optimiser's end point"
    scaled = np.exp(p.u)
    off = [f"{n}={s:.3g}" for n, s in zip(names, scaled, strict=True) if not _PARAM_MIN <= s <= _PARAM_MAX]
    if off:
        return (
            f"parameters ran off towards the boundary ({', '.join(off)} on a scale where "
            f"sensible values lie in [{_PARAM_MIN:g}, {_PARAM_MAX:g}]): the data do not "
            "identify them"
        )
    if not np.all(np.isfinite(p.hess)):
        return "the log-likelihood's curvature is not finite at the optimum"
    eig = np.linalg.eigvalsh(p.hess)
    if eig[0] <= _FLAT_RATIO * max(float(eig[-1]), 1.0):
        return (
            "the log-likelihood is flat in some direction at the optimum: many parameter "
            "values fit equally well, so the estimate is arbitrary"
        )
    if _max_abs(p.grad) > _GRAD_TOL or p.step is None or _max_abs(p.step) > _STEP_TOL:
        where = ", ".join(f"{n}={s:.3g}" for n, s in zip(names, scaled, strict=True))
        return (
            f"the optimiser stopped after {iterations} iterations ({message}) at "
            f"{where}, short of a maximum: the likelihood still improves along a nearly "
            "flat direction, so the parameters are not identified"
        )
    return None


def _hessian(objective: Objective, u: FloatArray) -> FloatArray:
    """Central finite differences of the analytic gradient (2k gradient evaluations)."""
    k = u.shape[0]
    hess = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = _HESSIAN_STEP
        hess[:, j] = (objective(u + e)[1] - objective(u - e)[1]) / (2 * _HESSIAN_STEP)
    return 0.5 * (hess + hess.T)


def _max_abs(values: FloatArray) -> float:
    return float(np.max(np.abs(values))) if values.size else 0.0


def sample_rows(n_rows: int) -> IndexArray | None:
    """Rows for the warm-start search of a large fit (see minimise), or None if small.

    A uniform sample of distinct rows, kept with their customer counts: the sample's
    mean log-likelihood estimates the full one without bias. The seed is fixed so that
    the same data always take the same path.
    """
    if n_rows <= 2 * _SAMPLE_ROWS:
        return None
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n_rows, size=_SAMPLE_ROWS, replace=False))
