"""Predictions from fitted parameters: p_alive, expected purchases, expected spend and the CLV."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from fastclv.model.distinct import distinct_rows
from fastclv.model.params import DAYS_PER_MONTH, BgNbdParams, FloatArray, GammaGammaParams

# Within this distance of a = 1, the BG/NBD expectation's removable singularity is
# bridged by interpolation (see _purchases_if_alive).
_A_NEAR_ONE = 1e-5


def _broadcast(*values: ArrayLike) -> list[FloatArray]:
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _log_odds_dead(params: BgNbdParams, x: FloatArray, rec: FloatArray, age: FloatArray) -> FloatArray:
    """The log-odds log P(dropped out) - log P(alive) given the history (Hardie's note 021)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # log((alpha+T)/(alpha+rec)) via log1p: exact when T - rec is small against alpha.
    return (r + x) * np.log1p((age - rec) / (alpha + rec)) + np.log(a / (b + np.maximum(x, 1) - 1))


def _alive(params: BgNbdParams, x: FloatArray, rec: FloatArray, age: FloatArray) -> FloatArray:
    # A logistic of the log-odds: no overflow however large T or the frequency.
    alive: FloatArray = np.where(x == 0, 1.0, special.expit(-_log_odds_dead(params, x, rec, age)))
    return alive


def _purchases_if_alive(params: BgNbdParams, t: FloatArray, x: FloatArray, age: FloatArray) -> FloatArray:
    """Expected purchases in (T, T + t] of a customer still alive at T.

    ``(a+b+x-1)/(a-1) * [1 - (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z)]`` with
    ``z = t/(alpha+T+t)``, as in lifetimes. It does not depend on recency, so the CLV
    evaluates it per distinct (x, T) only.
    """
    a = params.a
    if abs(a - 1.0) >= _A_NEAR_ONE:
        return _purchases_formula(params, t, x, age)
    # The expression is 0/0 at a = 1 (the limit is finite) and loses ~1e-16/|a-1| to
    # cancellation near it: interpolate between a = 1 -+ 1e-5 instead (error ~1e-10,
    # the expectation being smooth in a).
    lo = _purchases_formula(replace(params, a=1.0 - _A_NEAR_ONE), t, x, age)
    hi = _purchases_formula(replace(params, a=1.0 + _A_NEAR_ONE), t, x, age)
    weight = (a - (1.0 - _A_NEAR_ONE)) / (2.0 * _A_NEAR_ONE)
    interpolated: FloatArray = lo + weight * (hi - lo)
    return interpolated


def _purchases_formula(params: BgNbdParams, t: FloatArray, x: FloatArray, age: FloatArray) -> FloatArray:
    """The closed form of :func:`_purchases_if_alive`, for a not close to 1.

    The bracket is evaluated in its Euler-transformed form
    ``1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``, whose numerator parameters do not
    grow with x (heavy buyers overflow the direct form); where that overflows (very
    large a) the direct form is used, as lifetimes does the other way round. Checked
    against 40-digit mpmath: both forms agree to ~1e-11 wherever they are finite.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log1mz = -np.log1p(t / (alpha + age))  # log(1 - z)
    x, log1mz = np.broadcast_arrays(x, log1mz)
    c = a + b + x - 1.0
    z = -np.expm1(log1mz)
    bracket = _one_minus_scaled_hyp2f1(a + b - 1.0 - r, a - 1.0, c, z, (a - 1.0) * log1mz)
    bad = ~np.isfinite(bracket)
    if bad.any():
        rx = r + x[bad]
        bracket[bad] = _one_minus_scaled_hyp2f1(rx, b + x[bad], c[bad], z[bad], rx * log1mz[bad])
    result: FloatArray = (c / (a - 1.0)) * bracket
    return np.where(np.isfinite(result), result, np.nan)


def _one_minus_scaled_hyp2f1(
    p: FloatArray | float, q: FloatArray | float, c: FloatArray, z: FloatArray, log_scale: FloatArray
) -> FloatArray:
    """``1 - exp(log_scale) * 2F1(p, q; c; z)``, without cancellation near 0."""
    hyp = special.hyp2f1(p, q, c, z)
    out: FloatArray = np.where(hyp > 0, -np.expm1(log_scale + np.log(hyp)), 1.0 - np.exp(log_scale) * hyp)
    return out


def p_alive(
    params: BgNbdParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
) -> FloatArray:
    """Probability that each customer is still active at T (lifetimes' formula).

    Customers without repeat purchases are alive with probability 1 (the model has no
    dropout before the first repeat purchase).
    """
    x, rec, t_obs = _broadcast(frequency, recency, T)
    with np.errstate(all="ignore"):
        return np.atleast_1d(_alive(params, x, rec, t_obs)).astype(np.float64)


def expected_purchases(
    params: BgNbdParams,
    t: float | FloatArray,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
) -> FloatArray:
    """Expected number of purchases in (T, T + t] given each history (FHL 2005, eq. 10).

    Same value as lifetimes' ``conditional_expected_number_of_purchases_up_to_time``:
    p_alive times the expectation for a customer alive at T (lifetimes' denominator
    ``1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)`` is exactly 1 / p_alive).
    """
    tt, x, rec, t_obs = _broadcast(t, frequency, recency, T)
    with np.errstate(all="ignore"):
        # The hypergeometric part depends on (t, x, T) only: once per distinct triple.
        (ut, ux, u_age), inverse, _ = distinct_rows(tt.ravel(), x.ravel(), t_obs.ravel())
        curve = _purchases_if_alive(params, ut, ux, u_age)[inverse].reshape(x.shape)
        out = _alive(params, x, rec, t_obs) * curve
        return np.atleast_1d(out).astype(np.float64)


def expected_spend(params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike) -> FloatArray:
    """Expected average spend per purchase (lifetimes' conditional_expected_average_profit).

    A credibility-weighted mix of the customer's own mean spend and the population mean
    ``p v / (q - 1)``; one-time buyers (frequency 0) get the population mean.
    """
    p, q, v = params.p, params.q, params.v
    x, m = _broadcast(frequency, monetary_value)
    with np.errstate(all="ignore"):
        weight = p * x / (p * x + q - 1.0)
        out = (1.0 - weight) * (v * p / (q - 1.0)) + weight * m
        return np.atleast_1d(out).astype(np.float64)


def discounted_purchases(
    bg: BgNbdParams,
    x: FloatArray,
    rec: FloatArray,
    age: FloatArray,
    horizon_months: int,
    discount_rate: float,
) -> tuple[FloatArray, FloatArray]:
    """Per customer: purchases expected in the horizon, and the same discounted monthly.

    E[purchases by t] = p_alive(x, t_x, T) * f(x, T, t), so f is evaluated once per
    distinct (x, T) for the end of every 30-day month, as one (distinct, H) array; the
    monthly differences and the discounting are linear, so p_alive factors out.
    """
    (ux, u_age), inverse, _ = distinct_rows(x, age)
    months = np.arange(1, horizon_months + 1, dtype=np.float64)
    curve = np.zeros((ux.shape[0], horizon_months + 1))
    curve[:, 1:] = _purchases_if_alive(bg, DAYS_PER_MONTH * months[None, :], ux[:, None], u_age[:, None])
    discount = (1.0 + discount_rate) ** -months
    discounted = np.einsum("ij,j->i", np.diff(curve, axis=1), discount)
    alive = _alive(bg, x, rec, age)
    return alive * curve[inverse, -1], alive * discounted[inverse]


def customer_lifetime_value(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,  # noqa: N803 - lifetimes' name, kept for comparability
    monetary_value: ArrayLike,
    *,
    horizon_months: int = 12,
    margin: float = 1.0,
    discount_rate: float = 0.01,
) -> FloatArray:
    """Discounted expected margin over the horizon (contract section 5); time in days.

    ``sum_{m=1..H} margin * expected_spend * (E[purchases by 30m] - E[purchases by
    30(m-1)]) / (1 + discount_rate)^m``: lifetimes' ``customer_lifetime_value`` with
    ``freq="D"``, ``time=horizon_months``, times ``margin``.
    """
    x, rec, t_obs, m = _broadcast(frequency, recency, T, monetary_value)
    with np.errstate(all="ignore"):
        _, discounted = discounted_purchases(
            bg, x.ravel(), rec.ravel(), t_obs.ravel(), horizon_months, discount_rate
        )
        clv = margin * expected_spend(gg, x, m) * discounted.reshape(x.shape)
        return np.atleast_1d(clv).astype(np.float64)
