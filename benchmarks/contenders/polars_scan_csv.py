"""Contender: what a Polars user writes: ``pl.scan_csv`` with a schema, expressions, ADBC load.

Unlike fastclv (a strict scanner that reports every malformed row), this one lets Polars' own CSV
reader split the records:

* ``pl.scan_csv(path, schema = {every column: pl.String}, truncate_ragged_lines = True)``: the
  contract's columns as text, matched by header name (values are trimmed and cast by expressions,
  because the contract trims every value and Polars' typed CSV columns do not). A row with too many
  fields is cut to the header's width (that is what ``truncate_ragged_lines`` does; without it the
  read fails), one with too few is padded with nulls.
* Polars 2.1 aborts the whole read on a field with text after its closing quote, even with
  ``ignore_errors`` (pola-rs/polars#25462, open). So a first pass (``pl.scan_lines``, one regex)
  sets those lines aside as ``malformed_row`` and streams the others, each prefixed with its row
  number, to a scratch CSV under ``--work`` that ``scan_csv`` then reads: row numbers are the
  file's physical line numbers.
* checks as expressions: ``str.strip_chars``, ``str.to_date`` / ``str.to_datetime`` (a few chrono
  formats, coalesced), ``cast(pl.Decimal(18, 2), strict=False)``, ``cast(pl.Int64, strict=False)``;
  duplicates with ``group_by`` + ``n_unique`` of a struct, foreign keys with semi/anti joins; the
  historical columns (contract sections 3 and 4) with two ``group_by``s, as the DuckDB contenders
  compute them; every query collected with the streaming engine.
* ``DataFrame.write_database(engine="adbc")`` into PostgreSQL on one ADBC connection, after
  ``DELETE`` of the as-of date in the same transaction (``write_database`` commits it).

What it does not check: :data:`benchmarks.contenders.idiomatic.NOT_CHECKED` (RESULTS.md and
docs/benchmarks.md quote it).

Run::

    python -m benchmarks.contenders.polars_scan_csv --input DIR --as-of 2025-12-31 \
        --pg-uri URI --schema S --work DIR --counts counts.json
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from benchmarks.contenders.rules import (
    CUSTOMERS,
    ITEMS,
    ORDERS,
    OUTPUT_COLUMNS,
    QUANTITY_MAX,
    STATUSES,
    TRIM,
    Spec,
    contender_parser,
    header_positions,
    table_ddl,
    write_counts,
)

#: A field that starts with a quote and has text after its closing quote (polars#25462).
TEXT_AFTER_QUOTE = r'(?:^|{d})[ \t]*"(?:[^"]|"")*"[ \t]*[^{d}\r \t]'
#: Timestamp formats after ``Z`` -> ``+00:00`` and ``T`` -> space: with an offset, then without.
AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M%:z")
NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")


def _text(column: str) -> pl.Expr:
    """The trimmed value; empty is missing (null)."""
    value = pl.col(column).str.strip_chars(TRIM)
    return pl.when(value.str.len_bytes() > 0).then(value)


def _timestamp(text: pl.Expr) -> pl.Expr:
    """Text -> Datetime(us, UTC): the contract's formats as chrono formats, the first that parses."""
    t = text.str.replace(r"[Zz]$", "+00:00").str.replace("T", " ", literal=True)
    return pl.coalesce(
        *(t.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in AWARE_FORMATS),
        *(
            t.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
            for f in NAIVE_FORMATS
        ),
        t.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    )


