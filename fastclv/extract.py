"""Extract: the three CSV files -> validated, typed Parquet plus rejects (contract sections 1-2).

Two passes per file, each a streaming Polars query:

1. *check* (reads the CSV once): physical lines -> records -> fields -> every row-level
   check (malformed_row ... discount_exceeds_amount), typed values, the first failing
   reason; written to a work Parquet file, plus a tiny side table of blank and odd-quote
   lines that locates multi-line records.
2. *resolve* (reads that Parquet): multi-line records re-assembled, row numbers fixed,
   duplicate keys resolved (exact duplicates dropped, conflicting ones rejected), foreign
   keys checked (customers before orders before items); valid rows are staged as
   ``<run>/<file>.parquet`` and rejects as ``<run>/rejects.parquet``.

Validation never looks at the as-of date; only the ``after_as_of`` counts do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from fastclv import records, stage, storage
from fastclv.contract import (
    DATE_PATTERN,
    INPUT_FILES,
    MONEY,
    MONEY_PATTERN,
    ORDER_ITEMS,
    ORDERS,
    QUANTITY_MAX,
    QUANTITY_PATTERN,
    REASONS_BY_FILE,
    REJECTS_SCHEMA,
    STATUSES,
    TIMESTAMP_PATTERN,
    TRIM_CHARS,
    VALID_SCHEMAS,
    InputFile,
    Reason,
    as_of_cutoff,
)
from fastclv.errors import InputError

log = logging.getLogger(__name__)

#: A row-level check: (failing condition, reason, offending column or None for the row).
Rule = tuple[pl.Expr, Reason, str | None]
Checks = tuple[list[pl.Expr], list[Rule]]

LINE, TEXT, MALFORMED = records.LINE, records.TEXT, records.MALFORMED
REASON, COLUMN, RAW, ROW = "_reason", "_column", "_raw", "row"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FileCounts:
    """Row counts of one input file: read = valid + rejected + duplicates_dropped."""

    file: str
    read: int
    valid: int
    rejected_by_reason: dict[str, int]
    duplicates_dropped: int
    after_as_of: int

    @property
    def rejected(self) -> int:
        """All rejected rows of the file."""
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, object]:
        """The JSON form used in summary.json and the run ledger."""
        return {
            "file": self.file,
            "read": self.read,
            "valid": self.valid,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "duplicates_dropped": self.duplicates_dropped,
            "after_as_of": self.after_as_of,
        }


@dataclass(frozen=True)
class ExtractResult:
    """What the extract stage staged, and its counts."""

    valid: dict[str, str]  # file short name -> staged Parquet location
    rejects: str
    counts: dict[str, FileCounts]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    """The header of one input file, mapped onto the contract's columns."""

    spec: InputFile
    location: str
    n_fields: int
    #: contract column -> 0-based field index, for the columns present in the file.
    positions: dict[str, int]


def read_header(
    spec: InputFile, location: str, delimiter: str, storage_options: Mapping[str, str] | None = None
) -> Header:
    """Read and check the header row of one file (missing file or column: InputError)."""
    source = storage.join(location, spec.file_name)
    if not storage.is_remote(location) and not storage.local_path(source).is_file():
        raise InputError(
            f"{spec.file_name}: file not found at {source}. "
            f"Hint: the input location must hold customers.csv, orders.csv and order_items.csv."
        )
    try:
        first = pl.scan_lines(
            source, name=TEXT, n_rows=1, storage_options=storage.polars_options(storage_options, location)
        ).collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(
            f"{spec.file_name}: cannot read {source} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "Hint: check the location and the credentials."
        ) from None
    if first.height == 0:
        raise InputError(f"{spec.file_name}: the file is empty. Hint: the first row must be a header.")
    line = first[TEXT][0].removeprefix("\ufeff")
    fields = records.split_line(line, delimiter)
    if fields is None:
        raise InputError(
            f"{spec.file_name}: the header row is not valid CSV: {line[:200]!r}. "
            "Hint: check its quotes and the delimiter."
        )
    names = [name.strip(TRIM_CHARS) for name in fields]
    positions: dict[str, int] = {}
    for column in spec.columns:
        if column in names:
            positions[column] = names.index(column)  # the first one if a name repeats
        elif column in spec.required:
            raise InputError(
                f"{spec.file_name}: required column '{column}' is missing from the header "
                f"(found: {', '.join(names) or 'nothing'}). "
                f"Hint: the header must name {', '.join(spec.required)}"
                + (f" (delimiter is {delimiter!r})." if len(names) == 1 else ".")
            )
    return Header(spec, source, len(names), positions)


