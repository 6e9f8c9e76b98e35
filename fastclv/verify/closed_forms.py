"""The cross-check's own BG/NBD and Gamma-Gamma closed forms, kept apart from the model on purpose.

The cross-check re-evaluates ``p_alive``, ``expected_purchases`` and ``predicted_clv`` from the
fitted parameters without any of :mod:`fastclv.model`'s code: a bug there (a wrong transform of
the hypergeometric function, a dedup that mixes up customers, an off-by-one month) cannot hide
in a copy of itself. The formulations differ on purpose: here P(alive) is a plain logistic of
the log-odds, ``E[purchases]`` uses the direct 2F1 with a Pfaff transform where it overflows
(the model uses the Euler transform first), the monthly curve dedupes by an integer key of
``(x, T)`` (the model by :func:`~fastclv.model.distinct.distinct_rows`), and near ``a = 1``
the value is not re-evaluated at all (the model interpolates). Only the parameter types and
the month length are shared (:mod:`fastclv.model.params`), so both read the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from fastclv.model.params import DAYS_PER_MONTH, BgNbdParams, FloatArray, GammaGammaParams

#: Within this distance of a = 1 the BG/NBD expectation is 0/0 in closed form: not re-evaluated.
A_SINGULAR = 1e-6


def bgnbd_p_alive(bg: BgNbdParams, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
    """P(alive at T | x, t_x, T), Fader-Hardie-Lee (2005) eq. (13); 1 for x = 0."""
    xs = np.maximum(x, 1.0)
    log_ratio = (
        math.log(bg.a)
        - np.log(bg.b + xs - 1.0)
        + (bg.r + xs) * (np.log(bg.alpha + age) - np.log(bg.alpha + tx))
    )
    alive: FloatArray = np.where(x > 0, 1.0 / (1.0 + np.exp(log_ratio)), 1.0)
    return alive


def monthly_curve(bg: BgNbdParams, x: FloatArray, age: FloatArray, months: int) -> FloatArray:
    """E[purchases in (T, T + 30k] | alive at T] for k = 1..months, per customer.

    Evaluated once per distinct (x, T): the closed form does not depend on recency.
    """
    t = DAYS_PER_MONTH * np.arange(1, months + 1, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros((0, months))
    # x and T are whole days/counts: one int64 key per pair sorts much faster than rows.
    span = int(age.max()) + 1
    key = x.astype(np.int64) * span + age.astype(np.int64)
    distinct, inverse = np.unique(key, return_inverse=True)
    ux = (distinct // span).astype(np.float64)
    uage = (distinct % span).astype(np.float64)
    curve = bgnbd_purchases_if_alive(bg, t[None, :], ux[:, None], uage[:, None])
    values: FloatArray = curve[inverse.reshape(-1)]
    return values


def bgnbd_purchases_if_alive(bg: BgNbdParams, t: FloatArray, x: FloatArray, age: FloatArray) -> FloatArray:
    """FHL (2005) eq. (10) without its P(alive) factor: expected purchases in (T, T + t].

    ``(a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z)]``,
    ``z = t/(alpha+T+t)``. Where 2F1 overflows (heavy buyers) the Pfaff transform
    ``(1-z)^(r+x) 2F1(r+x, b+x; c; z) = (1-z)^(r-b) 2F1(a+b-1-r, b+x; c; z/(z-1))`` is used;
    where that fails too the value is NaN (not compared).
    """
    from scipy import special

    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    t, x, age = np.broadcast_arrays(t, x, age)
    c = a + b + x - 1.0
    log_1mz = np.log(alpha + age) - np.log(alpha + age + t)
    z = t / (alpha + age + t)
    hyp = special.hyp2f1(r + x, b + x, c, z)
    scaled_log = (r + x) * log_1mz + np.log(hyp)
    bad = ~(np.isfinite(hyp) & (hyp > 0))
    if bad.any():
        w = z[bad] / (z[bad] - 1.0)
        hyp_p = special.hyp2f1(a + b - 1.0 - r, b + x[bad], c[bad], w)
        scaled_log[bad] = np.where(hyp_p > 0, (r - b) * log_1mz[bad] + np.log(hyp_p), np.nan)
    bracket = -np.expm1(scaled_log)
    out: FloatArray = c / (a - 1.0) * bracket
    if abs(a - 1.0) < A_SINGULAR:
        out = np.full_like(out, np.nan)
    return out


def gamma_gamma_spend(gg: GammaGammaParams, x: FloatArray, m: FloatArray) -> FloatArray:
    """Gamma-Gamma conditional expected spend per purchase: ``p (v + x m) / (p x + q - 1)``."""
    spend: FloatArray = gg.p * (gg.v + x * m) / (gg.p * x + gg.q - 1.0)
    return spend
