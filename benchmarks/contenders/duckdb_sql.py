"""Contender: the same contract in DuckDB SQL, loaded through ADBC binary COPY.

DuckDB reads each file as physical lines (``read_csv`` with a separator that never occurs
and no quoting: its own CSV parser, like pandas', repairs or drops malformed rows instead of
reporting them), numbers them in file order (``rowid`` of a table created with
``preserve_insertion_order``), splits them (``string_split`` for lines without quotes, one
anchored RE2 regex for the rest), validates every row with SQL expressions (the contract's
formats as regexes, then DuckDB's own casts: ``TRY_CAST(... AS TIMESTAMPTZ)``, ``DECIMAL(18,2)``),
resolves duplicate keys and foreign keys with GROUP BY / anti-joins, and computes the
historical columns with two GROUP BYs. DuckDB runs with its defaults (all cores, memory limit
80% of RAM, spilling to ``--work``). The result streams as Arrow batches into PostgreSQL with ADBC's
``adbc_ingest`` (binary COPY), after ``DELETE`` of the as-of date, in one transaction.

The only Python beyond building the SQL: pairing the lines of multi-line records (lines
with an odd number of quotes, normally none), a walk over those few lines.

Run::

    python -m benchmarks.contenders.duckdb_sql --input DIR --as-of 2025-12-31 \
        --pg-uri URI --schema S --work DIR --counts counts.json
"""

from __future__ import annotations

import re
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from benchmarks.contenders.rules import (
    CUSTOMERS,
    DATE_RE,
    ITEMS,
    MONEY_RE,
    ORDERS,
    OUTPUT_COLUMNS,
    QUANTITY_MAX,
    QUANTITY_RE,
    SPECS,
    STATUSES,
    TIMESTAMP_RE,
    Spec,
    contender_parser,
    header_positions,
    opener_re,
    pair_multiline,
    record_re,
    table_ddl,
    write_counts,
)

TRIM_SQL = "' ' || chr(9) || chr(13) || chr(10)"


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _clean(value: str) -> str:
    """Trimmed text; empty is missing (NULL)."""
    return f"nullif(trim({value}, {TRIM_SQL}), '')"


def _unquote(value: str, delimiter: str) -> str:
    pad = _lit(" \t".replace(delimiter, ""))
    bare = f"trim({value}, {pad})"
    return (
        f"CASE WHEN starts_with({bare}, '\"') "
        f"THEN replace(substring({bare}, 2, length({bare}) - 2), '\"\"', '\"') ELSE {value} END"
    )


