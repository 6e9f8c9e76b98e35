"""The BG/NBD and Gamma-Gamma log-likelihoods with their gradients, and the objectives to minimise.

Each model has its data (distinct rows, their weights and the sums that do not depend on the
parameters, precomputed once), its weighted log-likelihood and gradient (``*_terms``) and
lifetimes' objective (mean negative log-likelihood plus the penalizer) in log parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from fastclv.model.optimise import Objective
from fastclv.model.params import FloatArray, IndexArray

# ------------------------------------------------------------------ BG/NBD likelihood


@dataclass(frozen=True)
class _BgData:
    """Distinct histories (time already rescaled) and what the objective precomputes."""

    x: FloatArray  # distinct frequency
    rec: FloatArray
    age: FloatArray  # T
    w: FloatArray  # customers per distinct row
    one_time: FloatArray  # -inf where x == 0, else 0: added to A4 - A3
    xu: FloatArray  # distinct frequencies: x-only terms are summed once per value
    wu: FloatArray  # customers per distinct frequency
    xu_index: IndexArray  # distinct row -> its frequency in xu
    total: float  # number of customers


def bg_data(x: FloatArray, rec: FloatArray, age: FloatArray, w: FloatArray) -> _BgData:
    """The BG/NBD objective's data: distinct histories ``x, rec, age`` with weights ``w``."""
    xu, xu_index = np.unique(x, return_inverse=True)
    wu = np.bincount(xu_index, weights=w, minlength=xu.shape[0]).astype(np.float64)
    one_time = np.where(x > 0, 0.0, -np.inf)
    return _BgData(x, rec, age, w, one_time, xu, wu, xu_index.astype(np.intp), float(w.sum()))


def bg_terms(log_params: FloatArray, d: _BgData) -> tuple[float, FloatArray]:
    """Weighted log-likelihood sum and its gradient w.r.t. (r, alpha, a, b).

    Per customer (lifetimes' ``_negative_log_likelihood``, Fader-Hardie-Lee eq. 6):
    ``A1 + A2 + log(exp(A3) + [x > 0] exp(A4))`` with
    ``A1 = lnG(r+x) - lnG(r) + r ln(alpha)``,
    ``A2 = lnG(a+b) + lnG(b+x) - lnG(b) - lnG(a+b+x)``,
    ``A3 = -(r+x) ln(alpha+T)``, ``A4 = ln a - ln(b+x-1) - (r+x) ln(alpha+t_x)``.

    This runs ~30 times per fit over up to a million rows, so the per-row part is
    written for speed: no np.where/np.logaddexp (each costs as much as ten plain
    passes), and no subnormal floats (arithmetic on them is ~100x slower).
    """
    r, alpha, a, b = np.exp(log_params)
    xu, wu = d.xu, d.wu
    # Terms that depend on x only: evaluated once per distinct frequency.
    lg = special.gammaln
    dg = special.digamma
    a1_a2 = lg(r + xu) - lg(r) + r * np.log(alpha) + lg(a + b) + lg(b + xu) - lg(b) - lg(a + b + xu)
    ll = wsum(wu, a1_a2)
    g_r = wsum(wu, dg(r + xu) - dg(r)) + d.total * np.log(alpha)
    g_alpha = d.total * r / alpha
    g_a = wsum(wu, dg(a + b) - dg(a + b + xu))
    g_b = wsum(wu, dg(a + b) + dg(b + xu) - dg(b) - dg(a + b + xu))
    # b + max(x, 1) - 1 as lifetimes writes it (never b - 1 for one-time buyers).
    b_x1 = b + np.maximum(xu, 1.0) - 1.0

    log_odds_x = np.log(a) - np.log(b_x1)
    inv_b_x1 = 1.0 / b_x1
    dead_sum = 0.0
    for rows in _chunks(d.x.shape[0]):
        w = d.w[rows]
        rx = r + d.x[rows]
        alpha_t = alpha + d.age[rows]
        alpha_r = alpha + d.rec[rows]
        log_at = np.log(alpha_t)
        gap = log_at - np.log(alpha_r)  # ln((alpha+T)/(alpha+t_x)) >= 0
        # odds = A4 - A3, the log-odds of "dropped out after the last purchase" against
        # "alive at T" (-inf for one-time buyers); log(e^A3 + e^A4) = A3 + softplus(odds).
        xu_index = d.xu_index[rows]
        odds = log_odds_x[xu_index] + rx * gap + d.one_time[rows]
        # Beyond +-200 the softplus is linear or 0 to within 1e-87: clipping keeps exp()
        # finite and away from subnormals, the max() restores the linear part.
        clipped = np.clip(odds, -200.0, 200.0)
        softplus = np.log1p(np.exp(clipped)) + (np.maximum(odds, 200.0) - 200.0)
        ll += wsum(w, softplus - rx * log_at)
        dead = 1.0 / (1.0 + np.exp(-clipped))  # P(dropped out | history); P(alive) = 1 - dead
        inv_at = 1.0 / alpha_t
        g_r -= wsum(w, log_at - dead * gap)
        g_alpha -= wsum(w, rx * (inv_at + dead * (1.0 / alpha_r - inv_at)))
        dead_sum += wsum(w, dead)
        g_b -= wsum(w, dead * inv_b_x1[xu_index])
    g_a += dead_sum / a
    return float(ll), np.array([g_r, g_alpha, g_a, g_b])


