"""Contender: what a DuckDB user writes: ``read_csv`` with its rejects table, checks in SQL, ADBC load.

Unlike :mod:`benchmarks.contenders.duckdb_sql` (which splits physical lines itself so that it can
report every malformed row with its row number, as the contract asks), this one lets DuckDB's own
CSV reader split the records:

* ``read_csv(path, header = true, delim, quote = '"', escape = '"', types = {...}, store_rejects
  = true)`` per file. The contract's columns are read as ``VARCHAR`` (``types``), matched by
  header name; DuckDB's typed CSV columns (``'order_ts': 'TIMESTAMPTZ'``) do not trim a tab, so
  they would reject valid padded values, while the contract trims every value. Rows DuckDB's
  reader cannot split (too few or too many fields, text after a closing quote) go to its rejects
  table: they are the ``malformed_row`` rejects, with the reader's line number.
* the remaining checks in SQL: ``trim``, ``TRY_CAST`` to ``DATE``, ``TIMESTAMPTZ``, ``INTEGER``,
  ``DECIMAL(18,2)`` (DuckDB's own casts, not the contract's formats), statuses, ranges, discount <=
  amount; duplicates with ``GROUP BY`` + ``count(DISTINCT ...)``, foreign keys with semi joins;
* the historical columns and the load are :mod:`~benchmarks.contenders.duckdb_sql`'s own
  (``customer_ltv``: two GROUP BYs; ``load``: DELETE of the as-of date and ADBC ``adbc_ingest``,
  one transaction).

What it does not check: :data:`benchmarks.contenders.idiomatic.NOT_CHECKED` (RESULTS.md and
docs/benchmarks.md quote it).

Run::

    python -m benchmarks.contenders.duckdb_read_csv --input DIR --as-of 2025-12-31 \
        --pg-uri URI --schema S --work DIR --counts counts.json
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from benchmarks.contenders.duckdb_sql import customer_ltv, load
from benchmarks.contenders.rules import (
    CUSTOMERS,
    ITEMS,
    ORDERS,
    QUANTITY_MAX,
    SPECS,
    STATUSES,
    Spec,
    contender_parser,
    header_positions,
    write_counts,
)

TRIM = "' ' || chr(9) || chr(13) || chr(10)"


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _text(column: str) -> str:
    """The trimmed value; empty is missing (NULL)."""
    return f"nullif(trim({column}, {TRIM}), '')"


def read(con: duckdb.DuckDBPyConnection, spec: Spec, path: Path, delimiter: str) -> None:
    """Tables ``<file>_rows`` (what read_csv kept, in file order) and ``<file>_errors`` (its rejects)."""
    n_fields, positions = header_positions(path, spec, delimiter)  # a clear message for a missing column
    # Every header column, by position: the contract's by name, the others as placeholders.
    by_index = {i: c for c, i in positions.items()}
    columns = (
        "{" + ", ".join(f"{_lit(by_index.get(i, f'_extra_{i}'))}: 'VARCHAR'" for i in range(n_fields)) + "}"
    )
    select = ", ".join(f'"{c}"' if c in positions else f"NULL::VARCHAR AS {c}" for c in spec.columns)
    # auto_detect = false: DuckDB's sniffer gives up on a sample with malformed rows in it.
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {spec.name}_rows AS
        SELECT {select} FROM read_csv({_lit(str(path))}, header = true, auto_detect = false,
            delim = {_lit(delimiter)}, quote = '"', escape = '"', columns = {columns},
            store_rejects = true, rejects_table = '{spec.name}_errors', rejects_scan = '{spec.name}_scans')
        """
    )