def read_records(con: duckdb.DuckDBPyConnection, spec: Spec, path: Path, delimiter: str) -> None:
    """Create table ``<file>_fields``: row, raw, malformed and one cleaned text column per contract column."""
    n_fields, positions = header_positions(path, spec, delimiter)
    name = spec.name
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {name}_lines AS
        SELECT raw FROM read_csv({_lit(str(path))}, columns = {{'raw': 'VARCHAR'}}, header = false,
            delim = chr(31), quote = '', escape = '', auto_detect = false, strict_mode = false)
        """
    )
    odd = con.execute(
        f"""
        SELECT rowid, regexp_full_match(raw, {_lit(opener_re(delimiter))}) FROM {name}_lines
        WHERE rowid > 0 AND (length(raw) - length(replace(raw, '"', ''))) % 2 = 1 ORDER BY rowid
        """
    ).fetchall()
    last_line = con.execute(f"SELECT max(rowid) FROM {name}_lines").fetchone()
    spans, still_open = pair_multiline([r[0] for r in odd], {r[0] for r in odd if r[1]})
    if still_open is not None:  # an unterminated quoted field runs to the end of the file
        spans.append((still_open, int(last_line[0] if last_line else 0)))
    con.execute("CREATE OR REPLACE TEMP TABLE spans (first BIGINT, last BIGINT)")
    if spans:
        con.executemany("INSERT INTO spans VALUES (?, ?)", spans)
    # Records, in file order: non-empty lines outside multi-line records, and the joined
    # multi-line records. The table keeps insertion order, so a record's row number is its
    # rowid + 1 (no sort needed unless there are multi-line records to put in place).
    if spans:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE records AS
            SELECT line, raw FROM (
                SELECT rowid AS line, raw FROM {name}_lines l
                WHERE rowid > 0 AND raw IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM spans s WHERE l.rowid BETWEEN s.first AND s.last)
                UNION ALL
                SELECT s.first, string_agg(coalesce(l.raw, ''), chr(10) ORDER BY l.rowid)
                FROM spans s JOIN {name}_lines l ON l.rowid BETWEEN s.first AND s.last
                GROUP BY s.first
            ) ORDER BY line
            """
        )
    else:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE records AS
            SELECT rowid AS line, raw FROM {name}_lines WHERE rowid > 0 AND raw IS NOT NULL
            """
        )
    groups = [f"f{i}" for i in range(n_fields)]
    regex = _lit(f"^{record_re(n_fields, delimiter)}$")
    group_list = "[" + ", ".join(_lit(g) for g in groups) + "]"

    d = re.escape(delimiter)
    # Does any field of a line without quotes need trimming? (trim with a character set is
    # slow, so it runs only on the few lines with a space, tab, CR or LF at a field edge.)
    padded = _lit(f"[\t\r\n]|^ | $|{d} | {d}")

    def field(column: str) -> str:
        if column not in positions:
            return f"NULL::VARCHAR AS {column}"
        i = positions[column]
        value = (
            f"CASE WHEN q THEN {_clean(_unquote(f'g.f{i}', delimiter))} "
            f"WHEN padded THEN {_clean(f'parts[{i + 1}]')} ELSE nullif(parts[{i + 1}], '') END"
        )
        return f"CASE WHEN NOT malformed THEN {value} END AS {column}"

    con.execute(
        f"""
        CREATE OR REPLACE TABLE {name}_fields AS
        WITH split AS (
            SELECT rowid + 1 AS row, raw, contains(raw, '"') AS q,
                CASE WHEN NOT contains(raw, '"') THEN string_split(raw, {_lit(delimiter)}) END AS parts,
                CASE WHEN contains(raw, '"') THEN regexp_extract(raw, {regex}, {group_list}) END AS g
            FROM records
        ), checked AS (
            SELECT *, CASE WHEN q THEN NOT regexp_full_match(raw, {regex}) ELSE len(parts) <> {n_fields} END
                AS malformed,
                regexp_matches(raw, {padded}) AS padded
            FROM split
        )
        SELECT row, raw, malformed, {", ".join(field(c) for c in spec.columns)} FROM checked
        """
    )
    con.execute(f"DROP TABLE {name}_lines")


def _date(text: str) -> str:
    """YYYY-MM-DD -> DATE, NULL unless a real calendar date in the years 1-9999."""
    return (
        f"CASE WHEN regexp_full_match({text}, {_lit(DATE_RE)}) AND NOT starts_with({text}, '0000') "
        f"THEN TRY_CAST({text} AS DATE) END"
    )


def _money(text: str) -> str:
    return f"CASE WHEN regexp_full_match({text}, {_lit(MONEY_RE)}) THEN TRY_CAST({text} AS DECIMAL(18,2)) END"


def validate(con: duckdb.DuckDBPyConnection, input_dir: Path, delimiter: str) -> None:
    """Tables customers_valid, orders_valid, items_valid and rejects (file, row, reason, raw)."""
    for spec in SPECS:
        read_records(con, spec, input_dir / spec.file_name, delimiter)
    statuses = ", ".join(_lit(s) for s in STATUSES)
    con.execute(
        f"""
        CREATE TABLE customers_checked AS
        SELECT row, customer_id, signup AS signup_date, country,
            CASE WHEN malformed THEN 'malformed_row'
                 WHEN customer_id IS NULL OR signup_text IS NULL THEN 'missing_value'
                 WHEN signup IS NULL THEN 'bad_date' END AS reason
        FROM (SELECT row, malformed, customer_id, country, signup_date AS signup_text,
                {_date("signup_date")} AS signup
              FROM customers_fields)
        """
    )
    con.execute(
        f"""
        CREATE TABLE orders_checked AS
        WITH typed AS (
            SELECT row, malformed, order_id, customer_id, order_ts AS ts_text, status AS status_text,
                lower(status) AS status_lc,
                -- The contract's formats only (the regex), then DuckDB's own parser for the instant.
                CASE WHEN regexp_full_match(order_ts, {_lit(TIMESTAMP_RE)})
                          AND NOT starts_with(order_ts, '0000')
                     THEN TRY_CAST(order_ts AS TIMESTAMPTZ) END AS instant
            FROM orders_fields
        )
        SELECT row, order_id, customer_id, status_lc AS status,
            CASE WHEN year(instant) BETWEEN 1 AND 9999 THEN instant END AS order_ts,
            CASE WHEN malformed THEN 'malformed_row'
                 WHEN order_id IS NULL OR customer_id IS NULL OR ts_text IS NULL OR status_text IS NULL
                     THEN 'missing_value'
                 WHEN instant IS NULL OR NOT (year(instant) BETWEEN 1 AND 9999) THEN 'bad_timestamp'
                 WHEN status_lc NOT IN ({statuses}) THEN 'bad_status' END AS reason
        FROM typed
        """
    )
    con.execute(
        f"""
        CREATE TABLE items_checked AS
        WITH typed AS (
            SELECT *,
                CASE WHEN regexp_full_match(quantity, {_lit(QUANTITY_RE)}) AND length(quantity) <= 10
                     THEN TRY_CAST(quantity AS BIGINT) END AS qty,
                {_money("unit_price")} AS price,
                CASE WHEN discount IS NULL THEN 0::DECIMAL(18,2) ELSE {_money("discount")} END AS disc
            FROM order_items_fields
        )
        SELECT row, order_id, qty * price - disc AS amount,
            CASE WHEN malformed THEN 'malformed_row'
                 WHEN order_id IS NULL OR sku IS NULL OR quantity IS NULL OR unit_price IS NULL
                     THEN 'missing_value'
                 WHEN qty IS NULL OR NOT (qty BETWEEN 1 AND {QUANTITY_MAX}) THEN 'bad_quantity'
                 WHEN price IS NULL OR disc IS NULL THEN 'bad_money'
                 WHEN disc > qty * price THEN 'discount_exceeds_amount' END AS reason
        FROM typed
        """
    )
    # Duplicate keys among the rows that passed the checks: identical rows -> keep the first,
    # different rows -> reject them all. Then foreign keys: customers, orders, items.
    for file, key, rest in (
        ("customers", "customer_id", ("signup_date", "country")),
        ("orders", "order_id", ("customer_id", "order_ts", "status")),
    ):
        variant = "{" + ", ".join(f"'{c}': {c}" for c in rest) + "}"
        con.execute(
            f"""
            CREATE TABLE {file}_keys AS
            SELECT {key}, min(row) AS row, count(*) AS n, count(DISTINCT {variant}) AS variants,
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
    con.execute(
        """
        CREATE TABLE rejects AS
        WITH rejected AS (
            SELECT 'customers' AS file, row, reason FROM customers_checked WHERE reason IS NOT NULL
            UNION ALL
            SELECT 'customers', c.row, 'conflicting_duplicate' FROM customers_checked c
            JOIN customers_keys k USING (customer_id) WHERE c.reason IS NULL AND k.variants > 1
            UNION ALL
            SELECT 'orders', row, reason FROM orders_checked WHERE reason IS NOT NULL
            UNION ALL
            SELECT 'orders', o.row, 'conflicting_duplicate' FROM orders_checked o
            JOIN orders_keys k USING (order_id) WHERE o.reason IS NULL AND k.variants > 1
            UNION ALL
            SELECT 'orders', k.row, 'unknown_customer' FROM orders_keys k
            WHERE k.variants = 1 AND k.customer_id NOT IN (SELECT customer_id FROM customers_valid)
            UNION ALL
            SELECT 'order_items', row, reason FROM items_checked WHERE reason IS NOT NULL
            UNION ALL
            SELECT 'order_items', i.row, 'unknown_order' FROM items_checked i
            WHERE i.reason IS NULL AND i.order_id NOT IN (SELECT order_id FROM orders_valid)
        )
        -- The rejected rows' text, from the records (kept out of the wide tables above).
        SELECT r.file, r.row, r.reason, f.raw FROM rejected r JOIN customers_fields f USING (row)
        WHERE r.file = 'customers'
        UNION ALL
        SELECT r.file, r.row, r.reason, f.raw FROM rejected r JOIN orders_fields f USING (row)
        WHERE r.file = 'orders'
        UNION ALL
        SELECT r.file, r.row, r.reason, f.raw FROM rejected r JOIN order_items_fields f USING (row)
        WHERE r.file = 'order_items'
        """
    )


