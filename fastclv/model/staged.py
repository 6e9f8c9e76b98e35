"""The model on staged files: the run's history in, ``customer_ltv.parquet`` with its predictions out.

The pipeline's model step (:func:`fastclv.pipeline.transform_stage`), and the one part of
:mod:`fastclv.model` that reads and writes files: the rest works on numpy arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from fastclv import stage
from fastclv.contract import MONEY, OUTPUT_SCHEMA, PREDICTIVE_COLUMNS
from fastclv.errors import TerminalError
from fastclv.model.fit import (
    ModelResult,
    Predictions,
    fit_bgnbd,
    fit_gamma_gamma,
    predict,
)
from fastclv.model.params import BgNbdParams, GammaGammaParams

log = logging.getLogger(__name__)


def _rfm(history: Path | list[Path]) -> pl.DataFrame:
    """The model's inputs: the RFM columns of the customers with orders, in the file's order."""
    return (
        pl.scan_parquet(history)
        .filter(pl.col("orders_count") > 0)
        .select("customer_id", "frequency", "recency_days", "t_days", "monetary_value")
        .collect(engine="streaming")
    )


def _rfm_arrays(rfm: pl.DataFrame) -> list[np.ndarray]:
    """frequency, recency, T and monetary_value as float64 arrays (the model's inputs, in order)."""
    return [_column(rfm, c) for c in ("frequency", "recency_days", "t_days", "monetary_value")]


def _column(rfm: pl.DataFrame, name: str) -> np.ndarray:
    return rfm[name].to_numpy().astype(np.float64)


def predict_parts(
    histories: list[Path],
    output: Path,
    *,
    horizon_months: int,
    margin: float,
    discount_rate: float,
    penalizer: float,
) -> dict[str, object]:
    """Fit the predictive model on the customers with orders and fill its three columns.

    The fits take the parts' merged :func:`histograms` (exactly the fit on every customer's row);
    each part is then scored (:func:`score_staged`) and the scored parts are joined, in order, as
    ``output``. Holds one part's customers and the histograms, never every customer.

    Args:
        histories: the staged ``customer_ltv`` rows with their historical columns, by customer
            part in file order (one file: the whole run).
        output: where to write ``customer_ltv.parquet`` (the contract's output schema).
        horizon_months: the CLV horizon in months (of 30 days).
        margin: the profit margin.
        discount_rate: the monthly discount rate.
        penalizer: lifetimes' penalizer coefficient for both fits.

    Returns:
        :meth:`~fastclv.model.ModelResult.summary`, for the run summary.
    """
    bg, gg = zip(*(histograms(h) for h in histories), strict=True)
    result = fit_histograms(pl.concat(bg), pl.concat(gg), penalizer=penalizer)
    if result.reason:
        log.warning("predictive columns partly or wholly null: %s", result.reason)
    summary = result.summary()
    scored = [output] if len(histories) == 1 else [h.with_name(f"scored.{h.name}") for h in histories]
    try:
        for history, out in zip(histories, scored, strict=True):
            score_staged(
                history,
                out,
                summary,
                horizon_months=horizon_months,
                margin=margin,
                discount_rate=discount_rate,
            )
        if len(histories) > 1:
            stage.join_parquet(scored, output)
    finally:
        if len(histories) > 1:
            for out in scored:
                out.unlink(missing_ok=True)
    return summary


# -- the sharded model: histograms per part, one fit, predictions per part ---------------------

#: The columns of the BG/NBD histogram (one row per distinct history, with its customers).
BG_HISTOGRAM = ("frequency", "recency_days", "t_days")
#: The columns of the Gamma-Gamma histogram (repeat buyers only).
GG_HISTOGRAM = ("frequency", "monetary_value")


def histograms(history: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The distinct model inputs of some customers with how many customers have each.

    Two tables with a ``customers`` count: distinct (frequency, recency, T) of the customers with
    orders, and distinct (frequency, monetary_value) of the repeat buyers. Histograms of disjoint
    customer sets add up (:func:`fit_histograms`) to exactly the fit of their union.
    """
    rfm = pl.scan_parquet(history).filter(pl.col("orders_count") > 0)
    count = pl.len().cast(pl.Int64).alias("customers")
    bg = rfm.group_by(*BG_HISTOGRAM).agg(count)
    gg = rfm.filter(pl.col("frequency") > 0).group_by(*GG_HISTOGRAM).agg(count)
    bg_frame, gg_frame = pl.collect_all([bg, gg], engine="streaming")
    return bg_frame, gg_frame


def fit_histograms(bg: pl.DataFrame, gg: pl.DataFrame, *, penalizer: float) -> ModelResult:
    """Both fits on merged histograms (:func:`histograms` of disjoint parts, concatenated).

    The fits dedupe their rows again with the counts as weights, so they see the same distinct
    rows with the same counts, in the same order, as a fit on every customer's row: the same
    parameters. No predictions (:func:`score_staged` makes them, part by part).
    """
    bg_fit = fit_bgnbd(
        _column(bg, "frequency"),
        _column(bg, "recency_days"),
        _column(bg, "t_days"),
        penalizer=penalizer,
        counts=_column(bg, "customers"),
    )
    gg_fit = fit_gamma_gamma(
        _column(gg, "frequency"),
        _column(gg, "monetary_value"),
        penalizer=penalizer,
        counts=_column(gg, "customers"),
    )
    reasons = [f.diagnostics.reason for f in (bg_fit, gg_fit) if f.diagnostics.reason]
    return ModelResult(bg_fit, gg_fit, None, "; ".join(reasons) if reasons else None)


def score_staged(
    history: Path,
    output: Path,
    model: dict[str, object],
    *,
    horizon_months: int,
    margin: float,
    discount_rate: float,
) -> int:
    """Fill the predictive columns of some customers from a fitted model's summary; their count.

    ``model`` is :meth:`~fastclv.model.ModelResult.summary` (a JSON value: a sharded run's
    fit task passes it on). Writes ``output`` in the contract's output schema.
    """
    bg, gg = _params(model, "bgnbd"), _params(model, "gamma_gamma")
    rfm = _rfm(history)
    predictions = None
    if bg is not None:
        predictions = predict(
            BgNbdParams(**bg),
            None if gg is None else GammaGammaParams(**gg),
            *_rfm_arrays(rfm),
            horizon_months=horizon_months,
            margin=margin,
            discount_rate=discount_rate,
        )
    _write_scored(history, rfm, predictions, output)
    return int(pl.scan_parquet(output).select(pl.len()).collect().item())


def _params(model: dict[str, object], name: str) -> dict[str, float] | None:
    fit = model.get(name)
    params = fit.get("params") if isinstance(fit, dict) else None
    return {str(k): float(v) for k, v in params.items()} if isinstance(params, dict) else None


def _write_scored(history: Path, rfm: pl.DataFrame, preds: Predictions | None, output: Path) -> None:
    """The history's rows with the predictive columns (null where there is no prediction)."""
    frame = pl.scan_parquet(history).drop(PREDICTIVE_COLUMNS)
    if preds is not None:
        _check_clv_range(rfm, preds.predicted_clv)
        scored = pl.DataFrame(
            {
                "customer_id": rfm["customer_id"],
                "p_alive": preds.p_alive,
                "expected_purchases": preds.expected_purchases,
                "_clv": preds.predicted_clv,
            },
            nan_to_null=True,
        ).with_columns(
            # Round half away from zero to the cent, as PostgreSQL does for numeric (every value
            # fits: _check_clv_range).
            pl.col("_clv").round(2, mode="half_away_from_zero").cast(MONEY).alias("predicted_clv")
        )
        frame = frame.join(scored.drop("_clv").lazy(), on="customer_id", how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in PREDICTIVE_COLUMNS)
    stage.sink_parquet(frame.select(OUTPUT_SCHEMA.names()).cast(OUTPUT_SCHEMA), output)


#: numeric(18,2) holds values below 10^16 in absolute value (16 digits before the point).
_MONEY_BOUND = 1e16


def _check_clv_range(rfm: pl.DataFrame, clv: np.ndarray) -> None:
    """Fail, naming the customers, when a predicted CLV does not fit numeric(18,2).

    A NaN (no prediction) becomes null; an infinite or too large value is an error, as a total
    revenue beyond numeric(18,2) is (:func:`fastclv.transform.overflow_error`): a value that
    large comes from a unit error in the prices or from the margin setting, never from a
    plausible forecast.
    """
    with np.errstate(invalid="ignore"):
        too_big = np.abs(np.round(clv, 2)) >= _MONEY_BOUND
    if not too_big.any():
        return
    ids = rfm["customer_id"].filter(pl.Series(too_big)).head(5).to_list()
    raise TerminalError(
        f"customer_ltv: the predicted CLV of customer(s) {', '.join(ids)} exceeds numeric(18,2) "
        "(16 digits before the point). Hint: check order_items.csv for those customers' "
        "quantities and prices, and the margin setting; a value that large is almost always a "
        "unit error."
    )
