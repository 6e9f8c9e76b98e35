"""A slow, obviously-correct, pure-Python implementation of the data contract: a test oracle.

It reads the three CSV files with its own small RFC 4180 tokenizer, validates every row with
plain loops, the ``decimal`` module for money and ``datetime`` for time, and builds the
``customer_ltv`` rows (without the predictive columns). Tests compare the Polars pipeline
with it on small generated inputs; it is never meant to be fast.

Decisions where the contract is silent (the pipeline implements the same):

* A record that is not valid UTF-8, or that holds a NUL character (valid UTF-8, but no
  PostgreSQL text value can hold it), is malformed; a UTF-16 file, a header that is not UTF-8
  or a header line with bare CR line ends fails the run.
* Physical lines are split on ``"\\n"`` only, a trailing ``"\\r"`` is removed, and a line that
  is then empty is skipped and takes no row number (unless it is inside a quoted field).
* A line that ends inside a quoted field (read from a record start) opens a multi-line
  record, which continues over the next physical lines while it holds an odd number of ``"``.
  Any other line is one record (a stray quote makes it malformed, nothing more).
* A record is well formed iff it is exactly N fields (N = header fields) separated by the
  delimiter, each ``[ \\t]*"(?:[^"]|"")*"[ \\t]*`` or free of both the delimiter and ``"``
  (with a tab or space delimiter, the padding around quotes excludes the delimiter).
* Year 0000 is not a calendar date (PostgreSQL rejects it), and a timestamp whose UTC
  instant falls outside the years 1..9999 does not parse.

Example::

    result = reference_run(Path("tests/data/small"), date(2024, 1, 31))
    result.output  # one row per valid customer, OUTPUT_SCHEMA
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, Inexact, localcontext
from enum import StrEnum
from fractions import Fraction
from functools import cache
from typing import TYPE_CHECKING, TypeVar

import polars as pl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# Everything the oracle knows about the contract is written out here from CONTRACT.md, never
# imported from fastclv (it imports nothing from fastclv): a wrong file spec, pattern, reason
# or output type there must not pass both implementations.


class InputError(Exception):
    """The run fails: a missing file or required column, or a file that is not UTF-8 CSV."""


@dataclass(frozen=True)
class InputFile:
    """One input file of CONTRACT.md section 1: its name and its columns."""

    name: str  # the short name used in counts ("orders")
    file_name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


CUSTOMERS = InputFile("customers", "customers.csv", ("customer_id", "signup_date"), ("country",))
ORDERS = InputFile("orders", "orders.csv", ("order_id", "customer_id", "order_ts", "status"))
ORDER_ITEMS = InputFile(
    "order_items", "order_items.csv", ("order_id", "sku", "quantity", "unit_price"), ("discount",)
)
INPUT_FILES = (CUSTOMERS, ORDERS, ORDER_ITEMS)


class Reason(StrEnum):
    """The reject reasons of CONTRACT.md section 2."""

    MALFORMED_ROW = "malformed_row"
    MISSING_VALUE = "missing_value"
    BAD_DATE = "bad_date"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_STATUS = "bad_status"
    BAD_QUANTITY = "bad_quantity"
    BAD_MONEY = "bad_money"
    DISCOUNT_EXCEEDS_AMOUNT = "discount_exceeds_amount"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    UNKNOWN_CUSTOMER = "unknown_customer"
    UNKNOWN_ORDER = "unknown_order"


#: The output table of CONTRACT.md section 4, in its column order, as Polars types: date ->
#: Date, text -> String, timestamptz -> Datetime(us, UTC), integer -> Int32, numeric(18,2) ->
#: Decimal(18, 2), double precision -> Float64.
OUTPUT_SCHEMA = pl.Schema(
    {
        "as_of": pl.Date(),
        "customer_id": pl.String(),
        "signup_date": pl.Date(),
        "country": pl.String(),
        "first_order_at": pl.Datetime("us", "UTC"),
        "last_order_at": pl.Datetime("us", "UTC"),
        "orders_count": pl.Int32(),
        "total_revenue": pl.Decimal(18, 2),
        "avg_order_value": pl.Float64(),
        "frequency": pl.Int32(),
        "recency_days": pl.Int32(),
        "t_days": pl.Int32(),
        "monetary_value": pl.Float64(),
        "p_alive": pl.Float64(),
        "expected_purchases": pl.Float64(),
        "predicted_clv": pl.Decimal(18, 2),
    }
)

COUNTED_STATUS = "completed"
STATUSES = ("completed", "cancelled", "refunded", "pending")
TRIM_CHARS = " \t\r\n"
DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
TIMESTAMP_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
MONEY_PATTERN = r"[0-9]{1,16}(?:\.[0-9]{1,2})?"
QUANTITY_PATTERN = r"[0-9]+"
QUANTITY_MAX = 2_147_483_647
REASONS_BY_FILE = {
    "customers": ("malformed_row", "missing_value", "bad_date", "conflicting_duplicate"),
    "orders": (
        "malformed_row",
        "missing_value",
        "bad_timestamp",
        "bad_status",
        "conflicting_duplicate",
        "unknown_customer",
    ),
    "order_items": (
        "malformed_row",
        "missing_value",
        "bad_quantity",
        "bad_money",
        "discount_exceeds_amount",
        "unknown_order",
    ),
}

#: Columns of :attr:`ReferenceResult.rejects`.
REJECTS_SCHEMA = pl.Schema({"file": pl.String, "row": pl.Int64, "reason": pl.String})

#: The same timestamps as ``TIMESTAMP_PATTERN``, with a group for every part.
_TIMESTAMP_PARTS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
    r"(Z|([+-])([0-9]{2}):([0-9]{2}))?)?"
)

#: The contract columns' values of one data row: trimmed text, or None when missing.
Values = dict[str, str | None]
#: A validated row (_Customer, _Order or _Item).
T = TypeVar("T")


@dataclass(frozen=True)
class ReferenceResult:
    """What the oracle computes for one run."""

    #: Exactly :data:`OUTPUT_SCHEMA`, sorted by customer_id; predictive columns null.
    output: pl.DataFrame
    #: Columns file ("orders.csv"), row (1-based), reason; sorted by file, row.
    rejects: pl.DataFrame
    #: Per file short name: read, valid, rejected, rejected_by_reason (every reason of the
    #: file, zeros included), duplicates_dropped, after_as_of.
    counts: dict[str, dict[str, object]]


# --- tokenizing -------------------------------------------------------------------------


def _read_lines(input_dir: Path, spec: InputFile) -> list[str]:
    """The file's physical lines: BOM removed, split on LF, a trailing CR removed.

    Bytes are decoded as UTF-8 with ``surrogateescape``: an invalid byte becomes a lone
    surrogate (never a quote or a delimiter), so framing works on the bytes as they are and
    a record holding one is malformed (contract section 1).
    """
    path = input_dir / spec.file_name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"{spec.file_name}: file not found at {path}; hint: the input folder must hold {spec.file_name}"
        raise InputError(msg) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        msg = f"{spec.file_name}: the file is UTF-16, not UTF-8; hint: re-encode the file as UTF-8"
        raise InputError(msg)
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if _not_utf8(lines[0]):
        msg = f"{spec.file_name}: the header is not valid UTF-8; hint: re-encode the file as UTF-8"
        raise InputError(msg)
    if "\r" in lines[0]:
        msg = f"{spec.file_name}: the header line holds bare CR line ends; hint: use LF or CRLF"
        raise InputError(msg)
    return lines


def _not_utf8(text: str) -> bool:
    """Whether ``text`` held bytes that are not UTF-8 (lone surrogates from the decoding)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _header(line: str, delimiter: str) -> list[str]:
    """Header names: the first line split on the delimiter, each unquoted, then trimmed."""
    names = []
    for piece in line.split(delimiter):
        quoted = re.fullmatch(r'[ \t]*"((?:[^"]|"")*)"[ \t]*', piece)
        name = quoted.group(1).replace('""', '"') if quoted else piece
        names.append(name.strip(TRIM_CHARS))
    return names


