"""Holdout backtest of the BG/NBD model (contract section 5.1).

With as-of D and a holdout of H days, the model is fitted again on the *calibration* period
that ends on day D - H (orders up to the end of that day, the same counting rules as a run as
of D - H, daily periods, the run's penalizer), and for every customer with a counted order in
that period the expected number of purchases over the next H days (lifetimes'
``conditional_expected_number_of_purchases_up_to_time`` with t = H) is compared with the actual
number of purchase days in (D - H, D] (lifetimes' ``frequency_holdout`` of
``calibration_and_holdout_data``).

It needs the counted orders only (no items: purchase days do not depend on order values), and
one more fit on the distinct (frequency, recency, T) rows, so it runs at any scale the run does.

Skipped, with the reason, never failing the run, when there is too little history: no customer
with an order in the calibration period, a calibration period shorter than the holdout (a model
fitted on less history than it is asked to predict says little), or a degenerate fit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fastclv import stage
from fastclv.contract import COUNTED_STATUS, as_of_cutoff

if TYPE_CHECKING:
    from fastclv.model.params import BgNbdParams

log = logging.getLogger(__name__)

#: The staged file of per-customer holdout figures.
HOLDOUT = stage.HOLDOUT
#: Default holdout: one quarter. Long enough to see a repeat purchase of customers who buy a
#: few times a year, short enough to leave most of a typical export's history to calibrate on.
DEFAULT_HOLDOUT_DAYS = 90
#: The calibration table groups frequency_cal 0, 1, ..., TOP_FREQUENCY - 1 and TOP_FREQUENCY+.
TOP_FREQUENCY = 7

SCHEMA = pl.Schema(
    {
        "customer_id": pl.String,
        "frequency_cal": pl.Int32,
        "recency_cal": pl.Int32,
        "t_cal": pl.Int32,
        "actual_holdout": pl.Int32,
        "predicted_holdout": pl.Float64,
    }
)


@dataclass(frozen=True)
class CalibrationRow:
    """Customers of one calibration frequency (``label`` "7+" for the top group)."""

    label: str
    customers: int
    mean_actual: float
    mean_predicted: float


@dataclass(frozen=True)
class HoldoutResult:
    """The backtest's figures, or why it was skipped (``status`` "skipped" or "off")."""

    status: str
    holdout_days: int
    calibration_end: date | None = None
    reason: str | None = None
    customers: int = 0
    actual_total: int = 0
    predicted_total: float = 0.0
    mean_absolute_error: float | None = None
    params: dict[str, float] | None = None
    log_likelihood: float | None = None
    calibration: list[CalibrationRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for summary.json and the run ledger."""
        return {
            "status": self.status,
            "holdout_days": self.holdout_days,
            "calibration_end": self.calibration_end.isoformat() if self.calibration_end else None,
            "reason": self.reason,
            "customers": self.customers,
            "actual_total": self.actual_total,
            "predicted_total": self.predicted_total,
            "mean_absolute_error": self.mean_absolute_error,
            "params": self.params,
            "log_likelihood": self.log_likelihood,
            "calibration": [
                {
                    "frequency_cal": row.label,
                    "customers": row.customers,
                    "mean_actual": row.mean_actual,
                    "mean_predicted": row.mean_predicted,
                }
                for row in self.calibration
            ],
        }


def counted_days(orders: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """(customer_row, day) of every counted order (completed, before the cutoff); UTC days."""
    return orders.filter(
        (pl.col("status") == COUNTED_STATUS) & (pl.col("order_ts") < as_of_cutoff(as_of))
    ).select("customer_row", pl.col("order_ts").dt.date().alias("day"))


def calibration_frame(
    customers: pl.LazyFrame, orders: pl.LazyFrame, as_of: date, holdout_days: int
) -> pl.LazyFrame:
    """Per calibration customer: (customer_id, frequency_cal, recency_cal, t_cal, actual_holdout).

    ``orders`` are the staged orders (``customer_row``, ``order_ts``, ``status``); days are UTC days.
    """
    return calibration_from_days(customers, counted_days(orders, as_of), as_of, holdout_days)


def calibration_from_days(
    customers: pl.LazyFrame, days: pl.LazyFrame, as_of: date, holdout_days: int, *, distinct: bool = False
) -> pl.LazyFrame:
    """:func:`calibration_frame` from the counted purchase days (``customer_row``, ``day``).

    A day may repeat (one row per order), unless ``distinct``: one row per (customer, day), as
    :func:`fastclv.transform.merge_days` gives them, whose days are then counted instead of made
    unique (a part of 250k customers at 1M: 0.10 s against 0.26 s). The customers keep their order
    (the sharded plan computes it per customer part, from the parts' purchase days).
    """
    cal_end = as_of - timedelta(days=holdout_days)
    in_calibration = pl.col("day") <= pl.lit(cal_end)
    if distinct:
        calibration_day = pl.when(in_calibration).then(pl.col("day"))
        first, last = calibration_day.min(), calibration_day.max()
        calibration_days, holdout_days_seen = in_calibration.sum(), (~in_calibration).sum()
    else:
        first = pl.col("day").filter(in_calibration).min()
        last = pl.col("day").filter(in_calibration).max()
        calibration_days = pl.col("day").filter(in_calibration).n_unique()
        holdout_days_seen = pl.col("day").filter(~in_calibration).n_unique()
    per_customer = (
        days.group_by("customer_row")
        .agg(
            (calibration_days.cast(pl.Int32) - 1).alias("frequency_cal"),
            (last - first).dt.total_days().cast(pl.Int32).alias("recency_cal"),
            (pl.lit(cal_end) - first).dt.total_days().cast(pl.Int32).alias("t_cal"),
            holdout_days_seen.cast(pl.Int32).alias("actual_holdout"),
        )
        .filter(pl.col("frequency_cal") >= 0)  # a first purchase in the calibration period
    )
    return (
        customers.select("row", "customer_id")
        .join(per_customer, left_on="row", right_on="customer_row", how="inner", maintain_order="left")
        .drop("row")
    )


def backtest(
    customers: Path | str,
    orders: Path | str,
    as_of: date,
    holdout_days: int,
    output: Path,
    *,
    penalizer: float = 0.0,
) -> HoldoutResult:
    """Run the backtest on staged inputs and write ``output`` (holdout.parquet) when it ran.

    The calibration customers are streamed to a work file beside ``output`` first
    (:func:`backtest_parts` of that one part).
    """
    if holdout_days <= 0:
        return HoldoutResult("off", holdout_days, reason="holdout_days is 0")
    calibration = output.with_name(f"calibration.{output.name}")
    frame = calibration_frame(pl.scan_parquet(customers), pl.scan_parquet(orders), as_of, holdout_days)
    try:
        stage.sink_parquet(frame, calibration)
        return backtest_parts([calibration], as_of, holdout_days, output, penalizer=penalizer)
    finally:
        calibration.unlink(missing_ok=True)


#: The calibration history of a customer (the columns of :func:`calibration_histogram`).
CALIBRATION = ("frequency_cal", "recency_cal", "t_cal")


@dataclass(frozen=True)
class Histogram:
    """Distinct calibration histories with their ``customers``; all customers; the span in days."""

    rows: pl.DataFrame
    customers: int
    span: int

    @staticmethod
    def merged(parts: list[Histogram]) -> Histogram:
        """The histogram of disjoint parts' customers (the rows concatenated, in part order)."""
        return Histogram(
            pl.concat([p.rows for p in parts]),
            sum(p.customers for p in parts),
            max((p.span for p in parts), default=0),
        )


def calibration_histogram(calibration: pl.LazyFrame) -> Histogram:
    """The distinct (frequency_cal, recency_cal, t_cal) of some calibration customers, counted.

    Histograms of disjoint customer sets, concatenated, fit (:func:`fit_histogram`) exactly as
    the customers' own rows do: the fit dedupes its rows again, with the counts as weights.
    """
    rows, figures = pl.collect_all(
        [
            calibration.group_by(*CALIBRATION).agg(pl.len().cast(pl.Int64).alias("customers")),
            calibration.select(
                pl.len().alias("customers"), (pl.col("t_cal").max() + 1).fill_null(0).alias("span")
            ),
        ],
        engine="streaming",
    )
    customers, span = figures.row(0)
    return Histogram(rows, int(customers), int(span))


def fit_histogram(
    histogram: Histogram, as_of: date, holdout_days: int, *, penalizer: float
) -> tuple[BgNbdParams, float | None] | str:
    """The calibration fit on a (merged) histogram: its parameters and log-likelihood.

    Or why the backtest is skipped: too little history (:func:`too_little`), a degenerate fit.
    """
    from fastclv import model

    cal_end = as_of - timedelta(days=holdout_days)
    if reason := too_little(histogram.customers, histogram.span, cal_end, holdout_days):
        return reason
    rows = histogram.rows
    fitted = model.fit_bgnbd(
        *(rows[c].to_numpy().astype(np.float64) for c in CALIBRATION),
        penalizer=penalizer,
        counts=rows["customers"].to_numpy().astype(np.float64),
    )
    if fitted.params is None:
        return f"the calibration fit is degenerate: {fitted.diagnostics.reason}"
    return fitted.params, fitted.diagnostics.log_likelihood


def predict_part(calibration: Path, params: BgNbdParams, holdout_days: int, output: Path) -> None:
    """One part's calibration customers with their predicted holdout purchases (:func:`predicted`)."""
    stage.write_parquet(predicted(pl.read_parquet(calibration), params, holdout_days), output)


def result_of_parts(
    parts: list[Path],
    output: Path,
    as_of: date,
    holdout_days: int,
    params: dict[str, float],
    log_likelihood: float | None,
) -> HoldoutResult:
    """The parts' predictions (:func:`predict_part`), in order, as ``output``, and their figures.

    Reads back three columns of the calibration customers (16 bytes each).
    """
    stage.join_parquet(parts, output)
    figures = pl.read_parquet(output, columns=["frequency_cal", "actual_holdout", "predicted_holdout"])
    cal_end = as_of - timedelta(days=holdout_days)
    return result_of(figures, holdout_days, cal_end, params, log_likelihood)


def backtest_parts(
    calibrations: list[Path], as_of: date, holdout_days: int, output: Path, *, penalizer: float
) -> HoldoutResult:
    """:func:`backtest` on the calibration customers of customer parts, one part at a time.

    ``calibrations``: each part's :func:`calibration_from_days`, in part order (the customers'
    file order): the fit on their merged histograms and the figures summed over the parts in
    order are those of the backtest on every customer at once.
    """
    if holdout_days <= 0:
        return HoldoutResult("off", holdout_days, reason="holdout_days is 0")
    histogram = Histogram.merged([calibration_histogram(pl.scan_parquet(p)) for p in calibrations])
    fitted = fit_histogram(histogram, as_of, holdout_days, penalizer=penalizer)
    if isinstance(fitted, str):
        return skipped(fitted, holdout_days, as_of - timedelta(days=holdout_days), histogram.customers)
    params, log_likelihood = fitted
    predictions = [p.with_name(f"predicted.{p.name}") for p in calibrations]
    try:
        for calibration, prediction in zip(calibrations, predictions, strict=True):
            predict_part(calibration, params, holdout_days, prediction)
        return result_of_parts(predictions, output, as_of, holdout_days, asdict(params), log_likelihood)
    finally:
        for prediction in predictions:
            prediction.unlink(missing_ok=True)


def too_little(customers: int, span: int, cal_end: date, holdout_days: int) -> str | None:
    """Why there is too little history for the backtest (None: enough).

    ``span``: days from the first calibration purchase day through D - H (max t_cal + 1).
    """
    if customers == 0:
        return f"no customer has a counted order on or before {cal_end.isoformat()} (D - {holdout_days})"
    if span < holdout_days:
        return (
            f"the calibration period (the first purchase day through {cal_end.isoformat()}) has {span} days, "
            f"fewer than the {holdout_days}-day holdout"
        )
    return None


def skipped(reason: str, holdout_days: int, cal_end: date, customers: int) -> HoldoutResult:
    """The result of a backtest that did not run (logged)."""
    log.warning("holdout backtest skipped: %s", reason)
    return HoldoutResult("skipped", holdout_days, cal_end, reason, customers=customers)


def predicted(frame: pl.DataFrame, params: BgNbdParams, holdout_days: int) -> pl.DataFrame:
    """The calibration customers with their expected purchases in the holdout (the SCHEMA columns)."""
    from fastclv import model

    x, rec, age = (frame[c].to_numpy().astype(np.float64) for c in ("frequency_cal", "recency_cal", "t_cal"))
    values = model.expected_purchases(params, float(holdout_days), x, rec, age)
    frame = frame.with_columns(pl.Series("predicted_holdout", values, dtype=pl.Float64))
    return frame.select(SCHEMA.names()).cast(SCHEMA)


def result_of(
    frame: pl.DataFrame,
    holdout_days: int,
    cal_end: date,
    params: dict[str, float],
    log_likelihood: float | None,
) -> HoldoutResult:
    """The figures of a backtest that ran, from its per-customer frame (:func:`predicted`).

    The columns frequency_cal, actual_holdout and predicted_holdout are enough.
    """
    values = frame["predicted_holdout"].to_numpy()
    actual = frame["actual_holdout"].to_numpy()
    return HoldoutResult(
        "ran",
        holdout_days,
        cal_end,
        customers=frame.height,
        actual_total=int(actual.sum()),
        predicted_total=float(values.sum()),
        mean_absolute_error=float(np.abs(values - actual).mean()),
        params={k: float(v) for k, v in params.items()},
        log_likelihood=log_likelihood,
        calibration=calibration_table(frame),
    )


def calibration_table(frame: pl.DataFrame) -> list[CalibrationRow]:
    """Mean actual and predicted holdout purchases by calibration frequency (FHL 2005, figure 4)."""
    grouped = (
        frame.group_by(pl.col("frequency_cal").clip(upper_bound=TOP_FREQUENCY).alias("group"))
        .agg(
            pl.len().alias("customers"),
            pl.col("actual_holdout").cast(pl.Float64).mean().alias("actual"),
            pl.col("predicted_holdout").mean().alias("predicted"),
        )
        .sort("group")
    )
    return [
        CalibrationRow(
            f"{group}+" if group == TOP_FREQUENCY else str(group),
            int(customers),
            float(actual),
            float(predicted),
        )
        for group, customers, actual, predicted in grouped.iter_rows()
    ]
