"""The contract rules the baseline contenders share, written from CONTRACT.md (not from fastclv).

The contenders are independent implementations of /work/shared/CONTRACT.md and of the
decisions docs/contract-decisions.md lists where the contract is silent (RFC 4180 records, row numbers,
header matching, timestamp details). They deliberately import nothing from ``fastclv``, so
that agreeing with fastclv means something.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class Spec:
    """One input file: its contract columns."""

    name: str
    file_name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


CUSTOMERS = Spec(
    "customers",
    "customers.csv",
    ("customer_id", "signup_date"),
    ("country",),
    ("malformed_row", "missing_value", "bad_date", "conflicting_duplicate"),
)
ORDERS = Spec(
    "orders",
    "orders.csv",
    ("order_id", "customer_id", "order_ts", "status"),
    (),
    (
        "malformed_row",
        "missing_value",
        "bad_timestamp",
        "bad_status",
        "conflicting_duplicate",
        "unknown_customer",
    ),
)
ITEMS = Spec(
    "order_items",
    "order_items.csv",
    ("order_id", "sku", "quantity", "unit_price"),
    ("discount",),
    (
        "malformed_row",
        "missing_value",
        "bad_quantity",
        "bad_money",
        "discount_exceeds_amount",
        "unknown_order",
    ),
)
SPECS = (CUSTOMERS, ORDERS, ITEMS)

STATUSES = ("completed", "cancelled", "refunded", "pending")
TRIM = " \t\r\n"
QUANTITY_MAX = 2_147_483_647

DATE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
#: Groups: date, hour, minute, second, fraction, zone, sign, offset hours, offset minutes.
TIMESTAMP_RE = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))?)?"
)
#: Money: up to 16 digits, optionally a point and one or two digits. Groups: whole, cents.
MONEY_RE = r"([0-9]{1,16})(?:\.([0-9]{1,2}))?"
QUANTITY_RE = r"[0-9]+"


def _pad(delimiter: str) -> str:
    return "[" + re.escape(" \t".replace(delimiter, "")) + "]*"


def field_res(delimiter: str) -> tuple[str, str]:
    """(quoted field, unquoted field) regexes: ``  "a ""b"" " `` or text without quote/delimiter."""
    d = re.escape(delimiter)
    pad = _pad(delimiter)
    return f'{pad}"(?:[^"]|"")*"{pad}', f'[^{d}"\\n]*'


def record_re(n_fields: int, delimiter: str) -> str:
    """A whole record of exactly ``n_fields`` fields (one capture group per field), unanchored."""
    quoted, unquoted = field_res(delimiter)
    return re.escape(delimiter).join([f"({quoted}|{unquoted})"] * n_fields)


def opener_re(delimiter: str) -> str:
    """A line that ends inside a quoted field: it starts a multi-line record (unanchored)."""
    quoted, unquoted = field_res(delimiter)
    d = re.escape(delimiter)
    return f'(?:(?:{quoted}|{unquoted}){d})*{_pad(delimiter)}"(?:[^"]|"")*'


def split_header(line: str, delimiter: str) -> list[str]:
    """Header names: split like a record, unquoted, trimmed. Raises ValueError if malformed."""
    line = line.removeprefix("\ufeff").rstrip("\r")
    quoted, unquoted = field_res(delimiter)
    field = re.compile(f"({quoted}|{unquoted})(?:{re.escape(delimiter)}|$)")
    names: list[str] = []
    pos = 0
    while True:
        match = field.match(line, pos)
        if match is None:
            raise ValueError(f"the header is not valid CSV: {line[:200]!r}")
        raw = match.group(1)
        bare = raw.strip(" \t")
        names.append((bare[1:-1].replace('""', '"') if bare.startswith('"') else raw).strip(TRIM))
        if match.end() == match.end(1):
            if match.end() != len(line):
                raise ValueError(f"the header is not valid CSV: {line[:200]!r}")
            return names
        pos = match.end()


def header_positions(path: Path, spec: Spec, delimiter: str) -> tuple[int, dict[str, int]]:
    """(number of header fields, contract column -> 0-based field index) of one file.

    Raises SystemExit with a clear message when the file or a required column is missing.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline().rstrip("\n")
    except FileNotFoundError:
        raise SystemExit(f"{spec.file_name}: file not found at {path}") from None
    names = split_header(first, delimiter)
    positions: dict[str, int] = {}
    for column in spec.columns:
        if column in names:
            positions[column] = names.index(column)  # the first of a repeated name
        elif column in spec.required:
            raise SystemExit(f"{spec.file_name}: required column {column!r} is missing from the header")
    return len(names), positions


def pair_multiline(odd_lines: list[int], openers: set[int]) -> tuple[list[tuple[int, int]], int | None]:
    """Spans (first, last line) of multi-line records, from the lines with an odd number of quotes.

    A line that ends inside a quoted field opens a record that runs to the next line with an
    odd number of quotes (or to the end of the file). Lines inside a span have an even
    number of quotes, so walking the odd lines in order is enough. Returns the closed spans
    and the first line of a record still open after the last odd line (or None).
    """
    spans = []
    open_line: int | None = None
    for line in odd_lines:
        if open_line is None:
            if line in openers:
                open_line = line
        else:
            spans.append((open_line, line))
            open_line = None
    return spans, open_line


#: The historical columns of customer_ltv (contract section 4) and their PostgreSQL types.
OUTPUT_COLUMNS: dict[str, str] = {
    "as_of": "date NOT NULL",
    "customer_id": "text NOT NULL",
    "signup_date": "date NOT NULL",
    "country": "text",
    "first_order_at": "timestamptz",
    "last_order_at": "timestamptz",
    "orders_count": "integer NOT NULL",
    "total_revenue": "numeric(18,2) NOT NULL",
    "avg_order_value": "double precision",
    "frequency": "integer",
    "recency_days": "integer",
    "t_days": "integer",
    "monetary_value": "double precision",
}


def table_ddl(schema: str, table: str = "customer_ltv") -> str:
    """CREATE SCHEMA/TABLE IF NOT EXISTS for a contender's target table."""
    cols = ",\n  ".join(f'"{name}" {kind}' for name, kind in OUTPUT_COLUMNS.items())
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{schema}";\n'
        f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" (\n  {cols},\n'
        "  PRIMARY KEY (as_of, customer_id)\n);"
    )


def write_counts(path: Path | None, counts: dict[str, dict[str, object]]) -> None:
    """Write the per-file counts (the shape of fastclv's summary.json ``files``)."""
    if path is not None:
        path.write_text(json.dumps(counts, indent=2, sort_keys=True, default=int) + "\n")


def contender_parser(description: str) -> argparse.ArgumentParser:
    """The command line every contender shares (each adds its own options, such as ``--work``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--pg-uri", required=True)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--delimiter", default=",")
    parser.add_argument("--counts", type=Path, help="write the per-file counts (JSON) here")
    parser.add_argument("--rejects", type=Path, help="write the rejects (CSV) here")
    return parser