def _ends_inside_quotes(line: str, delimiter: str) -> bool:
    """Read from a record start, does ``line`` end inside a quoted field?

    Only then does the record go on over the next lines. A line that goes wrong before that
    (a quote inside an unquoted field, text after a closing quote) is one malformed record.
    """
    pad = " \t".replace(delimiter, "")
    i, n = 0, len(line)
    while True:  # at the start of a field
        while i < n and line[i] in pad:
            i += 1
        if i < n and line[i] == '"':
            i += 1
            while True:
                close = line.find('"', i)
                if close < 0:
                    return True  # the quoted field is still open at the end of the line
                if line.startswith('""', close):
                    i = close + 2
                    continue
                i = close + 1
                break
            while i < n and line[i] in pad:
                i += 1
            if i == n:
                return False
            if line[i] != delimiter:
                return False  # text after a closing quote: malformed, not a continuation
            i += 1
            continue
        end = line.find(delimiter, i)
        field = line[i:] if end < 0 else line[i:end]
        if '"' in field:
            return False  # a quote inside an unquoted field: malformed
        if end < 0:
            return False
        i = end + 1


def _records(lines: list[str], delimiter: str) -> Iterator[tuple[int, str]]:
    """(row number, record text) for every record after the header line."""
    row = 0
    i = 1
    while i < len(lines):
        text = lines[i]
        i += 1
        if text == "":
            continue  # a blank line is not a record and takes no number
        if _ends_inside_quotes(text, delimiter):
            while text.count('"') % 2 == 1 and i < len(lines):
                text += "\n" + lines[i]
                i += 1
        row += 1
        yield row, text