# --------------------------------------------------------------------------- checks


def _first_match(rules: list[Rule]) -> tuple[pl.Expr, pl.Expr]:
    """Reason and column of the first rule whose condition holds (null if none)."""
    hits = [condition.fill_null(False) for condition, _, _ in rules]
    reason = pl.coalesce(
        pl.when(hit).then(pl.lit(code.value)) for hit, (_, code, _) in zip(hits, rules, strict=True)
    )
    column = pl.coalesce(
        pl.when(hit).then(pl.lit(col if col is not None else ""))
        for hit, (_, _, col) in zip(hits, rules, strict=True)
    )
    return reason.cast(pl.String), pl.when(column != "").then(column).cast(pl.String)


def parse_date(text: pl.Expr) -> pl.Expr:
    """``YYYY-MM-DD`` -> Date, null unless well formed and a real calendar date."""
    shaped = text.str.contains(DATE_PATTERN) & (text.str.slice(0, 4) != "0000")
    return pl.when(shaped).then(text.str.to_date("%Y-%m-%d", strict=False))


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """A contract timestamp -> UTC Datetime(us), null unless valid (section 1).

    The regex fixes the shape, so the parts sit at known places: we rewrite every form to
    ``YYYY-MM-DDTHH:MM:SS[.f]+HH:MM`` with cheap string slices and parse once.
    """
    shaped = text.str.contains(TIMESTAMP_PATTERN) & (text.str.slice(0, 4) != "0000")
    rest = text.str.slice(11)  # time and offset, after the T or space
    n_rest = rest.str.len_bytes()
    has_z = rest.str.ends_with("Z")
    has_offset = rest.str.contains("[+-]")
    body = (
        pl.when(has_z)
        .then(rest.str.slice(0, n_rest - 1))
        .when(has_offset)
        .then(rest.str.slice(0, n_rest - 6))
        .otherwise(rest)
    )
    clock = pl.when(body.str.len_bytes() == 5).then(body + ":00").otherwise(body)
    offset = pl.when(has_offset).then(text.str.slice(-6)).otherwise(pl.lit("+00:00"))
    normal = (
        pl.when(text.str.len_bytes() == 10)
        .then(text + "T00:00:00+00:00")
        .otherwise(text.str.slice(0, 10) + "T" + clock + offset)
    )
    parsed = normal.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", strict=False)
    # An offset can push the instant out of the years 1..9999 (no calendar date there).
    in_range = parsed.dt.year().is_between(1, 9999)
    return pl.when(shaped & in_range).then(parsed.dt.convert_time_zone("UTC"))


def _money(text: pl.Expr) -> pl.Expr:
    return pl.when(text.str.contains(MONEY_PATTERN)).then(text.cast(MONEY, strict=False))


def _check_customers(
    c: Callable[[str], pl.Expr],
) -> Checks:
    signup = parse_date(c("signup_date"))
    typed = [c("customer_id"), signup.alias("signup_date"), c("country")]
    rules: list[Rule] = [
        (c("customer_id").is_null(), Reason.MISSING_VALUE, "customer_id"),
        (c("signup_date").is_null(), Reason.MISSING_VALUE, "signup_date"),
        (signup.is_null(), Reason.BAD_DATE, "signup_date"),
    ]
    return typed, rules


def _check_orders(
    c: Callable[[str], pl.Expr],
) -> Checks:
    ts = parse_timestamp(c("order_ts"))
    status = c("status").str.to_lowercase()
    typed = [c("order_id"), c("customer_id"), ts.alias("order_ts"), status.alias("status")]
    rules: list[Rule] = [
        *((c(name).is_null(), Reason.MISSING_VALUE, name) for name in ORDERS.required),
        (ts.is_null(), Reason.BAD_TIMESTAMP, "order_ts"),
        (~status.is_in(STATUSES), Reason.BAD_STATUS, "status"),
    ]
    return typed, rules


