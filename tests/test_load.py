"""fastclv.load, ddl, ledger and db against a real PostgreSQL: swaps, failures, types, secrets, ledger."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from fastclv import ddl, load, localpg
from fastclv.contract import OUTPUT_SCHEMA, output_arrow_schema
from fastclv.errors import ConfigError, FastclvError, LoadError, TransientError
from fastclv.ledger import finish_run, start_run
from fastclv.secrets import redact

D = date(2025, 1, 31)
D1 = D + timedelta(days=1)


# -- helpers ---------------------------------------------------------------------------------


def ltv_frame(as_of: date, n: int, tag: str = "a") -> pl.DataFrame:
    """``n`` output rows for ``as_of`` with OUTPUT_SCHEMA types; ``tag`` makes contents differ."""
    i = pl.col("i")
    cents = (i * 7919 + len(tag)) % 10_000_000
    has_orders = i % 4 != 0
    return (
        pl.select(i=pl.int_range(n, dtype=pl.Int64))
        .select(
            as_of=pl.lit(as_of),
            customer_id=pl.format("{}{}", pl.lit(tag), i.cast(pl.String).str.zfill(6)),
            signup_date=pl.lit(date(2020, 1, 1)) + pl.duration(days=i % 1500),
            country=pl.when(i % 5 == 0).then(None).otherwise(pl.lit("DE")),
            first_order_at=pl.when(has_orders).then(
                pl.datetime(2023, 1, 1, time_zone="UTC") + pl.duration(microseconds=i * 999_983)
            ),
            last_order_at=pl.when(has_orders).then(pl.datetime(2024, 6, 30, 12, time_zone="UTC")),
            orders_count=pl.when(has_orders).then(i % 9 + 1).otherwise(0),
            total_revenue=pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2)),
            avg_order_value=pl.when(has_orders).then(cents / 100),
            frequency=pl.when(has_orders).then(i % 9),
            recency_days=pl.when(has_orders).then(i % 300),
            t_days=pl.when(has_orders).then(i % 300 + 30),
            monetary_value=pl.when(has_orders).then(cents / 300),
            p_alive=pl.when(has_orders).then(1 / (i + 1)),
            expected_purchases=pl.when(has_orders).then(i / 1000),
            predicted_clv=pl.when(has_orders).then(pl.format("{}.5", cents)),
        )
        .cast(dict(OUTPUT_SCHEMA))
    )


def parquet(frame: pl.DataFrame, folder: Path) -> Path:
    path = folder / f"{uuid.uuid4().hex}.parquet"
    frame.write_parquet(path)
    return path


def table_rows(pg_uri: str, schema: str, as_of: date | None = None) -> pl.DataFrame:
    """The table's rows (of one date, or all) as a frame with OUTPUT_SCHEMA types."""
    query = sql.SQL("SELECT * FROM {}.customer_ltv").format(sql.Identifier(schema))
    if as_of is not None:
        query += sql.SQL(" WHERE as_of = {}").format(sql.Literal(as_of))
    with psycopg.connect(pg_uri) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        rows = conn.execute(query).fetchall()
    return pl.DataFrame(rows, schema=OUTPUT_SCHEMA, orient="row").sort("as_of", "customer_id")


def assert_holds(pg_uri: str, schema: str, expected: pl.DataFrame) -> None:
    assert_frame_equal(table_rows(pg_uri, schema), expected.sort("as_of", "customer_id"))