@cache
def _record_pattern(delimiter: str, n_fields: int) -> re.Pattern[str]:
    """A record of exactly ``n_fields`` fields; each field has two groups (quoted, unquoted)."""
    pad = "[" + re.escape(" \t".replace(delimiter, "")) + "]*"
    d = re.escape(delimiter)
    field = f'(?:{pad}"((?:[^"]|"")*)"{pad}|([^"{d}]*))'
    return re.compile(d.join([field] * n_fields))


def _split(text: str, delimiter: str, n_fields: int) -> list[str] | None:
    """The record's field values (unquoted, not yet trimmed), or None if it is malformed."""
    match = _record_pattern(delimiter, n_fields).fullmatch(text)
    if match is None:
        return None
    groups = match.groups()
    values = []
    for k in range(n_fields):
        quoted, unquoted = groups[2 * k], groups[2 * k + 1]
        values.append(quoted.replace('""', '"') if quoted is not None else unquoted)
    return values


@dataclass(frozen=True)
class _File:
    """One input file, tokenized: its data records with the contract columns' values."""

    spec: InputFile
    #: (row number, values by contract column, or None when the row is malformed).
    rows: list[tuple[int, Values | None]]


def _read_file(input_dir: Path, spec: InputFile, delimiter: str) -> _File:
    """Tokenize one file; raise InputError when it is missing or lacks a required column."""
    lines = _read_lines(input_dir, spec)
    names = _header(lines[0], delimiter)
    position: dict[str, int] = {}
    for i, name in enumerate(names):
        position.setdefault(name, i)  # a repeated header name: the first one wins
    for column in spec.required:
        if column not in position:
            msg = (
                f"{spec.file_name}: required column {column!r} is missing from the header "
                f"(found: {', '.join(map(repr, names))}); hint: check the header row and the delimiter"
            )
            raise InputError(msg)
    rows: list[tuple[int, Values | None]] = []
    for row, text in _records(lines, delimiter):
        fields = None if _not_utf8(text) or "\x00" in text else _split(text, delimiter, len(names))
        if fields is None:
            rows.append((row, None))
            continue
        values: Values = {}
        for column in spec.columns:
            raw = fields[position[column]] if column in position else ""
            value = raw.strip(TRIM_CHARS)
            values[column] = value if value != "" else None
        rows.append((row, values))
    return _File(spec, rows)


# --- parsing values ---------------------------------------------------------------------


def parse_date(text: str) -> date | None:
    """A ``YYYY-MM-DD`` calendar date, or None."""
    if not re.fullmatch(DATE_PATTERN, text):
        return None
    try:
        return date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None


def parse_timestamp(text: str) -> datetime | None:
    """A contract timestamp as an aware UTC datetime, or None."""
    if not re.fullmatch(TIMESTAMP_PATTERN, text):
        return None
    parts = _TIMESTAMP_PARTS.fullmatch(text)
    assert parts is not None, text  # the same language as TIMESTAMP_PATTERN
    year, month, day, hour, minute, second, fraction, zone, sign, off_h, off_m = parts.groups()
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    offset = timedelta()
    if zone not in (None, "Z"):
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
    try:
        utc = local - offset  # local time = UTC + offset
    except OverflowError:
        return None
    return utc.replace(tzinfo=UTC)


def parse_money(text: str) -> Decimal | None:
    """Digits, optionally a point and one or two digits, as an exact Decimal, or None."""
    if not re.fullmatch(MONEY_PATTERN, text):
        return None
    return Decimal(text)


def parse_quantity(text: str) -> int | None:
    """Digits only, 1..2147483647, or None."""
    if not re.fullmatch(QUANTITY_PATTERN, text):
        return None
    quantity = int(text)
    return quantity if 1 <= quantity <= QUANTITY_MAX else None


# --- validation -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customer:
    customer_id: str
    signup_date: date
    country: str | None