def _check_items(
    c: Callable[[str], pl.Expr],
) -> Checks:
    qty_text, price_text, discount_text = c("quantity"), c("unit_price"), c("discount")
    qty = pl.when(qty_text.str.contains(QUANTITY_PATTERN)).then(qty_text.cast(pl.Int64, strict=False))
    qty_ok = qty.is_between(1, QUANTITY_MAX).fill_null(False)
    price = _money(price_text)
    discount = pl.when(discount_text.is_null()).then(pl.lit(0).cast(MONEY)).otherwise(_money(discount_text))
    typed = [
        c("order_id"),
        c("sku"),
        pl.when(qty_ok).then(qty).cast(pl.Int32).alias("quantity"),
        price.alias("unit_price"),
        discount.alias("discount"),
    ]
    rules: list[Rule] = [
        *((c(name).is_null(), Reason.MISSING_VALUE, name) for name in ORDER_ITEMS.required),
        (~qty_ok, Reason.BAD_QUANTITY, "quantity"),
        (price.is_null(), Reason.BAD_MONEY, "unit_price"),
        (discount.is_null(), Reason.BAD_MONEY, "discount"),
        (discount > qty * price, Reason.DISCOUNT_EXCEEDS_AMOUNT, "discount"),
    ]
    return typed, rules


_CHECKS = {"customers": _check_customers, "orders": _check_orders, "order_items": _check_items}


def check_records(recs: pl.LazyFrame, header: Header, delimiter: str) -> pl.LazyFrame:
    """Records (``LINE``, ``TEXT``) -> typed columns + first failing reason + raw text of rejects."""
    spec = header.spec
    wanted = {name: header.positions[name] for name in spec.columns if name in header.positions}
    fields = records.split_fields(recs, header.n_fields, delimiter, wanted)

    def col(name: str) -> pl.Expr:
        return pl.col(name) if name in wanted else pl.lit(None, pl.String).alias(name)

    typed, rules = _CHECKS[spec.name](col)
    reason, column = _first_match([(pl.col(MALFORMED), Reason.MALFORMED_ROW, None), *rules])
    schema = VALID_SCHEMAS[spec.name]
    return fields.select(
        pl.col(LINE).cast(pl.Int64),
        *(expr.cast(schema[expr.meta.output_name()]) for expr in typed),
        reason.alias(REASON),
        column.alias(COLUMN),
        pl.when(reason.is_not_null()).then(pl.col(TEXT)).alias(RAW),
    )


def _lines(header: Header, storage_options: Mapping[str, str] | None) -> pl.LazyFrame:
    """The physical data lines of a file (``LINE`` >= 1, ``TEXT``), streamed."""
    return (
        pl.scan_lines(
            header.location,
            name=TEXT,
            row_index_name=LINE,
            storage_options=storage.polars_options(storage_options, header.location),
        )
        .with_columns(pl.col(LINE).cast(pl.Int64))
        .filter(pl.col(LINE) > 0)
    )


# --------------------------------------------------------------------------- the stage


@dataclass
class _FileWork:
    header: Header
    checked: Path
    special: Path
    plan: records.LinePlan | None = None
    spans: pl.DataFrame | None = None


