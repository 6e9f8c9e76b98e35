"""Load-only contenders: the same output rows (fastclv's staged customer_ltv.parquet) into PostgreSQL.

* ``adbc``: ``fastclv.load.load_partition``: ADBC binary COPY into a new partition, primary
  key built after the copy, then the atomic swap (what ``fastclv run`` does);
* ``psycopg3``: psycopg 3 ``cursor.copy`` in binary format (``set_types`` + ``write_row``, the
  documented fast path), rows from ``pyarrow`` batches, into a plain table with its primary
  key, after ``DELETE`` of the as-of date, in one transaction;
* ``psql \\copy`` of a CSV of the same rows is run by the harness directly (``psql -1``:
  ``DELETE`` then ``\\copy``, one transaction), see :func:`psql_argv`.

Run::

    python -m benchmarks.contenders.loaders adbc --parquet P --as-of D --pg-uri URI --schema S
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from fastclv.contract import OUTPUT_NOT_NULL, OUTPUT_PG_TYPES
from fastclv.load import load_partition

TABLE = "customer_ltv"


def plain_table_ddl(schema: str) -> str:
    """A plain (unpartitioned) customer_ltv with the contract's columns and primary key."""
    cols = ",\n  ".join(
        f'"{name}" {kind}' + (" NOT NULL" if name in OUTPUT_NOT_NULL else "")
        for name, kind in OUTPUT_PG_TYPES.items()
    )
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{schema}";\n'
        f'CREATE TABLE IF NOT EXISTS "{schema}"."{TABLE}" (\n  {cols},\n'
        "  PRIMARY KEY (as_of, customer_id)\n);"
    )


def psql_argv(psql: str, pg_uri: str, schema: str, csv_path: Path, as_of: date) -> list[str]:
    """``psql -1``: DELETE the as-of date and ``\\copy`` the CSV, in one transaction."""
    columns = ", ".join(OUTPUT_PG_TYPES)
    return [
        psql,
        pg_uri,
        "-X",
        "-q",
        "-1",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        f"DELETE FROM \"{schema}\".{TABLE} WHERE as_of = '{as_of.isoformat()}'",
        "-c",
        f"\\copy \"{schema}\".{TABLE} ({columns}) FROM '{csv_path}' WITH (FORMAT csv, HEADER true)",
    ]


def load_adbc(parquet: Path, pg_uri: str, schema: str, as_of: date) -> int:
    return load_partition(pg_uri, parquet, as_of, schema=schema, table=TABLE, run_id="bench").rows


def load_psycopg3(parquet: Path, pg_uri: str, schema: str, as_of: date) -> int:
    import psycopg  # here, not at the top: the ADBC contender's process does not pay for it

    columns = list(OUTPUT_PG_TYPES)
    types = [kind.split("(")[0] for kind in OUTPUT_PG_TYPES.values()]  # numeric(18,2) -> numeric
    rows = 0
    with psycopg.connect(pg_uri) as conn, conn.cursor() as cur:  # one transaction, committed on exit
        cur.execute(f'DELETE FROM "{schema}".{TABLE} WHERE as_of = %s', (as_of,))
        copy_sql = f'COPY "{schema}".{TABLE} ({", ".join(columns)}) FROM STDIN (FORMAT BINARY)'
        with cur.copy(copy_sql) as copy:
            copy.set_types(types)
            for batch in pq.ParquetFile(parquet).iter_batches(batch_size=65_536, columns=columns):
                for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                    copy.write_row(row)
                rows += batch.num_rows
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=("adbc", "psycopg3"))
    parser.add_argument("--parquet", type=Path, required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--pg-uri", required=True)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args()
    load = load_adbc if args.method == "adbc" else load_psycopg3
    started = time.perf_counter()  # the imports are done: time the load call alone
    rows = load(args.parquet, args.pg_uri, args.schema, args.as_of)
    print(f"{rows} rows loaded; seconds: load {time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    main()
