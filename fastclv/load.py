"""Load the output into PostgreSQL: ADBC binary COPY, then an atomic per-date partition swap.

``customer_ltv`` is partitioned by LIST (as_of), one partition per as-of date D. A load of D
never writes into the live table:

1. it creates a standalone table ``<table>_s<yyyymmdd>_<id>`` with the same columns and
   ``CHECK (as_of = D)`` (so ATTACH needs no validation scan), and commits;
2. streams the Parquet batches into it with ``adbc_ingest(mode="append")`` (binary COPY),
   commits, then builds its primary key (so ATTACH does not build an index under lock);
3. in one short transaction (``lock_timeout``, a per-(table, date) advisory lock) detaches
   and drops the old partition of D, renames the new table and attaches it.

Readers see either the old rows of D or the new ones. Caveat: like TRUNCATE, the swap is
not MVCC-safe for REPEATABLE READ / SERIALIZABLE transactions whose snapshot predates the
swap and that first touch the table after it (they see no rows for D).

Each run is also recorded in the run ledger (``customer_ltv_runs``) by :func:`start_run`
and :func:`finish_run`.

The load needs a direct (or session-pooled) connection: a staging table is marked as
"in use" by a session-level advisory lock, which is how a later run tells a crashed run's
leftover table from one that is still loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastclv import storage
from fastclv.config import check_identifier
from fastclv.contract import OUTPUT_NOT_NULL, OUTPUT_PG_TYPES, OUTPUT_SCHEMA, output_arrow_schema
from fastclv.errors import ConfigError, FastclvError, LoadError, TransientError
from fastclv.secrets import redact, split_uri

logger = logging.getLogger("fastclv.load")

RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed")
#: Rows per Arrow batch when reading a Parquet file.
BATCH_ROWS = 65_536
#: The longest table name whose derived names (staging table + its index) stay <= 63 bytes.
MAX_TABLE_NAME = 63 - len("_s20250131_0123abcd_pkey")
_MONEY_COLUMNS = tuple(name for name, pg_type in OUTPUT_PG_TYPES.items() if pg_type.startswith("numeric"))
_MONEY_LIMIT = Decimal(10) ** 16  # numeric(18,2) holds |x| < 10^16
_STAGING_COMMENT = "fastclv staging table"
#: SQLSTATEs worth a retry: lock timeout, serialization failure, deadlock, shutdowns,
#: too many connections. Class 08 (connection exceptions) is transient as a whole.
_TRANSIENT_SQLSTATES = frozenset({"55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300"})
#: libpq reports connection failures without a SQLSTATE: recognise them by their text.
_TRANSIENT_TEXT = (
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "no connection to the server",
    "connection timed out",
    "timeout expired",
    "connection reset",
    "broken pipe",
    "too many clients",
    "remaining connection slots",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "could not receive data from server",
    "could not send data to server",
    # A managed server failing over or a network blip: DNS and TLS sessions drop too.
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "ssl connection has been closed unexpectedly",
    "ssl syscall error",
)
#: libpq TLS messages (not transient: the TLS settings or the server's TLS setup are wrong).
_TLS_TEXT = ("ssl", "certificate", "tls")


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_partition` did."""

    #: The partitioned table, schema-qualified (``public.customer_ltv``).
    table: str
    #: The partition now holding the rows of the as-of date (``customer_ltv_p20250131``).
    partition: str
    rows: int
    seconds: float


# -- public API ----------------------------------------------------------------------------


def create_tables(
    pg_uri: str,
    *,
    schema: str = "public",
    table: str = "customer_ltv",
    runs_table: str = "customer_ltv_runs",
) -> None:
    """Create the schema, the partitioned output table and the run ledger when missing.

    Idempotent and safe when several processes do it at once (advisory lock around the DDL).
    """
    _check_names(schema, table)
    check_identifier(runs_table, "runs table")
    where = f"{schema}.{table} / {schema}.{runs_table}"
    conn = _connect(pg_uri, where)
    try:
        _guard(pg_uri, where, "creating", lambda: _ensure_tables(conn, schema, table, runs_table))
    finally:
        _close(conn)


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
        conn = _connect(pg_uri, names.display)
    except FastclvError:
        batches.close()
        raise
    loader = _Loader(conn, names, as_of, lock_timeout_s, run_id, batches, pg_uri)
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
        _close(conn)
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
    return LoadResult(names.display, names.partition, batches.rows, seconds)