def counts(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, dict[str, object]]:
    """Per-file counts in the shape of fastclv's summary.json."""
    cutoff = _lit(str(as_of + timedelta(days=1)))
    after_orders = con.execute(
        f"SELECT count(*) FROM orders_valid WHERE order_ts >= TIMESTAMPTZ {cutoff}"
    ).fetchone()
    after_items = con.execute(
        f"SELECT count(*) FROM items_valid WHERE order_id IN "
        f"(SELECT order_id FROM orders_valid WHERE order_ts >= TIMESTAMPTZ {cutoff})"
    ).fetchone()
    after = {"customers": 0, "orders": after_orders[0] if after_orders else 0}
    after["order_items"] = after_items[0] if after_items else 0
    out: dict[str, dict[str, object]] = {}
    for spec, table in ((CUSTOMERS, "customers"), (ORDERS, "orders"), (ITEMS, "items")):
        read = con.execute(f"SELECT count(*) FROM {spec.name}_fields").fetchone()
        valid = con.execute(f"SELECT count(*) FROM {table}_valid").fetchone()
        by_reason = dict(
            con.execute(
                "SELECT reason, count(*) FROM rejects WHERE file = ? GROUP BY reason", [spec.name]
            ).fetchall()
        )
        n_read, n_valid = (read[0] if read else 0), (valid[0] if valid else 0)
        rejected = {r: int(by_reason.get(r, 0)) for r in spec.reasons}
        out[spec.name] = {
            "file": spec.file_name,
            "read": n_read,
            "valid": n_valid,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "duplicates_dropped": n_read - n_valid - sum(rejected.values()),
            "after_as_of": after[spec.name],
        }
    return out


