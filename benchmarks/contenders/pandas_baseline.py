"""The seed-style baseline: pandas read_csv + pandas cleaning and groupby + psycopg2.

What a competent engineer writes with the usual tools, implementing the same contract:

* ``pd.read_csv`` reads each file. Not with its own field splitting: that silently repairs
  malformed rows (it pads short rows, glues text after a closing quote onto the field,
  and can only skip long rows, with a warning, never report them), and the contract wants
  each such row rejected as ``malformed_row`` with its row number. So read_csv reads
  physical lines (a separator that never occurs, no quoting), and ``Series.str`` splits
  them: ``str.split`` for lines without quotes, one anchored regex (``str.extract``) for
  the rest, which validates and splits at once.
* the files are read in chunks of a million lines (``read_csv(chunksize=...)``), and each
  chunk is checked and reduced to its typed columns, as one does with inputs of gigabytes;
* the checks are vectorised ``Series.str`` / ``pd.to_datetime`` / ``astype`` calls; the
  first failing rule per row is picked with ``np.select``; money is int64 cents;
* duplicates with ``drop_duplicates``, foreign keys with ``isin``, the output with
  ``groupby().agg()``;
* psycopg2 loads the rows in one transaction (DELETE the as-of date, then insert):
  ``execute_values`` (page_size 1000) or ``copy_expert`` of ``DataFrame.to_csv``.

The typed columns of all rows are then held in memory, as such code does. Run::

    python -m benchmarks.contenders.pandas_baseline --input DIR --as-of 2025-12-31 \
        --pg-uri URI --schema S --method execute_values --counts counts.json
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
from psycopg2.extras import execute_values

from benchmarks.contenders.rules import (
    CUSTOMERS,
    DATE_RE,
    ITEMS,
    MONEY_RE,
    ORDERS,
    OUTPUT_COLUMNS,
    QUANTITY_MAX,
    QUANTITY_RE,
    STATUSES,
    TIMESTAMP_RE,
    TRIM,
    Spec,
    contender_parser,
    header_positions,
    opener_re,
    pair_multiline,
    record_re,
    table_ddl,
    write_counts,
)

# -------------------------------------------------------------------- reading records

#: Physical lines per read_csv chunk.
CHUNK_LINES = 1_000_000


def _split_records(
    records: pd.Series, spec: Spec, n_fields: int, positions: dict[str, int], delimiter: str
) -> pd.DataFrame:
    """``raw``, ``malformed`` and one column per contract column (trimmed text, NA when missing)."""
    has_quote = records.str.contains('"', regex=False)
    plain = records[~has_quote]
    plain_fields = plain.str.split(delimiter, n=n_fields - 1, expand=True, regex=False)
    plain_fields = plain_fields.reindex(columns=range(n_fields))
    plain_malformed = plain.str.count(re.escape(delimiter)) != n_fields - 1

    quoted = records[has_quote]
    quoted_fields = quoted.str.extract(f"^{record_re(n_fields, delimiter)}$", expand=True)
    quoted_fields.columns = range(n_fields)
    quoted_malformed = quoted_fields[0].isna()
    for i in quoted_fields.columns:  # strip the padding and the quotes, undo "" escapes
        bare = quoted_fields[i].str.strip(" \t".replace(delimiter, ""))
        is_quoted = bare.str.startswith('"').fillna(False).astype(bool)
        quoted_fields[i] = quoted_fields[i].where(~is_quoted, bare.str.slice(1, -1).str.replace('""', '"'))

    fields = pd.concat([plain_fields, quoted_fields]).sort_index()
    malformed = pd.concat([plain_malformed, quoted_malformed]).sort_index()
    out = pd.DataFrame({"raw": records, "malformed": malformed})
    for column in spec.columns:
        if column in positions:
            value = fields[positions[column]].str.strip(TRIM)
            out[column] = value.where((value != "") & ~malformed)
        else:
            out[column] = pd.Series(pd.NA, index=out.index, dtype="str")
    return out


def read_records(path: Path, spec: Spec, delimiter: str) -> Iterator[pd.DataFrame]:
    """Chunks of records, indexed by row number (1-based): ``raw``, ``malformed`` and one
    column per contract column (trimmed text, NA when missing or when malformed)."""
    n_fields, positions = header_positions(path, spec, delimiter)
    with path.open("rb") as f:
        header_bytes = len(f.readline())
    if path.stat().st_size <= header_bytes:  # a header and nothing else
        yield _split_records(pd.Series([], dtype="str"), spec, n_fields, positions, delimiter)
        return
    reader = pd.read_csv(
        path,
        sep="\x1f",  # never in the data: one field per physical line
        header=None,
        names=["raw"],
        skiprows=1,  # the header
        dtype="str",
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        skip_blank_lines=False,
        encoding="utf-8-sig",
        chunksize=CHUNK_LINES,
    )
    next_row = 1
    carry = pd.Series([], dtype="str")  # the lines of a multi-line record cut by the chunk end
    chunks = (chunk["raw"] for chunk in reader)
    current = next(chunks, pd.Series([], dtype="str"))
    while current is not None:
        following = next(chunks, None)  # look ahead: is this the last chunk?
        lines = pd.concat([carry, current], ignore_index=True)
        lines, carry = _join_multiline(lines, delimiter, last=following is None)
        records = lines[lines != ""]  # an empty line is not a record
        records.index = pd.RangeIndex(next_row, next_row + len(records), name="row")
        next_row += len(records)
        yield _split_records(records, spec, n_fields, positions, delimiter)
        current = following


def _join_multiline(lines: pd.Series, delimiter: str, last: bool) -> tuple[pd.Series, pd.Series]:
    """Join multi-line records (rare: a Python loop over them only); return the lines and the
    lines of a record still open at the end of the chunk (to carry into the next one)."""
    odd = lines.str.count('"') % 2 == 1
    empty = pd.Series([], dtype="str")
    if not odd.any():
        return lines, empty
    odd_lines = lines[odd]
    openers = set(odd_lines.index[odd_lines.str.fullmatch(opener_re(delimiter))])
    spans, still_open = pair_multiline(list(odd_lines.index), openers)
    carry = empty
    if still_open is not None:
        if last:  # an unterminated quoted field runs to the end of the file
            spans.append((still_open, int(lines.index[-1])))
        else:
            carry = lines.loc[still_open:]
            lines = lines.loc[: still_open - 1]
    keep = pd.Series(True, index=lines.index)
    for first, end in spans:
        lines.loc[first] = "\n".join(lines.loc[first:end])
        keep.loc[first + 1 : end] = False
    return lines[keep], carry


# -------------------------------------------------------------------- typed values


def parse_date(text: pd.Series) -> pd.Series:
    """YYYY-MM-DD -> datetime64[us] (NaT unless a real calendar date, years 1-9999)."""
    shaped = text.str.fullmatch(DATE_RE).fillna(False).astype(bool) & ~text.str.startswith("0000").fillna(
        False
    )
    return pd.to_datetime(text.where(shaped), format="%Y-%m-%d", errors="coerce").astype("datetime64[us]")


def _int(text: pd.Series) -> np.ndarray:
    out: np.ndarray = text.fillna("0").astype("int64").to_numpy()
    return out


def parse_timestamp(text: pd.Series) -> pd.Series:
    """A contract timestamp -> UTC instant (datetime64[us, UTC]); NaT unless valid."""
    parts = text.str.extract(f"^{TIMESTAMP_RE}$", expand=True)
    day = parse_date(parts[0])
    fraction = _int(parts[4].str.ljust(6, "0"))
    micros = ((_int(parts[1]) * 60 + _int(parts[2])) * 60 + _int(parts[3])) * 1_000_000 + fraction
    offset = (_int(parts[7]) * 60 + _int(parts[8])) * np.where(parts[6] == "-", -1, 1)
    local = day.to_numpy(dtype="datetime64[us]")
    instant = pd.Series(local + (micros - offset * 60_000_000).astype("timedelta64[us]"), index=text.index)
    # An offset can push the instant out of the years 1..9999.
    instant = instant.where(instant.dt.year.between(1, 9999))
    return instant.dt.tz_localize("UTC")


def parse_cents(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Money text -> (int64 cents, ok)."""
    parts = text.str.extract(f"^{MONEY_RE}$", expand=True)
    ok = parts[0].notna()
    cents = _int(parts[0]) * 100 + _int(parts[1].fillna("0").str.ljust(2, "0"))
    return pd.Series(cents, index=text.index), ok