@dataclass(frozen=True)
class _Order:
    order_id: str
    customer_id: str
    order_ts: datetime
    status: str


@dataclass(frozen=True)
class _Item:
    order_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    discount: Decimal


def _check_customer(values: Values) -> _Customer | Reason:
    customer_id, signup_date = values["customer_id"], values["signup_date"]
    if customer_id is None or signup_date is None:
        return Reason.MISSING_VALUE
    day = parse_date(signup_date)
    if day is None:
        return Reason.BAD_DATE
    return _Customer(customer_id, day, values["country"])


def _check_order(values: Values) -> _Order | Reason:
    order_id, customer_id = values["order_id"], values["customer_id"]
    order_ts, status = values["order_ts"], values["status"]
    if order_id is None or customer_id is None or order_ts is None or status is None:
        return Reason.MISSING_VALUE
    instant = parse_timestamp(order_ts)
    if instant is None:
        return Reason.BAD_TIMESTAMP
    if status.lower() not in STATUSES:
        return Reason.BAD_STATUS
    return _Order(order_id, customer_id, instant, status.lower())


def _check_item(values: Values) -> _Item | Reason:
    order_id, sku = values["order_id"], values["sku"]
    quantity_text, price_text = values["quantity"], values["unit_price"]
    if order_id is None or sku is None or quantity_text is None or price_text is None:
        return Reason.MISSING_VALUE
    quantity = parse_quantity(quantity_text)
    if quantity is None:
        return Reason.BAD_QUANTITY
    unit_price = parse_money(price_text)
    discount = Decimal(0) if values["discount"] is None else parse_money(values["discount"])
    if unit_price is None or discount is None:
        return Reason.BAD_MONEY
    if discount > quantity * unit_price:
        return Reason.DISCOUNT_EXCEEDS_AMOUNT
    return _Item(order_id, sku, quantity, unit_price, discount)


@dataclass
class _Tally:
    """Row counts and rejects of one file, filled in as its rows are checked."""

    spec: InputFile
    read: int = 0
    duplicates_dropped: int = 0
    rejects: list[tuple[int, Reason]] = field(default_factory=list)

    def reject(self, row: int, reason: Reason) -> None:
        self.rejects.append((row, reason))


def _checked(file: _File, check: Callable[[Values], T | Reason], tally: _Tally) -> list[tuple[int, T]]:
    """Rows that pass the malformed-row and value checks; the others become rejects."""
    passed: list[tuple[int, T]] = []
    for row, values in file.rows:
        tally.read += 1
        if values is None:
            tally.reject(row, Reason.MALFORMED_ROW)
            continue
        result = check(values)
        if isinstance(result, Reason):
            tally.reject(row, result)
        else:
            passed.append((row, result))
    return passed


def _deduplicated(rows: list[tuple[int, T]], key: str, tally: _Tally) -> list[tuple[int, T]]:
    """Keep the first of identical rows per key; reject every row of a key with differences."""
    by_key: dict[str, list[tuple[int, T]]] = {}
    for row, record in rows:
        by_key.setdefault(getattr(record, key), []).append((row, record))
    kept: list[tuple[int, T]] = []
    for group in by_key.values():
        first_row, first = group[0]
        if all(record == first for _, record in group):
            kept.append((first_row, first))
            tally.duplicates_dropped += len(group) - 1
        else:
            for row, _ in group:
                tally.reject(row, Reason.CONFLICTING_DUPLICATE)
    return sorted(kept, key=lambda pair: pair[0])


def _counts(tally: _Tally, valid: int, after_as_of: int) -> dict[str, object]:
    by_reason = dict.fromkeys(REASONS_BY_FILE[tally.spec.name], 0)
    for _, reason in tally.rejects:
        by_reason[reason.value] += 1
    counts: dict[str, object] = {
        "read": tally.read,
        "valid": valid,
        "rejected": len(tally.rejects),
        "rejected_by_reason": by_reason,
        "duplicates_dropped": tally.duplicates_dropped,
        "after_as_of": after_as_of,
    }
    assert tally.read == valid + len(tally.rejects) + tally.duplicates_dropped, counts
    return counts


# --- the run ----------------------------------------------------------------------------


def reference_run(input_dir: Path, as_of: date, *, delimiter: str = ",") -> ReferenceResult:
    """Validate the three CSV files in ``input_dir`` and compute ``customer_ltv`` as of ``as_of``."""
    files = {spec.name: _read_file(input_dir, spec, delimiter) for spec in INPUT_FILES}
    with localcontext() as context:
        # Money stays exact: plenty of digits, and any rounding would raise.
        context.prec = 100
        context.traps[Inexact] = True
        return _run(files, as_of)


