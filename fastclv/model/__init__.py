"""BG/NBD and Gamma-Gamma customer-lifetime-value models: fit and predict on arrays.

The BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way")
describes when customers buy and drop out; the Gamma-Gamma model (Fader, Hardie & Lee
2005, "RFM and CLV") describes how much they spend. Both are fitted by maximum
likelihood with hand-derived gradients, on the *distinct* input rows weighted by their
counts; large inputs are searched on a sample first and finished with Newton steps on
all rows. A million customers with three years of daily history fit and predict in
a few seconds, where lifetimes takes most of a minute (benchmarks/bench_model.py).

Inputs follow the ``lifetimes`` package's conventions (contract section 4): ``frequency``
is the number of repeat purchase periods, ``recency`` and ``T`` are in periods (days in
fastclv) and the fitted parameters are in the caller's time unit. The objective, the
penalizer and the predictions are those of lifetimes 0.11.3 (``BetaGeoFitter``,
``GammaGammaFitter``), so results can be compared with it directly.

Only numpy and scipy are used: no pandas, no I/O, no logging (``staged`` aside). Degenerate
data never raises; the fit comes back with ``converged=False`` and a ``reason``. Malformed
input (arrays of different lengths, NaN, recency > T, ...) is a bug upstream and raises
:class:`~fastclv.errors.TerminalError`.

The parts, one file each: ``params`` (the parameter types and the month length, shared with
the cross-check), ``distinct`` (distinct rows and their counts), ``likelihood`` (the two
log-likelihoods and their gradients), ``optimise`` (L-BFGS-B, Newton polishing, the verdict on
the optimum), ``fit`` (input checks, the fits, their diagnostics), ``predict`` (p_alive,
expected purchases and spend, the CLV) and ``staged`` (the pipeline's step: the staged history
in, the output file with its predictive columns out; the only part that does I/O, so it is not
imported here). Import the public names from ``fastclv.model``.

Example::

    fit = fit_bgnbd(frequency, recency, T)
    if fit.params is not None:
        alive = p_alive(fit.params, frequency, recency, T)
"""

from __future__ import annotations

from fastclv.model.fit import (
    BgNbdFit,
    FitDiagnostics,
    GammaGammaFit,
    ModelResult,
    Predictions,
    fit_and_predict,
    fit_bgnbd,
    fit_gamma_gamma,
)
from fastclv.model.params import DAYS_PER_MONTH, BgNbdParams, GammaGammaParams
from fastclv.model.predict import customer_lifetime_value, expected_purchases, expected_spend, p_alive

__all__ = [
    "DAYS_PER_MONTH",
    "BgNbdFit",
    "BgNbdParams",
    "FitDiagnostics",
    "GammaGammaFit",
    "GammaGammaParams",
    "ModelResult",
    "Predictions",
    "customer_lifetime_value",
    "expected_purchases",
    "expected_spend",
    "fit_and_predict",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "p_alive",
]