def staging_tables(pg_uri: str, schema: str) -> list[str]:
    with psycopg.connect(pg_uri) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND relname ~ '_s[0-9]{8}_'",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def error_chain(exc: BaseException) -> str:
    """Every message in the exception's cause/context chain, joined."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(texts) < 20:
        texts += [str(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def failing_reader(frame: pl.DataFrame, good_batches: int, batch_rows: int = 100) -> pa.RecordBatchReader:
    """A reader that yields ``good_batches`` batches, then fails like a broken source."""
    table = frame.to_arrow().cast(output_arrow_schema())

    def batches() -> Iterator[pa.RecordBatch]:
        for n, batch in enumerate(table.to_batches(max_chunksize=batch_rows)):
            if n == good_batches:
                raise OSError("source went away mid-stream")
            yield batch

    return pa.RecordBatchReader.from_batches(table.schema, batches())


# -- the swap ----------------------------------------------------------------------------------


def test_load_dates_and_rerun_replaces_only_that_date(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    d_first, d_next, d_again = ltv_frame(D, 300, "a"), ltv_frame(D1, 200, "b"), ltv_frame(D, 250, "c")

    result = load.load_partition(pg_uri, parquet(d_first, tmp_path), D, schema=pg_schema, run_id="r1")
    assert (result.table, result.partition, result.rows) == (
        f"{pg_schema}.customer_ltv",
        "customer_ltv_p20250131",
        300,
    )
    load.load_partition(pg_uri, parquet(d_next, tmp_path), D1, schema=pg_schema, run_id="r2")
    assert_holds(pg_uri, pg_schema, pl.concat([d_first, d_next]))

    again = load.load_partition(pg_uri, parquet(d_again, tmp_path), D, schema=pg_schema, run_id="r3")
    assert (again.partition, again.rows, again.replaced_rows) == ("customer_ltv_p20250131", 250, 300)
    assert result.replaced_rows == 0
    assert_holds(pg_uri, pg_schema, pl.concat([d_again, d_next]))
    # Same date, same input, twice: same table.
    load.load_partition(pg_uri, parquet(d_again, tmp_path), D, schema=pg_schema, run_id="r4")
    assert_holds(pg_uri, pg_schema, pl.concat([d_again, d_next]))
    assert staging_tables(pg_uri, pg_schema) == []


def test_failure_mid_copy_leaves_the_table_as_it_was(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    before = ltv_frame(D, 300)
    load.load_partition(pg_uri, parquet(before, tmp_path), D, schema=pg_schema, run_id="ok")

    reader = failing_reader(ltv_frame(D, 1000, "new"), good_batches=3)
    with pytest.raises(LoadError, match="source went away mid-stream") as caught:
        load.load_partition(pg_uri, reader, D, schema=pg_schema, run_id="broken")

    assert f"{pg_schema}.customer_ltv" in str(caught.value)
    assert "Hint:" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    assert_holds(pg_uri, pg_schema, before)
    assert staging_tables(pg_uri, pg_schema) == []


def test_lock_timeout_at_the_swap_is_transient_and_changes_nothing(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    before = ltv_frame(D, 200)
    load.load_partition(pg_uri, parquet(before, tmp_path), D, schema=pg_schema, run_id="ok")

    with psycopg.connect(pg_uri) as reader:  # a session holds a lock that conflicts with writes
        # (A plain reader no longer conflicts with a reload: see the next two tests.)
        reader.execute(sql.SQL("LOCK TABLE {}.customer_ltv IN SHARE MODE").format(sql.Identifier(pg_schema)))
        with pytest.raises(TransientError, match="lock timeout") as caught:
            load.load_partition(
                pg_uri,
                parquet(ltv_frame(D, 50, "new"), tmp_path),
                D,
                schema=pg_schema,
                lock_timeout_s=0.2,
                run_id="blocked",
            )
        reader.rollback()

    message = str(caught.value)
    assert "replacing the rows of" in message
    assert f"{pg_schema}.customer_ltv (partition customer_ltv_p20250131)" in message
    assert "Hint: another session holds a conflicting lock" in message
    assert_holds(pg_uri, pg_schema, before)
    assert staging_tables(pg_uri, pg_schema) == []


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_reader_whose_snapshot_predates_a_reload_sees_the_old_rows(
    pg_uri: str, pg_schema: str, tmp_path: Path, isolation: str
) -> None:
    """Issue 14 item 7: never an empty date, at every isolation level (contract section 6)."""
    old, new = ltv_frame(D, 300, "old"), ltv_frame(D, 200, "new")
    load.load_partition(pg_uri, parquet(old, tmp_path), D, schema=pg_schema, run_id="first")
    rows = sql.SQL("SELECT customer_id FROM {}.customer_ltv WHERE as_of = %s ORDER BY 1").format(
        sql.Identifier(pg_schema)
    )
    with psycopg.connect(pg_uri) as reader:
        reader.execute(f"BEGIN ISOLATION LEVEL {isolation}".encode())
        reader.execute("SELECT 1")  # the snapshot is taken here, before the reload
        load.load_partition(pg_uri, parquet(new, tmp_path), D, schema=pg_schema, run_id="again")
        seen = [r[0] for r in reader.execute(rows, (D,)).fetchall()]
        assert seen == sorted(old["customer_id"].to_list())
        reader.rollback()
        after = [r[0] for r in reader.execute(rows, (D,)).fetchall()]
        assert after == sorted(new["customer_id"].to_list())
    assert_holds(pg_uri, pg_schema, new)


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_snapshot_taken_while_a_new_date_waits_to_attach_never_sees_its_rows(
    pg_uri: str, pg_schema: str, tmp_path: Path, isolation: str
) -> None:
    """The new date's rows, key and ATTACH commit together (ATTACH is outside snapshots)."""
    earlier = D - timedelta(days=1)
    other = ltv_frame(earlier, 50)
    load.load_partition(pg_uri, parquet(other, tmp_path), earlier, schema=pg_schema, run_id="a")
    new = ltv_frame(D, 200, "new")
    source = parquet(new, tmp_path)
    parent = sql.Identifier(pg_schema, "customer_ltv")
    rows = sql.SQL("SELECT customer_id FROM {} WHERE as_of = %s ORDER BY 1").format(parent)
    failures: list[BaseException] = []

    def load_d() -> None:
        try:
            load.load_partition(pg_uri, source, D, schema=pg_schema, run_id="b", lock_timeout_s=60)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    with psycopg.connect(pg_uri) as blocker, psycopg.connect(pg_uri) as reader:
        blocker.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(parent))
        loading = threading.Thread(target=load_d)
        loading.start()
        waiting = sql.SQL("SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted")
        name = f"{pg_schema}.customer_ltv"
        deadline = time.monotonic() + 60
        while blocker.execute(waiting, (name,)).fetchone() == (0,) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the load waits for the ATTACH's lock: its rows are in
        assert blocker.execute(waiting, (name,)).fetchone() != (0,), "the load never waited to attach"
        reader.execute(f"BEGIN ISOLATION LEVEL {isolation}".encode())
        assert reader.execute(rows, (D,)).fetchall() == []  # the snapshot, taken while it waits
        blocker.rollback()
        loading.join(60)
        assert not failures
        assert reader.execute(rows, (D,)).fetchall() == []
        reader.rollback()
        after = [r[0] for r in reader.execute(rows, (D,)).fetchall()]
        assert after == sorted(new["customer_id"].to_list())
    assert_holds(pg_uri, pg_schema, pl.concat([other, new]))


