"""fastclv.model versus lifetimes on one simulated RFM table, side by side.

Simulates N customers from known BG/NBD and Gamma-Gamma parameters (daily periods,
first purchases spread over ``--years`` of history), then times in the same run:

- fastclv: fit_bgnbd + fit_gamma_gamma + p_alive, expected purchases and CLV for all N;
- lifetimes: BetaGeoFitter.fit + GammaGammaFitter.fit + conditional_probability_alive +
  conditional_expected_number_of_purchases_up_to_time + customer_lifetime_value.

and prints wall seconds, the ratio, and the largest relative differences of parameters
and predictions. Run::

    .venv/bin/python benchmarks/bench_model.py --customers 1000000
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from fastclv import model

FloatArray = NDArray[np.float64]
T = TypeVar("T")

TRUE_BG = model.BgNbdParams(r=0.5, alpha=20.0, a=0.8, b=2.5)
TRUE_GG = model.GammaGammaParams(p=6.0, q=4.0, v=15.0)


def simulate(n: int, years: float, seed: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(frequency, recency, T, monetary_value) in days, lifetimes' summary conventions.

    Purchases follow the BG/NBD story in continuous time (Poisson purchases, dropout
    after each repeat purchase); frequency counts repeat purchase *days*, as
    lifetimes' summary_data_from_transaction_data does with daily periods.
    """
    rng = np.random.default_rng(seed)
    t_obs = rng.integers(0, int(365 * years) + 1, n).astype(np.float64)
    rate = rng.gamma(TRUE_BG.r, 1.0 / TRUE_BG.alpha, n)
    drop = rng.beta(TRUE_BG.a, TRUE_BG.b, n)
    freq = np.zeros(n)
    last_day = np.zeros(n)
    clock = np.zeros(n)
    active = np.arange(n)
    # One pass per purchase number, over the customers still buying: no loop per customer.
    while active.size:
        clock[active] += rng.exponential(1.0, active.size) / rate[active]
        active = active[clock[active] <= t_obs[active]]
        day = np.floor(clock[active])
        freq[active] += day > last_day[active]
        last_day[active] = day
        active = active[rng.random(active.size) >= drop[active]]
    nu = rng.gamma(TRUE_GG.q, 1.0 / TRUE_GG.v, n)
    x = np.maximum(freq, 1.0)
    monetary = np.where(freq > 0, rng.gamma(TRUE_GG.p * x, 1.0 / (x * nu)), 0.0)
    return freq, last_day, t_obs, monetary


def timed(label: str, fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"  {label:<44} {seconds:9.3f} s", flush=True)
    return out, seconds


def max_rel(a: FloatArray, b: FloatArray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--years", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lifetimes", action="store_true")
    args = parser.parse_args()

    freq, rec, t_obs, mon = simulate(args.customers, args.years, args.seed)
    repeat = (freq > 0) & (mon > 0)
    print(
        f"{args.customers:,} customers over {args.years:g} years: "
        f"{int(repeat.sum()):,} repeat buyers, max frequency {int(freq.max())}"
    )

    print("fastclv")
    started = time.perf_counter()
    bg_fit, _ = timed("fit_bgnbd", lambda: model.fit_bgnbd(freq, rec, t_obs))
    gg_fit, _ = timed("fit_gamma_gamma", lambda: model.fit_gamma_gamma(freq, mon))
    bg, gg = bg_fit.params, gg_fit.params
    if bg is None or gg is None:
        raise SystemExit(f"fastclv fit failed: {bg_fit.diagnostics} {gg_fit.diagnostics}")
    alive, _ = timed("p_alive", lambda: model.p_alive(bg, freq, rec, t_obs))
    purchases, _ = timed(
        "expected_purchases (360 days)",
        lambda: model.expected_purchases(bg, 360.0, freq, rec, t_obs),
    )
    clv, _ = timed(
        "customer_lifetime_value (12 months)",
        lambda: model.customer_lifetime_value(bg, gg, freq, rec, t_obs, mon),
    )
    fast_seconds = time.perf_counter() - started
    print(f"  {'total':<44} {fast_seconds:9.3f} s")
    print(f"  distinct BG/NBD rows: {bg_fit.diagnostics.n_distinct:,}")
    print(f"  BG/NBD {bg}\n  Gamma-Gamma {gg}")
    if args.skip_lifetimes:
        return

    # Imported here so that --skip-lifetimes works without it; it is a dev dependency.
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    # lifetimes 0.11.3 predates pandas 3 and setuptools 81: silence their deprecation noise.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    frame = pd.DataFrame({"frequency": freq, "recency": rec, "T": t_obs, "monetary_value": mon})
    print("lifetimes")
    started = time.perf_counter()
    bgf, _ = timed(
        "BetaGeoFitter.fit",
        lambda: BetaGeoFitter().fit(frame["frequency"], frame["recency"], frame["T"]),
    )
    rep = frame[repeat]
    ggf, _ = timed(
        "GammaGammaFitter.fit",
        lambda: GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"]),
    )
    lt_alive, _ = timed(
        "conditional_probability_alive",
        lambda: bgf.conditional_probability_alive(freq, rec, t_obs),
    )
    lt_purchases, _ = timed(
        "conditional_expected_number_of_purchases (360)",
        lambda: bgf.conditional_expected_number_of_purchases_up_to_time(360.0, freq, rec, t_obs),
    )
    lt_clv, _ = timed(
        "customer_lifetime_value (12 months)",
        lambda: ggf.customer_lifetime_value(
            bgf,
            frame["frequency"],
            frame["recency"],
            frame["T"],
            frame["monetary_value"],
            time=12,
            discount_rate=0.01,
            freq="D",
        ).to_numpy(),
    )
    lt_seconds = time.perf_counter() - started
    print(f"  {'total':<44} {lt_seconds:9.3f} s")

    ours = np.array([bg.r, bg.alpha, bg.a, bg.b, gg.p, gg.q, gg.v])
    theirs = np.concatenate([bgf.params_.to_numpy(), ggf.params_.to_numpy()])
    print("comparison")
    print(f"  speed-up (lifetimes / fastclv)              {lt_seconds / fast_seconds:9.1f} x")
    print(f"  max relative parameter difference           {max_rel(ours, theirs):9.2e}")
    print(f"  max relative p_alive difference             {max_rel(alive, lt_alive):9.2e}")
    print(f"  max relative expected purchases difference  {max_rel(purchases, lt_purchases):9.2e}")
    print(f"  max relative CLV difference                 {max_rel(clv, lt_clv):9.2e}")


if __name__ == "__main__":
    main()