def _run(files: dict[str, _File], as_of: date) -> ReferenceResult:
    tallies = {spec.name: _Tally(spec) for spec in INPUT_FILES}

    customer_tally = tallies[CUSTOMERS.name]
    customer_rows: list[tuple[int, _Customer]] = _checked(
        files[CUSTOMERS.name], _check_customer, customer_tally
    )
    customer_rows = _deduplicated(customer_rows, "customer_id", customer_tally)
    customers = {customer.customer_id: customer for _, customer in customer_rows}

    order_tally = tallies[ORDERS.name]
    order_rows: list[tuple[int, _Order]] = _checked(files[ORDERS.name], _check_order, order_tally)
    order_rows = _deduplicated(order_rows, "order_id", order_tally)
    orders: dict[str, _Order] = {}
    for row, order in order_rows:
        if order.customer_id in customers:
            orders[order.order_id] = order
        else:
            order_tally.reject(row, Reason.UNKNOWN_CUSTOMER)

    item_tally = tallies[ORDER_ITEMS.name]
    item_rows: list[tuple[int, _Item]] = _checked(files[ORDER_ITEMS.name], _check_item, item_tally)
    items: list[_Item] = []
    for row, item in item_rows:
        if item.order_id in orders:
            items.append(item)
        else:
            item_tally.reject(row, Reason.UNKNOWN_ORDER)

    # Validation is done; now the as-of date decides which valid orders are in the run.
    cutoff = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)
    after = {order_id for order_id, order in orders.items() if order.order_ts >= cutoff}
    counts = {
        CUSTOMERS.name: _counts(customer_tally, len(customers), 0),
        ORDERS.name: _counts(order_tally, len(orders), len(after)),
        ORDER_ITEMS.name: _counts(item_tally, len(items), sum(item.order_id in after for item in items)),
    }

    order_value = {order_id: Decimal(0) for order_id in orders}
    for item in items:
        order_value[item.order_id] += item.quantity * item.unit_price - item.discount
    counted: dict[str, list[tuple[datetime, Decimal]]] = {customer_id: [] for customer_id in customers}
    for order_id, order in orders.items():
        if order.status == COUNTED_STATUS and order_id not in after:
            counted[order.customer_id].append((order.order_ts, order_value[order_id]))

    output_rows = [
        _output_row(as_of, customers[customer_id], counted[customer_id]) for customer_id in sorted(customers)
    ]
    output = pl.DataFrame(
        {name: [row[name] for row in output_rows] for name in OUTPUT_SCHEMA}, schema=OUTPUT_SCHEMA
    )

    reject_rows = sorted(
        (tally.spec.file_name, row, reason.value)
        for tally in tallies.values()
        for row, reason in tally.rejects
    )
    rejects = pl.DataFrame(reject_rows, schema=REJECTS_SCHEMA, orient="row")
    return ReferenceResult(output=output, rejects=rejects, counts=counts)


def _output_row(
    as_of: date, customer: _Customer, counted: list[tuple[datetime, Decimal]]
) -> dict[str, object]:
    """One ``customer_ltv`` row from the customer's counted orders (order_ts, value)."""
    total = sum((value for _, value in counted), Decimal(0)).quantize(Decimal("0.01"))
    row: dict[str, object] = dict.fromkeys(OUTPUT_SCHEMA)
    row.update(
        as_of=as_of,
        customer_id=customer.customer_id,
        signup_date=customer.signup_date,
        country=customer.country,
        orders_count=len(counted),
        total_revenue=total,
    )
    if not counted:
        return row

    day_value: dict[date, Decimal] = {}
    for order_ts, value in counted:
        day = order_ts.date()  # order_ts is UTC, so this is the UTC calendar day
        day_value[day] = day_value.get(day, Decimal(0)) + value
    days = sorted(day_value)
    repeat_values = [day_value[day] for day in days[1:]]
    monetary = Fraction(sum(repeat_values, Decimal(0))) / len(repeat_values) if repeat_values else Fraction(0)

    row.update(
        first_order_at=min(order_ts for order_ts, _ in counted),
        last_order_at=max(order_ts for order_ts, _ in counted),
        avg_order_value=float(total) / len(counted),
        frequency=len(days) - 1,
        recency_days=(days[-1] - days[0]).days,
        t_days=(as_of - days[0]).days,
        monetary_value=float(monetary),  # the exact mean, rounded once
    )
    return row
