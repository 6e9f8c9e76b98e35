"""The run ledger ``customer_ltv_runs``: one row per run, successful or not (contract section 6).

:func:`start_run` records a run as ``running``; :func:`finish_run` records its outcome with the
counts, the model fit and the timings. Both upsert on the run id and create the table when
missing (:mod:`fastclv.ddl`); nothing they write holds the database password.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from fastclv.config import check_identifier
from fastclv.db import close, connect, guard, qualified, scrub
from fastclv.ddl import RUN_STATUSES, ensure_tables
from fastclv.errors import ConfigError


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
        f"INSERT INTO {qualified(schema, runs_table)} "  # noqa: S608
        "(run_id, as_of, started_at, finished_at, status, input) "
        "VALUES ($1, $2, $3, NULL, 'running', $4) "
        "ON CONFLICT (run_id) DO UPDATE SET as_of = EXCLUDED.as_of, "
        "started_at = EXCLUDED.started_at, finished_at = NULL, status = 'running', "
        "input = EXCLUDED.input, counts = NULL, output_rows = NULL, model = NULL, "
        "timings = NULL, error = NULL"
    )
    params = (run_id, as_of, _utc(started_at), scrub(input, pg_uri))
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
        None if input is None else scrub(input, pg_uri),
        _json(counts),
        output_rows,
        _json(model),
        _json(timings),
        None if error is None else scrub(error, pg_uri),
    )
    _write_ledger(pg_uri, schema, runs_table, run_id, sql, params)


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
    conn = connect(pg_uri, where)

    def write() -> None:
        ensure_tables(conn, schema, None, runs_table)
        with conn.cursor() as cur:
            cur.execute(sql, parameters=params)
        conn.commit()

    try:
        guard(pg_uri, where, "recording", write)
    finally:
        close(conn)
