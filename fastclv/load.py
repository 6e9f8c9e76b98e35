"""Load the output into PostgreSQL: ADBC binary COPY, atomic per as-of date at every isolation level.

``customer_ltv`` is partitioned by LIST (as_of), one partition per as-of date D. A load of D:

* **D has no partition yet** (the daily case): it creates a standalone table
  ``<table>_s<yyyymmdd>_<id>`` with the same columns and ``CHECK (as_of = D)`` (so ATTACH needs
  no validation scan), streams the Parquet batches into it with ``adbc_ingest`` (binary COPY),
  builds its primary key, and attaches it as the partition of D, all in one transaction (ATTACH
  is a catalog change, outside snapshots: rows committed before it would show to a REPEATABLE
  READ snapshot taken in between). ATTACH takes a SHARE UPDATE EXCLUSIVE lock on the parent, at
  the end of the transaction: readers are never blocked.
* **D is loaded already** (a rerun, a backfill): one transaction deletes the rows of D and
  COPYs the new ones into the same partition. MVCC then gives every reader, at every isolation
  level, the old rows or the new ones: a REPEATABLE READ or SERIALIZABLE transaction whose
  snapshot predates the reload keeps seeing the old rows (a detach-and-attach swap would show it
  none, as TRUNCATE does), and readers never wait. A ``VACUUM (ANALYZE)`` of the partition follows,
  so the next reload reuses the old rows' space. The cost, measured at 1M rows
  (``benchmarks/reload_options.py``, figures in ``benchmarks/ANALYSIS.md``): a reload takes
  about 1.3x the swap's time (the primary key is maintained row by row, then the vacuum), and a
  reloaded partition holds about twice its live size.

Both paths hold a per-(table, date) advisory lock, so two loads of one date serialise; a load
that finds the partition created meanwhile by another one replaces its rows the same way.

The table and the run ledger are created by :mod:`fastclv.ddl` when missing; the run ledger
is written by :mod:`fastclv.ledger`; connections and error mapping are :mod:`fastclv.db`'s.

The load needs a direct (or session-pooled) connection: a staging table is marked as
"in use" by a session-level advisory lock, which is how a later run tells a crashed run's
leftover table from one that is still loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastclv import storage
from fastclv.contract import OUTPUT_PG_TYPES, OUTPUT_SCHEMA, output_arrow_schema
from fastclv.db import close, connect, driver_text, map_error, qualified, quote
from fastclv.ddl import check_names, ensure_tables, table_ddl
from fastclv.errors import ConfigError, FastclvError, LoadError, TransientError
from fastclv.secrets import redact

logger = logging.getLogger("fastclv.load")

#: Rows per Arrow batch when reading a Parquet file.
BATCH_ROWS = 65_536
_MONEY_COLUMNS = tuple(name for name, pg_type in OUTPUT_PG_TYPES.items() if pg_type.startswith("numeric"))
_MONEY_LIMIT = Decimal(10) ** 16  # numeric(18,2) holds |x| < 10^16
_STAGING_COMMENT = "fastclv staging table"


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_partition` did."""

    #: The partitioned table, schema-qualified (``public.customer_ltv``).
    table: str
    #: The partition now holding the rows of the as-of date (``customer_ltv_p20250131``).
    partition: str
    rows: int
    seconds: float
    #: Rows of the date the load replaced (0 for a date loaded the first time).
    replaced_rows: int = 0


def load_partition(
    pg_uri: str,
    source: str | Path | pa.RecordBatchReader,
    as_of: date,
    *,
    schema: str = "public",
    table: str = "customer_ltv",
    lock_timeout_s: float = 10.0,
    run_id: str,
    storage_options: Mapping[str, str] | None = None,
    streams: int = 1,
) -> LoadResult:
    """Replace the rows of ``as_of`` in ``schema.table`` by ``source``, atomically.

    Args:
        pg_uri: libpq URI of the target database (may hold a password; never logged).
        source: the output Parquet file (local path or object-storage URI) or an Arrow
            reader with the :data:`~fastclv.contract.OUTPUT_SCHEMA` columns.
        as_of: the date D; every row must have ``as_of = D``.
        schema: PostgreSQL schema of the table (created when missing).
        table: the partitioned output table (created when missing).
        lock_timeout_s: how long the swap waits for locks before giving up (retryable).
        run_id: the run's id (names the staging table; recorded in its comment).
        storage_options: options for an object-storage ``source`` (see :mod:`fastclv.storage`).
        streams: COPY streams into a new partition's staging table, each on its own connection
            over its own row groups of a local ``source`` (1: one stream; a reload of a date
            always copies in one stream, inside its one transaction).

    Raises:
        TransientError: connection trouble, lock timeout, deadlock: retry later.
        LoadError: anything else (bad data, permissions); the table is left untouched.
        ConfigError: invalid schema or table name.
    """
    names = _Names.build(schema, table, as_of, run_id)
    if lock_timeout_s <= 0:
        raise ConfigError(f"lock_timeout_s must be > 0, got {lock_timeout_s}.")
    batches = _Batches.open(source, as_of, names.display, storage_options)
    started = time.perf_counter()
    try:
        conn = connect(pg_uri, names.display)
    except FastclvError:
        batches.close()
        raise
    loader = _Loader(conn, names, as_of, lock_timeout_s, run_id, batches, pg_uri, streams=streams)
    failure: FastclvError | None = None
    succeeded = False
    try:
        loader.run()
        succeeded = True
    except pg.Error as exc:
        failure = loader.explain(exc)
    except FastclvError as exc:
        failure = exc
    finally:
        if not succeeded:
            loader.drop_staging()
        close(conn)
        batches.close()
    if failure is not None:
        raise failure
    seconds = time.perf_counter() - started
    logger.info(
        "loaded %d rows into %s partition %s in %.2f s (%.0f rows/s)",
        batches.rows,
        names.display,
        names.partition,
        seconds,
        batches.rows / seconds if seconds > 0 else 0.0,
    )
    return LoadResult(
        names.display, loader.partition or names.partition, batches.rows, seconds, loader.replaced_rows
    )