def first_reason(index: pd.Index, rules: list[tuple[str, pd.Series]]) -> pd.Series:
    """The code of the first rule that holds per row ("" when none does)."""
    conditions = [np.asarray(cond.fillna(False), dtype=bool) for _, cond in rules]
    codes = np.select(conditions, np.arange(1, len(rules) + 1, dtype=np.int8), default=0).astype(np.int8)
    names = pd.Categorical.from_codes(codes, categories=["", *(name for name, _ in rules)])
    return pd.Series(names, index=index)


def dedupe(good: pd.DataFrame, key: str, compare: list[str]) -> tuple[pd.DataFrame, pd.Index, int]:
    """(kept rows, rows rejected as conflicting duplicates, exact duplicates dropped)."""
    distinct = good.drop_duplicates(subset=compare)  # keeps the first of identical rows
    variants = distinct[key].value_counts()
    conflicting = variants.index[variants > 1]
    in_conflict = good[key].isin(conflicting)
    kept = distinct[~distinct[key].isin(conflicting)]
    dropped = len(good) - int(in_conflict.sum()) - len(kept)
    return kept, good.index[in_conflict], dropped


# -------------------------------------------------------------------- the run


class Tally:
    """Counts and rejects of one file."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.read = 0
        self.parts: list[pd.DataFrame] = []  # rejects: row, reason, raw
        self.duplicates = 0
        self.after_as_of = 0

    def checked(self, chunk: pd.DataFrame, reason: pd.Series) -> pd.Series:
        """Count a checked chunk and keep its rejected rows; return the mask of rows that passed."""
        self.read += len(chunk)
        bad = reason != ""
        self.parts.append(
            pd.DataFrame(
                {
                    "row": chunk.index[bad],
                    "reason": reason[bad].astype(str).to_numpy(),
                    "raw": chunk["raw"][bad],
                }
            )
        )
        return ~bad

    def reject(self, rows: pd.Index, reason: str) -> None:
        """Reject rows that passed the row checks (their text was not kept: raw is empty)."""
        self.parts.append(pd.DataFrame({"row": np.asarray(rows, dtype=np.int64), "reason": reason}))

    def rejects(self) -> pd.DataFrame:
        frame = pd.concat(self.parts, ignore_index=True).sort_values("row")
        return frame.assign(file=self.spec.file_name)[["file", "row", "reason", "raw"]]

    def counts(self) -> dict[str, object]:
        by_reason = self.rejects()["reason"].value_counts()
        rejected = {r: int(by_reason.get(r, 0)) for r in self.spec.reasons}
        total_rejected = sum(rejected.values())
        return {
            "file": self.spec.file_name,
            "read": self.read,
            "valid": self.read - total_rejected - self.duplicates,
            "rejected": total_rejected,
            "rejected_by_reason": rejected,
            "duplicates_dropped": self.duplicates,
            "after_as_of": self.after_as_of,
        }


def check_customers(input_dir: Path, delimiter: str) -> tuple[pd.DataFrame, Tally]:
    tally = Tally(CUSTOMERS)
    passed = []
    for c in read_records(input_dir / CUSTOMERS.file_name, CUSTOMERS, delimiter):
        signup = parse_date(c["signup_date"])
        reason = first_reason(
            c.index,
            [
                ("malformed_row", c["malformed"]),
                ("missing_value", c["customer_id"].isna() | c["signup_date"].isna()),
                ("bad_date", signup.isna()),
            ],
        )
        ok = tally.checked(c, reason)
        passed.append(
            pd.DataFrame({"customer_id": c["customer_id"], "signup_date": signup, "country": c["country"]})[
                ok
            ]
        )
    good = pd.concat(passed)
    kept, conflicting, tally.duplicates = dedupe(good, "customer_id", list(good.columns))
    tally.reject(conflicting, "conflicting_duplicate")
    return kept, tally


def check_orders(input_dir: Path, delimiter: str, customers: pd.DataFrame) -> tuple[pd.DataFrame, Tally]:
    tally = Tally(ORDERS)
    passed = []
    for o in read_records(input_dir / ORDERS.file_name, ORDERS, delimiter):
        order_ts = parse_timestamp(o["order_ts"])
        status = o["status"].str.lower()
        reason = first_reason(
            o.index,
            [
                ("malformed_row", o["malformed"]),
                ("missing_value", o[list(ORDERS.required)].isna().any(axis=1)),
                ("bad_timestamp", order_ts.isna()),
                ("bad_status", ~status.isin(STATUSES)),
            ],
        )
        ok = tally.checked(o, reason)
        typed = {
            "order_id": o["order_id"],
            "customer_id": o["customer_id"],
            "order_ts": order_ts,
            "status": status,
        }
        passed.append(pd.DataFrame(typed)[ok])
    good = pd.concat(passed)
    kept, conflicting, tally.duplicates = dedupe(good, "order_id", list(good.columns))
    tally.reject(conflicting, "conflicting_duplicate")
    unknown = ~kept["customer_id"].isin(customers["customer_id"])
    tally.reject(kept.index[unknown], "unknown_customer")
    return kept[~unknown], tally


def check_items(input_dir: Path, delimiter: str, orders: pd.DataFrame) -> tuple[pd.DataFrame, Tally]:
    tally = Tally(ITEMS)
    passed = []
    for i in read_records(input_dir / ITEMS.file_name, ITEMS, delimiter):
        qty_text = i["quantity"]
        qty_ok = qty_text.str.fullmatch(QUANTITY_RE).fillna(False).astype(bool) & (qty_text.str.len() <= 10)
        quantity = pd.Series(_int(qty_text.where(qty_ok)), index=i.index)
        qty_ok &= quantity.between(1, QUANTITY_MAX)
        price, price_ok = parse_cents(i["unit_price"])
        no_discount = i["discount"].isna()
        discount, discount_ok = parse_cents(i["discount"])
        discount = discount.where(~no_discount, 0)
        gross = quantity * price  # int64 cents; wraps where `huge` (checked below)
        huge = quantity.astype(float) * price.astype(float) >= 9.0e18
        reason = first_reason(
            i.index,
            [
                ("malformed_row", i["malformed"]),
                ("missing_value", i[list(ITEMS.required)].isna().any(axis=1)),
                ("bad_quantity", ~qty_ok),
                ("bad_money", ~price_ok | ~(discount_ok | no_discount)),
                ("discount_exceeds_amount", ~huge & (discount > gross)),
            ],
        )
        ok = tally.checked(i, reason)
        if (huge & ok).any():
            raise SystemExit(
                "order_items.csv: an item amount exceeds int64 cents; this baseline cannot sum it"
            )
        passed.append(pd.DataFrame({"order_id": i["order_id"], "amount": gross - discount})[ok])
    good = pd.concat(passed)
    unknown = ~good["order_id"].isin(orders["order_id"])
    tally.reject(good.index[unknown], "unknown_order")
    return good[~unknown], tally


def customer_ltv(
    customers: pd.DataFrame, orders: pd.DataFrame, items: pd.DataFrame, as_of: date, tallies: dict[str, Tally]
) -> pd.DataFrame:
    """The historical columns of customer_ltv, one row per valid customer."""
    cutoff = pd.Timestamp(as_of + timedelta(days=1), tz="UTC")
    after = orders["order_ts"] >= cutoff
    tallies["orders"].after_as_of = int(after.sum())
    tallies["order_items"].after_as_of = int(items["order_id"].isin(orders.loc[after, "order_id"]).sum())

    counted = orders[(orders["status"] == "completed") & ~after]
    order_value = items.groupby("order_id")["amount"].sum().astype("Int64")
    counted = counted.assign(
        value=counted["order_id"].map(order_value).fillna(0),
        day=counted["order_ts"].dt.floor("D"),
    )
    by_day = (
        counted.groupby(["customer_id", "day"])
        .agg(
            orders=("order_id", "size"),
            value=("value", "sum"),
            first_ts=("order_ts", "min"),
            last_ts=("order_ts", "max"),
        )
        .reset_index()
    )
    history = by_day.groupby("customer_id").agg(
        first_order_at=("first_ts", "min"),
        last_order_at=("last_ts", "max"),
        orders_count=("orders", "sum"),
        total=("value", "sum"),
        days=("day", "size"),
        first_day=("day", "min"),
        last_day=("day", "max"),
        first_day_value=("value", "first"),  # by_day is sorted by (customer, day)
    )
    for column in ("orders_count", "total", "days", "first_day_value"):
        history[column] = history[column].astype("Int64")  # stay exact through the left join
    out = customers.merge(history, left_on="customer_id", right_index=True, how="left")

    has_orders = out["orders_count"].notna()
    orders_count = out["orders_count"].fillna(0)
    total = out["total"].fillna(0)
    frequency = out["days"] - 1
    repeat_value = out["total"] - out["first_day_value"]
    as_of_ts = pd.Timestamp(as_of, tz="UTC")
    monetary = (repeat_value.astype("float64") / (frequency.astype("float64") * 100.0)).where(
        (frequency > 0).fillna(False), 0.0
    )
    return pd.DataFrame(
        {
            "as_of": as_of,
            "customer_id": out["customer_id"],
            "signup_date": out["signup_date"].dt.date,
            "country": out["country"],
            "first_order_at": out["first_order_at"],
            "last_order_at": out["last_order_at"],
            "orders_count": orders_count.astype("int64"),
            "total_revenue": (total // 100).astype(str) + "." + (total % 100).astype(str).str.zfill(2),
            "avg_order_value": (total.astype("float64") / (orders_count.astype("float64") * 100.0)).where(
                has_orders
            ),
            "frequency": frequency,
            "recency_days": (out["last_day"] - out["first_day"]).dt.days.astype("Int64"),
            "t_days": (as_of_ts - out["first_day"]).dt.days.astype("Int64"),
            "monetary_value": monetary.where(has_orders),
        }
    ).reset_index(drop=True)


# -------------------------------------------------------------------- loading


def load(result: pd.DataFrame, pg_uri: str, schema: str, as_of: date, method: str) -> None:
    """Replace the rows of ``as_of`` in ``schema.customer_ltv``, in one transaction."""
    table = f'"{schema}"."customer_ltv"'
    columns = ", ".join(f'"{c}"' for c in OUTPUT_COLUMNS)
    conn = psycopg2.connect(pg_uri)
    try:
        with conn, conn.cursor() as cur:  # commits on success, rolls back on error
            cur.execute(table_ddl(schema))
            cur.execute(f"DELETE FROM {table} WHERE as_of = %s", (as_of,))
            if method == "execute_values":
                # psycopg2 adapts Python objects only: None for every kind of missing value.
                rows = result.astype(object).where(result.notna(), None).itertuples(index=False, name=None)
                execute_values(cur, f"INSERT INTO {table} ({columns}) VALUES %s", rows, page_size=1000)
            else:
                buffer = io.StringIO()
                result.to_csv(buffer, index=False, header=False)
                buffer.seek(0)
                cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        conn.close()


def main() -> None:
    parser = contender_parser(__doc__.split("\n")[0])
    parser.add_argument("--method", choices=("execute_values", "copy_expert"), default="execute_values")
    args = parser.parse_args()

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    customers, c_tally = check_customers(args.input, args.delimiter)
    orders, o_tally = check_orders(args.input, args.delimiter, customers)
    items, i_tally = check_items(args.input, args.delimiter, orders)
    tallies = {"customers": c_tally, "orders": o_tally, "order_items": i_tally}
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = customer_ltv(customers, orders, items, args.as_of, tallies)
    timings["transform"] = time.perf_counter() - t0
    if args.rejects:
        pd.concat([t.rejects() for t in tallies.values()]).to_csv(args.rejects, index=False)
    t0 = time.perf_counter()
    load(result, args.pg_uri, args.schema, args.as_of, args.method)
    timings["load"] = time.perf_counter() - t0
    write_counts(args.counts, {name: t.counts() for name, t in tallies.items()})
    print(f"{len(result)} rows loaded; seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