def start_run(
    pg_uri: str,
    *,
    schema: str = "public",
    runs_table: str = "customer_ltv_runs",
    run_id: str,
    as_of: date,
    input: str,  # the ledger column's name
    started_at: datetime,
) -> None:
    """Record the run as ``running`` (creating the ledger table when missing).

    Upserts on ``run_id``, so a retried run starts over in the same row.
    """
    sql = (  # identifiers are validated by check_identifier and quoted; values are bound
        f"INSERT INTO {_qual(schema, runs_table)} "  # noqa: S608
        "(run_id, as_of, started_at, finished_at, status, input) "
        "VALUES ($1, $2, $3, NULL, 'running', $4) "
        "ON CONFLICT (run_id) DO UPDATE SET as_of = EXCLUDED.as_of, "
        "started_at = EXCLUDED.started_at, finished_at = NULL, status = 'running', "
        "input = EXCLUDED.input, counts = NULL, output_rows = NULL, model = NULL, "
        "timings = NULL, error = NULL"
    )
    params = (run_id, as_of, _utc(started_at), redact(input, pg_uri=pg_uri))
    _write_ledger(pg_uri, schema, runs_table, run_id, sql, params)


def finish_run(
    pg_uri: str,
    *,
    schema: str = "public",
    runs_table: str = "customer_ltv_runs",
    run_id: str,
    status: str,
    finished_at: datetime,
    counts: Mapping[str, Any] | None = None,
    output_rows: int | None = None,
    model: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    error: str | None = None,
    as_of: date | None = None,
    input: str | None = None,  # the ledger column's name
    started_at: datetime | None = None,
) -> None:
    """Record the run's outcome (``succeeded`` or ``failed``) with its counts and model.

    Upserts on ``run_id``: a run that failed before :func:`start_run` still ends up as one
    row (``as_of``, ``input`` and ``started_at`` fill it in then). ``error`` is scrubbed of
    the URI's password.
    """
    if status not in RUN_STATUSES:
        raise ConfigError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}.")
    sql = (  # identifiers are validated by check_identifier and quoted; values are bound
        f"INSERT INTO {_qual(schema, runs_table)} AS r "  # noqa: S608
        "(run_id, as_of, started_at, finished_at, status, input, counts, output_rows, model, "
        "timings, error) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb, $10::jsonb, $11) "
        "ON CONFLICT (run_id) DO UPDATE SET "
        "as_of = COALESCE(EXCLUDED.as_of, r.as_of), "
        "started_at = COALESCE(EXCLUDED.started_at, r.started_at), "
        "input = COALESCE(EXCLUDED.input, r.input), "
        "finished_at = EXCLUDED.finished_at, status = EXCLUDED.status, "
        "counts = EXCLUDED.counts, output_rows = EXCLUDED.output_rows, "
        "model = EXCLUDED.model, timings = EXCLUDED.timings, error = EXCLUDED.error"
    )
    params = (
        run_id,
        as_of,
        None if started_at is None else _utc(started_at),
        _utc(finished_at),
        status,
        None if input is None else redact(input, pg_uri=pg_uri),
        _json(counts),
        output_rows,
        _json(model),
        _json(timings),
        None if error is None else redact(error, pg_uri=pg_uri),
    )
    _write_ledger(pg_uri, schema, runs_table, run_id, sql, params)


# -- names ---------------------------------------------------------------------------------


def _q(name: str) -> str:
    """Quote an identifier that :func:`check_identifier` accepted (it holds no quotes)."""
    return f'"{name}"'


