"""The unsharded transform's history in bounded memory: bucket by bucket, then part by part.

The whole-file query (:func:`fastclv.transform.customer_ltv`) holds a hash table of every
counted order and one of every (customer, purchase day): at 1M customers 1.7 GiB, twice that at
2M. The staged orders and items are written bucket after bucket (:data:`fastclv.stage.BUCKET_ROWS`
says where each bucket's rows are), and an order and all its items are in the same bucket. So::

    days     (per bucket)  the bucket's orders joined with its items, grouped by (customer, day):
                           the purchase days of the bucket, cut by customer part into work files
    history  (per part)    the customers of one part (a range of customer rows): their days of
                           every bucket merged, their historical columns, and their calibration
                           customers of the holdout backtest

The parts in order are the customers in file order, so the parts' files, in order, are the whole
query's file row for row, and the merged days are exactly the whole query's days (counts and
money summed exactly, first and last times kept). This is the sharded plan's exchange
(:mod:`fastclv.shard_transform`) run in one process, one piece at a time: each step holds one
bucket's orders or one part's customers, whatever the size of the input. The model then takes
the parts' files one at a time too (:func:`fastclv.model.staged.predict_parts`,
:func:`fastclv.holdout.backtest_parts`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from datetime import date
from itertools import accumulate
from pathlib import Path

import polars as pl

from fastclv import holdout, stage
from fastclv.transform import customer_ltv_from_days, merge_days, part_of, purchase_days

log = logging.getLogger(__name__)

#: Customers per part of the history: about 0.3 GiB of hash tables at the generator's ~11
#: orders per customer.
PART_CUSTOMERS = 250_000


def bucket_slices(orders: Path, items: Path) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """The (offset, rows) of each bucket in the staged orders and items; None: one bucket only.

    None too when the two files do not have the same buckets (files staged by another tool).
    """
    order_rows, item_rows = stage.bucket_rows(orders), stage.bucket_rows(items)
    if len(order_rows) < 2 or len(order_rows) != len(item_rows):
        return None

    def slices(rows: list[int]) -> list[tuple[int, int]]:
        return list(zip(accumulate(rows, initial=0), rows, strict=False))

    return list(zip(slices(order_rows), slices(item_rows), strict=True))


def part_count(customers: int, part_customers: int) -> int:
    """Parts of about ``part_customers`` customers each (at least one)."""
    return max(1, -(-customers // max(1, part_customers)))


@dataclass(frozen=True)
class ByParts:
    """What :func:`history_by_parts` made: one file per customer part, in part order."""

    buckets: int
    parts: int
    #: The parts' historical columns (:data:`fastclv.contract.OUTPUT_SCHEMA`, predictions null).
    histories: list[Path]
    #: The parts' calibration customers of the holdout backtest (none when ``holdout_days`` is 0).
    calibrations: list[Path]
    #: The folder of these files (:meth:`remove` drops it).
    folder: Path

    def remove(self) -> None:
        """Drop the parts' files."""
        shutil.rmtree(self.folder, ignore_errors=True)


def history_by_parts(
    run_path: Path,
    work_dir: Path,
    as_of: date,
    *,
    holdout_days: int,
    part_customers: int | None = None,
) -> ByParts | None:
    """The historical columns of every customer, by customer part; None when the input is one bucket.

    Also the holdout backtest's calibration customers of each part
    (:func:`fastclv.holdout.calibration_from_days`, customers in file order). The files are under
    ``work_dir / "parts"`` until :meth:`ByParts.remove`; the purchase days' work files are gone
    when this returns. ``part_customers``: customers per part (default :data:`PART_CUSTOMERS`).
    """
    orders_path, items_path = run_path / "orders.parquet", run_path / "order_items.parquet"
    buckets = bucket_slices(orders_path, items_path)
    if buckets is None:
        return None
    customers_path = run_path / "customers.parquet"
    customers_n, top_row = (
        pl.scan_parquet(customers_path).select(pl.len(), pl.col("row").max()).collect().row(0)
    )
    parts = part_count(int(customers_n), part_customers or PART_CUSTOMERS)
    records = int(top_row or 1) - 1
    days_dir, parts_dir = work_dir / "days", work_dir / "parts"
    for folder in (days_dir, parts_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    t0 = time.perf_counter()
    done = ByParts(len(buckets), parts, [], [], parts_dir)
    try:
        _bucket_days(orders_path, items_path, buckets, as_of, records, parts, days_dir)
        t1 = time.perf_counter()
        _part_histories(customers_path, days_dir, done, as_of, holdout_days, records)
    except BaseException:
        done.remove()
        raise
    finally:
        shutil.rmtree(days_dir, ignore_errors=True)
    log.info(
        "history in %d buckets and %d customer parts: days %.1f s, histories %.1f s",
        len(buckets), parts, t1 - t0, time.perf_counter() - t1,
    )  # fmt: skip
    return done


def _days_file(days_dir: Path, bucket: int, part: int) -> Path:
    return days_dir / f"days.b{bucket}.p{part}.arrow"


def _bucket_days(
    orders: Path,
    items: Path,
    buckets: list[tuple[tuple[int, int], tuple[int, int]]],
    as_of: date,
    records: int,
    parts: int,
    days_dir: Path,
) -> None:
    """Each bucket's purchase days, cut by customer part: one work file per (bucket, part)."""
    for k, ((order_at, order_n), (item_at, item_n)) in enumerate(buckets):
        frame = (
            purchase_days(
                pl.scan_parquet(orders).slice(order_at, order_n),
                pl.scan_parquet(items).slice(item_at, item_n),
                as_of,
            )
            .with_columns(part_of("customer_row", records, parts).alias("_part"))
            .collect(engine="streaming")
        )
        by_part = {key[0]: df for key, df in frame.partition_by("_part", as_dict=True).items()}
        empty = frame.clear().drop("_part")
        for j in range(parts):
            part = by_part.get(j)
            (empty if part is None else part.drop("_part")).write_ipc(
                _days_file(days_dir, k, j), compression="lz4"
            )
        del frame, by_part


def _part_histories(
    customers_path: Path, days_dir: Path, done: ByParts, as_of: date, holdout_days: int, records: int
) -> None:
    """Each part's historical columns and calibration customers: a Parquet file each, in ``done``."""
    for j in range(done.parts):
        customers = pl.scan_parquet(customers_path).filter(part_of("row", records, done.parts) == j)
        files = [_days_file(days_dir, k, j) for k in range(done.buckets)]
        # The part's days once (about 1/parts of them), for its history and its calibration.
        days = merge_days(pl.scan_ipc(files)).collect(engine="streaming").lazy()
        part_out = done.folder / f"history.p{j}.parquet"
        stage.sink_parquet(customer_ltv_from_days(customers, days, as_of), part_out)
        done.histories.append(part_out)
        if holdout_days > 0:
            calibration = done.folder / f"calibration.p{j}.parquet"
            stage.sink_parquet(
                holdout.calibration_from_days(customers, days, as_of, holdout_days, distinct=True),
                calibration,
            )
            done.calibrations.append(calibration)
        del days
        for path in files:
            path.unlink()


__all__ = ["PART_CUSTOMERS", "ByParts", "bucket_slices", "history_by_parts", "part_count"]
