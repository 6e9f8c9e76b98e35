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
from fastclv.model.fit import fit_and_predict

log = logging.getLogger(__name__)


def predict_staged(
    history: Path,
    output: Path,
    *,
    horizon_months: int,
    margin: float,
    discount_rate: float,
    penalizer: float,
) -> dict[str, object]:
    """Fit the predictive model on the customers with orders and fill its three columns.

    Args:
        history: the staged ``customer_ltv`` rows with their historical columns.
        output: where to write ``customer_ltv.parquet`` (the contract's output schema).
        horizon_months: the CLV horizon in months (of 30 days).
        margin: the profit margin.
        discount_rate: the monthly discount rate.
        penalizer: lifetimes' penalizer coefficient for both fits.

    Returns:
        :meth:`~fastclv.model.ModelResult.summary`, for the run summary.
    """
    rfm = (
        pl.scan_parquet(history)
        .filter(pl.col("orders_count") > 0)
        .select("customer_id", "frequency", "recency_days", "t_days", "monetary_value")
        .collect(engine="streaming")
    )
    result = fit_and_predict(
        rfm["frequency"].to_numpy().astype(np.float64),
        rfm["recency_days"].to_numpy().astype(np.float64),
        rfm["t_days"].to_numpy().astype(np.float64),
        rfm["monetary_value"].to_numpy().astype(np.float64),
        horizon_months=horizon_months,
        margin=margin,
        discount_rate=discount_rate,
        penalizer=penalizer,
    )
    info = result.summary()
    if result.reason:
        log.warning("predictive columns partly or wholly null: %s", result.reason)
    frame = pl.scan_parquet(history).drop(PREDICTIVE_COLUMNS)
    if result.predictions is not None:
        preds = result.predictions
        scored = pl.DataFrame(
            {
                "customer_id": rfm["customer_id"],
                "p_alive": preds.p_alive,
                "expected_purchases": preds.expected_purchases,
                "_clv": preds.predicted_clv,
            },
            nan_to_null=True,
        ).with_columns(
            # Round half away from zero to the cent, as PostgreSQL does for numeric.
            pl.col("_clv")
            .round(2, mode="half_away_from_zero")
            .cast(MONEY, strict=False)
            .alias("predicted_clv")
        )
        frame = frame.join(scored.drop("_clv").lazy(), on="customer_id", how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in PREDICTIVE_COLUMNS)
    stage.sink_parquet(frame.select(OUTPUT_SCHEMA.names()).cast(OUTPUT_SCHEMA), output)
    return info
