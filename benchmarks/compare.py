"""Check a contender's result against fastclv's staged ``customer_ltv.parquet``.

The rules (the brief's): the same customers (one row each), money exact (compared as
integer cents), integers and dates and text exact, doubles within 1e-9 relative, timestamps
as instants (epoch microseconds), null where the reference is null. Counts per file (read,
valid, rejected, duplicates dropped, after as-of) must match exactly; rejects per reason are
compared and reported, but only the totals decide (a baseline may pick another reason for
a row with several faults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

HISTORICAL: tuple[str, ...] = (
    "as_of",
    "customer_id",
    "signup_date",
    "country",
    "first_order_at",
    "last_order_at",
    "orders_count",
    "total_revenue",
    "avg_order_value",
    "frequency",
    "recency_days",
    "t_days",
    "monetary_value",
)
PREDICTIVE: tuple[str, ...] = ("p_alive", "expected_purchases", "predicted_clv")
MONEY = ("total_revenue", "predicted_clv")
DOUBLES = ("avg_order_value", "monetary_value", "p_alive", "expected_purchases")
TIMESTAMPS = ("first_order_at", "last_order_at")
REL_TOL = 1e-9
KEY = "customer_id"


@dataclass
class Comparison:
    """The outcome of one comparison: ``ok`` and, if not, what differs."""

    rows: int = 0
    problems: list[str] = field(default_factory=list)
    #: What a successful comparison says.
    ok_text: str = "identical"

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return self.ok_text if self.ok else "; ".join(self.problems)


def _normalise(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """Comparable columns: money as Int64 cents, timestamps as epoch us, ints as Int64."""
    out = []
    for name in columns:
        col = pl.col(name)
        dtype = frame.schema[name]
        if name in MONEY:
            if dtype == pl.String:
                col = col.str.to_decimal(scale=2)
            out.append((col.cast(pl.Decimal(38, 2)) * 100).cast(pl.Int64).alias(name))
        elif name in TIMESTAMPS:
            if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            out.append(col.dt.convert_time_zone("UTC").dt.epoch("us").alias(name))
        elif name in DOUBLES:
            out.append(col.cast(pl.Float64).alias(name))
        elif name in ("as_of", "signup_date"):
            out.append(col.cast(pl.Date).alias(name))
        elif name in ("customer_id", "country"):
            out.append(col.cast(pl.String).alias(name))
        else:
            out.append(col.cast(pl.Int64).alias(name))
    return frame.select(out)


def compare_frames(
    got: pl.DataFrame, reference: pl.DataFrame, as_of: date, columns: tuple[str, ...] = HISTORICAL
) -> Comparison:
    """Compare ``got`` with ``reference`` on ``columns`` (both need ``customer_id``)."""
    result = Comparison(rows=got.height)
    missing = [c for c in columns if c not in got.columns]
    if missing:
        result.problems.append(f"missing columns {missing}")
        return result
    g = _normalise(got, columns)
    r = _normalise(reference, columns)
    dup = g.height - g[KEY].n_unique()
    if dup:
        result.problems.append(f"{dup} duplicate customer_id rows")
    only_got = g.join(r, on=KEY, how="anti")
    only_ref = r.join(g, on=KEY, how="anti")
    if only_got.height or only_ref.height:
        result.problems.append(
            f"customers differ: {only_ref.height} missing (e.g. {only_ref[KEY].head(3).to_list()}), "
            f"{only_got.height} extra (e.g. {only_got[KEY].head(3).to_list()})"
        )
    bad_as_of = g.filter(pl.col("as_of") != as_of).height if "as_of" in columns else 0
    if bad_as_of:
        result.problems.append(f"{bad_as_of} rows with as_of != {as_of}")
    joined = g.join(r, on=KEY, how="inner", suffix="_ref")
    for name in columns:
        if name == KEY:
            continue
        a, b = pl.col(name), pl.col(f"{name}_ref")
        null_differs = a.is_null() != b.is_null()
        if name in DOUBLES:
            scale = pl.max_horizontal(a.abs(), b.abs())
            value_differs = (a - b).abs() > REL_TOL * scale
        else:
            value_differs = a != b
        bad = joined.filter(null_differs | value_differs.fill_null(False))
        if bad.height:
            example = bad.select(KEY, name, f"{name}_ref").head(3).rows()
            result.problems.append(f"{name}: {bad.height} rows differ, e.g. {example}")
    return result


def read_pg_table(pg_uri: str, schema: str, table: str, as_of: date) -> pl.DataFrame:
    """The rows of ``as_of`` in ``schema.table`` (money as text, so nothing is rounded)."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(pg_uri) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            parameters=(schema, table),
        )
        cols = cur.fetchall()
        if not cols:
            raise LookupError(f"table {schema}.{table} does not exist")
        select = ", ".join(
            f'"{name}"::text AS "{name}"' if kind == "numeric" else f'"{name}"' for name, kind in cols
        )
        cur.execute(f'SELECT {select} FROM "{schema}"."{table}" WHERE as_of = $1', parameters=(as_of,))
        table_arrow = cur.fetch_arrow_table()
    frame = pl.from_arrow(table_arrow)
    assert isinstance(frame, pl.DataFrame)
    return frame


