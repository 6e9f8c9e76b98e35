"""The PostgreSQL tables' DDL: the output table and the run ledger, created when missing.

The output table's columns, types and NOT NULLs come from the contract
(:data:`~fastclv.contract.OUTPUT_PG_TYPES`, :data:`~fastclv.contract.OUTPUT_NOT_NULL`), so the
table cannot drift from the Parquet output; an existing table is checked against them. The run
ledger (``customer_ltv_runs``, written by :mod:`fastclv.ledger`) has one row per run.
"""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg

from fastclv.config import check_identifier
from fastclv.contract import OUTPUT_NOT_NULL, OUTPUT_PG_TYPES
from fastclv.db import close, connect, guard, qualified, quote
from fastclv.errors import ConfigError, LoadError

#: The statuses of a run in the ledger.
#: ``abandoned``: a run that ended without recording its outcome (its process was killed, or the
#: database restarted under it), marked so by a later run (:func:`fastclv.ledger.start_run`).
RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "abandoned")
_STATUSES_SQL = ", ".join(f"'{status}'" for status in RUN_STATUSES)
#: The longest table name whose derived names (staging table + its index) stay <= 63 bytes.
MAX_TABLE_NAME = 63 - len("_s20250131_0123abcd_pkey")
#: How PostgreSQL's format_type() spells the contract's types where it differs from the DDL.
_PG_SPELLING = {"timestamptz": "timestamp with time zone"}


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
    check_names(schema, table)
    check_identifier(runs_table, "runs table")
    where = f"{schema}.{table} / {schema}.{runs_table}"
    conn = connect(pg_uri, where)
    try:
        guard(pg_uri, where, "creating", lambda: ensure_tables(conn, schema, table, runs_table))
    finally:
        close(conn)


def check_names(schema: str, table: str) -> None:
    """Raise ConfigError unless ``schema`` and ``table`` are plain identifiers, the table short enough."""
    check_identifier(schema, "schema")
    check_identifier(table, "table")
    if len(table) > MAX_TABLE_NAME:
        raise ConfigError(
            f"table name {table!r} is {len(table)} characters long; fastclv derives partition "
            f"and staging names from it, so at most {MAX_TABLE_NAME} are allowed. "
            "Hint: choose a shorter table name."
        )


def table_ddl(schema: str, name: str, extra: tuple[str, ...] = (), *, if_not_exists: bool = False) -> str:
    """``CREATE TABLE`` with the contract's output columns, plus ``extra`` constraints."""
    columns = [
        f"{quote(col)} {pg_type}{' NOT NULL' if col in OUTPUT_NOT_NULL else ''}"
        for col, pg_type in OUTPUT_PG_TYPES.items()
    ]
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return f"{create} {qualified(schema, name)} ({', '.join(columns + list(extra))})"


def ensure_tables(conn: pg.Connection, schema: str, table: str | None, runs_table: str | None) -> None:
    """Create what is missing, under an advisory lock so concurrent first runs do not collide."""
    wanted = [name for name in (table, runs_table) if name is not None]
    with conn.cursor() as cur:
        missing = False
        for name in wanted:
            cur.execute("SELECT to_regclass($1) IS NULL", parameters=(qualified(schema, name),))
            row = cur.fetchone()
            missing = missing or row is None or bool(row[0])
        if missing:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                parameters=(f"fastclv:ddl:{schema}",),
            )
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
            # even when the schema exists.
            cur.execute("SELECT to_regnamespace($1) IS NULL", parameters=(quote(schema),))
            row = cur.fetchone()
            if row is not None and row[0]:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            if table is not None:
                key = ("PRIMARY KEY (as_of, customer_id)",)
                ddl = table_ddl(schema, table, key, if_not_exists=True)
                cur.execute(f"{ddl} PARTITION BY LIST (as_of)")
            if runs_table is not None:
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {qualified(schema, runs_table)} ("
                    "run_id text PRIMARY KEY, as_of date, started_at timestamptz, "
                    "finished_at timestamptz, status text NOT NULL CHECK (status IN "
                    f"({_STATUSES_SQL})), input text, counts jsonb, "
                    "output_rows bigint, model jsonb, timings jsonb, error text, owner text)"
                )
        if runs_table is not None:
            _upgrade_ledger(cur, schema, runs_table)
        if table is not None:
            _check_output_table(cur, schema, table)
    conn.commit()


def _upgrade_ledger(cur: pg.Cursor, schema: str, runs_table: str) -> None:
    """Bring a ledger made by an earlier fastclv up to date: the ``owner`` column, ``abandoned``."""
    ledger = qualified(schema, runs_table)
    cur.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'owner' "
        "AND NOT attisdropped",
        parameters=(ledger,),
    )
    row = cur.fetchone()
    if row is not None and row[0]:
        return
    lock = f"fastclv:ddl:{schema}"
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters=(lock,))
    cur.execute(f"ALTER TABLE {ledger} ADD COLUMN IF NOT EXISTS owner text")
    cur.execute(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%status%'",
        parameters=(ledger,),
    )
    for (name,) in cur.fetchall():
        cur.execute(f"ALTER TABLE {ledger} DROP CONSTRAINT {quote(name)}")
    cur.execute(
        f"ALTER TABLE {ledger} ADD CONSTRAINT {quote(runs_table + '_status_check')} "
        f"CHECK (status IN ({_STATUSES_SQL}))"
    )


def _check_output_table(cur: pg.Cursor, schema: str, table: str) -> None:
    """Fail clearly when an existing output table does not have the contract's layout."""
    cur.execute(
        "SELECT c.relkind::text, pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.oid = to_regclass($1)",
        parameters=(qualified(schema, table),),
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
        parameters=(qualified(schema, table),),
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
