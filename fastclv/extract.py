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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from fastclv import records, stage, storage
from fastclv.contract import (
    DATE_PATTERN,
    INPUT_FILES,
    MONEY,
    MONEY_PATTERN,
    ORDER_ITEMS,
    ORDERS,
    PARENT_ROW,
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

LINE, TEXT, MALFORMED = records.LINE, records.TEXT, records.MALFORMED
REASON, COLUMN, ROW = "_reason", "_column", "row"


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
    with _reading(spec, source, storage_options):
        first = pl.scan_lines(
            source, name=TEXT, n_rows=1, storage_options=storage.polars_options(storage_options, location)
        ).collect()
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


@contextmanager
def _reading(spec: InputFile, source: str, storage_options: Mapping[str, str] | None) -> Iterator[None]:
    """Turn a failure while reading a file (bad encoding, storage trouble) into a clear error."""
    try:
        yield
    except (pl.exceptions.PolarsError, OSError) as exc:
        if storage.is_remote(source):
            raise storage.input_error(spec.file_name, source, exc, storage_options) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{spec.file_name}: cannot read {source} ({type(exc).__name__}: {first}). "
            "Hint: the files must be readable UTF-8 text; check the export's encoding."
        ) from None


# --------------------------------------------------------------------------- checks


def _first_match(rules: list[Rule]) -> tuple[pl.Expr, pl.Expr]:
    """Reason and column of the first rule whose condition holds (null if none).

    Each condition is evaluated once, into the index of the first hit; the two labels are
    then picked by that index. (Not ``replace_strict``: it does not stream, and costs GBs.)
    """
    hit = pl.coalesce(
        pl.when(cond.fill_null(False)).then(pl.lit(i, pl.UInt8)) for i, (cond, _, _) in enumerate(rules)
    )

    def label(values: list[str | None]) -> pl.Expr:
        chain: Any = pl.when(hit == 0).then(pl.lit(values[0], pl.String))
        for i, value in enumerate(values[1:], start=1):
            chain = chain.when(hit == i).then(pl.lit(value, pl.String))
        result: pl.Expr = chain.otherwise(pl.lit(None, pl.String))
        return result

    return label([code.value for _, code, _ in rules]), label([col for _, _, col in rules])


def parse_date(text: pl.Expr) -> pl.Expr:
    """``YYYY-MM-DD`` -> Date, null unless well formed and a real calendar date (years 1-9999)."""
    shaped = text.str.contains(DATE_PATTERN) & (text.str.slice(0, 4) != "0000")
    return pl.when(shaped).then(text.str.to_date("%Y-%m-%d", strict=False))


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """A contract timestamp -> UTC Datetime(us), null unless valid (section 1)."""
    return timestamp_from_parts(timestamp_parts(text))


def timestamp_parts(text: pl.Expr) -> pl.Expr:
    """One regex pass that validates a timestamp and splits it (a struct; null if invalid).

    Keep it in a column of its own: Polars would otherwise run the regex once per part.
    """
    return text.str.extract_groups(TIMESTAMP_PATTERN)


def timestamp_from_parts(parts: pl.Expr) -> pl.Expr:
    """The UTC instant of :func:`timestamp_parts`: integer arithmetic on the parts.

    About ten times faster than building a canonical string for ``str.to_datetime``.
    """

    def part(i: int) -> pl.Expr:
        return parts.struct.field(str(i))

    def number(i: int) -> pl.Expr:
        return part(i).cast(pl.Int64, strict=False).fill_null(0)

    day = pl.when(part(1).str.slice(0, 4) != "0000").then(part(1).str.to_date("%Y-%m-%d", strict=False))
    fraction = part(5).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    micros = ((number(2) * 60 + number(3)) * 60 + number(4)) * 1_000_000 + fraction
    offset_minutes = (number(8) * 60 + number(9)) * pl.when(part(7) == "-").then(-1).otherwise(1)
    instant = day.cast(pl.Datetime("us")) + pl.duration(microseconds=micros - offset_minutes * 60_000_000)
    # An offset can push the instant out of the years 1..9999 (no calendar date there).
    return pl.when(instant.dt.year().is_between(1, 9999)).then(instant.dt.replace_time_zone("UTC"))


