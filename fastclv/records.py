"""RFC 4180 records from physical lines, with Polars expressions only (no row loops).

Why not ``pl.scan_csv``: it cannot report a row with the wrong number of fields or broken
quoting (it raises, pads or truncates), and the contract needs every such row kept as a
``malformed_row`` reject with its row number. So we read physical lines with
``pl.scan_lines`` (streaming, multi-threaded, object-storage aware) and split them here:

* a line without ``"`` is split with ``str.split_exact`` (the fast path);
* a line with quotes is matched whole against a regex of exactly N fields;
* a line that ends inside a quoted field opens a *multi-line record*, which continues up to
  the next line with an odd number of quotes. Such lines are rare; they are found from the
  small side table of odd-quote and blank lines (:func:`plan_lines`) and re-assembled by
  :func:`span_records`.

Numbering: the header is row 0; records are numbered 1, 2, ... in file order; a completely
empty line is not a record and takes no number; a multi-line record takes one number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from fastclv.contract import TRIM_CHARS

#: Longest multi-line record we re-assemble; beyond it (an unterminated quote swallowing
#: the rest of the file) the record is malformed and its raw text is cut.
MAX_RECORD_LINES = 10_000

LINE = "_line"  # 0-based physical line index (0 = header)
TEXT = "_text"  # the record's text
MALFORMED = "_malformed"


def _field_patterns(delimiter: str) -> tuple[str, str]:
    d = re.escape(delimiter)
    pad = "[" + re.escape(" \t".replace(delimiter, "")) + "]*"  # a tab delimiter is not padding
    quoted = f'{pad}"(?:[^"]|"")*"{pad}'
    unquoted = rf'[^{d}"\n]*'
    return quoted, unquoted


def record_regex(n_fields: int, delimiter: str) -> str:
    """A regex matching a whole record of exactly ``n_fields`` fields, one group per field."""
    quoted, unquoted = _field_patterns(delimiter)
    field = f"({quoted}|{unquoted})"
    return "^" + re.escape(delimiter).join([field] * n_fields) + "$"


def opener_regex(delimiter: str) -> str:
    """A regex matching a line that ends inside a quoted field (a multi-line record starts)."""
    quoted, unquoted = _field_patterns(delimiter)
    d = re.escape(delimiter)
    pad = "[" + re.escape(" \t".replace(delimiter, "")) + "]*"
    return rf'^(?:(?:{quoted}|{unquoted}){d})*{pad}"(?:[^"]|"")*$'


def split_line(line: str, delimiter: str) -> list[str] | None:
    """Split one record (e.g. the header) into unquoted field values; None if malformed."""
    quoted, unquoted = _field_patterns(delimiter)
    field = re.compile(f"({quoted}|{unquoted})(?:{re.escape(delimiter)}|$)")
    values: list[str] = []
    pos = 0
    while True:
        match = field.match(line, pos)
        if match is None:
            return None
        raw = match.group(1)
        bare = raw.strip(" \t")
        values.append(bare[1:-1].replace('""', '"') if bare.startswith('"') else raw)
        if match.end() == match.end(1):  # no delimiter after the field: that was the last one
            return values if match.end() == len(line) else None
        pos = match.end()


def _clean(value: pl.Expr) -> pl.Expr:
    """Trim a field; an empty value is missing (null)."""
    trimmed = value.str.strip_chars(TRIM_CHARS)
    return pl.when(trimmed.str.len_bytes() > 0).then(trimmed)


def _unquote(value: pl.Expr) -> pl.Expr:
    """Remove the outer quotes of a quoted field and undo ``""`` escapes."""
    bare = value.str.strip_chars(" \t")  # only ever padding: the regex matched the field
    inner = bare.str.slice(1, bare.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
    return pl.when(bare.str.starts_with('"')).then(inner).otherwise(value)


def split_fields(
    records: pl.LazyFrame, n_fields: int, delimiter: str, wanted: dict[str, int]
) -> pl.LazyFrame:
    """Split the ``TEXT`` column of ``records`` into the ``wanted`` fields.

    Args:
        records: frame with ``LINE`` and ``TEXT`` columns (one record per row).
        n_fields: number of fields in the header; any other count is malformed.
        delimiter: the one-character field separator.
        wanted: output column name -> 0-based field index.

    Returns:
        ``LINE``, ``MALFORMED`` (bool) and one trimmed String column per wanted field (null
        when missing or when the record is malformed).
    """
    text = pl.col(TEXT)
    names = [f"f{i}" for i in range(n_fields)]
    has_quote = text.str.contains('"', literal=True)
    marked = records.with_columns(_q=has_quote)

    # Fast path: no quotes, so the delimiter count alone decides the field count.
    plain = (
        marked.filter(~pl.col("_q"))
        .with_columns(
            (text.str.count_matches(delimiter, literal=True) != n_fields - 1).alias(MALFORMED),
            text.str.split_exact(delimiter, max(n_fields - 1, 0))
            .struct.rename_fields(names)
            .alias("_fields"),
        )
        .with_columns(pl.col("_fields").struct.field(names[i]).alias(name) for name, i in wanted.items())
    )
    # Quoted path: one anchored regex with a group per field validates and splits at once.
    groups = [str(i + 1) for i in range(n_fields)]
    quoted = (
        marked.filter(pl.col("_q"))
        .with_columns(text.str.extract_groups(record_regex(n_fields, delimiter)).alias("_fields"))
        .with_columns(
            pl.col("_fields").struct.field(groups[0]).is_null().alias(MALFORMED),
            *(_unquote(pl.col("_fields").struct.field(groups[i])).alias(name) for name, i in wanted.items()),
        )
    )
    columns = [*records.collect_schema().names(), MALFORMED, *wanted]
    both = pl.concat([plain.select(columns), quoted.select(columns)])
    return both.with_columns(
        pl.when(~pl.col(MALFORMED)).then(_clean(pl.col(name))).alias(name) for name in wanted
    ).select(LINE, MALFORMED, *wanted)


@dataclass(frozen=True)
class LinePlan:
    """Where a file's records differ from its physical lines (usually: nowhere)."""

    #: First and last physical line of each multi-line record (sorted; an unterminated one
    #: ends at the last line of the file).
    span_starts: np.ndarray
    span_ends: np.ndarray
    #: Physical lines that are empty and outside multi-line records (sorted).
    blank_lines: np.ndarray

    @property
    def trivial(self) -> bool:
        """True when every non-header line is exactly one record."""
        return len(self.span_starts) == 0 and len(self.blank_lines) == 0

    def in_span(self, line: pl.Expr) -> pl.Expr:
        """Whether physical ``line`` belongs to a multi-line record."""
        if len(self.span_starts) == 0:
            return pl.lit(False)
        k = self.span_index(line)
        end = pl.lit(pl.Series(self.span_ends)).gather(k.clip(0))
        return (k >= 0) & (line <= end)

    def span_index(self, line: pl.Expr) -> pl.Expr:
        """Index of the multi-line record containing ``line`` (valid where in_span)."""
        return pl.lit(pl.Series(self.span_starts)).search_sorted(line, side="right").cast(pl.Int64) - 1

    def skipped(self, line: pl.Expr) -> pl.Expr:
        """Lines before ``line`` that take no row number (blank lines, continuation lines)."""
        expr: pl.Expr = pl.lit(0, pl.Int64)
        if len(self.blank_lines):
            expr = expr + pl.lit(pl.Series(self.blank_lines)).search_sorted(line).cast(pl.Int64)
        if len(self.span_starts):
            extra = np.concatenate([[0], np.cumsum(self.span_ends - self.span_starts)])
            k = pl.lit(pl.Series(self.span_starts)).search_sorted(line).cast(pl.Int64)
            expr = expr + pl.lit(pl.Series(extra)).gather(k)
        return expr

    def row_number(self, line: pl.Expr) -> pl.Expr:
        """The 1-based data row number of a record starting at physical ``line``."""
        if self.trivial:
            return line
        return line - self.skipped(line)