def compare_pg(
    pg_uri: str,
    schema: str,
    table: str,
    reference: Path,
    as_of: date,
    columns: tuple[str, ...] = HISTORICAL,
) -> Comparison:
    """Compare the loaded rows of ``as_of`` with the reference Parquet file."""
    try:
        got = read_pg_table(pg_uri, schema, table, as_of)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a failed check
        return Comparison(problems=[f"cannot read {schema}.{table}: {type(exc).__name__}: {exc}"])
    return compare_frames(got, pl.read_parquet(reference), as_of, columns)


COUNT_FIELDS = ("read", "valid", "rejected", "duplicates_dropped", "after_as_of")


def compare_counts(got: dict[str, dict[str, object]], reference: dict[str, dict[str, object]]) -> Comparison:
    """Per-file totals must match; per-reason differences are reported as notes (prefixed '(note)')."""
    result = Comparison()
    for name, ref in reference.items():
        mine = got.get(name)
        if mine is None:
            result.problems.append(f"no counts for {name}")
            continue
        diffs = {k: (mine.get(k), ref[k]) for k in COUNT_FIELDS if mine.get(k) != ref[k]}
        if diffs:
            result.problems.append(f"{name} counts differ (got, fastclv): {diffs}")
    return result


def reason_notes(got: dict[str, dict[str, object]], reference: dict[str, dict[str, object]]) -> list[str]:
    """Per-reason reject counts that differ (informative: only totals must match)."""
    notes = []
    for name, ref in reference.items():
        mine = got.get(name, {})
        ref_reasons = ref.get("rejected_by_reason", {})
        got_reasons = mine.get("rejected_by_reason", {})
        assert isinstance(ref_reasons, dict)
        assert isinstance(got_reasons, dict)
        for reason in sorted(set(ref_reasons) | set(got_reasons)):
            a, b = got_reasons.get(reason, 0), ref_reasons.get(reason, 0)
            if a != b:
                notes.append(f"{name}.{reason}: {a} vs fastclv {b}")
    return notes


@dataclass
class Differences:
    """How a contender's rows differ from the reference, customer by customer (for the notes)."""

    rows: int
    reference_rows: int
    missing: int = 0
    extra: int = 0
    #: Customers in both whose row differs in at least one column.
    differing: int = 0
    #: Column -> customers in both that differ in it.
    by_column: dict[str, int] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        """Customers whose row is not the reference's: missing, extra or different."""
        return self.missing + self.extra + self.differing

    def summary(self) -> str:
        head = (
            f"{self.customers:,} customers differ from fastclv's {self.reference_rows:,}: "
            f"{self.missing:,} missing, {self.extra:,} extra, {self.differing:,} with other values"
        )
        if not self.by_column:
            return head
        return head + " (" + ", ".join(f"{c} {n:,}" for c, n in self.by_column.items()) + ")"


def differences(
    got: pl.DataFrame, reference: pl.DataFrame, columns: tuple[str, ...] = HISTORICAL
) -> Differences:
    """Count the customers whose row in ``got`` is not the reference's, and by which columns."""
    g, r = _normalise(got, columns), _normalise(reference, columns)
    out = Differences(rows=g.height, reference_rows=r.height)
    out.missing = r.join(g, on=KEY, how="anti").height
    out.extra = g.join(r, on=KEY, how="anti").height
    joined = g.join(r, on=KEY, how="inner", suffix="_ref")
    flags = []
    for name in columns:
        if name == KEY:
            continue
        a, b = pl.col(name), pl.col(f"{name}_ref")
        if name in DOUBLES:
            value_differs = (a - b).abs() > REL_TOL * pl.max_horizontal(a.abs(), b.abs())
        else:
            value_differs = a != b
        flags.append(((a.is_null() != b.is_null()) | value_differs.fill_null(False)).alias(name))
    marked = joined.select(flags)
    counts = marked.sum().row(0, named=True)
    out.by_column = {name: int(n) for name, n in counts.items() if n}
    out.differing = marked.select(pl.any_horizontal(pl.all()).sum()).item() if flags else 0
    return out