def _money(text: pl.Expr) -> pl.Expr:
    return pl.when(text.str.contains(MONEY_PATTERN)).then(text.cast(MONEY, strict=False))


def _typed(name: str) -> str:
    return f"_typed_{name}"


def _check_customers(
    c: Callable[[str], pl.Expr], t: Callable[[str], pl.Expr]
) -> tuple[dict[str, pl.Expr], list[Rule]]:
    typed = {"signup_date": parse_date(c("signup_date"))}
    rules: list[Rule] = [
        (c("customer_id").is_null(), Reason.MISSING_VALUE, "customer_id"),
        (c("signup_date").is_null(), Reason.MISSING_VALUE, "signup_date"),
        (t("signup_date").is_null(), Reason.BAD_DATE, "signup_date"),
    ]
    return typed, rules


def _check_orders(
    c: Callable[[str], pl.Expr], t: Callable[[str], pl.Expr]
) -> tuple[dict[str, pl.Expr], list[Rule]]:
    typed = {
        "_ts_parts": timestamp_parts(c("order_ts")),
        "order_ts": timestamp_from_parts(t("_ts_parts")),
        "status": c("status").str.to_lowercase(),
    }
    rules: list[Rule] = [
        *((c(name).is_null(), Reason.MISSING_VALUE, name) for name in ORDERS.required),
        (t("order_ts").is_null(), Reason.BAD_TIMESTAMP, "order_ts"),
        (~t("status").is_in(STATUSES), Reason.BAD_STATUS, "status"),
    ]
    return typed, rules


def _check_items(
    c: Callable[[str], pl.Expr], t: Callable[[str], pl.Expr]
) -> tuple[dict[str, pl.Expr], list[Rule]]:
    qty_text = c("quantity")
    qty = pl.when(qty_text.str.contains(QUANTITY_PATTERN)).then(qty_text.cast(pl.Int64, strict=False))
    typed = {
        "quantity": pl.when(qty.is_between(1, QUANTITY_MAX)).then(qty),
        "unit_price": _money(c("unit_price")),
        "discount": pl.when(c("discount").is_null())
        .then(pl.lit(0).cast(MONEY))
        .otherwise(_money(c("discount"))),
    }
    rules: list[Rule] = [
        *((c(name).is_null(), Reason.MISSING_VALUE, name) for name in ORDER_ITEMS.required),
        (t("quantity").is_null(), Reason.BAD_QUANTITY, "quantity"),
        (t("unit_price").is_null(), Reason.BAD_MONEY, "unit_price"),
        (t("discount").is_null(), Reason.BAD_MONEY, "discount"),
        (t("discount") > t("quantity") * t("unit_price"), Reason.DISCOUNT_EXCEEDS_AMOUNT, "discount"),
    ]
    return typed, rules


_CHECKS = {"customers": _check_customers, "orders": _check_orders, "order_items": _check_items}


def _with_each(frame: pl.LazyFrame, columns: dict[str, pl.Expr]) -> pl.LazyFrame:
    for name, expr in columns.items():
        frame = frame.with_columns(expr.alias(name))
    return frame


