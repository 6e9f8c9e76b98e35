"""What the idiomatic contenders (``duckdb_read_csv``, ``polars_scan_csv``) do not check.

They use their library's own CSV reader and casts, as their users do, so they are not
contract-exact on dirty data: the benchmark compares their loaded rows and counts with fastclv's
and reports the differences instead of requiring equality. RESULTS.md (``benchmarks/report.py``)
quotes these texts; docs/benchmarks.md says the same.
"""

from __future__ import annotations

#: Contender name -> what it does not check (one sentence per item).
NOT_CHECKED: dict[str, tuple[str, ...]] = {
    "duckdb_read_csv": (
        "Row numbers: the rows rejected by the SQL checks carry none (DuckDB's `read_csv` numbers "
        "only the lines its reader rejects, by physical line).",
        "Field counts and quoting as the contract defines them: DuckDB's reader decides what is "
        'malformed; a quote inside an unquoted field (`comp"le"ted`) is read as text, a trailing '
        "delimiter (one empty field too many) is accepted, and an unclosed quote may swallow the "
        "lines after it.",
        "The value formats: DuckDB's casts decide (`TRY_CAST` to DATE, TIMESTAMPTZ, BIGINT, "
        "DECIMAL(18,2)), so near misses the contract rejects are accepted: money `1.234` (rounded "
        "to 1.23), `12.`, `.5`, `+1`, `1e3`; quantities `1.5` (rounded to 2), `1e2`, `0x10`, `+1`; "
        "timestamps with `24:00`, an offset `+0100` or `+01`, a 7-digit fraction, `2024/01/01`, two "
        "spaces, a trailing `.`, a 1-digit hour, `24-01-01`; dates `2024-1-05`, `2024/01/05`, "
        "`2024-01-05T00:00`, `24-01-01`.",
        "Invalid UTF-8 is whatever DuckDB's reader makes of it (its `INVALID ENCODING` reject), "
        "not checked separately.",
    ),
    "polars_scan_csv": (
        "Field counts: a row with too many fields is cut to the header's width "
        "(`truncate_ragged_lines=True`; without it the whole read fails), one with too few is "
        "padded with nulls (then `missing_value`, or valid when only the optional column is "
        "missing); neither is `malformed_row`.",
        "Broken quoting: a quote inside an unquoted field is read as text; only a field with text "
        "after its closing quote is a `malformed_row` (Polars 2.1 aborts the whole read on it, even "
        "with `ignore_errors`, pola-rs/polars#25462, so the contender sets those lines aside "
        "first, with one `pl.scan_lines` pass and a regex).",
        "The value formats: Polars' parsers decide (`str.to_date('%Y-%m-%d')`, chrono formats for "
        "timestamps, `cast(pl.Decimal(18, 2), strict=False)`, `cast(pl.Int64, strict=False)`), "
        "so near misses the contract rejects are accepted: money `1.234` (cut to 1.23), `12.`, "
        "`.5`, `+1`, `1e3`; quantity `+1`; timestamps with an offset `+0100`, a 7-digit fraction, "
        "`:60` seconds, two spaces, ` Z` or `z`, a 1-digit hour, `24-01-01`; dates `2024-1-05`, "
        "`24-01-01`.",
        "Multi-line records (a quoted field with a line break): the first pass reads physical "
        "lines, so such a record is split (the generated data has none).",
    ),
}