def scan(spec: Spec, path: Path, delimiter: str, work: Path) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """(the records Polars' reader splits, with ``row``; the lines it cannot read, as rejects)."""
    n_fields, positions = header_positions(path, spec, delimiter)  # a clear message for a missing column
    by_index = {i: c for c, i in positions.items()}
    names = [by_index.get(i, f"_extra_{i}") for i in range(n_fields)]
    d = re.escape(delimiter)
    unreadable = pl.col("line").str.contains(TEXT_AFTER_QUOTE.format(d=d))
    lines = pl.scan_lines(path, row_index_name="row").slice(1)  # row 0 is the header
    header = pl.LazyFrame({"line": [delimiter.join(["row", *names])]})
    readable = lines.filter(~unreadable).select(
        pl.concat_str(pl.col("row").cast(pl.String), pl.col("line"), separator=delimiter).alias("line")
    )
    scratch = work / spec.file_name
    sink = pl.concat([header, readable]).sink_csv(
        scratch, include_header=False, quote_style="never", lazy=True
    )
    rejects = lines.filter(unreadable).select(
        pl.lit(spec.name).alias("file"),
        pl.col("row").cast(pl.Int64),
        pl.lit("malformed_row").alias("reason"),
        pl.col("line").alias("raw"),
    )
    _, unread = pl.collect_all([sink, rejects], engine="streaming")
    records = pl.scan_csv(
        scratch,
        separator=delimiter,
        schema={"row": pl.Int64, **dict.fromkeys(names, pl.String)},
        truncate_ragged_lines=True,
    )
    missing = [pl.lit(None, pl.String).alias(c) for c in spec.columns if c not in positions]
    return records.with_columns(missing), unread


def _first_reason(*rules: tuple[pl.Expr, str]) -> pl.Expr:
    """The reason of the first rule that holds, else null."""
    out = pl.lit(None, pl.String)
    for condition, reason in reversed(rules):
        out = pl.when(condition).then(pl.lit(reason)).otherwise(out)
    return out


def check_customers(records: pl.LazyFrame) -> pl.LazyFrame:
    typed = records.select(
        "row",
        _text("customer_id").alias("customer_id"),
        _text("signup_date").alias("signup_text"),
        _text("country").alias("country"),
    ).with_columns(signup_date=pl.col("signup_text").str.to_date("%Y-%m-%d", strict=False))
    reason = _first_reason(
        (pl.col("customer_id").is_null() | pl.col("signup_text").is_null(), "missing_value"),
        (pl.col("signup_date").is_null(), "bad_date"),
    )
    return typed.select("row", "customer_id", "signup_date", "country", reason.alias("reason"))


def check_orders(records: pl.LazyFrame) -> pl.LazyFrame:
    typed = records.select(
        "row",
        _text("order_id").alias("order_id"),
        _text("customer_id").alias("customer_id"),
        _text("order_ts").alias("ts_text"),
        _text("status").alias("status_text"),
    ).with_columns(order_ts=_timestamp(pl.col("ts_text")), status=pl.col("status_text").str.to_lowercase())
    required = ("order_id", "customer_id", "ts_text", "status_text")
    reason = _first_reason(
        (pl.any_horizontal(pl.col(required).is_null()), "missing_value"),
        (pl.col("order_ts").is_null(), "bad_timestamp"),
        (~pl.col("status").is_in(STATUSES), "bad_status"),
    )
    return typed.select("row", "order_id", "customer_id", "order_ts", "status", reason.alias("reason"))


def check_items(records: pl.LazyFrame) -> pl.LazyFrame:
    money = pl.Decimal(18, 2)
    typed = records.select(
        "row",
        _text("order_id").alias("order_id"),
        _text("sku").alias("sku"),
        _text("quantity").alias("qty_text"),
        _text("unit_price").alias("price_text"),
        _text("discount").alias("disc_text"),
    ).with_columns(
        qty=pl.col("qty_text").cast(pl.Int64, strict=False),
        price=pl.col("price_text").cast(money, strict=False),
        disc=pl.when(pl.col("disc_text").is_null())
        .then(pl.lit(0, money))
        .otherwise(pl.col("disc_text").cast(money, strict=False)),
    )
    gross = pl.col("qty").cast(money) * pl.col("price")
    reason = _first_reason(
        (pl.any_horizontal(pl.col("order_id", "sku", "qty_text", "price_text").is_null()), "missing_value"),
        (pl.col("qty").is_null() | ~pl.col("qty").is_between(1, QUANTITY_MAX), "bad_quantity"),
        (
            pl.col("price").is_null()
            | pl.col("disc").is_null()
            | (pl.col("price") < 0)
            | (pl.col("disc") < 0),
            "bad_money",
        ),
        (pl.col("disc") > gross, "discount_exceeds_amount"),
    )
    return typed.select("row", "order_id", (gross - pl.col("disc")).alias("amount"), reason.alias("reason"))