def check_fields(fields: pl.LazyFrame, spec: InputFile, present: set[str]) -> pl.LazyFrame:
    """Split records (``LINE``, ``ROW``, ``MALFORMED``, text fields) -> typed columns + first reason.

    ``present`` names the contract columns the file has; a missing optional one reads as null.
    """

    def text(name: str) -> pl.Expr:
        return pl.col(name) if name in present else pl.lit(None, pl.String).alias(name)

    def typed(name: str) -> pl.Expr:
        return pl.col(_typed(name))

    parsed, rules = _CHECKS[spec.name](text, typed)
    reason, column = _first_match([(pl.col(MALFORMED), Reason.MALFORMED_ROW, None), *rules])
    schema = VALID_SCHEMAS[spec.name]
    return (
        # One column per step, so that later steps read earlier results instead of redoing them.
        _with_each(fields, {_typed(name): expr for name, expr in parsed.items()})
        .with_columns(reason.alias(REASON), column.alias(COLUMN))
        .select(
            pl.col(LINE).cast(pl.Int64),
            *(
                (pl.col(ROW) if name == ROW else typed(name) if name in parsed else text(name))
                .cast(schema[name])
                .alias(name)
                for name in schema.names()
            ),
            REASON,
            COLUMN,
        )
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
    """One file's structure: its exceptional lines, multi-line records and line count."""

    header: Header
    exceptional: Path
    n_lines: int
    n_exceptional: int
    plan: records.LinePlan
    spans: pl.DataFrame | None

    @property
    def wanted(self) -> dict[str, int]:
        spec = self.header.spec
        return {name: self.header.positions[name] for name in spec.columns if name in self.header.positions}


def extract(
    input_location: str,
    run_dir: Path,
    as_of: date,
    *,
    delimiter: str = ",",
    storage_options: Mapping[str, str] | None = None,
) -> ExtractResult:
    """Validate the three input files and stage valid rows and rejects under ``run_dir``.

    Files are done in contract order (customers, orders, items) so each foreign key is
    checked against the rows staged just before.

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
    cutoff = as_of_cutoff(as_of)
    counts: dict[str, FileCounts] = {}
    valid_paths: dict[str, str] = {}
    reject_parts: list[Path] = []
    work: dict[str, _FileWork] = {}
    for spec in INPUT_FILES:
        t0 = time.perf_counter()
        header = headers[spec.name]
        with _reading(spec, header.location, storage_options):
            item = _scan_structure(header, work_dir, delimiter, storage_options)
            work[spec.name] = item
            checked = check_fields(_fields(item, delimiter, storage_options), spec, set(item.wanted))
            if spec.key is not None:
                # Duplicates need the whole file: stage the checked rows once (Arrow IPC: a
                # third of Parquet's write cost, and only we read it), then resolve from there.
                # Items have no key: their foreign key is joined straight from the CSV stream
                # (measured at 28M items: 28 CPU-s and 1.6 GB, against 39 CPU-s and 1.9 GB).
                checked_path = work_dir / f"{spec.name}.checked.arrow"
                stage.sink_ipc(checked, checked_path)
                checked = pl.scan_ipc(checked_path)
            out = run_dir / f"{spec.name}.parquet"
            rejects_part = work_dir / f"{spec.name}.rejects.parquet"
            counts[spec.name] = _resolve(spec, checked, out, rejects_part, run_dir, cutoff)
        valid_paths[spec.name] = str(out)
        reject_parts.append(rejects_part)
        timings[spec.name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rejects_path = run_dir / "rejects.parquet"
    _write_rejects(reject_parts, work, rejects_path, storage_options)
    timings["rejects"] = time.perf_counter() - t0
    return ExtractResult(valid_paths, str(rejects_path), counts, time.perf_counter() - started, timings)


def _scan_structure(
    header: Header, work_dir: Path, delimiter: str, storage_options: Mapping[str, str] | None
) -> _FileWork:
    """Pass one: find the lines a plain split cannot read, and the multi-line records."""
    spec = header.spec
    exceptional = work_dir / f"{spec.name}.exceptional.parquet"
    lines = _lines(header, storage_options)
    tmp = stage.temporary(exceptional)
    try:
        _, totals = pl.collect_all(
            [
                records.exceptional_lines(lines, header.n_fields, delimiter).sink_parquet(tmp, lazy=True),
                lines.select(pl.len().alias("lines")),
            ],
            engine="streaming",
        )
        stage.commit(tmp, exceptional)
    finally:
        tmp.unlink(missing_ok=True)
    n_lines = int(totals.item()) + 1  # with the header
    found = pl.scan_parquet(exceptional)
    n_exceptional = found.select(pl.len()).collect().item()
    # Multi-line records and blank lines are among the exceptional lines (small in practice).
    special = found.filter(
        (pl.col(TEXT).str.count_matches('"', literal=True) % 2 == 1) | (pl.col(TEXT).str.len_bytes() == 0)
    ).collect(engine="streaming")
    plan = records.plan_lines(special, delimiter, n_lines)
    spans = None
    if len(plan.span_starts):
        spans = records.span_records(lines, plan).collect(engine="streaming")
        log.info("%s: %d multi-line records", spec.file_name, spans.height)
    return _FileWork(header, exceptional, n_lines, n_exceptional, plan, spans)


def _fields(item: _FileWork, delimiter: str, storage_options: Mapping[str, str] | None) -> pl.LazyFrame:
    """Every record of the file split into fields, with its row number (pass two's source)."""
    header, plan, wanted = item.header, item.plan, item.wanted
    line = pl.col(LINE)
    single = ~plan.in_span(line) & (pl.col(TEXT).str.len_bytes() > 0)  # blank lines are no record
    n_data = item.n_lines - 1
    if item.n_exceptional * 2 > n_data:
        # Mostly quoted (e.g. every field quoted): split every line ourselves.
        parts = [
            records.split_fields(
                _lines(header, storage_options).filter(single), header.n_fields, delimiter, wanted
            )
        ]
    else:
        native = records.native_fields(
            header.location,
            header.n_fields,
            delimiter,
            wanted,
            storage.polars_options(storage_options, header.location),
        ).filter(~plan.in_span(line))
        exceptional = pl.scan_parquet(item.exceptional)
        if item.n_exceptional:
            native = native.join(exceptional.select(LINE), on=LINE, how="anti", maintain_order="left")
        parts = [native, records.split_fields(exceptional.filter(single), header.n_fields, delimiter, wanted)]
    if item.spans is not None:
        parts.append(records.split_fields(item.spans.lazy(), header.n_fields, delimiter, wanted))
    columns = [LINE, MALFORMED, *wanted]
    return pl.concat([part.select(columns) for part in parts]).with_columns(plan.row_number(line).alias(ROW))


def _conflicts(ok: pl.LazyFrame, key: str, compare: list[str]) -> pl.DataFrame:
    """Keys on several valid rows: whether those rows differ, and the first row number.

    Repeated keys are found by a 64-bit hash first (an integer group-by: a fraction of the
    memory of grouping 10M text ids); a collision only adds a candidate, which the exact
    group-by on the text key of the few candidate rows then sorts out.
    """
    hashed = pl.col(key).hash().alias("_key_hash")
    repeated = ok.group_by(hashed).agg(pl.len().alias("_n")).filter(pl.col("_n") > 1).select("_key_hash")
    candidates = ok.with_columns(hashed).join(repeated, on="_key_hash", how="semi")
    return (
        candidates.group_by(key)
        .agg(
            pl.len().alias("_n"),
            pl.any_horizontal(pl.col(c).n_unique() > 1 for c in compare).alias("_conflict"),
            pl.col(ROW).min().alias("_first"),
        )
        .filter(pl.col("_n") > 1)
        .drop("_n")
        .collect(engine="streaming")
    )


def _resolve(
    spec: InputFile, recs: pl.LazyFrame, out: Path, rejects_out: Path, run_dir: Path, cutoff: pl.Expr
) -> FileCounts:
    """Duplicates and foreign keys for one file; stage valid rows and rejects; count.

    ``recs`` is the checked file: its work file (keyed files) or the CSV stream (items).
    """
    reason = pl.col(REASON)
    dropped = pl.lit(False)
    after = pl.lit(False)

    if spec.key is not None:
        schema = VALID_SCHEMAS[spec.name]
        compare = [c for c in schema.names() if c not in (ROW, spec.key)]
        conflicts = _conflicts(recs.filter(reason.is_null()), spec.key, compare)
        if conflicts.height:
            recs = recs.join(conflicts.lazy(), on=spec.key, how="left", maintain_order="left")
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
        parents = pl.scan_parquet(run_dir / "customers.parquet").select(
            "customer_id", _known=pl.lit(True), _parent=pl.col(ROW)
        )
        recs = _check_parent(
            recs.join(parents, on="customer_id", how="left", maintain_order="left"),
            dropped,
            Reason.UNKNOWN_CUSTOMER,
            "customer_id",
        )
        after = pl.col("order_ts") >= cutoff
    elif spec is ORDER_ITEMS:
        parents = pl.scan_parquet(run_dir / "orders.parquet").select(
            "order_id", _known=pl.lit(True), _parent=pl.col(ROW), _after=pl.col("order_ts") >= cutoff
        )
        recs = _check_parent(
            recs.join(parents, on="order_id", how="left", maintain_order="left"),
            dropped,
            Reason.UNKNOWN_ORDER,
            "order_id",
        )
        after = pl.col("_after").fill_null(False)

    # One streaming query, three outputs sharing the scan and the joins. This only stays in
    # bounded memory because every join keeps the left order: with unordered joins the
    # sinks buffered gigabytes (measured at 28M items: 1.6 GB and 27 CPU-s this way).
    valid = pl.col(REASON).is_null() & ~dropped
    tmp_out, tmp_rejects = stage.temporary(out), stage.temporary(rejects_out)
    try:
        _, _, totals_frame = pl.collect_all(
            [
                recs.filter(valid)
                .select(*VALID_SCHEMAS[spec.name].names(), *_parent_row(spec))
                .sink_parquet(tmp_out, lazy=True),
                recs.filter(pl.col(REASON).is_not_null())
                .select(
                    pl.lit(spec.file_name).alias("file"),
                    pl.col(ROW),
                    pl.col(REASON).alias("reason"),
                    pl.col(COLUMN).alias("column"),
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
    finally:
        tmp_out.unlink(missing_ok=True)
        tmp_rejects.unlink(missing_ok=True)
    totals = totals_frame.row(0, named=True)
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


def _parent_row(spec: InputFile) -> list[pl.Expr]:
    """The parent's row number, kept on staged orders and items (contract.PARENT_ROW)."""
    return [pl.col("_parent").alias(PARENT_ROW[spec.name])] if spec.name in PARENT_ROW else []


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
    """Concatenate the per-file rejects, each with its record's text as it is in the file."""
    frames = []
    for spec, part in zip(INPUT_FILES, parts, strict=True):
        rejects = pl.read_parquet(part)
        item = work[spec.name]
        if rejects.height:
            # One targeted pass over the file's lines fetches the raw text of the rejected rows.
            texts = (
                _lines(item.header, storage_options)
                .join(rejects.select(LINE).lazy(), on=LINE, how="semi")
                .collect(engine="streaming")
            )
            if item.spans is not None:  # a multi-line record's text is all of its lines
                texts = pl.concat(
                    [texts.filter(~item.plan.in_span(pl.col(LINE))), item.spans.select(LINE, TEXT)]
                )
            rejects = rejects.join(texts, on=LINE, how="left").rename({TEXT: "raw"})
        else:
            rejects = rejects.with_columns(pl.lit(None, pl.String).alias("raw"))
        frames.append(rejects.select(REJECTS_SCHEMA.names()))
    stage.write_parquet(pl.concat(frames).sort("file", "row").cast(REJECTS_SCHEMA), out)
