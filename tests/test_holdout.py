"""The holdout backtest against lifetimes on the CDNOW sample (contract section 5.1).

The three CSVs are built from lifetimes' CDNOW_sample.txt (2,357 customers, 1997-01 to 1998-06);
the calibration period ends 1997-09-30 and the holdout runs to 1998-06-30, as in Fader, Hardie
and Lee (2005). lifetimes is the reference (never mocked): its calibration summary, its fit and
its conditional expectation.
"""

from __future__ import annotations

import csv
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from fastclv import holdout
from fastclv.config import Settings
from fastclv.pipeline import run

AS_OF = date(1998, 6, 30)
CALIBRATION_END = date(1997, 9, 30)
H = (AS_OF - CALIBRATION_END).days  # 273 days, 39 weeks


def _cdnow() -> pl.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        import lifetimes.datasets
    path = Path(lifetimes.datasets.__file__).parent / "CDNOW_sample.txt"
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "date": [date(int(r[2][:4]), int(r[2][4:6]), int(r[2][6:])) for r in rows],
            "cds": [int(r[3]) for r in rows],
            "value": [r[4] for r in rows],
        }
    )


@pytest.fixture(scope="module")
def cdnow() -> pl.DataFrame:
    return _cdnow()


@pytest.fixture(scope="module")
def staged(cdnow: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample as the three CSVs, run through the pipeline (stage only)."""
    folder = tmp_path_factory.mktemp("cdnow-input")
    first = cdnow.group_by("customer_id").agg(pl.col("date").min()).sort("customer_id")
    with (folder / "customers.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["customer_id", "signup_date", "country"])
        writer.writerows([cid, day.isoformat(), "US"] for cid, day in first.iter_rows())
    with (
        (folder / "orders.csv").open("w", newline="") as orders,
        (folder / "order_items.csv").open("w", newline="") as items,
    ):
        order_writer, item_writer = csv.writer(orders), csv.writer(items)
        order_writer.writerow(["order_id", "customer_id", "order_ts", "status"])
        item_writer.writerow(["order_id", "sku", "quantity", "unit_price", "discount"])
        for n, (cid, day, _cds, value) in enumerate(cdnow.iter_rows()):
            order_writer.writerow([f"O{n}", cid, day.isoformat(), "completed"])
            item_writer.writerow([f"O{n}", "CD", 1, value, ""])
    staging = tmp_path_factory.mktemp("cdnow-staging")
    run(Settings(input=str(folder), staging=str(staging), as_of=AS_OF, load=False, verify=False))
    return staging / AS_OF.isoformat()


@pytest.fixture(scope="module")
def lifetimes_holdout(cdnow: pl.DataFrame) -> Any:
    """lifetimes' calibration summary, fit and conditional expectation; its frequency_holdout.

    lifetimes' own ``calibration_and_holdout_data`` fails on pandas 3 ("No objects to
    concatenate"), so its two halves are taken as it builds them: the calibration summary from
    ``summary_data_from_transaction_data`` on the transactions up to the calibration end, and
    ``frequency_holdout`` as the number of distinct daily periods with a transaction in
    (calibration end, observation end], 0 for calibration customers without one.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lifetimes
        import pandas as pd
        from lifetimes.utils import summary_data_from_transaction_data

        transactions = cdnow.select("customer_id", pl.col("date").cast(pl.Datetime)).to_pandas()
        calibration = summary_data_from_transaction_data(
            transactions[transactions["date"] <= pd.Timestamp(CALIBRATION_END)],
            "customer_id",
            "date",
            observation_period_end=CALIBRATION_END.isoformat(),
            freq="D",
        ).rename(columns={"frequency": "frequency_cal", "recency": "recency_cal", "T": "T_cal"})
        later = transactions[
            (transactions["date"] > pd.Timestamp(CALIBRATION_END))
            & (transactions["date"] <= pd.Timestamp(AS_OF))
        ]
        days = later.assign(day=later["date"].dt.to_period("D")).drop_duplicates(["customer_id", "day"])
        calibration["frequency_holdout"] = (
            days.groupby("customer_id").size().reindex(calibration.index).fillna(0).astype(int)
        )
        # tol 1e-8: at 1e-9 lifetimes' BFGS stops on "precision loss" on some CPUs (seen on AMD
        # EPYC, not on Intel Xeon) and lifetimes raises ConvergenceError; 1e-8 converges on both.
        bgf = lifetimes.BetaGeoFitter().fit(
            calibration["frequency_cal"], calibration["recency_cal"], calibration["T_cal"], tol=1e-8
        )
        calibration["predicted"] = bgf.conditional_expected_number_of_purchases_up_to_time(
            H, calibration["frequency_cal"], calibration["recency_cal"], calibration["T_cal"]
        )
    return pl.from_pandas(calibration.reset_index())


def test_the_backtest_matches_lifetimes_on_cdnow(staged: Path, lifetimes_holdout: pl.DataFrame) -> None:
    result = holdout.backtest(
        staged / "customers.parquet", staged / "orders.parquet", AS_OF, H, staged / holdout.HOLDOUT
    )
    assert result.status == "ran", result.reason
    assert result.calibration_end == CALIBRATION_END
    ours = pl.read_parquet(staged / holdout.HOLDOUT)
    assert ours.schema == holdout.SCHEMA
    both = ours.join(lifetimes_holdout, on="customer_id", how="full", coalesce=True)
    assert both.height == ours.height == lifetimes_holdout.height  # the same calibration customers
    # The calibration summary and lifetimes' frequency_holdout, exactly.
    for mine, theirs in (
        ("frequency_cal", "frequency_cal"),
        ("recency_cal", "recency_cal"),
        ("t_cal", "T_cal"),
        ("actual_holdout", "frequency_holdout"),
    ):
        np.testing.assert_array_equal(both[mine].to_numpy(), both[theirs].to_numpy().astype(np.int64), mine)
    np.testing.assert_allclose(
        both["predicted_holdout"].to_numpy(), both["predicted"].to_numpy(), rtol=1e-6, atol=1e-6
    )
    assert result.customers == ours.height
    assert result.actual_total == int(lifetimes_holdout["frequency_holdout"].sum())
    assert result.predicted_total == pytest.approx(float(lifetimes_holdout["predicted"].sum()), rel=1e-6)
    mae = float((both["predicted"] - both["frequency_holdout"]).abs().mean())  # type: ignore[arg-type]
    assert result.mean_absolute_error == pytest.approx(mae, rel=1e-6)


def test_the_calibration_table_groups_frequencies_zero_to_seven_plus(
    staged: Path, lifetimes_holdout: pl.DataFrame
) -> None:
    result = holdout.backtest(
        staged / "customers.parquet", staged / "orders.parquet", AS_OF, H, staged / holdout.HOLDOUT
    )
    table = {row.label: row for row in result.calibration}
    assert list(table) == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    expected = (
        lifetimes_holdout.group_by(pl.col("frequency_cal").clip(upper_bound=7).cast(pl.Int64))
        .agg(pl.len(), pl.col("frequency_holdout").mean(), pl.col("predicted").mean())
        .sort("frequency_cal")
    )
    for group, customers, actual, predicted in expected.iter_rows():
        row = table["7+" if group == 7 else str(group)]
        assert row.customers == customers
        assert row.mean_actual == pytest.approx(actual, rel=1e-12)
        assert row.mean_predicted == pytest.approx(predicted, rel=1e-6)
    assert sum(row.customers for row in result.calibration) == result.customers


def test_too_little_history_skips_the_backtest_with_a_reason(staged: Path, tmp_path: Path) -> None:
    customers, orders = staged / "customers.parquet", staged / "orders.parquet"
    # The sample starts 1997-01-01: a 300-day holdout leaves a calibration period of 210 days.
    short = holdout.backtest(customers, orders, AS_OF, 300, tmp_path / holdout.HOLDOUT)
    assert short.status == "skipped"
    assert "fewer than the 300-day holdout" in (short.reason or "")
    none = holdout.backtest(customers, orders, AS_OF, 600, tmp_path / holdout.HOLDOUT)
    assert none.status == "skipped"
    assert "no customer has a counted order on or before 1996-11-07" in (none.reason or "")
    assert not (tmp_path / holdout.HOLDOUT).exists()
    off = holdout.backtest(customers, orders, AS_OF, 0, tmp_path / holdout.HOLDOUT)
    assert off.status == "off"