def validate(con: duckdb.DuckDBPyConnection, input_dir: Path, delimiter: str) -> None:
    """Tables customers_valid, orders_valid, items_valid and rejects (file, line, reason, raw)."""
    for spec in SPECS:
        read(con, spec, input_dir / spec.file_name, delimiter)
    statuses = ", ".join(_lit(s) for s in STATUSES)
    con.execute(
        f"""
        CREATE TABLE customers_checked AS
        SELECT customer_id, TRY_CAST(signup_text AS DATE) AS signup_date, country,
            CASE WHEN customer_id IS NULL OR signup_text IS NULL THEN 'missing_value'
                 WHEN TRY_CAST(signup_text AS DATE) IS NULL THEN 'bad_date' END AS reason
        FROM (SELECT {_text("customer_id")} AS customer_id, {_text("signup_date")} AS signup_text,
                {_text("country")} AS country FROM customers_rows)
        """
    )
    con.execute(
        f"""
        CREATE TABLE orders_checked AS
        SELECT order_id, customer_id, TRY_CAST(ts_text AS TIMESTAMPTZ) AS order_ts,
            lower(status_text) AS status,
            CASE WHEN order_id IS NULL OR customer_id IS NULL OR ts_text IS NULL OR status_text IS NULL
                     THEN 'missing_value'
                 WHEN TRY_CAST(ts_text AS TIMESTAMPTZ) IS NULL THEN 'bad_timestamp'
                 WHEN lower(status_text) NOT IN ({statuses}) THEN 'bad_status' END AS reason
        FROM (SELECT {_text("order_id")} AS order_id, {_text("customer_id")} AS customer_id,
                {_text("order_ts")} AS ts_text, {_text("status")} AS status_text FROM orders_rows)
        """
    )
    con.execute(
        f"""
        CREATE TABLE items_checked AS
        WITH typed AS (
            SELECT {_text("order_id")} AS order_id, {_text("sku")} AS sku,
                {_text("quantity")} AS qty_text, {_text("unit_price")} AS price_text,
                {_text("discount")} AS disc_text
            FROM order_items_rows
        ), parsed AS (
            SELECT *, TRY_CAST(qty_text AS BIGINT) AS qty, TRY_CAST(price_text AS DECIMAL(18,2)) AS price,
                coalesce(TRY_CAST(disc_text AS DECIMAL(18,2)), CASE WHEN disc_text IS NULL THEN 0 END)
                    AS disc
            FROM typed
        )
        SELECT order_id, qty * price - disc AS amount,
            CASE WHEN order_id IS NULL OR sku IS NULL OR qty_text IS NULL OR price_text IS NULL
                     THEN 'missing_value'
                 WHEN qty IS NULL OR NOT (qty BETWEEN 1 AND {QUANTITY_MAX}) THEN 'bad_quantity'
                 WHEN price IS NULL OR disc IS NULL OR price < 0 OR disc < 0 THEN 'bad_money'
                 WHEN disc > qty * price THEN 'discount_exceeds_amount' END AS reason
        FROM parsed
        """
    )
    # Duplicate keys among the rows that passed: all identical -> keep one, else reject them all.
    for file, key, rest in (
        ("customers", "customer_id", ("signup_date", "country")),
        ("orders", "order_id", ("customer_id", "order_ts", "status")),
    ):
        con.execute(
            f"""
            CREATE TABLE {file}_keys AS
            SELECT {key}, count(DISTINCT ({", ".join(rest)})) AS variants,
                {", ".join(f"any_value({c}) AS {c}" for c in rest)}
            FROM {file}_checked WHERE reason IS NULL GROUP BY {key}
            """
        )
    con.execute(
        "CREATE TABLE customers_valid AS SELECT customer_id, signup_date, country FROM customers_keys "
        "WHERE variants = 1"
    )
    con.execute(
        """
        CREATE TABLE orders_valid AS
        SELECT o.order_id, o.customer_id, o.order_ts, o.status FROM orders_keys o
        SEMI JOIN customers_valid c ON c.customer_id = o.customer_id WHERE o.variants = 1
        """
    )
    con.execute(
        """
        CREATE TABLE items_valid AS
        SELECT i.order_id, i.amount FROM items_checked i
        SEMI JOIN orders_valid o ON o.order_id = i.order_id WHERE i.reason IS NULL
        """
    )
    malformed = " UNION ALL ".join(
        f"SELECT '{s.name}' AS file, line, 'malformed_row' AS reason, any_value(csv_line) AS raw "
        f"FROM {s.name}_errors GROUP BY line"
        for s in SPECS
    )
    con.execute(
        f"""
        CREATE TABLE rejects AS
        {malformed}
        UNION ALL
        SELECT 'customers', NULL, reason, customer_id FROM customers_checked WHERE reason IS NOT NULL
        UNION ALL
        SELECT 'customers', NULL, 'conflicting_duplicate', customer_id FROM customers_checked c
        SEMI JOIN customers_keys k ON k.customer_id = c.customer_id AND k.variants > 1
        WHERE c.reason IS NULL
        UNION ALL
        SELECT 'orders', NULL, reason, order_id FROM orders_checked WHERE reason IS NOT NULL
        UNION ALL
        SELECT 'orders', NULL, 'conflicting_duplicate', order_id FROM orders_checked o
        SEMI JOIN orders_keys k ON k.order_id = o.order_id AND k.variants > 1
        WHERE o.reason IS NULL
        UNION ALL
        SELECT 'orders', NULL, 'unknown_customer', order_id FROM orders_keys k
        WHERE k.variants = 1 AND k.customer_id NOT IN (SELECT customer_id FROM customers_valid)
        UNION ALL
        SELECT 'order_items', NULL, reason, order_id FROM items_checked WHERE reason IS NOT NULL
        UNION ALL
        SELECT 'order_items', NULL, 'unknown_order', order_id FROM items_checked i
        WHERE i.reason IS NULL AND i.order_id NOT IN (SELECT order_id FROM orders_valid)
        """
    )


