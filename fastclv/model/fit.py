"""Fitting: check the inputs, dedupe them, fit each model and say why a fit is degenerate.

:func:`fit_bgnbd` and :func:`fit_gamma_gamma` fit one model each; :func:`fit_and_predict`
fits both and predicts for every customer. The results say how each fit went
(:class:`FitDiagnostics`) and, when a fit is not usable, why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from fastclv.errors import TerminalError
from fastclv.model.distinct import distinct_rows
from fastclv.model.likelihood import bg_data, bg_objective, bg_terms, gg_data, gg_objective, gg_terms, wsum
from fastclv.model.optimise import minimise, sample_rows
from fastclv.model.params import BgNbdParams, FloatArray, GammaGammaParams
from fastclv.model.predict import discounted_purchases, expected_spend, p_alive


@dataclass(frozen=True)
class FitDiagnostics:
    """How a fit went.

    ``log_likelihood`` is the unpenalised log-likelihood of all customers used, in the
    caller's units, at the optimiser's end point (also when that is not a usable
    optimum; None if not computed). ``iterations`` counts L-BFGS-B iterations (on the
    warm-start sample, for large inputs) plus Newton polishing steps.
    """

    converged: bool
    reason: str | None
    log_likelihood: float | None
    iterations: int
    n_customers: int
    n_distinct: int
    seconds: float


@dataclass(frozen=True)
class BgNbdFit:
    """A BG/NBD fit: ``params`` is set exactly when ``diagnostics.converged``."""

    params: BgNbdParams | None
    diagnostics: FitDiagnostics


@dataclass(frozen=True)
class GammaGammaFit:
    """A Gamma-Gamma fit: ``params`` is set exactly when ``diagnostics.converged``."""

    params: GammaGammaParams | None
    diagnostics: FitDiagnostics


@dataclass(frozen=True)
class Predictions:
    """Per-customer predictions, in input order; NaN where not predictable."""

    p_alive: FloatArray
    expected_purchases: FloatArray
    predicted_clv: FloatArray


@dataclass(frozen=True)
class ModelResult:
    """Both fits and the predictions; ``reason`` says why something is missing."""

    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit
    predictions: Predictions | None
    reason: str | None

    def summary(self) -> dict[str, object]:
        """JSON-serialisable summary for the run record (no per-customer arrays)."""
        bg = self.bgnbd.params
        gg = self.gamma_gamma.params
        return {
            "converged": self.bgnbd.diagnostics.converged and self.gamma_gamma.diagnostics.converged,
            "reason": self.reason,
            # {"r": ..., "alpha": ..., "a": ..., "b": ...}: the names the cross-check reads back.
            "bgnbd": _diagnostics_dict(self.bgnbd.diagnostics, None if bg is None else asdict(bg)),
            "gamma_gamma": _diagnostics_dict(
                self.gamma_gamma.diagnostics, None if gg is None else asdict(gg)
            ),
        }


def _diagnostics_dict(d: FitDiagnostics, params: dict[str, float] | None) -> dict[str, object]:
    return {
        "params": params,
        "converged": d.converged,
        "reason": d.reason,
        "log_likelihood": d.log_likelihood,
        "iterations": d.iterations,
        "n_customers": d.n_customers,
        "n_distinct": d.n_distinct,
        "seconds": d.seconds,
    }


# --------------------------------------------------------------------------- inputs


def _as_1d(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise TerminalError(
            f"model input {name!r} must be a 1-D array, got shape {arr.shape}. "
            "Hint: pass one value per customer."
        )
    return arr


def _same_length(**arrays: FloatArray) -> int:
    lengths = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise TerminalError(
            f"model inputs have different lengths: {lengths}. "
            "Hint: pass one value per customer in every array."
        )
    return int(next(iter(lengths.values())))


def _check_rfm(frequency: FloatArray, recency: FloatArray, age: FloatArray) -> None:
    """Raise on histories that cannot come from lifetimes' summary conventions."""
    problems = {
        "a value is NaN or infinite": ~(np.isfinite(frequency) & np.isfinite(recency) & np.isfinite(age)),
        "frequency is negative or not a whole number": (frequency < 0) | (frequency != np.floor(frequency)),
        "recency is negative": recency < 0,
        "recency is larger than T": recency > age,
        "recency is not 0 although frequency is 0": (frequency == 0) & (recency != 0),
    }
    for what, bad in problems.items():
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise TerminalError(
                f"model input is inconsistent: {what} for {int(bad.sum())} customer(s), "
                f"first at position {first} (frequency={frequency[first]}, "
                f"recency={recency[first]}, T={age[first]}). "
                "Hint: frequency/recency/T must follow lifetimes' summary conventions."
            )