def dedupe(checked: pl.DataFrame, key: str, rest: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the rows kept: one per key whose rows are all identical; the rows of conflicting keys)."""
    ok = checked.lazy().filter(pl.col("reason").is_null())
    keys = ok.group_by(key).agg(
        pl.struct(rest).n_unique().alias("variants"), *(pl.col(c).first() for c in ["row", *rest])
    )
    kept = keys.filter(pl.col("variants") == 1).drop("variants")
    conflicts = ok.join(keys.filter(pl.col("variants") > 1).select(key), on=key, how="semi")
    kept_rows, conflict_rows = pl.collect_all([kept, conflicts], engine="streaming")
    return kept_rows, conflict_rows


def validate(
    input_dir: Path, delimiter: str, work: Path
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, int]]:
    """({customers, orders, items}: the valid rows), the rejects (file, row, reason), rows read per file."""
    rejects: list[pl.DataFrame] = []
    read: dict[str, int] = {}

    def reject(file: str, frame: pl.DataFrame | pl.LazyFrame, reason: str | None = None) -> None:
        lazy = frame.lazy().select(
            pl.lit(file).alias("file"),
            pl.col("row").cast(pl.Int64),
            pl.lit(reason).alias("reason") if reason else pl.col("reason"),
        )
        rejects.append(lazy.collect(engine="streaming"))

    def checked(spec: Spec, check: Callable[[pl.LazyFrame], pl.LazyFrame]) -> pl.DataFrame:
        records, unread = scan(spec, input_dir / spec.file_name, delimiter, work)
        frame = check(records).collect(engine="streaming")
        read[spec.name] = frame.height + unread.height
        rejects.append(unread.select("file", "row", "reason"))
        reject(spec.name, frame.filter(pl.col("reason").is_not_null()))
        return frame

    customers = checked(CUSTOMERS, check_customers)
    kept, conflicts = dedupe(customers, "customer_id", ["signup_date", "country"])
    reject(CUSTOMERS.name, conflicts, "conflicting_duplicate")
    valid_customers = kept.select("customer_id", "signup_date", "country")

    orders = checked(ORDERS, check_orders)
    kept, conflicts = dedupe(orders, "order_id", ["customer_id", "order_ts", "status"])
    reject(ORDERS.name, conflicts, "conflicting_duplicate")
    reject(ORDERS.name, kept.join(valid_customers, on="customer_id", how="anti"), "unknown_customer")
    valid_orders = kept.join(valid_customers.select("customer_id"), on="customer_id", how="semi").select(
        "order_id", "customer_id", "order_ts", "status"
    )

    items = checked(ITEMS, check_items)
    ok_items = items.lazy().filter(pl.col("reason").is_null())
    reject(ITEMS.name, ok_items.join(valid_orders.lazy(), on="order_id", how="anti"), "unknown_order")
    valid_items = (
        ok_items.join(valid_orders.lazy().select("order_id"), on="order_id", how="semi")
        .select("order_id", "amount")
        .collect(engine="streaming")
    )
    valid = {"customers": valid_customers, "orders": valid_orders, "items": valid_items}
    return valid, pl.concat(rejects), read


def customer_ltv(valid: dict[str, pl.DataFrame], as_of: date) -> pl.DataFrame:
    """The historical columns of customer_ltv, one row per valid customer (contract sections 3, 4)."""
    cutoff = datetime(as_of.year, as_of.month, as_of.day) + timedelta(days=1)
    counted = (
        valid["orders"]
        .lazy()
        .filter(
            (pl.col("status") == "completed")
            & (pl.col("order_ts") < pl.lit(cutoff).dt.replace_time_zone("UTC"))
        )
        .with_columns(day=pl.col("order_ts").dt.date())
    )
    order_value = valid["items"].lazy().group_by("order_id").agg(pl.col("amount").sum().alias("value"))
    days = (
        counted.join(order_value, on="order_id", how="left")
        .group_by("customer_id", "day")
        .agg(
            pl.len().alias("n_orders"),
            pl.col("value").fill_null(0).sum().alias("value"),
            pl.col("order_ts").min().alias("first_ts"),
            pl.col("order_ts").max().alias("last_ts"),
        )
    )
    history = days.group_by("customer_id").agg(
        pl.col("first_ts").min(),
        pl.col("last_ts").max(),
        pl.col("n_orders").sum(),
        pl.col("value").sum().alias("total"),
        pl.len().alias("n_days"),
        pl.col("day").min().alias("first_day"),
        pl.col("day").max().alias("last_day"),
        pl.col("value").sort_by("day").first().alias("first_day_value"),
    )
    has_orders = pl.col("n_orders").fill_null(0) > 0
    total = pl.col("total").cast(pl.Float64)
    out = (
        valid["customers"]
        .lazy()
        .join(history, on="customer_id", how="left")
        .select(
            pl.lit(as_of).alias("as_of"),
            "customer_id",
            "signup_date",
            "country",
            pl.col("first_ts").alias("first_order_at"),
            pl.col("last_ts").alias("last_order_at"),
            pl.col("n_orders").fill_null(0).cast(pl.Int32).alias("orders_count"),
            pl.col("total").fill_null(0).cast(pl.Decimal(18, 2)).alias("total_revenue"),
            (total / pl.col("n_orders")).alias("avg_order_value"),
            (pl.col("n_days") - 1).cast(pl.Int32).alias("frequency"),
            (pl.col("last_day") - pl.col("first_day")).dt.total_days().cast(pl.Int32).alias("recency_days"),
            (pl.lit(as_of) - pl.col("first_day")).dt.total_days().cast(pl.Int32).alias("t_days"),
            pl.when(pl.col("n_days") > 1)
            .then((total - pl.col("first_day_value").cast(pl.Float64)) / (pl.col("n_days") - 1))
            .when(has_orders)
            .then(0.0)
            .alias("monetary_value"),
        )
    )
    return out.collect(engine="streaming")


def counts(
    valid: dict[str, pl.DataFrame], rejects: pl.DataFrame, read: dict[str, int], as_of: date
) -> dict[str, dict[str, object]]:
    """Per-file counts in the shape of fastclv's summary.json."""
    cutoff = datetime(as_of.year, as_of.month, as_of.day, tzinfo=None) + timedelta(days=1)
    late = valid["orders"].filter(pl.col("order_ts") >= pl.lit(cutoff).dt.replace_time_zone("UTC"))
    after = {
        "customers": 0,
        "orders": late.height,
        "order_items": valid["items"].join(late.select("order_id"), on="order_id", how="semi").height,
    }
    by_reason = {
        (file, reason): n for file, reason, n in rejects.group_by("file", "reason").len().iter_rows()
    }
    out: dict[str, dict[str, object]] = {}
    for spec, table in ((CUSTOMERS, "customers"), (ORDERS, "orders"), (ITEMS, "items")):
        rejected = {r: int(by_reason.get((spec.name, r), 0)) for r in spec.reasons}
        n_valid = valid[table].height
        out[spec.name] = {
            "file": spec.file_name,
            "read": read[spec.name],
            "valid": n_valid,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "duplicates_dropped": read[spec.name] - n_valid - sum(rejected.values()),
            "after_as_of": after[spec.name],
        }
    return out