def test_a_long_running_reader_does_not_block_a_reload(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    before, after = ltv_frame(D, 200), ltv_frame(D, 150, "new")
    load.load_partition(pg_uri, parquet(before, tmp_path), D, schema=pg_schema, run_id="ok")
    count = sql.SQL("SELECT count(*) FROM {}.customer_ltv WHERE as_of = %s").format(sql.Identifier(pg_schema))
    with psycopg.connect(pg_uri) as reader:  # a transaction open on the table, as a report query holds it
        assert reader.execute(count, (D,)).fetchone() == (200,)
        load.load_partition(
            pg_uri, parquet(after, tmp_path), D, schema=pg_schema, lock_timeout_s=0.5, run_id="reload"
        )
        assert reader.execute(count, (D,)).fetchone() == (150,)  # READ COMMITTED: the next statement
        reader.rollback()
    assert_holds(pg_uri, pg_schema, after)
    assert staging_tables(pg_uri, pg_schema) == []


def test_readers_see_old_or_new_rows_never_a_mix(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    sizes = (3000, 2000)
    files = [parquet(ltv_frame(D, n, f"v{n}"), tmp_path) for n in sizes]
    load.load_partition(pg_uri, files[0], D, schema=pg_schema, run_id="first")

    seen: set[int] = set()
    polls = 0
    stop = threading.Event()
    count = sql.SQL("SELECT count(*) FROM {}.customer_ltv WHERE as_of = %s").format(sql.Identifier(pg_schema))

    def poll() -> None:
        nonlocal polls
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(count, (D,)).fetchone()
                assert row is not None
                seen.add(row[0])
                polls += 1

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for n in range(6):
            load.load_partition(pg_uri, files[(n + 1) % 2], D, schema=pg_schema, run_id=f"re{n}")
    finally:
        stop.set()
        reader.join()
    assert polls > 20
    assert seen == set(sizes)


def test_concurrent_loads_of_one_date_are_serialised(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    """Both loads succeed (the swap waits on a per-date advisory lock); the last swap wins."""
    frames = [ltv_frame(D, 1500, "x"), ltv_frame(D, 1200, "y")]
    files = [parquet(f, tmp_path) for f in frames]
    ddl.create_tables(pg_uri, schema=pg_schema)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(n: int) -> None:
        start.wait()
        try:
            load.load_partition(pg_uri, files[n], D, schema=pg_schema, run_id=f"parallel{n}")
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = table_rows(pg_uri, pg_schema)
    assert any(final.equals(f.sort("as_of", "customer_id")) for f in frames)
    assert staging_tables(pg_uri, pg_schema) == []


def test_a_crashed_loads_staging_table_is_dropped_by_the_next_load(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    """A live load's staging table is left alone; once its session dies, the next load drops it.

    The loads that commit a staging table before their swap: several COPY streams (here asked
    for; the reader is one). A single-stream load is one transaction: a crash leaves nothing.
    """
    frame = ltv_frame(D, 600)
    table = frame.to_arrow().cast(output_arrow_schema())
    paused, resume = threading.Event(), threading.Event()

    def slow_batches() -> Iterator[pa.RecordBatch]:
        batches = table.to_batches(max_chunksize=200)
        yield batches[0]
        paused.set()
        resume.wait(10)
        yield from batches[1:]

    errors: list[BaseException] = []

    def crashing_load() -> None:
        reader = pa.RecordBatchReader.from_batches(table.schema, slow_batches())
        try:
            load.load_partition(pg_uri, reader, D, schema=pg_schema, run_id="crashes", streams=2)
        except FastclvError as exc:
            errors.append(exc)

    loader = threading.Thread(target=crashing_load)
    loader.start()
    try:
        assert paused.wait(10)
        [stray] = staging_tables(pg_uri, pg_schema)
        # A concurrent load of the same date neither waits for nor touches the live one.
        load.load_partition(pg_uri, parquet(frame, tmp_path), D, schema=pg_schema, run_id="other")
        assert staging_tables(pg_uri, pg_schema) == [stray]
        with psycopg.connect(pg_uri, autocommit=True) as admin:  # "crash" the first load
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
    finally:
        resume.set()
        loader.join()
    assert len(errors) == 1
    assert isinstance(errors[0], TransientError)  # the connection died: retryable
    assert staging_tables(pg_uri, pg_schema) == [stray]  # it could not clean up after itself

    load.load_partition(pg_uri, parquet(frame, tmp_path), D, schema=pg_schema, run_id="next")
    assert staging_tables(pg_uri, pg_schema) == []
    assert_holds(pg_uri, pg_schema, frame)


# -- the load by part (the sharded plan's mapped tasks) -----------------------------------------


def _by_part(pg_uri: str, schema: str, path: Path, parts: int, run_id: str, order: list[int]) -> list[int]:
    """Begin a load by part and COPY the parts of ``order``; the rows each part COPYed."""
    load.begin_load_by_part(pg_uri, D, schema=schema, run_id=run_id)
    done = [load.load_part(pg_uri, path, D, j, parts, schema=schema, run_id=run_id) for j in order]
    assert [d["part"] for d in done] == order
    return [int(d["rows"]) for d in done]


def test_a_load_by_part_in_any_order_gives_the_rows_of_the_file_once(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    old, new = ltv_frame(D, 300, "old"), ltv_frame(D, 1000, "new")
    other_day = ltv_frame(D1, 20, "d1")
    load.load_partition(pg_uri, parquet(other_day, tmp_path), D1, schema=pg_schema, run_id="d1")
    path = tmp_path / "groups.parquet"
    new.write_parquet(path, row_group_size=250)  # 4 row groups over 6 parts: 2 parts are empty
    assert pa.parquet.ParquetFile(path).metadata.num_row_groups == 4
    rows = _by_part(pg_uri, pg_schema, path, 6, "first", [5, 0, 3, 1, 4, 2])
    assert sorted(rows) == [0, 0, 250, 250, 250, 250]
    assert_holds(pg_uri, pg_schema, other_day)  # nothing of D is visible before the swap
    done = load.finish_load_by_part(pg_uri, D, 6, 1000, schema=pg_schema, run_id="first")
    assert (done.rows, done.replaced_rows, done.partition) == (1000, 0, "customer_ltv_p20250131")
    assert_holds(pg_uri, pg_schema, pl.concat([other_day, new]))
    assert staging_tables(pg_uri, pg_schema) == []  # the staging table became the partition; no log

    # A reload of the date by part replaces its rows (in one transaction, as a reload does).
    old_path = parquet(old, tmp_path)
    _by_part(pg_uri, pg_schema, old_path, 2, "again", [1, 0])
    done = load.finish_load_by_part(pg_uri, D, 2, 300, schema=pg_schema, run_id="again")
    assert (done.rows, done.replaced_rows) == (300, 1000)
    assert_holds(pg_uri, pg_schema, pl.concat([other_day, old]))
    assert staging_tables(pg_uri, pg_schema) == []


def test_a_retried_part_or_finish_does_its_work_once(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    frame = ltv_frame(D, 500)
    path = tmp_path / "f.parquet"
    frame.write_parquet(path, row_group_size=100)
    # Part 1 runs twice: as a task retried after its commit (its result was lost).
    assert _by_part(pg_uri, pg_schema, path, 3, "retried", [0, 1, 1, 2]) == [100, 200, 200, 200]
    first = load.finish_load_by_part(pg_uri, D, 3, 500, schema=pg_schema, run_id="retried")
    assert first.rows == 500
    assert_holds(pg_uri, pg_schema, frame)
    # The finish retried after its swap committed: the same result, nothing changed.
    again = load.finish_load_by_part(pg_uri, D, 3, 500, schema=pg_schema, run_id="retried")
    assert (again.rows, again.partition) == (500, first.partition)
    assert_holds(pg_uri, pg_schema, frame)
    # Another run's finish without its own staging table is refused.
    with pytest.raises(LoadError, match=r"staging table .* of run never-began is gone"):
        load.finish_load_by_part(pg_uri, D, 3, 500, schema=pg_schema, run_id="never-began")


def test_a_missing_or_bad_part_is_refused_and_the_table_stays_as_it_was(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    before = ltv_frame(D, 50, "before")
    load.load_partition(pg_uri, parquet(before, tmp_path), D, schema=pg_schema, run_id="before")
    frame = ltv_frame(D, 300)
    path = tmp_path / "f.parquet"
    frame.write_parquet(path, row_group_size=100)
    _by_part(pg_uri, pg_schema, path, 3, "short", [0, 2])
    with pytest.raises(LoadError, match=r"parts \[1\] of 3 are missing, 2 logged, 200 rows against the 300"):
        load.finish_load_by_part(pg_uri, D, 3, 300, schema=pg_schema, run_id="short")
    assert_holds(pg_uri, pg_schema, before)
    # A part whose rows are not of the date fails alone and logs nothing: its retry can succeed.
    bad = frame.with_columns(
        as_of=pl.when(pl.col("customer_id") == "a000150").then(pl.lit(D1)).otherwise("as_of")
    )
    bad_path = tmp_path / "bad.parquet"
    bad.write_parquet(bad_path, row_group_size=100)
    with pytest.raises(LoadError, match=r"row 151 of .*bad\.parquet has as_of 2025-02-01"):
        load.load_part(pg_uri, bad_path, D, 1, 3, schema=pg_schema, run_id="short")
    with pytest.raises(LoadError, match=r"parts \[1\] of 3 are missing"):
        load.finish_load_by_part(pg_uri, D, 3, 300, schema=pg_schema, run_id="short")
    assert load.load_part(pg_uri, path, D, 1, 3, schema=pg_schema, run_id="short")["rows"] == 100
    load.finish_load_by_part(pg_uri, D, 3, 300, schema=pg_schema, run_id="short")
    assert_holds(pg_uri, pg_schema, frame)
    assert staging_tables(pg_uri, pg_schema) == []


def _hold(conn: psycopg.Connection[Any], key: str, *, shared: bool = False) -> None:
    """Take a session advisory lock on ``key`` as fastclv hashes it (another task's session)."""
    kind = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
    conn.execute(f"SELECT {kind}(hashtextextended(%s, 0))", (key,))


def test_parts_copy_side_by_side_and_the_finish_waits_for_them(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    frame = ltv_frame(D, 300)
    path = tmp_path / "f.parquet"
    frame.write_parquet(path, row_group_size=100)
    staging = load.begin_load_by_part(pg_uri, D, schema=pg_schema, run_id="side")["staging"]
    with psycopg.connect(pg_uri, autocommit=True) as part_copying:
        _hold(part_copying, f"fastclv:staging:{pg_schema}.{staging}", shared=True)  # part 0, mid-COPY
        # Another part does not wait for it ...
        assert load.load_part(pg_uri, path, D, 1, 3, schema=pg_schema, run_id="side")["rows"] == 100
        # ... but the finish and a new begin of the run do: retryable, and nothing changed.
        with pytest.raises(TransientError, match="in use by another task of the same load"):
            load.finish_load_by_part(pg_uri, D, 3, 300, schema=pg_schema, run_id="side")
        with pytest.raises(TransientError, match="in use by another task of the same load"):
            load.begin_load_by_part(pg_uri, D, schema=pg_schema, run_id="side")
        # A load of the date by another run leaves the staging table in use alone.
        load.load_partition(pg_uri, parquet(ltv_frame(D, 5, "x"), tmp_path), D, schema=pg_schema, run_id="x")
        assert staging in staging_tables(pg_uri, pg_schema)
    for j in (0, 2):
        load.load_part(pg_uri, path, D, j, 3, schema=pg_schema, run_id="side")
    assert load.finish_load_by_part(pg_uri, D, 3, 300, schema=pg_schema, run_id="side").replaced_rows == 5
    assert_holds(pg_uri, pg_schema, frame)


def test_a_finish_that_timed_out_at_the_swap_succeeds_on_its_retry(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    frame = ltv_frame(D, 200)
    _by_part(pg_uri, pg_schema, parquet(frame, tmp_path), 2, "slow", [0, 1])
    with psycopg.connect(pg_uri) as other:  # another load of the date is swapping: the date's lock
        other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"fastclv:swap:{pg_schema}.customer_ltv:{D}",),
        )
        with pytest.raises(TransientError, match="lock timeout"):
            load.finish_load_by_part(pg_uri, D, 2, 200, schema=pg_schema, run_id="slow", lock_timeout_s=0.2)
        other.rollback()
    assert table_rows(pg_uri, pg_schema).height == 0
    # The retry finds the primary key built by the first attempt, and swaps.
    assert load.finish_load_by_part(pg_uri, D, 2, 200, schema=pg_schema, run_id="slow").rows == 200
    assert_holds(pg_uri, pg_schema, frame)
    assert staging_tables(pg_uri, pg_schema) == []


def test_a_failed_load_by_part_is_dropped_when_its_run_ends(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    _by_part(pg_uri, pg_schema, parquet(ltv_frame(D, 100), tmp_path), 2, "failed", [1])
    assert staging_tables(pg_uri, pg_schema) != []
    with psycopg.connect(pg_uri, autocommit=True) as part_copying:  # a part (a zombie) still copies
        staging = next(n for n in staging_tables(pg_uri, pg_schema) if n.endswith("_log")).removesuffix(
            "_log"
        )
        _hold(part_copying, f"fastclv:staging:{pg_schema}.{staging}", shared=True)
        assert load.abandon_load_by_part(pg_uri, D, schema=pg_schema, run_id="failed") is False
    assert load.abandon_load_by_part(pg_uri, D, schema=pg_schema, run_id="failed") is True
    assert staging_tables(pg_uri, pg_schema) == []


def test_a_crashed_load_by_part_is_cleaned_up_by_the_next_load_of_the_date(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    frame = ltv_frame(D, 200)
    path = parquet(frame, tmp_path)
    _by_part(pg_uri, pg_schema, path, 2, "crashed", [0])  # its worker died before the rest
    [staging, log] = sorted(n for n in staging_tables(pg_uri, pg_schema) if not n.endswith("_pkey"))
    assert log == f"{staging}_log"  # the run's staging table and its log of the parts
    load.load_partition(pg_uri, path, D, schema=pg_schema, run_id="next")
    assert staging_tables(pg_uri, pg_schema) == []
    assert_holds(pg_uri, pg_schema, frame)
    # The crashed run's parts now find their staging table gone: an error, not a half load.
    with pytest.raises(LoadError, match="is gone"):
        load.load_part(pg_uri, path, D, 1, 2, schema=pg_schema, run_id="crashed")
    assert_holds(pg_uri, pg_schema, frame)


# -- types and data checks ---------------------------------------------------------------------


def test_every_type_round_trips_exactly(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    ts = datetime(2025, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    edge = pl.DataFrame(
        {
            "as_of": [D] * 5,
            "customer_id": ["007", "7", "Zürich 😀", "日本語", "a'b\"c\\d"],
            "signup_date": [date(1900, 1, 1), date(2024, 2, 29), D, date(9999, 12, 31), D],
            "country": ["DE", None, "", "Ελλάδα", "tab\there"],
            "first_order_at": [ts, None, datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC), ts, None],
            "last_order_at": [
                ts,
                None,
                datetime(1970, 1, 1, tzinfo=UTC),
                ts + timedelta(microseconds=-1),
                None,
            ],
            "orders_count": [2_147_483_647, 0, 1, -2_147_483_648, 0],
            "total_revenue": [
                Decimal("9999999999999999.99"),
                Decimal("0.01"),
                Decimal("0.00"),
                Decimal("-9999999999999999.99"),
                Decimal("12.30"),
            ],
            "avg_order_value": [0.1, None, 1 / 3, 1e308, float("inf")],
            "frequency": [0, None, 1, 2_147_483_647, None],
            "recency_days": [0, None, 5, 7, None],
            "t_days": [1, None, 5, 7, None],
            "monetary_value": [0.0, None, 5e-324, -1.5, None],
            "p_alive": [1.0, None, 0.999999999999, 2**-30, None],
            "expected_purchases": [3.25, None, 0.0, 123456.789, None],
            "predicted_clv": [Decimal("0.01"), None, Decimal("9999999999999999.99"), Decimal("-0.01"), None],
        },
        schema=OUTPUT_SCHEMA,
    )
    load.load_partition(pg_uri, parquet(edge, tmp_path), D, schema=pg_schema, run_id="types")
    assert_holds(pg_uri, pg_schema, edge)


def test_other_arrow_encodings_are_cast_to_the_target_types(pg_uri: str, pg_schema: str) -> None:
    """large_string / string_view / dictionary ids, decimal(38,2) money, ns timestamps."""
    frame = ltv_frame(D, 50)
    arrow = frame.to_arrow().cast(output_arrow_schema())
    arrow = arrow.set_column(1, "customer_id", arrow["customer_id"].cast(pa.string_view()))
    arrow = arrow.set_column(3, "country", arrow["country"].dictionary_encode())
    arrow = arrow.set_column(7, "total_revenue", arrow["total_revenue"].cast(pa.decimal128(38, 2)))
    arrow = arrow.set_column(4, "first_order_at", arrow["first_order_at"].cast(pa.timestamp("ns", "UTC")))
    load.load_partition(pg_uri, arrow.to_reader(), D, schema=pg_schema, run_id="cast")
    assert_holds(pg_uri, pg_schema, frame)


@pytest.mark.parametrize(
    ("value", "why"),
    [(Decimal("10000000000000000.00"), "10000000000000000.000"), (Decimal("1.005"), "1.005")],
)
def test_money_that_does_not_fit_numeric_18_2_names_the_customer(
    pg_uri: str, pg_schema: str, tmp_path: Path, value: Decimal, why: str
) -> None:
    before = ltv_frame(D, 10)
    load.load_partition(pg_uri, parquet(before, tmp_path), D, schema=pg_schema, run_id="ok")
    bad = ltv_frame(D, 10).with_columns(
        total_revenue=pl.when(pl.col("customer_id") == "a000007")
        .then(pl.lit(value, pl.Decimal(38, 3)))
        .otherwise(pl.col("total_revenue").cast(pl.Decimal(38, 3)))
    )
    with pytest.raises(LoadError, match=rf"total_revenue of customer 'a000007' is {why}, which does not fit"):
        load.load_partition(pg_uri, parquet(bad, tmp_path), D, schema=pg_schema, run_id="bad")
    assert_holds(pg_uri, pg_schema, before)
    assert staging_tables(pg_uri, pg_schema) == []


def test_parallel_copy_streams_load_every_row_group_once(pg_uri: str, pg_schema: str, tmp_path: Path) -> None:
    frame = ltv_frame(D, 1000)
    path = tmp_path / "groups.parquet"
    frame.write_parquet(path, row_group_size=90)  # 12 row groups over 3 streams
    assert pa.parquet.ParquetFile(path).metadata.num_row_groups == 12
    with psycopg.connect(pg_uri) as conn:
        before = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
    done = load.load_partition(pg_uri, path, D, schema=pg_schema, run_id="streams", streams=3)
    assert (done.rows, done.replaced_rows) == (1000, 0)
    assert_holds(pg_uri, pg_schema, frame)
    assert staging_tables(pg_uri, pg_schema) == []
    with psycopg.connect(pg_uri) as conn:  # every stream's connection is closed
        assert conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone() == before


def test_a_bad_row_in_one_copy_stream_names_its_row_and_changes_nothing(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    earlier = D - timedelta(days=1)  # another date: the bad load makes a new partition (streams)
    good = ltv_frame(earlier, 10, tag="g")
    load.load_partition(pg_uri, parquet(good, tmp_path), earlier, schema=pg_schema, run_id="ok")
    bad = ltv_frame(D, 1000).with_columns(
        as_of=pl.when(pl.col("customer_id") == "a000950").then(pl.lit(D1)).otherwise(pl.col("as_of"))
    )
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path, row_group_size=100)
    with pytest.raises(LoadError, match=r"row 951 of .*bad\.parquet has as_of 2025-02-01"):
        load.load_partition(pg_uri, path, D, schema=pg_schema, run_id="bad", streams=4)
    assert_holds(pg_uri, pg_schema, good)
    assert staging_tables(pg_uri, pg_schema) == []


def test_rows_of_another_date_or_missing_columns_are_refused(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    with pytest.raises(LoadError, match="has as_of 2025-02-01 but the load is for 2025-01-31"):
        load.load_partition(pg_uri, parquet(ltv_frame(D1, 5), tmp_path), D, schema=pg_schema, run_id="x")
    no_p_alive = parquet(ltv_frame(D, 5).drop("p_alive"), tmp_path)
    with pytest.raises(LoadError, match=r"missing: \['p_alive'\]"):
        load.load_partition(pg_uri, no_p_alive, D, schema=pg_schema, run_id="x")
    with pytest.raises(LoadError, match="cannot read the Parquet file"):
        load.load_partition(pg_uri, tmp_path / "missing.parquet", D, schema=pg_schema, run_id="x")
    assert staging_tables(pg_uri, pg_schema) == []


# -- DDL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["public; DROP TABLE x", 'a"b', "münchen", "1abc", "", "a" * 64])
def test_schema_names_that_are_not_plain_identifiers_are_rejected(pg_uri: str, schema: str) -> None:
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        ddl.create_tables(pg_uri, schema=schema)
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        load.load_partition(pg_uri, pa.table({}).to_reader(), D, schema=schema, run_id="x")
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        start_run(pg_uri, schema=schema, run_id="x", as_of=D, input="/in", started_at=datetime.now(UTC))


def test_table_names_too_long_for_derived_names_are_rejected(pg_uri: str) -> None:
    with pytest.raises(ConfigError, match=f"at most {ddl.MAX_TABLE_NAME} are allowed"):
        ddl.create_tables(pg_uri, table="t" * (ddl.MAX_TABLE_NAME + 1))


def test_concurrent_first_time_ddl_does_not_fail(pg_uri: str, pg_schema: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def create() -> None:
        start.wait()
        try:
            ddl.create_tables(pg_uri, schema=pg_schema)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(pg_uri) as conn:
        kinds = conn.execute(
            "SELECT relname::text, relkind::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE nspname = %s AND relkind IN ('p', 'r') ORDER BY 1",
            (pg_schema,),
        ).fetchall()
    assert kinds == [("customer_ltv", "p"), ("customer_ltv_runs", "r")]


def test_an_existing_table_with_another_layout_is_refused(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_uri) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.customer_ltv (x int)").format(sql.Identifier(pg_schema)))
    with pytest.raises(LoadError, match="exists but is not partitioned by LIST"):
        load.load_partition(pg_uri, parquet(ltv_frame(D, 3), tmp_path), D, schema=pg_schema, run_id="x")


# -- secrets ---------------------------------------------------------------------------------------

PASSWORD = "Sup3r/Secret!pw"  # '/' is percent-encoded in the URI: both forms must stay hidden
PASSWORD_IN_URI = "Sup3r%2FSecret%21pw"


@pytest.fixture
def password_role(pg_uri: str) -> Iterator[str]:
    """A login role with PASSWORD (and no rights beyond connecting); dropped afterwards."""
    role = f"fastclv_pw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), PASSWORD))
    yield role
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def uri_with_password(pg_uri: str, role: str, port: int | None = None) -> str:
    base = conninfo_to_dict(pg_uri)
    return (
        f"postgresql://{role}:{PASSWORD_IN_URI}@{base.get('host', '127.0.0.1')}:"
        f"{port or base.get('port', 5432)}/{base['dbname']}"
    )


def assert_no_password(text: str) -> None:
    assert PASSWORD not in text
    assert PASSWORD_IN_URI not in text
    assert "Secret" not in text


def test_passwords_never_reach_errors_or_logs(
    pg_uri: str, pg_schema: str, password_role: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = parquet(ltv_frame(D, 20), tmp_path)
    failures: list[FastclvError] = []

    # 1. Nobody listens on the port: a retryable error.
    unreachable = uri_with_password(pg_uri, password_role, port=localpg._free_port())
    with pytest.raises(TransientError, match="Connection refused") as refused:
        load.load_partition(unreachable, source, D, schema=pg_schema, run_id="refused")
    failures.append(refused.value)

    # 2. Connected (trust or password auth), but not allowed to create the schema.
    uri = uri_with_password(pg_uri, password_role)
    with pytest.raises(LoadError, match="permission denied") as denied:
        load.load_partition(uri, source, D, schema=pg_schema, run_id="denied")
    failures.append(denied.value)
    with pytest.raises(LoadError) as ledger:
        start_run(uri, schema=pg_schema, run_id="x", as_of=D, input=uri, started_at=datetime.now(UTC))
    failures.append(ledger.value)

    # 3. Allowed: a successful load and a failed run whose error text quotes the URI.
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            sql.SQL("GRANT ALL ON SCHEMA {} TO {}").format(
                sql.Identifier(pg_schema), sql.Identifier(password_role)
            )
        )
    load.load_partition(uri, source, D, schema=pg_schema, run_id="works")
    start_run(uri, schema=pg_schema, run_id="leaky", as_of=D, input=uri, started_at=datetime.now(UTC))
    finish_run(
        uri,
        schema=pg_schema,
        run_id="leaky",
        status="failed",
        finished_at=datetime.now(UTC),
        error=f"could not reach {uri} (password {PASSWORD})",
    )

    for failure in failures:
        assert "Hint:" in str(failure)
        assert_no_password(error_chain(failure))
    assert_no_password(caplog.text)
    with psycopg.connect(pg_uri) as conn:
        stored = conn.execute(
            sql.SQL("SELECT input || error FROM {}.customer_ltv_runs").format(sql.Identifier(pg_schema))
        ).fetchall()
    assert_no_password(str(stored))


def wait_for_scram(uri: str) -> None:
    """Wait until the reloaded pg_hba.conf asks this role for its password (SIGHUP is async)."""
    wrong = uri.replace("Sup3r", "Wait")
    for _ in range(50):
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise AssertionError("pg_hba.conf reload did not take effect")


def test_a_wrong_password_against_scram_auth_is_not_echoed(
    local_postgres: localpg.LocalPostgres | None,
    pg_uri: str,
    pg_schema: str,
    password_role: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if local_postgres is None:
        pytest.skip("needs the session's own cluster to edit pg_hba.conf (FASTCLV_TEST_PG_URI is set)")
    hba = local_postgres.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {password_role} 127.0.0.1/32 scram-sha-256\n{original}")
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    wait_for_scram(uri_with_password(pg_uri, password_role))
    try:
        wrong = uri_with_password(pg_uri, password_role).replace("Sup3r", "Wr0ng")
        with pytest.raises(LoadError, match="password authentication failed") as caught:
            load.load_partition(wrong, parquet(ltv_frame(D, 3), tmp_path), D, schema=pg_schema, run_id="x")
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    assert "Hint: check the user name and password" in str(caught.value)
    text = error_chain(caught.value) + caplog.text
    assert "Wr0ng" not in text
    assert_no_password(text)


@given(password=st.text(min_size=1, max_size=20), noise=st.text(max_size=20))
def test_scrubbing_removes_any_password_in_any_echoed_form(password: str, noise: str) -> None:
    """Whatever the password, neither its URI form nor its plain form survives ``scrub``."""
    encoded = quote(password, safe="")
    uri = f"postgresql://app:{encoded}@db.example:5432/crm?sslmode=require"
    echoed = f"{noise} failed for {uri}: password {password!s} / {encoded} {noise}"
    scrubbed = redact(echoed, pg_uri=uri)
    assert password not in scrubbed
    assert encoded not in scrubbed


# -- the run ledger --------------------------------------------------------------------------------


def ledger(pg_uri: str, schema: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(pg_uri) as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = cur.execute(
            sql.SQL("SELECT * FROM {}.customer_ltv_runs").format(sql.Identifier(schema))
        ).fetchall()
    return {row["run_id"]: row for row in rows}


def test_the_ledger_records_succeeded_and_failed_runs(pg_uri: str, pg_schema: str) -> None:
    t0 = datetime(2025, 2, 1, 0, 5, 0, 123456, tzinfo=UTC)
    counts = {
        "customers": {
            "read": 10,
            "valid": 8,
            "rejected": 1,
            "rejected_by_reason": {"bad_date": 1},
            "duplicates_dropped": 1,
            "after_as_of": 0,
        }
    }
    start_run(pg_uri, schema=pg_schema, run_id="good", as_of=D, input="/data/in", started_at=t0)
    assert ledger(pg_uri, pg_schema)["good"]["status"] == "running"
    finish_run(
        pg_uri,
        schema=pg_schema,
        run_id="good",
        status="succeeded",
        finished_at=t0 + timedelta(seconds=3),
        counts=counts,
        output_rows=8,
        model={"bgnbd": {"r": 0.24, "alpha": 4.4}, "loglik": float("nan")},
        timings={"extract": 0.5},
    )
    start_run(pg_uri, schema=pg_schema, run_id="bad", as_of=D1, input="s3://b/p/", started_at=t0)
    finish_run(
        pg_uri,
        schema=pg_schema,
        run_id="bad",
        status="failed",
        finished_at=t0 + timedelta(seconds=1),
        error="orders.csv lacks column status. Hint: ...",
    )
    # A run that failed before it could be started still ends up as one row.
    finish_run(
        pg_uri,
        schema=pg_schema,
        run_id="early",
        status="failed",
        finished_at=t0,
        error="boom",
        as_of=D,
        input="/x",
        started_at=t0,
    )

    runs = ledger(pg_uri, pg_schema)
    assert runs["good"] == {
        "run_id": "good",
        "as_of": D,
        "started_at": t0,
        "finished_at": t0 + timedelta(seconds=3),
        "status": "succeeded",
        "input": "/data/in",
        "counts": counts,
        "output_rows": 8,
        "model": {"bgnbd": {"r": 0.24, "alpha": 4.4}, "loglik": None},
        "timings": {"extract": 0.5},
        "error": None,
        "owner": "task",  # started without holding its row: see tests/test_ledger.py
    }
    bad = runs["bad"]
    assert (bad["status"], bad["as_of"], bad["input"], bad["error"], bad["output_rows"]) == (
        "failed",
        D1,
        "s3://b/p/",
        "orders.csv lacks column status. Hint: ...",
        None,
    )
    assert (runs["early"]["status"], runs["early"]["as_of"], runs["early"]["error"]) == ("failed", D, "boom")
    assert len(runs) == 3

    with pytest.raises(ConfigError, match="run status 'done'"):
        finish_run(pg_uri, schema=pg_schema, run_id="x", status="done", finished_at=t0)


def test_throughput_is_logged(
    pg_uri: str, pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastclv.load")
    started = time.perf_counter()
    result = load.load_partition(
        pg_uri, parquet(ltv_frame(D, 20_000), tmp_path), D, schema=pg_schema, run_id="t"
    )
    assert result.rows == 20_000
    assert 0 < result.seconds <= time.perf_counter() - started
    assert f"loaded 20000 rows into {pg_schema}.customer_ltv partition customer_ltv_p20250131" in caplog.text
    assert "rows/s" in caplog.text