# -- the load by part (the sharded plan's mapped load) ---------------------------------------


def _loaded_by(as_of: date, run_id: str) -> str:
    return f"fastclv partition of {as_of.isoformat()}, loaded by run {run_id}"


def _by_part(
    pg_uri: str, as_of: date, schema: str, table: str, run_id: str, lock_timeout_s: float, work: Any
) -> Any:
    """Run ``work(loader)`` on a connection of its own, mapping driver errors as the load does."""
    if lock_timeout_s <= 0:
        raise ConfigError(f"lock_timeout_s must be > 0, got {lock_timeout_s}.")
    names = _Names.build(schema, table, as_of, run_id, per_run=True)
    conn = connect(pg_uri, names.display)
    loader = _Loader(conn, names, as_of, lock_timeout_s, run_id, None, pg_uri, by_part=True)
    try:
        return work(loader)
    except pg.Error as exc:
        with contextlib.suppress(pg.Error):
            conn.rollback()
        raise loader.explain(exc) from None
    finally:
        close(conn)


def begin_load_by_part(
    pg_uri: str,
    as_of: date,
    *,
    schema: str = "public",
    table: str = "customer_ltv",
    run_id: str,
    lock_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Prepare a load in parts (each its own task): the run's staging table and the parts' log.

    Creates the tables when missing and drops the leftovers of crashed loads of the date, as
    :func:`load_partition` does; the staging table and log of an earlier attempt of the same
    run are replaced (its parts are loaded again). Then :func:`load_part` for each part, in
    any order and on any worker, and :func:`finish_load_by_part` once.
    """

    def work(loader: _Loader) -> dict[str, Any]:
        n = loader.names
        loader._step("ddl", "creating", loader._ensure)
        loader._step("cleanup", "dropping leftovers of crashed loads of", loader._drop_strays)
        loader.phase = "creating the staging table for"
        loader._hold_staging(shared=False)  # no task of this run's load is still writing into it
        for name in (n.staging, n.log):  # an earlier attempt of this run: start again
            loader._execute(f"DROP TABLE IF EXISTS {qualified(n.schema, name)}")
        loader._create_staging()
        comment = f"{_STAGING_COMMENT} of run {loader.run_id} (its parts)".replace("'", "''")
        loader._execute(
            f"CREATE TABLE {qualified(n.schema, n.log)} (part integer PRIMARY KEY, row_count bigint NOT NULL)"
        )
        loader._execute(f"COMMENT ON TABLE {qualified(n.schema, n.log)} IS '{comment}'")
        loader.conn.commit()
        return {"table": n.display, "staging": n.staging}

    result: dict[str, Any] = _by_part(pg_uri, as_of, schema, table, run_id, lock_timeout_s, work)
    return result


def load_part(
    pg_uri: str,
    source: str | Path,
    as_of: date,
    part: int,
    parts: int,
    *,
    schema: str = "public",
    table: str = "customer_ltv",
    run_id: str,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """COPY part ``part`` of ``parts`` of the output file into the run's staging table.

    A part is a run of the file's consecutive row groups. Its COPY and its line in the log
    commit together: a retried part that had committed finds its line and COPYs nothing, a
    part that had not left nothing behind. Returns ``{"part", "rows", "seconds"}``.
    """
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), not {part}")
    started = time.perf_counter()
    where = f"{schema}.{table}"
    whole = _Batches.open(source, as_of, where, storage_options)

    def work(loader: _Loader) -> dict[str, Any]:
        n = loader.names
        loader.phase = "copying a part into the staging table for"
        # While it copies, the staging table is in use: a load of the date that starts meanwhile
        # does not take it for a crashed one.
        loader._hold_staging(shared=True)  # the parts copy side by side
        if loader._query("SELECT to_regclass($1) IS NULL", (qualified(n.schema, n.log),))[0][0]:
            raise LoadError(
                f"the staging table {n.schema}.{n.staging} of run {run_id} is gone (dropped by a "
                f"later load of {as_of}?), so part {part} cannot be loaded into {n.display}; the "
                "table is unchanged. Hint: run the load again from its first task (load_prepare)."
            )
        done = _logged(loader, part)
        if done is not None:
            logger.info("load: part %d of %d was loaded already (%d rows; a retry)", part, parts, done)
            return {"part": part, "rows": done, "seconds": 0.0}
        batches = loader.batches = whole.part(part, parts)
        with loader.conn.cursor() as cur:
            cur.adbc_ingest(n.staging, batches.reader(), mode="append", db_schema_name=n.schema)
        try:
            log_row = f"INSERT INTO {qualified(n.schema, n.log)} VALUES ($1, $2) RETURNING part"  # noqa: S608
            loader._query(log_row, (part, batches.count))
            loader.conn.commit()
        except pg.Error as exc:
            if getattr(exc, "sqlstate", None) != "23505":
                raise
            loader.conn.rollback()  # another attempt of this part committed first: its rows stand
            return {"part": part, "rows": _logged(loader, part), "seconds": 0.0}
        return {"part": part, "rows": batches.count, "seconds": round(time.perf_counter() - started, 3)}

    try:
        result: dict[str, Any] = _by_part(pg_uri, as_of, schema, table, run_id, 10.0, work)
    finally:
        whole.close()
    return result


def output_rows(source: str | Path, storage_options: Mapping[str, str] | None = None) -> int:
    """The rows of an output Parquet file (from its footer): what a load by part must swap in."""
    batches = _Batches.open(source, date.min, "the load", storage_options)
    try:
        assert batches._parquet is not None
        return int(batches._parquet.metadata.num_rows)
    finally:
        batches.close()


def _logged(loader: _Loader, part: int) -> int | None:
    """The rows the log holds for ``part`` (None: not loaded yet)."""
    n = loader.names
    found = loader._query(f"SELECT row_count FROM {qualified(n.schema, n.log)} WHERE part = $1", (part,))  # noqa: S608
    return int(found[0][0]) if found else None


def finish_load_by_part(
    pg_uri: str,
    as_of: date,
    parts: int,
    rows: int,
    *,
    schema: str = "public",
    table: str = "customer_ltv",
    run_id: str,
    lock_timeout_s: float = 10.0,
) -> LoadResult:
    """Swap in what every part COPYed, in one transaction, as :func:`load_partition` does.

    Refuses (LoadError, the table unchanged) unless the log holds each of the ``parts`` parts
    once and ``rows`` rows in all. A retried finish whose swap had committed returns the same
    result (the partition's comment names the run).
    """
    started = time.perf_counter()

    def work(loader: _Loader) -> LoadResult:
        n = loader.names
        loader.phase = "checking the parts loaded into the staging table for"
        loader._hold_staging(shared=False)  # until the swap: no part writes, no begin replaces
        if loader._query("SELECT to_regclass($1) IS NULL", (qualified(n.schema, n.staging),))[0][0]:
            return _finished_already(loader, started)
        logged = dict(loader._query(f"SELECT part, row_count FROM {qualified(n.schema, n.log)}"))  # noqa: S608
        missing = sorted(set(range(parts)) - set(logged))
        total = sum(int(v) for v in logged.values())
        if missing or len(logged) != parts or total != rows:
            raise LoadError(
                f"the load of {as_of} into {n.display} is not complete: parts {missing or 'none'} of "
                f"{parts} are missing, {len(logged)} logged, {total} rows against the {rows} of the "
                "output. Hint: rerun the load tasks (load_prepare first); the table is unchanged."
            )
        loader.conn.commit()
        loader._step("index", "adding the primary key to the staging table for", loader._add_key)
        loader._step("swap", "swapping in the new partition of", loader._swap)
        if loader.replaced:
            loader._step("vacuum", "vacuuming the reloaded partition of", loader._vacuum)
        seconds = time.perf_counter() - started
        return LoadResult(n.display, loader.partition or n.partition, rows, seconds, loader.replaced_rows)

    result: LoadResult = _by_part(pg_uri, as_of, schema, table, run_id, lock_timeout_s, work)
    return result


def abandon_load_by_part(
    pg_uri: str, as_of: date, *, schema: str = "public", table: str = "customer_ltv", run_id: str
) -> bool:
    """Drop a failed run's staging table and log of parts (best effort; never raises).

    What a run whose load by part cannot finish leaves behind, dropped at once rather than by
    the next load of the date. Skipped (False) while a task of that load still holds them.
    """
    names = _Names.build(schema, table, as_of, run_id, per_run=True)
    try:
        conn = connect(pg_uri, names.display)
    except FastclvError as exc:
        logger.warning("could not drop the staging table of run %s: %s", run_id, exc)
        return False
    loader = _Loader(conn, names, as_of, 10.0, run_id, None, pg_uri, by_part=True)
    try:
        loader._hold_staging(shared=False)
        loader._set_lock_timeout()
        for name in (names.staging, names.log):
            loader._execute(f"DROP TABLE IF EXISTS {qualified(names.schema, name)}")
        conn.commit()
        return True
    except (pg.Error, FastclvError) as exc:
        shown = redact(driver_text(exc), pg_uri=pg_uri) if isinstance(exc, pg.Error) else str(exc)
        logger.warning("could not drop the staging table %s.%s (a later load of %s will): %s",
                       names.schema, names.staging, as_of, shown)  # fmt: skip
        return False
    finally:
        close(conn)


def _finished_already(loader: _Loader, started: float) -> LoadResult:
    """The staging table is gone: the result if this run's swap committed, else a LoadError."""
    n = loader.names
    partition = loader._partition_of_date()
    comment = None
    if partition is not None:
        found = loader._query(
            "SELECT obj_description(to_regclass($1), 'pg_class')", (qualified(n.schema, partition),)
        )
        comment = found[0][0]
    if partition is None or comment != _loaded_by(loader.as_of, loader.run_id):
        raise LoadError(
            f"the staging table {n.schema}.{n.staging} of run {loader.run_id} is gone and the "
            f"partition of {loader.as_of} was not loaded by it (dropped by a later load of the "
            "date?). Hint: run the load again from its first task (load_prepare)."
        )
    count = loader._query(f"SELECT count(*) FROM {qualified(n.schema, partition)}")[0][0]  # noqa: S608
    logger.info("load: the swap of run %s had committed already (a retry)", loader.run_id)
    return LoadResult(n.display, partition, int(count), time.perf_counter() - started, 0)


@dataclass(frozen=True)
class _Names:
    """Every identifier one load uses, validated up front."""

    schema: str
    table: str
    partition: str
    staging: str
    display: str

    @classmethod
    def build(cls, schema: str, table: str, as_of: date, run_id: str, *, per_run: bool = False) -> _Names:
        """The names of one load.

        ``per_run``: the staging table is the run's (the by-part load, whose tasks must agree
        on it); else it is unique per attempt.
        """
        check_names(schema, table)
        day = f"{as_of:%Y%m%d}"
        # Recognisable per run (hash of the run id) and unique per attempt (random part).
        digest = hashlib.sha256(run_id.encode()).hexdigest()
        short = digest[:8] if per_run else digest[:4] + secrets.token_hex(2)
        return cls(
            schema=schema,
            table=table,
            partition=f"{table}_p{day}",
            staging=f"{table}_s{day}_{short}",
            display=f"{schema}.{table}",
        )

    @property
    def log(self) -> str:
        """The by-part load's log of the parts COPYed into the staging table (part, rows)."""
        return f"{self.staging}_log"

    @property
    def staging_prefix(self) -> str:
        """Prefix of every staging table of this date (ours and crashed runs')."""
        return self.staging[: -len("0123abcd")]


# -- the source ------------------------------------------------------------------------------


class _Batches:
    """The source as Arrow batches cast to the exact target types, checked on the way.

    ADBC pulls the batches from C; an exception raised here reaches us only as a generic
    driver error, so the first one is kept in :attr:`error` and re-raised by the loader.
    """

    def __init__(
        self,
        batches: Iterator[pa.RecordBatch],
        as_of: date,
        where: str,
        label: str,
        parquet: pq.ParquetFile | None = None,
        *,
        source: Path | None = None,
        start: int = 0,
    ) -> None:
        self._batches = batches
        self._parquet = parquet
        self._as_of = pa.scalar(as_of, pa.date32())
        self._where = where
        self.label = label
        self.schema = output_arrow_schema()
        #: The local file (None: an object, a URI or a reader): :meth:`split` can reopen it.
        self._source = source
        #: Rows before this stream's first one in the file (for the row numbers of errors).
        self._start = start
        self.rows = start
        self.error: Exception | None = None

    @classmethod
    def open(
        cls,
        source: str | Path | pa.RecordBatchReader,
        as_of: date,
        where: str,
        storage_options: Mapping[str, str] | None = None,
    ) -> _Batches:
        wanted = list(OUTPUT_SCHEMA)
        if isinstance(source, pa.RecordBatchReader):
            _check_columns(source.schema.names, "the given Arrow reader", where)
            return cls(iter(source), as_of, where, "the given Arrow reader")
        label = str(source)
        local: Path | None = None
        try:
            if isinstance(source, str) and storage.is_remote(source):
                parquet = pq.ParquetFile(storage.open_reader(source, storage_options))
            elif isinstance(source, str) and "://" in source:
                from pyarrow import fs

                filesystem, path = fs.FileSystem.from_uri(source)
                parquet = pq.ParquetFile(filesystem.open_input_file(path))
            else:
                parquet = pq.ParquetFile(source)
                local = Path(source)
        except (OSError, pa.ArrowException, storage.StoreError) as exc:
            raise LoadError(
                f"cannot read the Parquet file {label} to load into {where}: {exc}. "
                "Hint: check that the run's staging step wrote it."
            ) from None
        try:
            _check_columns(parquet.schema_arrow.names, label, where)
        except LoadError:
            parquet.close(force=True)
            raise
        batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted)
        return cls(batches, as_of, where, label, parquet, source=local)

    def split(self, streams: int) -> list[_Batches]:
        """The file as up to ``streams`` streams of consecutive row groups (for parallel COPYs).

        ``[self]`` when it cannot be split: one stream wanted, one row group, or not a local file.
        """
        if streams < 2 or self._parquet is None or self._source is None:
            return [self]
        meta = self._parquet.metadata
        groups = meta.num_row_groups
        if groups < 2:
            return [self]
        streams = min(streams, groups)
        cuts = [groups * k // streams for k in range(streams + 1)]
        parts = []
        for a, b in itertools.pairwise(cuts):
            start = sum(meta.row_group(g).num_rows for g in range(a))
            parquet = pq.ParquetFile(self._source)
            batches = parquet.iter_batches(
                batch_size=BATCH_ROWS, row_groups=list(range(a, b)), columns=list(OUTPUT_SCHEMA)
            )
            parts.append(
                _Batches(batches, self._as_of.as_py(), self._where, self.label, parquet, start=start)
            )
        return parts

    def part(self, part: int, parts: int) -> _Batches:
        """Part ``part`` of ``parts``: the file's row groups cut into ``parts`` consecutive runs.

        A part may hold no row group (a file of fewer row groups than parts): it is empty.
        """
        if self._parquet is None:
            raise ValueError("only a Parquet file can be loaded by part")
        meta = self._parquet.metadata
        groups = meta.num_row_groups
        a, b = groups * part // parts, groups * (part + 1) // parts
        start = sum(meta.row_group(g).num_rows for g in range(a))
        batches = self._parquet.iter_batches(
            batch_size=BATCH_ROWS, row_groups=list(range(a, b)), columns=list(OUTPUT_SCHEMA)
        )
        return _Batches(batches, self._as_of.as_py(), self._where, self.label, self._parquet, start=start)

    @property
    def count(self) -> int:
        """Rows this stream has passed on."""
        return self.rows - self._start

    def close(self) -> None:
        """Close the Parquet file, if we opened one."""
        if self._parquet is not None:
            self._parquet.close(force=True)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._checked())

    def _checked(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                out = self._prepare(batch)
                self.rows += out.num_rows
                yield out
        except Exception as exc:  # kept for the loader; ADBC only sees that the stream failed
            self.error = exc
            raise

    def _prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = batch.column("customer_id")
        arrays = []
        for target in self.schema:
            column = batch.column(target.name)
            if target.name in _MONEY_COLUMNS:
                column = self._money(column, target.name, ids)
            elif column.type != target.type:
                try:
                    column = column.cast(target.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise LoadError(
                        f"column {target.name} of {self.label} ({column.type}) cannot be "
                        f"converted to {target.type} for {self._where}: {exc}. "
                        "Hint: the file must have the contract's output schema."
                    ) from None
            if not target.nullable and column.null_count:
                at = pc.index(column.is_null(), True).as_py()
                raise LoadError(
                    f"column {target.name} is null for customer {ids[at].as_py()!r} "
                    f"(row {self.rows + at + 1} of {self.label}); {self._where} requires a "
                    "value. Hint: this is a bug upstream of the load; nothing was changed."
                )
            arrays.append(column)
        out = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        wrong = pc.not_equal(out.column("as_of"), self._as_of)
        if pc.any(wrong).as_py():
            at = pc.index(wrong, True).as_py()
            raise LoadError(
                f"row {self.rows + at + 1} of {self.label} has as_of {out.column('as_of')[at]} "
                f"but the load is for {self._as_of}; {self._where} was not changed. "
                "Hint: load each as-of date from its own output file."
            )
        return out

    def _money(self, column: pa.Array, name: str, ids: pa.Array) -> pa.Array:
        """Cast to decimal128(18,2), naming the customer whose value does not fit."""
        kind = column.type
        if pa.types.is_decimal(kind) and kind.precision <= 38:
            wide = column.cast(pa.decimal128(38, kind.scale))
            bad = pc.fill_null(pc.not_equal(wide, pc.round(wide, 2)), False)
            if kind.scale <= 21:  # else |x| < 10^(38-scale) <= 10^17: checked by the cast
                limit = pa.scalar(_MONEY_LIMIT, pa.decimal128(38, kind.scale))
                bad = pc.or_(bad, pc.fill_null(pc.greater_equal(pc.abs(wide), limit), False))
            if pc.any(bad).as_py():
                at = pc.index(bad, True).as_py()
                raise LoadError(
                    f"{name} of customer {ids[at].as_py()!r} is {wide[at].as_py()}, which does "
                    f"not fit numeric(18,2) (at most 16 digits before the point, 2 after) in "
                    f"{self._where}. Hint: check the input amounts; nothing was loaded."
                )
        try:
            return column.cast(pa.decimal128(18, 2))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LoadError(
                f"column {name} of {self.label} ({kind}) cannot be converted to numeric(18,2) "
                f"for {self._where}: {exc}. Hint: money must be decimal(18,2) in the output file."
            ) from None


def _check_columns(names: list[str], label: str, where: str) -> None:
    missing = [n for n in OUTPUT_SCHEMA if n not in names]
    extra = [n for n in names if n not in OUTPUT_SCHEMA]
    if missing or extra:
        raise LoadError(
            f"{label} does not have the output columns of {where} (missing: {missing or 'none'}; "
            f"unexpected: {extra or 'none'}). Hint: load the customer_ltv.parquet the run staged."
        )


# -- the load --------------------------------------------------------------------------------


@dataclass
class _Loader:
    """One load's steps on one connection; :attr:`phase` says where a failure happened."""

    conn: pg.Connection
    names: _Names
    as_of: date
    lock_timeout_s: float
    run_id: str
    #: The rows to COPY (None: a step of the by-part load that copies nothing).
    batches: _Batches | None
    pg_uri: str = field(repr=False)
    #: COPY streams into a new partition's staging table (each on its own connection).
    streams: int = 1
    #: A new date's load in one transaction, committed by the swap (one COPY stream).
    one_transaction: bool = False
    phase: str = "preparing"
    #: A step of the by-part load (:func:`begin_load_by_part`): the swap also drops the log.
    by_part: bool = False
    staging_created: bool = False
    #: The partition the rows went into, and whether they replaced rows in place.
    partition: str | None = None
    replaced: bool = False
    replaced_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        """Every step of the load, each in its own transaction."""
        self._step("ddl", "creating", self._ensure)
        self._step("cleanup", "dropping leftovers of crashed loads of", self._drop_strays)
        if self._partition_of_date() is not None:
            self._step("replace", "replacing the rows of", self._replace)
            if self.replaced:
                self._step("vacuum", "vacuuming the reloaded partition of", self._vacuum)
                logger.debug("load phases for %s (seconds): %s", self.names.display, self.timings)
                return
        # One COPY stream: the new date's table, its rows, its key and the ATTACH in one
        # transaction, so that a REPEATABLE READ snapshot taken before the load never sees them
        # (ATTACH is a catalog change, outside snapshots; rows committed before it would show).
        # Several streams commit on their own connections first.
        self.one_transaction = self.streams < 2
        self._step("create", "creating the staging table for", self._create_staging)
        self._step("copy", "copying rows into the staging table for", self._copy)
        self._step("index", "adding the primary key to the staging table for", self._add_key)
        self._step("swap", "swapping in the new partition of", self._swap)
        logger.debug("load phases for %s (seconds): %s", self.names.display, self.timings)

    def _step(self, key: str, phase: str, action: Any) -> None:
        self.phase = phase
        started = time.perf_counter()
        action()
        self.timings[key] = round(time.perf_counter() - started, 4)

    def _execute(self, sql: str) -> None:
        """Run a statement without a result set (DDL)."""
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def _query(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and fetch all of its rows."""
        with self.conn.cursor() as cur:
            cur.execute(sql, parameters=params)
            return list(cur.fetchall())

    def _lock_key(self, kind: str, name: str) -> str:
        return f"fastclv:{kind}:{self.names.schema}.{name}"

    def _set_lock_timeout(self) -> None:
        millis = max(1, round(self.lock_timeout_s * 1000))
        self._query("SELECT set_config('lock_timeout', $1, true)", (f"{millis}ms",))

    def _ensure(self) -> None:
        ensure_tables(self.conn, self.names.schema, self.names.table, None)

    def _drop_strays(self) -> None:
        """Drop staging tables of this date whose loading session is gone (crashed runs)."""
        n = self.names
        strays = self._query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE s.nspname = $1 AND c.relkind = 'r' AND starts_with(c.relname::text, $2) "
            "AND obj_description(c.oid, 'pg_class') LIKE $3",
            (n.schema, n.staging_prefix, _STAGING_COMMENT + "%"),
        )
        self.conn.commit()
        for (name,) in strays:
            # A by-part load's log is in use while its staging table is (one lock for both).
            key = self._lock_key("staging", name.removesuffix("_log"))
            got = self._query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", (key,))
            if not got[0][0]:
                continue  # its load is still running
            try:
                self._set_lock_timeout()
                self._execute(f"DROP TABLE IF EXISTS {qualified(n.schema, name)}")
                self.conn.commit()
                logger.info("dropped %s.%s, left over by a crashed load", n.schema, name)
            except pg.Error as exc:  # best effort: a later load tries again
                self.conn.rollback()
                logger.warning(
                    "could not drop %s.%s, left over by a crashed load: %s",
                    n.schema,
                    name,
                    redact(driver_text(exc), pg_uri=self.pg_uri),
                )
            finally:  # session-level advisory locks survive a rollback: release it
                self._query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", (key,))
                self.conn.commit()

    def _hold_staging(self, *, shared: bool) -> None:
        """By part: hold the staging table's in-use lock for this session, or fail (retryable).

        Parts share it while they COPY; the begin and the finish hold it alone, so neither
        replaces nor swaps a staging table while a part still writes into it. A load of the
        date that starts meanwhile (:meth:`_drop_strays`) leaves a held table alone.
        """
        kind = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        got = self._query(
            f"SELECT {kind}(hashtextextended($1, 0))", (self._lock_key("staging", self.names.staging),)
        )
        self.conn.commit()
        if not got[0][0]:
            raise TransientError(
                f"the staging table {self.names.schema}.{self.names.staging} of run {self.run_id} is "
                f"in use by another task of the same load of {self.as_of} (a part still copying, "
                "or an earlier attempt of this task). Hint: the retry waits for it to end."
            )

    def _create_staging(self) -> None:
        n = self.names
        # A session-level lock, held until we disconnect, marks the table as in use.
        self._query(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            (self._lock_key("staging", n.staging),),
        )
        day = self.as_of.isoformat()
        check = f"CONSTRAINT as_of_is_partition_date CHECK (as_of = DATE '{day}')"
        self._execute(table_ddl(n.schema, n.staging, (check,)))
        comment = f"{_STAGING_COMMENT} of run {self.run_id}".replace("'", "''")
        self._execute(f"COMMENT ON TABLE {qualified(n.schema, n.staging)} IS '{comment}'")
        if self.one_transaction:
            return  # rolled back with the rest on a failure: nothing to drop
        self.conn.commit()
        self.staging_created = True

    def _copy(self) -> None:
        assert self.batches is not None
        parts = self.batches.split(self.streams)
        if len(parts) == 1:
            with self.conn.cursor() as cur:
                cur.adbc_ingest(
                    self.names.staging, self.batches.reader(), mode="append", db_schema_name=self.names.schema
                )
            if not self.one_transaction:
                self.conn.commit()
            return
        # Several streams, each COPYing its row groups on its own connection; the staging table
        # is this connection's (created and committed; ours to drop if a stream fails).
        try:
            with ThreadPoolExecutor(len(parts), thread_name_prefix="fastclv-copy") as pool:
                for done in [pool.submit(self._copy_part, part) for part in parts]:
                    done.result()
        finally:
            for part in parts:
                part.close()
        self.batches.rows = sum(part.count for part in parts)

    def _copy_part(self, part: _Batches) -> None:
        """One stream of :meth:`_copy`, committed on a connection of its own."""
        conn = connect(self.pg_uri, self.names.display)
        try:
            with conn.cursor() as cur:
                cur.adbc_ingest(
                    self.names.staging, part.reader(), mode="append", db_schema_name=self.names.schema
                )
            conn.commit()
        except pg.Error:
            if part.error is not None and self.batches is not None:  # the data: :meth:`explain` says
                self.batches.error = part.error
            raise
        finally:
            close(conn)

    def _add_key(self) -> None:
        n = self.names
        if (
            self.by_part
            and self._query(
                "SELECT to_regclass($1) IS NOT NULL", (qualified(n.schema, n.staging + "_pkey"),)
            )[0][0]
        ):
            self.conn.commit()  # a retried finish: the key was built (and committed) before
            return
        self._execute(
            f"ALTER TABLE {qualified(n.schema, n.staging)} ADD CONSTRAINT {quote(n.staging + '_pkey')} "
            "PRIMARY KEY (as_of, customer_id)"
        )
        if not self.one_transaction:
            self.conn.commit()

    def _partition_of_date(self) -> str | None:
        """The name of the partition holding D, if there is one (any name: found by its bound)."""
        n = self.names
        self._query("SELECT set_config('DateStyle', 'ISO, YMD', true)")  # for pg_get_expr
        found = self._query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass($1) AND pg_get_expr(c.relpartbound, c.oid) = $2",
            (qualified(n.schema, n.table), f"FOR VALUES IN ('{self.as_of.isoformat()}')"),
        )
        return found[0][0] if found else None

    def _lock_date(self) -> None:
        """Set the transaction's lock timeout and take the per-(table, date) lock of every load of D."""
        self._set_lock_timeout()
        self._query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            (self._lock_key("swap", f"{self.names.table}:{self.as_of.isoformat()}"),),
        )

    def _replace(self) -> None:
        """D is loaded already: delete its rows and COPY the new ones, in one transaction."""
        self._lock_date()
        partition = self._partition_of_date()
        if partition is None:  # dropped meanwhile (by hand): load it as a new date
            self.conn.rollback()
            return
        n = self.names
        assert self.batches is not None
        self.replaced_rows = self._delete_all(qualified(n.schema, partition))
        with self.conn.cursor() as cur:
            cur.adbc_ingest(partition, self.batches.reader(), mode="append", db_schema_name=n.schema)
        self.conn.commit()
        self.partition, self.replaced = partition, True

    def _delete_all(self, target: str) -> int:
        """Delete every row of a partition (MVCC: older snapshots still see them); how many."""
        gone = self._query(f"WITH gone AS (DELETE FROM {target} RETURNING 1) SELECT count(*) FROM gone")  # noqa: S608
        return int(gone[0][0])

    def _vacuum(self) -> None:
        """Make the replaced rows' space reusable now (best effort: the load has committed).

        Without it, back-to-back reloads grow the partition by its size each time until
        autovacuum comes by; with it, a reloaded partition stays at about twice its size.
        """
        assert self.partition is not None
        target = qualified(self.names.schema, self.partition)
        adbc = self.conn.adbc_connection
        adbc.set_autocommit(True)  # VACUUM cannot run inside a transaction
        try:
            self._execute(f"VACUUM (ANALYZE) {target}")
        except pg.Error as exc:
            shown = redact(driver_text(exc), pg_uri=self.pg_uri)
            logger.warning("could not vacuum %s (autovacuum will): %s", target, shown)
        finally:
            adbc.set_autocommit(False)

    def _swap(self) -> None:
        """Attach the staging table as the partition of D.

        If a concurrent load created that partition meanwhile, replace its rows from the
        staging table instead (delete and insert in one transaction: MVCC-safe).
        """
        n = self.names
        day = self.as_of.isoformat()
        parent = qualified(n.schema, n.table)
        self._lock_date()
        existing = self._partition_of_date()
        if existing is not None:
            target = qualified(n.schema, existing)
            self.replaced_rows = self._delete_all(target)
            self._execute(f"INSERT INTO {target} SELECT * FROM {qualified(n.schema, n.staging)}")  # noqa: S608
            self._execute(f"DROP TABLE {qualified(n.schema, n.staging)}")
            self._mark(existing)
            self.conn.commit()
            self.partition, self.replaced = existing, True
            self.staging_created = False
            return
        self._execute(f"ALTER TABLE {qualified(n.schema, n.staging)} RENAME TO {quote(n.partition)}")
        self._execute(
            f"ALTER INDEX {qualified(n.schema, n.staging + '_pkey')} RENAME TO {quote(n.partition + '_pkey')}"
        )
        self._execute(
            f"ALTER TABLE {parent} ATTACH PARTITION {qualified(n.schema, n.partition)} "
            f"FOR VALUES IN ('{day}')"
        )
        self._mark(n.partition)
        self.conn.commit()
        # It is the partition now. (Its session lock goes when the connection closes.)
        self.staging_created = False
        self.partition = n.partition

    def _mark(self, partition: str) -> None:
        """By part: in the swap's transaction, drop the parts' log and name the run on the partition.

        The comment is how a retried finish tells that its swap committed; a partition this
        role does not own keeps its comment (a savepoint: the swap goes on).
        """
        if not self.by_part:
            return
        n = self.names
        self._execute(f"DROP TABLE IF EXISTS {qualified(n.schema, n.log)}")
        comment = _loaded_by(self.as_of, self.run_id).replace("'", "''")
        self._execute("SAVEPOINT fastclv_mark")
        try:
            self._execute(f"COMMENT ON TABLE {qualified(n.schema, partition)} IS '{comment}'")
            self._execute("RELEASE SAVEPOINT fastclv_mark")
        except pg.Error as exc:
            self._execute("ROLLBACK TO SAVEPOINT fastclv_mark")
            shown = redact(driver_text(exc), pg_uri=self.pg_uri)
            logger.warning("could not comment on %s.%s: %s", n.schema, partition, shown)

    def explain(self, exc: pg.Error) -> FastclvError:
        """The fastclv error for a driver error raised during :attr:`phase`."""
        if self.batches is not None and self.batches.error is not None:
            cause = self.batches.error
            if isinstance(cause, FastclvError):
                return cause
            failure = LoadError(
                f"reading {self.batches.label} failed while copying it into "
                f"{self.names.display}: {cause!r}. Hint: fix the source and rerun; the table "
                "was left unchanged."
            )
            failure.__cause__ = cause
            return failure
        hint = None
        if getattr(exc, "sqlstate", None) == "23505" and self.phase.startswith("adding"):
            hint = "customer_id must be unique per as-of date in the output (a bug upstream)."
        where = f"{self.names.display} (partition {self.names.partition})"
        return map_error(exc, f"{self.phase} {where}", self.pg_uri, hint)

    def drop_staging(self) -> None:
        """Best effort: drop our staging table after a failure (else a later load does)."""
        try:
            self.conn.rollback()
        except pg.Error:
            return  # the connection is gone, and with it the session lock: a later load cleans up
        if not self.staging_created:
            return
        try:
            self._set_lock_timeout()
            self._execute(f"DROP TABLE IF EXISTS {qualified(self.names.schema, self.names.staging)}")
            self.conn.commit()
        except pg.Error as exc:
            logger.warning(
                "could not drop the staging table %s.%s (a later load of %s will): %s",
                self.names.schema,
                self.names.staging,
                self.as_of,
                redact(driver_text(exc), pg_uri=self.pg_uri),
            )