def _qual(schema: str, name: str) -> str:
    return f"{_q(schema)}.{_q(name)}"


def _check_names(schema: str, table: str) -> None:
    check_identifier(schema, "schema")
    check_identifier(table, "table")
    if len(table) > MAX_TABLE_NAME:
        raise ConfigError(
            f"table name {table!r} is {len(table)} characters long; fastclv derives partition "
            f"and staging names from it, so at most {MAX_TABLE_NAME} are allowed. "
            "Hint: choose a shorter table name."
        )


@dataclass(frozen=True)
class _Names:
    """Every identifier one load uses, validated up front."""

    schema: str
    table: str
    partition: str
    staging: str
    display: str

    @classmethod
    def build(cls, schema: str, table: str, as_of: date, run_id: str) -> _Names:
        _check_names(schema, table)
        day = f"{as_of:%Y%m%d}"
        # Recognisable per run (hash of the run id) and unique per attempt (random part).
        short = hashlib.sha256(run_id.encode()).hexdigest()[:4] + secrets.token_hex(2)
        return cls(
            schema=schema,
            table=table,
            partition=f"{table}_p{day}",
            staging=f"{table}_s{day}_{short}",
            display=f"{schema}.{table}",
        )

    @property
    def staging_prefix(self) -> str:
        """Prefix of every staging table of this date (ours and crashed runs')."""
        return self.staging[: -len("0123abcd")]


def _table_ddl(schema: str, name: str, extra: tuple[str, ...] = (), *, if_not_exists: bool = False) -> str:
    columns = [
        f"{_q(col)} {pg_type}{' NOT NULL' if col in OUTPUT_NOT_NULL else ''}"
        for col, pg_type in OUTPUT_PG_TYPES.items()
    ]
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return f"{create} {_qual(schema, name)} ({', '.join(columns + list(extra))})"


# -- connections and errors ----------------------------------------------------------------


def _connect(pg_uri: str, where: str) -> pg.Connection:
    """Open an ADBC connection (autocommit off); failures become fastclv errors, scrubbed.

    TLS settings in the URI (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ...) go
    to libpq as they are.
    """
    try:
        return pg.connect(pg_uri)
    except pg.Error as exc:
        server = _server(pg_uri)
        at = f" at {server}" if server else ""
        failure = _map_error(exc, f"connecting to PostgreSQL{at} for {where}", pg_uri)
    # Raised outside the except block so the driver error (which may echo the URI) is not
    # even kept as __context__.
    raise failure


def _close(conn: pg.Connection) -> None:
    try:
        conn.close()
    except pg.Error:
        logger.debug("closing the PostgreSQL connection failed", exc_info=False)


def _guard(pg_uri: str, where: str, doing: str, action: Any) -> Any:
    """Run ``action()``, turning driver errors into scrubbed fastclv errors."""
    try:
        return action()
    except pg.Error as exc:
        failure = _map_error(exc, f"{doing} {where}", pg_uri)
    raise failure