def exceptional_lines(lines: pl.LazyFrame, n_fields: int, delimiter: str) -> pl.LazyFrame:
    """Lines that a plain split cannot read: with a quote, or without exactly N fields.

    Blank lines and every line of a multi-line record with quotes are among them. For a
    typical export this is a tiny fraction of the file; the rest is read by
    :func:`native_fields`.
    """
    text = pl.col(TEXT)
    return lines.filter(
        text.str.contains('"', literal=True)
        | (text.str.count_matches(delimiter, literal=True) != n_fields - 1)
    )


def native_fields(
    source: str, n_fields: int, delimiter: str, wanted: dict[str, int], storage_options: dict[str, str] | None
) -> pl.LazyFrame:
    """Every data line split by Polars' native CSV reader, quotes ignored (``LINE``, wanted fields).

    With ``quote_char=None`` the reader makes exactly one row per physical line, so row i is
    line i + 1; only lines that :func:`exceptional_lines` did not pick may use its split.
    """
    schema = {f"_f{i}": pl.String() for i in range(n_fields)}
    frame = pl.scan_csv(
        source,
        has_header=False,
        skip_rows=1,
        separator=delimiter,
        quote_char=None,
        schema=schema,
        truncate_ragged_lines=True,
        # The first line read decides nothing: every line is cut or padded to N fields.
        extra_columns="ignore",
        missing_columns="insert",
        row_index_name=LINE,
        row_index_offset=1,
        raise_if_empty=False,
        storage_options=storage_options,
    )
    return frame.select(
        pl.col(LINE).cast(pl.Int64),
        pl.lit(False).alias(MALFORMED),
        *(_clean(pl.col(f"_f{i}")).alias(name) for name, i in wanted.items()),
    )