#: Distinct rows per pass of the per-row terms: their temporaries (about ten arrays of the
#: chunk's length) stay near 100 MB however many distinct rows a fit has; a fit of fewer rows
#: makes one pass, as without chunks.
CHUNK_ROWS = 1 << 20


def _chunks(rows: int) -> list[slice]:
    """Consecutive slices of at most :data:`CHUNK_ROWS` rows covering ``rows`` (one when empty)."""
    return [slice(at, at + CHUNK_ROWS) for at in range(0, max(rows, 1), CHUNK_ROWS)]


def wsum(weights: FloatArray, values: FloatArray) -> float:
    """Weighted sum ``weights @ values`` without BLAS.

    Multithreaded OpenBLAS ``ddot`` took 7 ms instead of 0.05 ms per call on a busy
    2-core machine (thread hand-off), and the objective makes several per evaluation.
    """
    return float(np.einsum("i,i->", weights, values))


def bg_objective(d: _BgData, penalizer: float) -> Objective:
    """The objective of lifetimes: mean negative log-likelihood + penalizer * sum(params^2)."""

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        ll, grad = bg_terms(log_params, d)
        value = -ll / d.total + penalizer * float(np.sum(params**2))
        # Chain rule for the log parameterisation: d/dlog(p) = p * d/dp.
        return value, -params * grad / d.total + 2.0 * penalizer * params**2

    return objective


# ------------------------------------------------------------ Gamma-Gamma likelihood


@dataclass(frozen=True)
class _GgData:
    """Distinct (frequency, monetary value) rows and the parameter-free sums."""

    x: FloatArray
    m: FloatArray
    w: FloatArray
    xu: FloatArray
    wu: FloatArray
    total: float
    sum_x_log_xm: float  # sum w x (ln m + ln x): the p-linear constant term
    sum_log_m: float  # sum w ln m
    log_scale: float  # ln(mean spend): v is optimised relative to it


def gg_data(x: FloatArray, m: FloatArray, w: FloatArray) -> _GgData:
    """The Gamma-Gamma objective's data: distinct ``(x, m)`` rows with weights ``w``."""
    xu, idx = np.unique(x, return_inverse=True)
    wu = np.bincount(idx, weights=w, minlength=xu.shape[0]).astype(np.float64)
    total = float(w.sum())
    return _GgData(
        x,
        m,
        w,
        xu,
        wu,
        total,
        wsum(w, x * (np.log(m) + np.log(x))),
        wsum(w, np.log(m)),
        float(np.log(wsum(w, m) / total)),
    )


def gg_terms(log_params: FloatArray, d: _GgData) -> tuple[float, FloatArray]:
    """Weighted log-likelihood sum and its gradient w.r.t. (p, q, v).

    Per customer (lifetimes' ``GammaGammaFitter._negative_log_likelihood``):
    ``lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(xm+v)``.
    """
    p, q, v = np.exp(log_params)
    xu, wu = d.xu, d.wu
    px = p * xu
    ll = (
        wsum(wu, special.gammaln(px + q) - special.gammaln(px))
        + d.total * (q * np.log(v) - special.gammaln(q))
        + p * d.sum_x_log_xm
        - d.sum_log_m
    )
    g_p = wsum(wu, xu * (special.digamma(px + q) - special.digamma(px))) + d.sum_x_log_xm
    g_q = wsum(wu, special.digamma(px + q)) + d.total * (np.log(v) - special.digamma(q))
    g_v = d.total * q / v

    for rows in _chunks(d.x.shape[0]):
        w, x = d.w[rows], d.x[rows]
        xm_v = x * d.m[rows] + v
        log_xm_v = np.log(xm_v)
        pxq = p * x + q
        ll -= wsum(w, pxq * log_xm_v)
        g_p -= wsum(w, x * log_xm_v)
        g_q -= wsum(w, log_xm_v)
        g_v -= wsum(w, pxq / xm_v)
    return float(ll), np.array([g_p, g_q, g_v])


def gg_objective(d: _GgData, penalizer: float) -> Objective:
    """The objective of lifetimes in (log p, log q, log(v / mean spend)) coordinates."""
    shift = np.array([0.0, 0.0, d.log_scale])

    def objective(u: FloatArray) -> tuple[float, FloatArray]:
        log_params = u + shift
        params = np.exp(log_params)
        ll, grad = gg_terms(log_params, d)
        value = -ll / d.total + penalizer * float(np.sum(params**2))
        return value, -params * grad / d.total + 2.0 * penalizer * params**2

    return objective
