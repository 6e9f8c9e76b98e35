"""How a reload of one as-of date treats readers, at L (1M rows): load time, blocking, bloat.

Issue 14 item 7: with the partition swap (detach the old partition of D, attach a new one), a
REPEATABLE READ transaction whose snapshot predates the swap and that first reads
``customer_ltv`` after it sees no rows of D. This script measures what the load in the tree
does, so that it can be run before and after a change of strategy:

- the first load of a date and three reloads of it (seconds), the partition's size after each
  reload and after a VACUUM (bloat);
- what a REPEATABLE READ reader with an older snapshot counts for D after a reload;
- a reload started while a reader holds a transaction open on the table for 9 s: how long the
  reload takes, and how long a *new* reader arriving meanwhile waits (it queues behind an ACCESS
  EXCLUSIVE request, if there is one).

Run: ``.venv/bin/python -m benchmarks.reload_options [rows]`` (default 1,000,000). It starts
a throwaway PostgreSQL with fastclv.localpg and prints one JSON object.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import polars as pl
import psycopg

from fastclv import load, localpg
from fastclv.contract import OUTPUT_SCHEMA

D = date(2025, 12, 31)


def frame(n: int, tag: str) -> pl.DataFrame:
    """``n`` plausible output rows of D (the columns and types of customer_ltv)."""
    i = pl.col("i")
    cents = (i * 7919 + len(tag)) % 10_000_000
    buyer = i % 4 != 0
    return (
        pl.select(i=pl.int_range(n, dtype=pl.Int64))
        .select(
            as_of=pl.lit(D),
            customer_id=pl.format("{}{}", pl.lit(tag), i.cast(pl.String).str.zfill(8)),
            signup_date=pl.lit(date(2020, 1, 1)) + pl.duration(days=i % 1500),
            country=pl.when(i % 5 == 0).then(None).otherwise(pl.lit("DE")),
            first_order_at=pl.when(buyer).then(pl.datetime(2023, 1, 1, time_zone="UTC")),
            last_order_at=pl.when(buyer).then(pl.datetime(2024, 6, 30, 12, time_zone="UTC")),
            orders_count=pl.when(buyer).then(i % 9 + 1).otherwise(0),
            total_revenue=pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2)),
            avg_order_value=pl.when(buyer).then(cents / 100),
            frequency=pl.when(buyer).then(i % 9),
            recency_days=pl.when(buyer).then(i % 300),
            t_days=pl.when(buyer).then(i % 300 + 30),
            monetary_value=pl.when(buyer).then(cents / 300),
            p_alive=pl.when(buyer).then(1 / (i + 1)),
            expected_purchases=pl.when(buyer).then(i / 1000),
            predicted_clv=pl.when(buyer).then(pl.format("{}.5", cents)),
        )
        .cast(OUTPUT_SCHEMA)
    )


def main(rows: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="fastclv-reload-"))
    root.chmod(0o711)
    server = localpg.start_local_postgres(root / "data")
    uri, schema = server.uri, "bench"
    out: dict[str, object] = {"rows": rows}
    try:
        files = []
        for tag in ("a", "b"):
            path = root / f"{tag}.parquet"
            frame(rows, tag).write_parquet(path)
            files.append(path)

        def reload(n: int, **kw: object) -> float:
            started = time.perf_counter()
            load.load_partition(uri, files[n % 2], D, schema=schema, run_id=f"r{n}", **kw)  # type: ignore[arg-type]
            return round(time.perf_counter() - started, 2)

        def size() -> dict[str, object]:
            with psycopg.connect(uri, autocommit=True) as conn:
                name = conn.execute(
                    "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'bench.customer_ltv'::regclass"
                ).fetchone()[0]  # type: ignore[index]
                total = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()[0]  # type: ignore[index]
                return {"partition": name, "mb": round(total / 2**20, 1)}

        out["first_load_s"] = reload(0)
        out["after_first"] = size()
        out["reload_s"] = [reload(n) for n in (1, 2, 3)]
        out["after_reloads"] = size()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("VACUUM bench.customer_ltv")
        out["after_vacuum"] = size()

        # A REPEATABLE READ reader whose snapshot predates the reload.
        with psycopg.connect(uri) as reader:
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1")  # takes the snapshot
            reload(4)
            out["repeatable_read_count_after_reload"] = reader.execute(
                "SELECT count(*) FROM bench.customer_ltv WHERE as_of = %s", (D,)
            ).fetchone()[0]  # type: ignore[index]
            reader.rollback()

        # A reader holds the table open for 9 s while a reload starts; a new reader arrives at
        # 6 s (after the COPY, when a swap would be waiting for its lock).
        waits: dict[str, float] = {}
        with psycopg.connect(uri) as holder:
            holder.execute("SELECT count(*) FROM bench.customer_ltv")
            started = time.perf_counter()
            thread = threading.Thread(
                target=lambda: waits.__setitem__("reload_s", reload(5, lock_timeout_s=60.0))
            )
            thread.start()
            time.sleep(6.0)
            with psycopg.connect(uri, autocommit=True) as newcomer:
                asked = time.perf_counter()
                release = threading.Timer(3.0, holder.rollback)
                release.start()
                newcomer.execute("SELECT count(*) FROM bench.customer_ltv WHERE as_of = %s", (D,))
                waits["new_reader_wait_s"] = round(time.perf_counter() - asked, 2)
            thread.join()
            release.join()
            waits["reload_total_s"] = round(time.perf_counter() - started, 2)
        out["with_a_long_reader"] = waits
    finally:
        localpg.stop_local_postgres(server.data_dir)
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=2))