def plan_lines(exceptional: pl.DataFrame, delimiter: str, n_lines: int) -> LinePlan:
    """Find the multi-line records from the odd-quote and blank lines of one file.

    A line opens a multi-line record when, read from a record start, it ends inside a
    quoted field; the record then runs to the next line with an odd number of quotes
    (quote parity, which is exact for RFC 4180 text), or to the end of the file. An
    odd-quote line that does not open a record (a stray quote in an unquoted field) is a
    malformed one-line record: it does not swallow the lines after it.

    The walk is sequential, but only over the odd-quote lines (rare in practice).
    ``exceptional`` holds (at least) every odd-quote and every blank line (``LINE``, ``TEXT``).
    """
    text = pl.col(TEXT)
    special = exceptional.filter(
        (text.str.count_matches('"', literal=True) % 2 == 1) | (text.str.len_bytes() == 0)
    ).sort(LINE)
    odd = special.filter(pl.col(TEXT).str.len_bytes() > 0)
    odd_lines = odd[LINE].to_numpy()
    opens = odd[TEXT].str.contains(opener_regex(delimiter)).to_numpy()
    starts: list[int] = []
    ends: list[int] = []
    inside = False
    for line, is_opener in zip(odd_lines.tolist(), opens.tolist(), strict=True):
        if inside:
            ends.append(line)
            inside = False
        elif is_opener:
            starts.append(line)
            inside = True
    if inside:
        ends.append(n_lines - 1)
    span_starts = np.asarray(starts, dtype=np.int64)
    span_ends = np.asarray(ends, dtype=np.int64)
    blank = special.filter(pl.col(TEXT).str.len_bytes() == 0)[LINE].to_numpy()
    plan = LinePlan(span_starts, span_ends, np.empty(0, dtype=np.int64))
    if len(blank) and len(span_starts):
        blank = blank[~pl.select(plan.in_span(pl.lit(pl.Series(blank)))).to_series().to_numpy()]
    return LinePlan(span_starts, span_ends, np.asarray(blank, dtype=np.int64))


def span_records(lines: pl.LazyFrame, plan: LinePlan) -> pl.LazyFrame:
    """Re-assemble the multi-line records: one row per record with ``LINE`` = its first line."""
    if len(plan.span_starts) == 0:
        return pl.LazyFrame(schema={LINE: pl.Int64, TEXT: pl.String})
    starts = pl.Series(plan.span_starts)
    line = pl.col(LINE)
    members = (
        lines.filter(plan.in_span(line))
        .with_columns(_span=plan.span_index(line))
        .with_columns(_offset=line - pl.lit(starts).gather(pl.col("_span")))
        # Cut a runaway record (an unterminated quote) instead of building a huge string.
        .filter(pl.col("_offset") < MAX_RECORD_LINES)
    )
    return (
        members.sort(LINE)
        .group_by("_span", maintain_order=True)
        .agg(pl.col(LINE).first(), pl.col(TEXT).str.join("\n"), pl.len().alias("_n"))
        .with_columns(
            # A cut record still lacks its closing quote, so it stays malformed.
            pl.when(pl.col("_n") >= MAX_RECORD_LINES)
            .then(pl.col(TEXT) + "\n... (record cut: an unterminated quote runs on)")
            .otherwise(pl.col(TEXT))
        )
        .select(pl.col(LINE).cast(pl.Int64), TEXT)
    )