def _counts(counts: ArrayLike | None, rows: int) -> FloatArray | None:
    """The rows' counts as float64 (None: one customer per row); raise on a malformed one."""
    if counts is None:
        return None
    weights = _as_1d("counts", counts)
    if weights.shape[0] != rows:
        raise TerminalError(
            f"model input 'counts' has {weights.shape[0]} values for {rows} rows. "
            "Hint: pass one count per row of the histogram."
        )
    if not np.all(np.isfinite(weights) & (weights >= 1) & (weights == np.floor(weights))):
        raise TerminalError("model input 'counts' holds a count below 1, fractional or not finite")
    return weights


# Every reason names its model, so that a run summary's reason reads on its own.
_BG = "BG/NBD fit is degenerate: "
_GG = "Gamma-Gamma fit is degenerate: "


def _failed_fit(reason: str, n_customers: int, n_distinct: int, started: float) -> FitDiagnostics:
    return FitDiagnostics(
        converged=False,
        reason=reason,
        log_likelihood=None,
        iterations=0,
        n_customers=n_customers,
        n_distinct=n_distinct,
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------- fitting


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
    *,
    penalizer: float = 0.0,
    counts: ArrayLike | None = None,
) -> BgNbdFit:
    """Fit the BG/NBD model by maximum likelihood on the distinct (x, t_x, T) histories.

    Same objective as lifetimes' ``BetaGeoFitter(penalizer_coef=penalizer)``: the mean
    negative log-likelihood plus ``penalizer * (r^2 + alpha'^2 + a^2 + b^2)`` where
    ``alpha'`` is alpha on lifetimes' rescaled clock (max T = 1).

    The fit is *degenerate* (``converged=False``, ``params=None``, ``reason`` set) when
    the data cannot pin the four parameters down:

    - no customers, or every T is 0 (no observation time at all);
    - no repeat buyers: with every frequency 0 the dropout parameters a, b do not enter
      the likelihood, and r -> 0 fits best ("all purchases on one day" lands here too);
    - a single distinct history (one customer, or identical customers): one pattern
      cannot identify four parameters;
    - otherwise, judged at the optimum: a non-finite log-likelihood, a parameter running
      off towards 0 or infinity, an optimiser that stops away from a stationary point,
      or a flat log-likelihood (several parameter vectors fit equally well).

    ``counts`` (optional) says how many customers each row stands for: a histogram of
    histories, such as the merged ones of a sharded run. The fit is then exactly the fit of
    the customers it counts (the same distinct rows with the same counts, in the same order).

    Raises:
        TerminalError: if the arrays are malformed (different lengths, NaN, negative or
            fractional frequency, recency > T, recency != 0 where frequency == 0, a count
            below 1 or not a whole number).
    """
    started = time.perf_counter()
    x = _as_1d("frequency", frequency)
    rec = _as_1d("recency", recency)
    t_obs = _as_1d("T", T)
    weights = _counts(counts, x.shape[0])
    _same_length(frequency=x, recency=rec, T=t_obs)
    _check_rfm(x, rec, t_obs)
    n = x.shape[0] if weights is None else int(weights.sum())
    (ux, urec, u_age), _, counts = distinct_rows(x, rec, t_obs, weights=weights)
    k = ux.shape[0]
    if n == 0:
        return BgNbdFit(None, _failed_fit(f"{_BG}no customers to fit", 0, 0, started))
    if not np.any(x > 0):
        reason = (
            f"no repeat buyers among {n} customers (every frequency is 0): the dropout "
            "process cannot be estimated"
        )
        return BgNbdFit(None, _failed_fit(_BG + reason, n, k, started))
    t_max = float(u_age.max())
    if t_max <= 0.0:
        reason = f"every one of the {n} customers has T = 0: there is no observation time"
        return BgNbdFit(None, _failed_fit(_BG + reason, n, k, started))
    if k == 1:
        reason = (
            f"all {n} customers share one history (frequency={ux[0]:g}, recency={urec[0]:g}, "
            f"T={u_age[0]:g}): one pattern cannot identify four parameters"
        )
        return BgNbdFit(None, _failed_fit(_BG + reason, n, k, started))

    # lifetimes' clock: T scaled so that max T = 1. It keeps alpha near 1 whatever the
    # time unit, and the penalizer then means the same thing as in lifetimes.
    scale = 1.0 / t_max
    with np.errstate(all="ignore"):
        data = bg_data(ux, urec * scale, u_age * scale, counts)
        rows = sample_rows(k)
        sample = None
        if rows is not None:
            sample = bg_objective(
                bg_data(ux[rows], urec[rows] * scale, u_age[rows] * scale, counts[rows]), penalizer
            )
        opt = minimise(bg_objective(data, penalizer), ("r", "alpha", "a", "b"), sample)
        r, alpha_scaled, a, b = (float(v) for v in np.exp(opt.u))
        ll_scaled, _ = bg_terms(opt.u, data)
    # Rescaling time by s shifts each customer's log-likelihood by -x ln(s).
    log_lik = ll_scaled + float(np.log(scale)) * wsum(counts, ux)
    diagnostics = FitDiagnostics(
        converged=opt.problem is None,
        reason=None if opt.problem is None else _BG + opt.problem,
        log_likelihood=log_lik if np.isfinite(log_lik) else None,
        iterations=opt.iterations,
        n_customers=n,
        n_distinct=k,
        seconds=time.perf_counter() - started,
    )
    params = BgNbdParams(r, alpha_scaled / scale, a, b) if opt.problem is None else None
    return BgNbdFit(params, diagnostics)


