"""The unsharded history by bucket, then by customer part (fastclv.history): the whole query's result."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from reference import reference_run

from fastclv import history, holdout, stage
from fastclv.config import Settings
from fastclv.extract import extract
from fastclv.history import bucket_slices, history_by_parts
from fastclv.pipeline import run
from fastclv.testing import generate
from fastclv.transform import customer_ltv

AS_OF = date(2025, 12, 31)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("generated")
    generate(folder, customers=400, seed=11, dirty_rows=2, chunk_customers=150)
    return folder


def _staged(generated: Path, root: Path, buckets: int) -> Path:
    run_dir = root / AS_OF.isoformat()
    extract(str(generated), run_dir, AS_OF, buckets=buckets)
    return run_dir


def _inputs(run_dir: Path) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    customers, orders, items = (
        pl.scan_parquet(run_dir / f"{n}.parquet") for n in ("customers", "orders", "order_items")
    )
    return customers, orders, items


def test_each_bucket_of_the_staged_orders_holds_every_item_of_its_orders(
    generated: Path, tmp_path: Path
) -> None:
    run_dir = _staged(generated, tmp_path, 8)
    slices = bucket_slices(run_dir / "orders.parquet", run_dir / "order_items.parquet")
    assert slices is not None
    assert len(slices) == 8
    orders = pl.read_parquet(run_dir / "orders.parquet")
    items = pl.read_parquet(run_dir / "order_items.parquet")
    assert sum(n for (_, n), _ in slices) == orders.height
    assert sum(n for _, (_, n) in slices) == items.height
    filled = 0
    for (order_at, order_n), (item_at, item_n) in slices:
        bucket_orders = orders.slice(order_at, order_n)
        bucket_items = items.slice(item_at, item_n)
        assert bucket_orders["row"].is_sorted()  # row order inside a bucket
        assert set(bucket_items["order_row"]) <= set(bucket_orders["row"])
        filled += bucket_items.height > 0
    assert filled >= 4  # the items are spread over the buckets: the check above has teeth


@pytest.mark.parametrize("part_customers", [3, 37, 10_000])
def test_the_history_by_parts_is_the_oracles_and_the_whole_querys_row_for_row(
    generated: Path, tmp_path: Path, part_customers: int
) -> None:
    run_dir = _staged(generated, tmp_path, 8)
    work = tmp_path / "work"
    done = history_by_parts(run_dir, work, AS_OF, holdout_days=90, part_customers=part_customers)
    assert done is not None
    customers = pl.scan_parquet(run_dir / "customers.parquet").select(pl.len()).collect().item()
    assert (done.buckets, done.parts) == (8, -(-customers // part_customers))
    assert len(done.histories) == len(done.calibrations) == done.parts
    assert sorted(p.name for p in work.iterdir()) == ["parts"]  # the purchase days are gone
    got = pl.read_parquet(done.histories)
    # The independent oracle (tests/reference.py) on the CSV files themselves.
    assert_frame_equal(got.sort("customer_id"), reference_run(generated, AS_OF).output)
    # And the whole-file query's file, row for row, in file order.
    whole = customer_ltv(*_inputs(run_dir), AS_OF).collect(engine="streaming")
    assert_frame_equal(got, whole, check_exact=True)
    customers_, orders, _ = _inputs(run_dir)
    calibration = holdout.calibration_frame(customers_, orders, AS_OF, 90).collect()
    assert calibration.height > 0
    assert_frame_equal(pl.read_parquet(done.calibrations), calibration, check_exact=True)
    done.remove()
    assert list(work.iterdir()) == []


def test_a_holdout_of_zero_days_makes_no_calibration(generated: Path, tmp_path: Path) -> None:
    run_dir = _staged(generated, tmp_path, 4)
    done = history_by_parts(run_dir, tmp_path / "w", AS_OF, holdout_days=0)
    assert done is not None
    assert done.calibrations == []
    assert pl.read_parquet(done.histories).height == pl.read_parquet(run_dir / "customers.parquet").height


def test_inputs_of_one_bucket_are_left_to_the_whole_query(generated: Path, tmp_path: Path) -> None:
    run_dir = _staged(generated, tmp_path, 1)
    assert stage.bucket_rows(run_dir / "orders.parquet") == [
        pl.read_parquet(run_dir / "orders.parquet").height
    ]
    assert history_by_parts(run_dir, tmp_path / "w", AS_OF, holdout_days=90) is None
    assert not (tmp_path / "w" / "parts").exists()


def test_a_run_by_bucket_and_part_stages_and_fits_exactly_the_run_in_one_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: 1 MiB buckets (several) and parts of 500 customers against one bucket."""
    data = tmp_path / "data"
    generate(data, customers=3000, seed=3, dirty_rows=3, chunk_customers=1000)
    monkeypatch.setattr(history, "PART_CUSTOMERS", 500)
    caplog.set_level(logging.INFO, logger="fastclv.history")
    summaries = {}
    for label, mib in (("whole", 0), ("parts", 1)):
        settings = Settings(
            input=str(data), staging=str(tmp_path / label), as_of=AS_OF, load=False, bucket_mib=mib
        )
        summaries[label] = run(settings)
    buckets = stage.bucket_rows(tmp_path / "parts" / AS_OF.isoformat() / "orders.parquet")
    assert len(buckets) >= 2
    said = [r.getMessage() for r in caplog.records if r.name == "fastclv.history"]
    assert len(said) == 1  # the run of one bucket took the whole query
    assert f"history in {len(buckets)} buckets and 7 customer parts" in said[0]  # 3,000 + dirty rows
    for name in (stage.OUTPUT, holdout.HOLDOUT):
        assert_frame_equal(
            pl.read_parquet(tmp_path / "parts" / AS_OF.isoformat() / name),
            pl.read_parquet(tmp_path / "whole" / AS_OF.isoformat() / name),
            check_exact=True,
        )
    whole, parts = summaries["whole"], summaries["parts"]
    assert parts.model is not None
    assert whole.model is not None
    for fit in ("bgnbd", "gamma_gamma"):
        assert parts.model[fit]["params"] is not None  # type: ignore[index]
        assert parts.model[fit]["params"] == whole.model[fit]["params"]  # type: ignore[index]
    assert parts.holdout == whole.holdout
    assert parts.holdout is not None
    assert parts.holdout["status"] == "ran"
    work = tmp_path / "parts" / AS_OF.isoformat() / "_work"
    assert not (work / "parts").exists()  # the parts' histories, scores and calibrations are gone
    assert not list(work.glob("*.parquet"))