def customer_ltv(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    """Table ``result``: the historical columns of customer_ltv, one row per valid customer."""
    d = _lit(str(as_of))
    cutoff = _lit(str(as_of + timedelta(days=1)))
    con.execute(
        f"""
        CREATE TABLE result AS
        WITH counted AS (
            SELECT order_id, customer_id, order_ts, CAST(order_ts AS DATE) AS day FROM orders_valid
            WHERE status = 'completed' AND order_ts < TIMESTAMPTZ {cutoff}
        ), order_value AS (
            SELECT order_id, sum(amount) AS value FROM items_valid GROUP BY order_id
        ), days AS (
            SELECT c.customer_id, c.day, count(*) AS n_orders, sum(coalesce(v.value, 0)) AS value,
                min(c.order_ts) AS first_ts, max(c.order_ts) AS last_ts
            FROM counted c LEFT JOIN order_value v USING (order_id) GROUP BY c.customer_id, c.day
        ), history AS (
            SELECT customer_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
                sum(n_orders) AS n_orders, sum(value) AS total, count(*) AS n_days,
                min(day) AS first_day, max(day) AS last_day, arg_min(value, day) AS first_day_value
            FROM days GROUP BY customer_id
        )
        SELECT DATE {d} AS as_of, c.customer_id, c.signup_date, c.country,
            h.first_ts AS first_order_at, h.last_ts AS last_order_at,
            coalesce(h.n_orders, 0)::INTEGER AS orders_count,
            coalesce(h.total, 0)::DECIMAL(18,2) AS total_revenue,
            CAST(h.total * 100 AS DOUBLE) / (CAST(h.n_orders AS DOUBLE) * 100.0) AS avg_order_value,
            (h.n_days - 1)::INTEGER AS frequency,
            (h.last_day - h.first_day)::INTEGER AS recency_days,
            (DATE {d} - h.first_day)::INTEGER AS t_days,
            CASE WHEN h.n_days > 1
                 THEN CAST((h.total - h.first_day_value) * 100 AS DOUBLE)
                      / (CAST(h.n_days - 1 AS DOUBLE) * 100.0)
                 WHEN h.n_orders > 0 THEN 0.0 END AS monetary_value
        FROM customers_valid c LEFT JOIN history h USING (customer_id)
        """
    )


def load(con: duckdb.DuckDBPyConnection, pg_uri: str, schema: str, as_of: date) -> int:
    """Replace the rows of ``as_of`` in ``schema.customer_ltv`` (ADBC binary COPY), one transaction."""
    import adbc_driver_postgresql.dbapi as pg

    columns = ", ".join(OUTPUT_COLUMNS)
    with pg.connect(pg_uri) as conn:
        with conn.cursor() as cur:
            for statement in table_ddl(schema).split(";\n"):
                cur.execute(statement)
            cur.execute(f'DELETE FROM "{schema}".customer_ltv WHERE as_of = $1', parameters=(as_of,))
            # A relation's Arrow reader streams the result in batches (DuckDB 2.0 API).
            with con.sql(f"SELECT {columns} FROM result").to_arrow_reader(batch_size=65_536) as reader:
                rows = cur.adbc_ingest("customer_ltv", reader, mode="append", db_schema_name=schema)
        conn.commit()
    return int(rows)


def main() -> None:
    parser = contender_parser(__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (DuckDB spills here)")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={"temp_directory": str(args.work / "duckdb.tmp"), "preserve_insertion_order": True}
    )
    con.execute("SET TimeZone = 'UTC'")
    timings = {}
    t0 = time.perf_counter()
    validate(con, args.input, args.delimiter)
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    customer_ltv(con, args.as_of)
    timings["transform"] = time.perf_counter() - t0
    if args.rejects:
        con.execute(f"COPY (SELECT * FROM rejects ORDER BY file, row) TO {_lit(str(args.rejects))} (HEADER)")
    t0 = time.perf_counter()
    rows = load(con, args.pg_uri, args.schema, args.as_of)
    timings["load"] = time.perf_counter() - t0
    write_counts(args.counts, counts(con, args.as_of))
    print(f"{rows} rows loaded; seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
