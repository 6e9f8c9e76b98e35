"""The run ledger ``customer_ltv_runs``: one row per run, successful or not (contract section 6).

:func:`start_run` records a run as ``running``; :func:`finish_run` records its outcome with the
counts, the model fit and the timings. Both upsert on the run id and create the table when
missing (:mod:`fastclv.ddl`); nothing they write holds the database password.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import adbc_driver_postgresql.dbapi as pg

from fastclv.config import check_identifier
from fastclv.db import close, connect, guard, qualified
from fastclv.ddl import RUN_STATUSES, ensure_tables
from fastclv.errors import ConfigError
from fastclv.secrets import redact

logger = logging.getLogger(__name__)


#: ``owner`` of a run whose process holds a session lock on its row for as long as it runs.
SESSION_OWNER = "session"
#: ``owner`` of a run recorded by separate tasks (the DAG): its outcome is the finish task's.
TASK_OWNER = "task"
ABANDONED = (
    "the run ended without recording its outcome (its process was killed, or the database "
    "restarted under it); marked by run {by}"
)


@dataclass
class RunClaim:
    """A run's hold on its ledger row: a session advisory lock, on a connection kept open.

    While it is held, the run is provably alive; when the process dies or the server restarts,
    the lock goes with the session, and the next run marks the row ``abandoned``.
    """

    conn: pg.Connection
    run_id: str

    def release(self) -> None:
        """Let go of the row (the run has recorded its outcome, or given up)."""
        close(self.conn)


def start_run(
    pg_uri: str,
    *,
    schema: str = "public",
    runs_table: str = "customer_ltv_runs",
    run_id: str,
    as_of: date,
    input: str,  # the ledger column's name
    started_at: datetime,
    hold: bool = False,
) -> RunClaim | None:
    """Record the run as ``running`` (creating the ledger table when missing).

    Upserts on ``run_id``, so a retried run starts over in the same row. First, rows of runs
    whose owner is provably gone (``owner = 'session'`` and nobody holds their lock) are marked
    ``abandoned``. With ``hold``, the run claims its row for as long as it runs: the returned
    :class:`RunClaim` keeps a connection open; release it after :func:`finish_run`. Without it
    (a run recorded by separate tasks), the row is never marked abandoned by others.
    """
    sql = (  # identifiers are validated by check_identifier and quoted; values are bound
        f"INSERT INTO {qualified(schema, runs_table)} "  # noqa: S608
        "(run_id, as_of, started_at, finished_at, status, input, owner) "
        "VALUES ($1, $2, $3, NULL, 'running', $4, $5) "
        "ON CONFLICT (run_id) DO UPDATE SET as_of = EXCLUDED.as_of, "
        "started_at = EXCLUDED.started_at, finished_at = NULL, status = 'running', "
        "input = EXCLUDED.input, counts = NULL, output_rows = NULL, model = NULL, "
        "timings = NULL, error = NULL, owner = EXCLUDED.owner"
    )
    owner = SESSION_OWNER if hold else TASK_OWNER
    params = (run_id, as_of, _utc(started_at), redact(input, pg_uri=pg_uri), owner)

    def before(cur: pg.Cursor, schema: str, runs_table: str, run_id: str) -> None:
        _refuse_another_date(cur, schema, runs_table, run_id, as_of)
        _mark_abandoned(cur, schema, runs_table, run_id)

    conn = _write_ledger(pg_uri, schema, runs_table, run_id, sql, params, before=before, hold=hold)
    return RunClaim(conn, run_id) if conn is not None else None


def _refuse_another_date(
    cur: pg.Cursor, schema: str, runs_table: str, run_id: str, as_of: date | None
) -> None:
    """A run id names one run: one recorded for another as-of date is not taken over.

    (A retried run of the same date starts over in its row; a run of another date that reused
    the id would erase that run's record.)
    """
    if as_of is None:
        return
    cur.execute(
        f"SELECT as_of FROM {qualified(schema, runs_table)} WHERE run_id = $1",  # noqa: S608
        parameters=(run_id,),
    )
    row = cur.fetchone()
    if row is not None and row[0] is not None and row[0] != as_of:
        raise ConfigError(
            f"run id {run_id!r} is recorded in {schema}.{runs_table} already, for as-of {row[0]}: "
            f"a run as of {as_of} cannot take it over. Hint: give this run its own --run-id "
            "(or none: a new one is generated)."
        )


def _run_key(schema: str, runs_table: str, run_id: str) -> str:
    return f"fastclv:run:{schema}.{runs_table}:{run_id}"


def _mark_abandoned(cur: pg.Cursor, schema: str, runs_table: str, run_id: str) -> None:
    """Mark ``abandoned`` the running rows whose owning session is gone."""
    ledger = qualified(schema, runs_table)
    cur.execute(
        f"SELECT run_id FROM {ledger} WHERE status = 'running' AND owner = $1 AND run_id <> $2",  # noqa: S608
        parameters=(SESSION_OWNER, run_id),
    )
    for (other,) in cur.fetchall():
        key = _run_key(schema, runs_table, other)
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", parameters=(key,))
        row = cur.fetchone()
        if row is None or not row[0]:
            continue  # its run is alive
        cur.execute(
            f"UPDATE {ledger} SET status = 'abandoned', finished_at = now(), error = $2 "  # noqa: S608
            "WHERE run_id = $1 AND status = 'running'",
            parameters=(other, ABANDONED.format(by=run_id)),
        )
        logger.warning("run %s in %s ended without recording its outcome: marked abandoned", other, ledger)


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
        f"INSERT INTO {qualified(schema, runs_table)} AS r "  # noqa: S608
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
    _write_ledger(
        pg_uri,
        schema,
        runs_table,
        run_id,
        sql,
        params,
        before=lambda cur, schema, table, run_id: _refuse_another_date(cur, schema, table, run_id, as_of),
    )


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
    pg_uri: str,
    schema: str,
    runs_table: str,
    run_id: str,
    sql: str,
    params: tuple[Any, ...],
    *,
    before: Callable[[pg.Cursor, str, str, str], None] | None = None,
    hold: bool = False,
) -> pg.Connection | None:
    """Run one ledger statement (``before`` first, in the same transaction).

    With ``hold`` the session takes the run's advisory lock and the open connection, which holds
    it until closed, is returned; otherwise the connection is closed and None returned.
    """
    check_identifier(schema, "schema")
    check_identifier(runs_table, "runs table")
    where = f"run {run_id!r} in {schema}.{runs_table}"
    conn = connect(pg_uri, where)

    def write() -> None:
        ensure_tables(conn, schema, None, runs_table)
        with conn.cursor() as cur:
            if hold:
                key = _run_key(schema, runs_table, run_id)
                cur.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", parameters=(key,))
                cur.fetchall()
            if before is not None:
                before(cur, schema, runs_table, run_id)
            cur.execute(sql, parameters=params)
        conn.commit()

    try:
        guard(pg_uri, where, "recording", write)
    except BaseException:
        close(conn)
        raise
    if hold:
        return conn
    close(conn)
    return None


def history(
    pg_uri: str, *, schema: str = "public", runs_table: str = "customer_ltv_runs", days: int = 90
) -> list[Any]:
    """The latest succeeded run of each of the last ``days`` as-of dates, oldest first (for the report)."""
    from fastclv.report import HistoryRow

    check_identifier(schema, "schema")
    check_identifier(runs_table, "runs table")
    where = f"the history in {schema}.{runs_table}"
    conn = connect(pg_uri, where)
    query = (  # identifiers validated and quoted; values bound
        f"SELECT DISTINCT ON (as_of) as_of, output_rows, model ->> 'clv_total', counts::text "  # noqa: S608
        f"FROM {qualified(schema, runs_table)} WHERE status = 'succeeded' AND as_of IS NOT NULL "
        "ORDER BY as_of DESC, finished_at DESC LIMIT $1"
    )

    def read() -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass($1) IS NOT NULL", parameters=(qualified(schema, runs_table),))
            row = cur.fetchone()
            if row is None or not row[0]:
                return []
            cur.execute(query, parameters=(days,))
            return list(cur.fetchall())

    try:
        found = guard(pg_uri, where, "reading", read)
    finally:
        close(conn)
    rows = []
    for as_of, output_rows, clv_total, counts_text in reversed(found):
        counts = json.loads(counts_text) if counts_text else {}
        read_rows = sum(int(c.get("read", 0)) for c in counts.values())
        rejected = sum(int(c.get("rejected", 0)) for c in counts.values())
        rows.append(
            HistoryRow(
                as_of,
                int(output_rows or 0),
                None if clv_total is None else float(clv_total),
                rejected / read_rows if read_rows else 0.0,
            )
        )
    return rows
