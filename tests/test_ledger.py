"""The run ledger: a run whose process is gone is marked ``abandoned`` by the next run.

Issue 14 item 4. A real PostgreSQL; the "killed run" is a real process, SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from fastclv import ddl, ledger

D = date(2025, 1, 31)
T0 = datetime(2025, 2, 1, 0, 5, tzinfo=UTC)


def rows(pg_uri: str, schema: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(pg_uri) as conn:
        cur = conn.cursor(row_factory=dict_row)
        found = cur.execute(sql.SQL("SELECT * FROM {}.customer_ltv_runs").format(sql.Identifier(schema)))
        return {row["run_id"]: row for row in found.fetchall()}


def start(pg_uri: str, schema: str, run_id: str, *, hold: bool) -> ledger.RunClaim | None:
    return ledger.start_run(
        pg_uri, schema=schema, run_id=run_id, as_of=D, input="/data/in", started_at=T0, hold=hold
    )


def test_a_killed_runs_row_is_marked_abandoned_by_the_next_run(pg_uri: str, pg_schema: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from datetime import date, datetime, UTC
        from fastclv import ledger
        claim = ledger.start_run({pg_uri!r}, schema={pg_schema!r}, run_id="killed", as_of=date(2025, 1, 31),
                                 input="/data/in", started_at=datetime.now(UTC), hold=True)
        print("started", flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "started"
            # While it lives, a later run leaves its row alone.
            start(pg_uri, pg_schema, "while-alive", hold=False)
            assert rows(pg_uri, pg_schema)["killed"]["status"] == "running"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
    # PostgreSQL ends the dead client's session (and its lock) when it notices the socket close.
    claim = start(pg_uri, pg_schema, "next", hold=True)
    try:
        found = rows(pg_uri, pg_schema)
        assert found["killed"]["status"] == "abandoned"
        assert found["killed"]["finished_at"] is not None
        assert "ended without recording its outcome" in found["killed"]["error"]
        assert "marked by run next" in found["killed"]["error"]
        assert found["next"]["status"] == "running"
        assert found["next"]["owner"] == ledger.SESSION_OWNER
        assert found["while-alive"]["status"] == "running"  # recorded by tasks: never swept
        assert found["while-alive"]["owner"] == ledger.TASK_OWNER
    finally:
        assert claim is not None
        claim.release()


def test_a_live_claim_is_never_swept_and_a_finished_run_stays_finished(pg_uri: str, pg_schema: str) -> None:
    alive = start(pg_uri, pg_schema, "alive", hold=True)
    assert alive is not None
    try:
        start(pg_uri, pg_schema, "other", hold=True).release()  # type: ignore[union-attr]
        assert rows(pg_uri, pg_schema)["alive"]["status"] == "running"
        ledger.finish_run(pg_uri, schema=pg_schema, run_id="alive", status="succeeded", finished_at=T0)
    finally:
        alive.release()
    start(pg_uri, pg_schema, "later", hold=False)
    assert rows(pg_uri, pg_schema)["alive"]["status"] == "succeeded"


def test_a_ledger_from_before_abandoned_is_upgraded_in_place(pg_uri: str, pg_schema: str) -> None:
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.customer_ltv_runs (run_id text PRIMARY KEY, as_of date, "
                "started_at timestamptz, finished_at timestamptz, status text NOT NULL CHECK "
                "(status IN ('running', 'succeeded', 'failed')), input text, counts jsonb, "
                "output_rows bigint, model jsonb, timings jsonb, error text)"
            ).format(sql.Identifier(pg_schema))
        )
        conn.execute(
            sql.SQL("INSERT INTO {}.customer_ltv_runs (run_id, status) VALUES ('old', 'succeeded')").format(
                sql.Identifier(pg_schema)
            )
        )
    ddl.create_tables(pg_uri, schema=pg_schema)
    ledger.finish_run(pg_uri, schema=pg_schema, run_id="x", status="abandoned", finished_at=T0)
    found = rows(pg_uri, pg_schema)
    assert found["old"]["status"] == "succeeded"
    assert found["old"]["owner"] is None
    assert found["x"]["status"] == "abandoned"
    with pytest.raises(psycopg.errors.CheckViolation), psycopg.connect(pg_uri) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.customer_ltv_runs SET status = 'lost'").format(sql.Identifier(pg_schema))
        )


def test_a_run_id_recorded_for_another_date_is_refused_and_its_record_kept(
    pg_uri: str, pg_schema: str
) -> None:
    from fastclv.errors import ConfigError

    day, other = date(2025, 1, 31), date(2025, 1, 30)
    now = datetime.now(UTC)
    ledger.start_run(pg_uri, schema=pg_schema, run_id="myrun", as_of=day, input="in", started_at=now)
    ledger.finish_run(
        pg_uri, schema=pg_schema, run_id="myrun", status="succeeded", finished_at=now, output_rows=7
    )
    with pytest.raises(ConfigError, match=r"run id 'myrun' is recorded .* for as-of 2025-01-31"):
        ledger.start_run(pg_uri, schema=pg_schema, run_id="myrun", as_of=other, input="in", started_at=now)
    with pytest.raises(ConfigError, match="cannot take it over"):
        ledger.finish_run(
            pg_uri, schema=pg_schema, run_id="myrun", status="failed", finished_at=now, as_of=other, error="x"
        )
    kept = rows(pg_uri, pg_schema)["myrun"]
    assert (kept["as_of"], kept["status"], kept["output_rows"]) == (day, "succeeded", 7)
    # A retry of the same date starts over in its row, as before.
    ledger.start_run(pg_uri, schema=pg_schema, run_id="myrun", as_of=day, input="in", started_at=now)
    assert rows(pg_uri, pg_schema)["myrun"]["status"] == "running"