def extract(
    input_location: str,
    run_dir: Path,
    as_of: date,
    *,
    delimiter: str = ",",
    storage_options: Mapping[str, str] | None = None,
) -> ExtractResult:
    """Validate the three input files and stage valid rows and rejects under ``run_dir``.

    Raises:
        InputError: a file is missing or lacks a required column (nothing is staged).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    headers = {
        spec.name: read_header(spec, input_location, delimiter, storage_options) for spec in INPUT_FILES
    }
    work_dir = run_dir / "_work"
    work_dir.mkdir(parents=True, exist_ok=True)

    work: dict[str, _FileWork] = {}
    for spec in INPUT_FILES:
        t0 = time.perf_counter()
        header = headers[spec.name]
        item = _FileWork(
            header, work_dir / f"{spec.name}.checked.parquet", work_dir / f"{spec.name}.special.parquet"
        )
        lines = _lines(header, storage_options)
        pl.collect_all(
            [
                check_records(lines, header, delimiter).sink_parquet(item.checked, lazy=True),
                records.special_lines(lines).sink_parquet(item.special, lazy=True),
            ],
            engine="streaming",
        )
        _plan_file(item, delimiter, storage_options)
        work[spec.name] = item
        timings[f"check_{spec.name}"] = time.perf_counter() - t0

    cutoff = as_of_cutoff(as_of)
    counts: dict[str, FileCounts] = {}
    valid_paths: dict[str, str] = {}
    reject_parts: list[Path] = []
    for spec in INPUT_FILES:
        t0 = time.perf_counter()
        out = run_dir / f"{spec.name}.parquet"
        rejects_part = work_dir / f"{spec.name}.rejects.parquet"
        counts[spec.name] = _resolve(work[spec.name], delimiter, out, rejects_part, run_dir, cutoff)
        valid_paths[spec.name] = str(out)
        reject_parts.append(rejects_part)
        timings[f"resolve_{spec.name}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rejects_path = run_dir / "rejects.parquet"
    _write_rejects(reject_parts, work, rejects_path, storage_options)
    timings["rejects"] = time.perf_counter() - t0
    return ExtractResult(valid_paths, str(rejects_path), counts, time.perf_counter() - started, timings)


def _plan_file(item: _FileWork, delimiter: str, storage_options: Mapping[str, str] | None) -> None:
    """Locate multi-line records and blank lines; re-assemble and check the records."""
    special = pl.read_parquet(item.special)
    if special.height == 0:
        item.plan = records.LinePlan(*(np.empty(0, dtype=np.int64) for _ in range(3)))
        return
    n_lines = pl.scan_parquet(item.checked).select(pl.col(LINE).max()).collect().item() or 0
    item.plan = records.plan_lines(special, delimiter, int(n_lines) + 1)
    if len(item.plan.span_starts):
        spans = records.span_records(_lines(item.header, storage_options), item.plan).collect()
        item.spans = spans
        log.info("%s: %d multi-line records", item.header.spec.file_name, spans.height)


def _records(item: _FileWork, delimiter: str) -> pl.LazyFrame:
    """The checked records of a file with multi-line records and row numbers fixed."""
    assert item.plan is not None
    plan = item.plan
    checked = pl.scan_parquet(item.checked)
    if not plan.trivial:
        drop = plan.in_span(pl.col(LINE))
        if len(plan.blank_lines):
            drop = drop | pl.col(LINE).is_in(pl.Series(plan.blank_lines).implode())
        checked = checked.filter(~drop)
    if item.spans is not None:
        checked = pl.concat([checked, check_records(item.spans.lazy(), item.header, delimiter)])
    return checked.with_columns(plan.row_number(pl.col(LINE)).alias(ROW))


def _conflicts(ok: pl.LazyFrame, key: str, compare: list[str]) -> pl.DataFrame:
    """Keys on several valid rows: whether those rows differ, and the first row number."""
    repeated = ok.group_by(key).agg(pl.len().alias("_n")).filter(pl.col("_n") > 1).select(key)
    return (
        ok.join(repeated, on=key, how="semi")
        .group_by(key)
        .agg(
            pl.any_horizontal(pl.col(c).n_unique() > 1 for c in compare).alias("_conflict"),
            pl.col(ROW).min().alias("_first"),
        )
        .collect(engine="streaming")
    )


def _resolve(
    item: _FileWork, delimiter: str, out: Path, rejects_out: Path, run_dir: Path, cutoff: pl.Expr
) -> FileCounts:
    """Duplicates and foreign keys for one file; stage valid rows and rejects; count."""
    spec = item.header.spec
    recs = _records(item, delimiter)
    reason = pl.col(REASON)
    dropped = pl.lit(False)
    after = pl.lit(False)

    if spec.key is not None:
        schema = VALID_SCHEMAS[spec.name]
        compare = [c for c in schema.names() if c not in (ROW, spec.key)]
        conflicts = _conflicts(recs.filter(reason.is_null()), spec.key, compare)
        if conflicts.height:
            recs = recs.join(conflicts.lazy(), on=spec.key, how="left")
            conflict = reason.is_null() & pl.col("_conflict").fill_null(False)
            dropped = (
                reason.is_null() & ~pl.col("_conflict").fill_null(True) & (pl.col(ROW) != pl.col("_first"))
            )
            recs = recs.with_columns(
                pl.when(conflict)
                .then(pl.lit(Reason.CONFLICTING_DUPLICATE.value))
                .otherwise(reason)
                .alias(REASON),
                pl.when(conflict).then(pl.lit(spec.key)).otherwise(pl.col(COLUMN)).alias(COLUMN),
                dropped.alias("_dropped"),
            )
            dropped = pl.col("_dropped")

    # Foreign keys, checked against the rows staged just before (customers -> orders -> items).
    if spec is ORDERS:
        parents = pl.scan_parquet(run_dir / "customers.parquet").select("customer_id", _known=pl.lit(True))
        recs = _check_parent(
            recs.join(parents, on="customer_id", how="left"), dropped, Reason.UNKNOWN_CUSTOMER, "customer_id"
        )
        after = pl.col("order_ts") >= cutoff
    elif spec is ORDER_ITEMS:
        parents = pl.scan_parquet(run_dir / "orders.parquet").select(
            "order_id", _known=pl.lit(True), _after=pl.col("order_ts") >= cutoff
        )
        recs = _check_parent(
            recs.join(parents, on="order_id", how="left"), dropped, Reason.UNKNOWN_ORDER, "order_id"
        )
        after = pl.col("_after").fill_null(False)

    valid = pl.col(REASON).is_null() & ~dropped
    schema = VALID_SCHEMAS[spec.name]
    tmp_out = stage.temporary(out)
    tmp_rejects = stage.temporary(rejects_out)
    results = pl.collect_all(
        [
            recs.filter(valid).select(schema.names()).sink_parquet(tmp_out, lazy=True),
            recs.filter(pl.col(REASON).is_not_null())
            .select(
                pl.lit(spec.file_name).alias("file"),
                pl.col(ROW),
                pl.col(REASON).alias("reason"),
                pl.col(COLUMN).alias("column"),
                pl.col(RAW).alias("raw"),
                pl.col(LINE),
            )
            .sink_parquet(tmp_rejects, lazy=True),
            recs.select(
                pl.len().alias("read"),
                valid.sum().alias("valid"),
                dropped.sum().alias("dropped"),
                (valid & after).sum().alias("after"),
            ),
        ],
        engine="streaming",
    )
    stage.commit(tmp_out, out)
    stage.commit(tmp_rejects, rejects_out)
    totals = results[2].row(0, named=True)
    by_reason = dict.fromkeys((r.value for r in REASONS_BY_FILE[spec.name]), 0)
    reason_counts = pl.scan_parquet(rejects_out).group_by("reason").agg(pl.len()).collect()
    for code_value, n in reason_counts.iter_rows():
        by_reason[code_value] = n
    counts = FileCounts(
        file=spec.file_name,
        read=int(totals["read"]),
        valid=int(totals["valid"]),
        rejected_by_reason=by_reason,
        duplicates_dropped=int(totals["dropped"]),
        after_as_of=int(totals["after"]),
    )
    if counts.read != counts.valid + counts.rejected + counts.duplicates_dropped:
        raise AssertionError(f"{spec.file_name}: counts do not add up: {counts}")  # a bug, not bad input
    return counts


def _check_parent(recs: pl.LazyFrame, dropped: pl.Expr, code: Reason, column: str) -> pl.LazyFrame:
    """Reject rows that passed every other check but whose parent key is unknown (``_known``)."""
    failed = pl.col(REASON).is_null() & ~dropped & pl.col("_known").is_null()
    return recs.with_columns(
        pl.when(failed).then(pl.lit(code.value)).otherwise(pl.col(REASON)).alias(REASON),
        pl.when(failed).then(pl.lit(column)).otherwise(pl.col(COLUMN)).alias(COLUMN),
    )


def _write_rejects(
    parts: list[Path], work: dict[str, _FileWork], out: Path, storage_options: Mapping[str, str] | None
) -> None:
    """Concatenate the per-file rejects and fill in the raw text of rows rejected in pass 2."""
    frames = []
    for spec, part in zip(INPUT_FILES, parts, strict=True):
        rejects = pl.read_parquet(part)
        missing = rejects.filter(pl.col("raw").is_null())
        if missing.height:
            item = work[spec.name]
            wanted = missing.select(LINE)
            texts = (
                _lines(item.header, storage_options)
                .join(wanted.lazy(), on=LINE, how="semi")
                .collect(engine="streaming")
            )
            if item.spans is not None:
                texts = pl.concat([texts.select(LINE, TEXT), item.spans.select(LINE, TEXT)])
            texts = texts.unique(LINE, keep="last")  # a multi-line record wins over its first line
            rejects = rejects.join(texts, on=LINE, how="left").with_columns(
                pl.coalesce("raw", TEXT).alias("raw")
            )
        frames.append(rejects.select(REJECTS_SCHEMA.names()))
    combined = pl.concat(frames).sort("file", "row") if frames else pl.DataFrame(schema=REJECTS_SCHEMA)
    stage.write_parquet(combined.cast(REJECTS_SCHEMA), out)