def counts(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, dict[str, object]]:
    """Per-file counts in the shape of fastclv's summary.json (read = kept + rejected lines)."""
    cutoff = _lit(str(as_of + timedelta(days=1)))
    after = dict(
        con.execute(
            f"""
            WITH late AS (SELECT order_id FROM orders_valid WHERE order_ts >= TIMESTAMPTZ {cutoff})
            SELECT 'orders', count(*) FROM late
            UNION ALL SELECT 'order_items', count(*) FROM items_valid SEMI JOIN late USING (order_id)
            """
        ).fetchall()
    )
    out: dict[str, dict[str, object]] = {}
    for spec, table in ((CUSTOMERS, "customers"), (ORDERS, "orders"), (ITEMS, "items")):
        row = con.execute(
            f"SELECT (SELECT count(*) FROM {spec.name}_rows) + (SELECT count(DISTINCT line) "
            f"FROM {spec.name}_errors), (SELECT count(*) FROM {table}_valid)"
        ).fetchone()
        n_read, n_valid = (int(row[0]), int(row[1])) if row else (0, 0)
        by_reason = dict(
            con.execute(
                "SELECT reason, count(*) FROM rejects WHERE file = ? GROUP BY reason", [spec.name]
            ).fetchall()
        )
        rejected = {r: int(by_reason.get(r, 0)) for r in spec.reasons}
        out[spec.name] = {
            "file": spec.file_name,
            "read": n_read,
            "valid": n_valid,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "duplicates_dropped": n_read - n_valid - sum(rejected.values()),
            "after_as_of": int(after.get(spec.name, 0)),
        }
    return out


def main() -> None:
    parser = contender_parser(__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (DuckDB spills here)")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"temp_directory": str(args.work / "duckdb.tmp")})
    con.execute("SET TimeZone = 'UTC'")
    timings = {}
    t0 = time.perf_counter()
    validate(con, args.input, args.delimiter)
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    customer_ltv(con, args.as_of)
    timings["transform"] = time.perf_counter() - t0
    if args.rejects:
        con.execute(f"COPY (SELECT * FROM rejects ORDER BY file, line) TO {_lit(str(args.rejects))} (HEADER)")
    t0 = time.perf_counter()
    rows = load(con, args.pg_uri, args.schema, args.as_of)
    timings["load"] = time.perf_counter() - t0
    write_counts(args.counts, counts(con, args.as_of))
    print(f"{rows} rows loaded; seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