def load(result: pl.DataFrame, pg_uri: str, schema: str, as_of: date) -> int:
    """Replace the rows of ``as_of``: DELETE, then ``write_database``, in one transaction."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(pg_uri) as conn:
        with conn.cursor() as cur:
            for statement in table_ddl(schema).split(";\n"):
                cur.execute(statement)
            cur.execute(f'DELETE FROM "{schema}".customer_ltv WHERE as_of = $1', parameters=(as_of,))
        # write_database ingests on this connection (ADBC COPY) and commits: one transaction.
        return result.select(list(OUTPUT_COLUMNS)).write_database(
            f"{schema}.customer_ltv", conn, if_table_exists="append", engine="adbc"
        )


def main() -> None:
    parser = contender_parser(__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (the readable lines)")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    valid, rejects, read = validate(args.input, args.delimiter, args.work)
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = customer_ltv(valid, args.as_of)
    timings["transform"] = time.perf_counter() - t0
    if args.rejects:
        rejects.sort("file", "row").write_csv(args.rejects)
    t0 = time.perf_counter()
    rows = load(result, args.pg_uri, args.schema, args.as_of)
    timings["load"] = time.perf_counter() - t0
    write_counts(args.counts, counts(valid, rejects, read, args.as_of))
    print(f"{rows} rows loaded; seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
