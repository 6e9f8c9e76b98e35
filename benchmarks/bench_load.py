"""The load alone: the same rows (fastclv's reference customer_ltv.parquet) into PostgreSQL, three ways.

ADBC binary COPY (``fastclv.load.load_partition``, partition swap included) against
``psql \\copy`` of a CSV of the same rows and psycopg 3 ``cursor.copy``; the CSV is written
once per session, untimed. Each round loads into a fresh schema; the loaded rows are compared
with the Parquet file (all columns) before the round counts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from benchmarks import compare
from benchmarks.conftest import Session, run_contender
from benchmarks.contenders.loaders import plain_table_ddl, psql_argv
from benchmarks.harness import phases_from_stdout
from benchmarks.scales import AS_OF

ALL_COLUMNS = compare.HISTORICAL + compare.PREDICTIVE


def _csv(session: Session) -> Path:
    """The reference rows as CSV (what ``psql \\copy`` reads); written once, untimed."""
    path = session.work / "load" / "customer_ltv.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.read_parquet(session.reference().output).write_csv(path)
    return path


def _create_table(session: Session, schema: str) -> None:
    import psycopg

    with psycopg.connect(session.pg_uri, autocommit=True) as conn:
        for statement in plain_table_ddl(schema).split(";\n"):
            conn.execute(statement.encode())  # our own DDL text (bytes: not a LiteralString)


def _bench_load(benchmark: Any, session: Session, name: str, argv_for: Any, *, plain_table: bool) -> None:
    ref = session.reference()
    inprocess: list[float] = []
    session.record(name).extra["inprocess"] = inprocess

    def prepare(n: int) -> dict[str, Any]:
        schema = session.new_schema(name)
        if plain_table:
            _create_table(session, schema)
        return {"schema": schema, "log": session.work / "logs" / f"{name}_{n}"}

    def check(s: dict[str, Any]) -> compare.Comparison:
        seconds = phases_from_stdout(Path(s["measurement"].stdout).read_text()).get("load")
        if seconds is not None:
            inprocess.append(seconds)
        out = compare.compare_pg(session.pg_uri, s["schema"], "customer_ltv", ref.output, AS_OF, ALL_COLUMNS)
        out.ok_text = "loaded rows identical to the Parquet file (all columns)"
        return out

    def cleanup(s: dict[str, Any]) -> None:
        session.drop_schema(s["schema"])

    run_contender(
        benchmark,
        session,
        name,
        rows=ref.output_rows,
        rows_kind="output rows",
        prepare=prepare,
        argv=argv_for,
        check=check,
        cleanup=cleanup,
    )


def bench_load_adbc(benchmark: Any, session: Session) -> None:
    """fastclv's load: ADBC binary COPY into a new partition, PK, atomic swap."""
    ref = session.reference()
    _bench_load(
        benchmark,
        session,
        "load_adbc",
        lambda s: [
            sys.executable,
            "-m",
            "benchmarks.contenders.loaders",
            "adbc",
            "--parquet",
            str(ref.output),
            "--as-of",
            AS_OF.isoformat(),
            "--pg-uri",
            session.pg_uri,
            "--schema",
            s["schema"],
        ],
        plain_table=False,
    )


def bench_load_psql_copy(benchmark: Any, session: Session) -> None:
    """psql -1: DELETE the date, then \\copy the CSV into a table with its primary key."""
    psql = shutil.which("psql") or "/usr/bin/psql"
    if not Path(psql).exists():
        session.record("load_psql_copy").status = "skipped"
        pytest.skip("psql is not installed")
    csv_path = _csv(session)
    _bench_load(
        benchmark,
        session,
        "load_psql_copy",
        lambda s: psql_argv(psql, session.pg_uri, s["schema"], csv_path, AS_OF),
        plain_table=True,
    )


def bench_load_psycopg3_copy(benchmark: Any, session: Session) -> None:
    """psycopg 3 cursor.copy (binary, set_types + write_row) from pyarrow batches."""
    ref = session.reference()
    _bench_load(
        benchmark,
        session,
        "load_psycopg3_copy",
        lambda s: [
            sys.executable,
            "-m",
            "benchmarks.contenders.loaders",
            "psycopg3",
            "--parquet",
            str(ref.output),
            "--as-of",
            AS_OF.isoformat(),
            "--pg-uri",
            session.pg_uri,
            "--schema",
            s["schema"],
        ],
        plain_table=True,
    )