def _map_error(exc: pg.Error, context: str, pg_uri: str, hint: str | None = None) -> FastclvError:
    """A TransientError or LoadError saying what failed where, without any password."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    text = _driver_text(exc)
    lowered = text.lower()
    transient = (
        sqlstate in _TRANSIENT_SQLSTATES
        or sqlstate.startswith("08")
        or any(marker in lowered for marker in _TRANSIENT_TEXT)
    )
    if hint is None:
        hint = _hint(sqlstate, lowered, transient)
    stop = "" if text.endswith(("?", "!")) else "."
    message = redact(f"{context} failed: {text}{stop} Hint: {hint}", pg_uri=pg_uri)
    return TransientError(message) if transient else LoadError(message)


def _driver_text(exc: pg.Error) -> str:
    """The useful part of an ADBC error: no echoed query, on one line."""
    text = str(exc.args[0]) if exc.args else str(exc)
    text = text.split("\n\nQuery was:", 1)[0]
    text = re.sub(r"\s*\n\s*", "; ", text.strip())
    text = re.sub(r"[;\s]*\.\s*SQLSTATE", ". SQLSTATE", text).rstrip(".; ")
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate and sqlstate not in text:
        text += f" (SQLSTATE {sqlstate})"
    return text


_HINTS = {
    "55P03": "another session holds a conflicting lock (a long query or another load); retry later "
    "or raise lock_timeout_s.",
    "40001": "a concurrent transaction conflicted; retrying the run is safe.",
    "40P01": "a concurrent transaction conflicted; retrying the run is safe.",
    "28P01": "check the user name and password in the PostgreSQL URI (FASTCLV_PG_URI).",
    "28000": "check the user name and password in the PostgreSQL URI (FASTCLV_PG_URI).",
    "42501": "grant the loading role CREATE on the schema (or on the database, for a new schema) "
    "and ownership of the tables.",
    "3D000": "check the database name in the PostgreSQL URI (FASTCLV_PG_URI).",
}


def _server(pg_uri: str) -> str:
    """``host:port/database`` of a libpq URI or key=value string, without user or password."""
    parts = split_uri(pg_uri)
    if parts is not None:
        params = dict(parse_qsl(parts.query))
        host = parts.hosts or params.get("host", "")
        database = parts.database or params.get("dbname", "")
    else:
        params = dict(re.findall(r"(\w+)\s*=\s*'?([^'\s]*)'?", pg_uri))
        host = params.get("host", "") + (f":{params['port']}" if params.get("port") else "")
        database = params.get("dbname", "")
    if not host:
        return ""
    return unquote(host) + (f"/{unquote(database)}" if database else "")


_TLS_HINT = (
    "check the TLS settings in the PostgreSQL URI or connection (sslmode, sslrootcert, sslcert, "
    "sslkey): the server must offer TLS for sslmode=require and above, and the certificate files "
    "must exist and be readable."
)


def _hint(sqlstate: str, lowered: str, transient: bool) -> str:
    if sqlstate in _HINTS:
        return _HINTS[sqlstate]
    rules = (
        (
            transient,
            "check that PostgreSQL is running and reachable, then retry (the run is safe to repeat).",
        ),
        ("authentication" in lowered or "password" in lowered, _HINTS["28P01"]),
        (any(marker in lowered for marker in _TLS_TEXT), _TLS_HINT),
        (
            "could not translate host name" in lowered,
            "check the host name in the PostgreSQL URI (FASTCLV_PG_URI).",
        ),
        (
            "does not exist" in lowered,
            "check the database, schema and role names in the PostgreSQL URI (FASTCLV_PG_URI).",
        ),
    )
    return next(
        (hint for matched, hint in rules if matched),
        "read the PostgreSQL message above; the target table was left unchanged.",
    )


# -- the ledger ------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC (the contract's convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json(value: Mapping[str, Any] | None) -> str | None:
    """JSON text for a jsonb column: NaN/inf become null, numpy scalars plain numbers."""
    if value is None:
        return None

    def clean(obj: Any) -> Any:
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else None
        if isinstance(obj, Mapping):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
            return clean(obj.item())
        if isinstance(obj, (str, int, bool)) or obj is None:
            return obj
        return str(obj)  # dates, Decimals, paths

    return json.dumps(clean(value), allow_nan=False)


def _write_ledger(
    pg_uri: str, schema: str, runs_table: str, run_id: str, sql: str, params: tuple[Any, ...]
) -> None:
    check_identifier(schema, "schema")
    check_identifier(runs_table, "runs table")
    where = f"run {run_id!r} in {schema}.{runs_table}"
    conn = _connect(pg_uri, where)

    def write() -> None:
        _ensure_tables(conn, schema, None, runs_table)
        with conn.cursor() as cur:
            cur.execute(sql, parameters=params)
        conn.commit()

    try:
        _guard(pg_uri, where, "recording", write)
    finally:
        _close(conn)


# -- DDL -------------------------------------------------------------------------------------

_PG_SPELLING = {"timestamptz": "timestamp with time zone"}


def _ensure_tables(conn: pg.Connection, schema: str, table: str | None, runs_table: str | None) -> None:
    """Create what is missing, under an advisory lock so concurrent first runs do not collide."""
    wanted = [name for name in (table, runs_table) if name is not None]
    with conn.cursor() as cur:
        missing = False
        for name in wanted:
            cur.execute("SELECT to_regclass($1) IS NULL", parameters=(_qual(schema, name),))
            row = cur.fetchone()
            missing = missing or row is None or bool(row[0])
        if missing:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                parameters=(f"fastclv:ddl:{schema}",),
            )
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
            # even when the schema exists.
            cur.execute("SELECT to_regnamespace($1) IS NULL", parameters=(_q(schema),))
            row = cur.fetchone()
            if row is not None and row[0]:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            if table is not None:
                key = ("PRIMARY KEY (as_of, customer_id)",)
                ddl = _table_ddl(schema, table, key, if_not_exists=True)
                cur.execute(f"{ddl} PARTITION BY LIST (as_of)")
            if runs_table is not None:
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {_qual(schema, runs_table)} ("
                    "run_id text PRIMARY KEY, as_of date, started_at timestamptz, "
                    "finished_at timestamptz, status text NOT NULL CHECK (status IN "
                    "('running', 'succeeded', 'failed')), input text, counts jsonb, "
                    "output_rows bigint, model jsonb, timings jsonb, error text)"
                )
        if table is not None:
            _check_output_table(cur, schema, table)
    conn.commit()


def _check_output_table(cur: pg.Cursor, schema: str, table: str) -> None:
    """Fail clearly when an existing output table does not have the contract's layout."""
    cur.execute(
        "SELECT c.relkind::text, pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.oid = to_regclass($1)",
        parameters=(_qual(schema, table),),
    )
    kind = cur.fetchone()
    if kind is None or kind[0] != "p" or kind[1] != "LIST (as_of)":
        raise LoadError(
            f"table {schema}.{table} exists but is not partitioned by LIST (as_of). "
            "Hint: rename or drop it (fastclv creates it), or configure another table name."
        )
    cur.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 "
        "AND NOT a.attisdropped",
        parameters=(_qual(schema, table),),
    )
    found = {name: (pg_type, not_null) for name, pg_type, not_null in cur.fetchall()}
    expected = {
        name: (_PG_SPELLING.get(pg_type, pg_type), name in OUTPUT_NOT_NULL)
        for name, pg_type in OUTPUT_PG_TYPES.items()
    }
    if found != expected:
        diff = sorted(set(found.items()) ^ set(expected.items()))
        raise LoadError(
            f"table {schema}.{table} does not have the contract's columns "
            f"(differences: {diff}). Hint: migrate or drop the table; fastclv recreates it."
        )


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
    ) -> None:
        self._batches = batches
        self._parquet = parquet
        self._as_of = pa.scalar(as_of, pa.date32())
        self._where = where
        self.label = label
        self.schema = output_arrow_schema()
        self.rows = 0
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
        try:
            if isinstance(source, str) and storage.is_remote(source):
                filesystem, path = storage.filesystem(source, storage_options)
                parquet = pq.ParquetFile(filesystem.open_input_file(path))
            elif isinstance(source, str) and "://" in source:
                from pyarrow import fs

                filesystem, path = fs.FileSystem.from_uri(source)
                parquet = pq.ParquetFile(filesystem.open_input_file(path))
            else:
                parquet = pq.ParquetFile(source)
        except (OSError, pa.ArrowException) as exc:
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
        return cls(batches, as_of, where, label, parquet)

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
    batches: _Batches
    pg_uri: str = field(repr=False)
    phase: str = "preparing"
    staging_created: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        """Every step of the load, each in its own transaction."""
        self._step("ddl", "creating", self._ensure)
        self._step("cleanup", "dropping leftovers of crashed loads of", self._drop_strays)
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
        _ensure_tables(self.conn, self.names.schema, self.names.table, None)

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
            key = self._lock_key("staging", name)
            got = self._query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", (key,))
            if not got[0][0]:
                continue  # its load is still running
            try:
                self._set_lock_timeout()
                self._execute(f"DROP TABLE IF EXISTS {_qual(n.schema, name)}")
                self.conn.commit()
                logger.info("dropped %s.%s, left over by a crashed load", n.schema, name)
            except pg.Error as exc:  # best effort: a later load tries again
                self.conn.rollback()
                logger.warning(
                    "could not drop %s.%s, left over by a crashed load: %s",
                    n.schema,
                    name,
                    redact(_driver_text(exc), pg_uri=self.pg_uri),
                )
            finally:  # session-level advisory locks survive a rollback: release it
                self._query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", (key,))
                self.conn.commit()

    def _create_staging(self) -> None:
        n = self.names
        # A session-level lock, held until we disconnect, marks the table as in use.
        self._query(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            (self._lock_key("staging", n.staging),),
        )
        day = self.as_of.isoformat()
        check = f"CONSTRAINT as_of_is_partition_date CHECK (as_of = DATE '{day}')"
        self._execute(_table_ddl(n.schema, n.staging, (check,)))
        comment = f"{_STAGING_COMMENT} of run {self.run_id}".replace("'", "''")
        self._execute(f"COMMENT ON TABLE {_qual(n.schema, n.staging)} IS '{comment}'")
        self.conn.commit()
        self.staging_created = True

    def _copy(self) -> None:
        with self.conn.cursor() as cur:
            cur.adbc_ingest(
                self.names.staging,
                self.batches.reader(),
                mode="append",
                db_schema_name=self.names.schema,
            )
        self.conn.commit()

    def _add_key(self) -> None:
        n = self.names
        self._execute(
            f"ALTER TABLE {_qual(n.schema, n.staging)} ADD CONSTRAINT {_q(n.staging + '_pkey')} "
            "PRIMARY KEY (as_of, customer_id)"
        )
        self.conn.commit()

    def _swap(self) -> None:
        n = self.names
        day = self.as_of.isoformat()
        parent = _qual(n.schema, n.table)
        self._set_lock_timeout()
        self._query("SELECT set_config('DateStyle', 'ISO, YMD', true)")  # for pg_get_expr
        self._query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            (self._lock_key("swap", f"{n.table}:{day}"),),
        )
        old = self._query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass($1) AND pg_get_expr(c.relpartbound, c.oid) = $2",
            (parent, f"FOR VALUES IN ('{day}')"),
        )
        for (name,) in old:
            self._execute(f"ALTER TABLE {parent} DETACH PARTITION {_qual(n.schema, name)}")
            self._execute(f"DROP TABLE {_qual(n.schema, name)}")
        self._execute(f"ALTER TABLE {_qual(n.schema, n.staging)} RENAME TO {_q(n.partition)}")
        self._execute(
            f"ALTER INDEX {_qual(n.schema, n.staging + '_pkey')} RENAME TO {_q(n.partition + '_pkey')}"
        )
        self._execute(
            f"ALTER TABLE {parent} ATTACH PARTITION {_qual(n.schema, n.partition)} FOR VALUES IN ('{day}')"
        )
        self.conn.commit()
        # It is the partition now. (Its session lock goes when the connection closes.)
        self.staging_created = False

    def explain(self, exc: pg.Error) -> FastclvError:
        """The fastclv error for a driver error raised during :attr:`phase`."""
        if self.batches.error is not None:
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
        return _map_error(exc, f"{self.phase} {where}", self.pg_uri, hint)

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
            self._execute(f"DROP TABLE IF EXISTS {_qual(self.names.schema, self.names.staging)}")
            self.conn.commit()
        except pg.Error as exc:
            logger.warning(
                "could not drop the staging table %s.%s (a later load of %s will): %s",
                self.names.schema,
                self.names.staging,
                self.as_of,
                redact(_driver_text(exc), pg_uri=self.pg_uri),
            )