def fit_gamma_gamma(
    frequency: ArrayLike,
    monetary_value: ArrayLike,
    *,
    penalizer: float = 0.0,
    counts: ArrayLike | None = None,
) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model on the distinct (frequency, monetary_value) rows.

    Rows that are not repeat buyers with a positive, finite spend are left out (the model
    needs x > 0 and m > 0); ``n_customers`` counts the rows used. Same objective as
    lifetimes' ``GammaGammaFitter(penalizer_coef=penalizer)``.

    Degenerate (``converged=False``, ``params=None``, ``reason`` set) when no row is
    usable, all usable rows are one distinct row or share one spend (no spend
    heterogeneity to measure), when ``q <= 1`` (the population mean spend
    ``p v / (q - 1)`` is not finite, so the expected spend is meaningless), or for the
    optimum checks of :func:`fit_bgnbd`. ``counts`` as in :func:`fit_bgnbd`.

    Raises:
        TerminalError: if the two arrays are not 1-D or differ in length.
    """
    started = time.perf_counter()
    x_all = _as_1d("frequency", frequency)
    m_all = _as_1d("monetary_value", monetary_value)
    weights = _counts(counts, x_all.shape[0])
    _same_length(frequency=x_all, monetary_value=m_all)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(x_all) & np.isfinite(m_all) & (x_all > 0) & (m_all > 0)
    x, m = x_all[usable], m_all[usable]
    weights = None if weights is None else weights[usable]
    n = x.shape[0] if weights is None else int(weights.sum())
    (ux, um), _, counts = distinct_rows(x, m, weights=weights)
    k = ux.shape[0]
    if n == 0:
        reason = "no repeat buyers with a positive monetary value to fit the spend model on"
        return GammaGammaFit(None, _failed_fit(_GG + reason, 0, 0, started))
    if k == 1 or float(um.min()) == float(um.max()):
        reason = (
            f"all {n} repeat buyers have the same average spend ({um[0]:g}): there is no "
            "spend heterogeneity to estimate"
        )
        return GammaGammaFit(None, _failed_fit(_GG + reason, n, k, started))

    with np.errstate(all="ignore"):
        data = gg_data(ux, um, counts)
        rows = sample_rows(k)
        sample = None
        if rows is not None:
            # Same money scale as the full data, so that the optimiser's coordinates agree.
            sample = gg_objective(
                replace(gg_data(ux[rows], um[rows], counts[rows]), log_scale=data.log_scale), penalizer
            )
        opt = minimise(gg_objective(data, penalizer), ("p", "q", "v/mean spend"), sample)
        log_params = opt.u + np.array([0.0, 0.0, data.log_scale])
        p, q, v = (float(val) for val in np.exp(log_params))
        log_lik, _ = gg_terms(log_params, data)
    problem = opt.problem
    if problem is None and q <= 1.0:
        problem = (
            f"q = {q:.4g} <= 1, so the population mean spend p*v/(q-1) is not finite "
            "and expected spend is undefined"
        )
    diagnostics = FitDiagnostics(
        converged=problem is None,
        reason=None if problem is None else _GG + problem,
        log_likelihood=log_lik if np.isfinite(log_lik) else None,
        iterations=opt.iterations,
        n_customers=n,
        n_distinct=k,
        seconds=time.perf_counter() - started,
    )
    return GammaGammaFit(GammaGammaParams(p, q, v) if problem is None else None, diagnostics)


def fit_and_predict(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
    monetary_value: ArrayLike,
    *,
    horizon_months: int = 12,
    margin: float = 1.0,
    discount_rate: float = 0.01,
    penalizer: float = 0.0,
) -> ModelResult:
    """Fit both models on customers with orders and predict for every one of them.

    BG/NBD is fitted on all rows, Gamma-Gamma on rows with frequency > 0 and
    monetary_value > 0. If the BG/NBD fit is degenerate there are no predictions; if
    only the Gamma-Gamma fit is, p_alive and expected_purchases are filled and
    predicted_clv is NaN. ``reason`` explains either case.
    """
    x = _as_1d("frequency", frequency)
    rec = _as_1d("recency", recency)
    t_obs = _as_1d("T", T)
    m = _as_1d("monetary_value", monetary_value)
    _same_length(frequency=x, recency=rec, T=t_obs, monetary_value=m)
    bg_fit = fit_bgnbd(x, rec, t_obs, penalizer=penalizer)
    gg_fit = fit_gamma_gamma(x, m, penalizer=penalizer)
    reasons = [f.diagnostics.reason for f in (bg_fit, gg_fit) if f.diagnostics.reason]
    reason = "; ".join(reasons) if reasons else None
    if bg_fit.params is None:
        return ModelResult(bg_fit, gg_fit, None, reason)
    predictions = predict(
        bg_fit.params,
        gg_fit.params,
        x,
        rec,
        t_obs,
        m,
        horizon_months=horizon_months,
        margin=margin,
        discount_rate=discount_rate,
    )
    return ModelResult(bg_fit, gg_fit, predictions, reason)


def predict(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams | None,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
    monetary_value: ArrayLike,
    *,
    horizon_months: int = 12,
    margin: float = 1.0,
    discount_rate: float = 0.01,
) -> Predictions:
    """Every customer's predictions from fitted parameters (predicted_clv NaN without Gamma-Gamma).

    Each customer's values depend on that customer's row and the parameters only, so the
    customers can be predicted in any grouping (a sharded run predicts each part apart).
    """
    x = _as_1d("frequency", frequency)
    rec = _as_1d("recency", recency)
    t_obs = _as_1d("T", T)
    m = _as_1d("monetary_value", monetary_value)
    _same_length(frequency=x, recency=rec, T=t_obs, monetary_value=m)
    with np.errstate(all="ignore"):
        alive = p_alive(bgnbd, x, rec, t_obs)
        purchases, discounted = discounted_purchases(bgnbd, x, rec, t_obs, horizon_months, discount_rate)
        if gamma_gamma is None:
            clv = np.full(x.shape[0], np.nan)
        else:
            clv = margin * expected_spend(gamma_gamma, x, m) * discounted
    return Predictions(alive, purchases, clv)
