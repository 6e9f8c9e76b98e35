"""Tests of the data generator, checked against an independent reading of CONTRACT.md.

The checker below re-derives every count of expected.json from the CSV bytes alone, with the
``csv`` module, Decimal money and the contract's regexes: it shares no code with the generator.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from fastclv.contract import (
    CUSTOMERS,
    DATE_PATTERN,
    INPUT_FILES,
    MONEY_PATTERN,
    ORDER_ITEMS,
    ORDERS,
    QUANTITY_MAX,
    QUANTITY_PATTERN,
    REASONS_BY_FILE,
    STATUSES,
    TIMESTAMP_PATTERN,
    TRIM_CHARS,
)
from fastclv.extract import extract
from fastclv.testing import EXPECTED_FILE_NAME, GenerateResult, generate

if TYPE_CHECKING:
    from pathlib import Path

# RFC 4180, one physical line: each field is unquoted (no quote at all) or fully quoted.
_FIELD = r'(?:[^",\r\n]*|"(?:[^"]|"")*")'
_RECORD = re.compile(rf"^{_FIELD}(?:,{_FIELD})*$")
# Every field quoted (a fully quoted export's record).
_ALL_QUOTED = re.compile(r'^"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*$')
# Capturing twin of the contract's timestamp pattern (the contract pattern is the gate).
_TS_PARTS = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:([T ])(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2})?)?$"
)


@dataclass
class Timestamp:
    """A parsed order_ts: the instant plus the features of its text."""

    instant: datetime
    local_date: date
    separator: str | None
    precision: str  # date, minutes, seconds, fraction<n>
    zone: str  # none, Z, +, -


def parse_timestamp(text: str) -> Timestamp | None:
    """The contract's timestamp rule, or None when the text does not parse."""
    if not re.match(TIMESTAMP_PATTERN, text):
        return None
    parts = _TS_PARTS.match(text)
    assert parts is not None, text
    day_text, separator, hour, minute, second, fraction, zone = parts.groups()
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        return None
    micro = int((fraction or "0").ljust(6, "0"))
    local = datetime(day.year, day.month, day.day, int(hour or 0), int(minute or 0), int(second or 0), micro)
    offset = timedelta()
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    if separator is None:
        precision = "date"
    elif second is None:
        precision = "minutes"
    elif fraction is None:
        precision = "seconds"
    else:
        precision = f"fraction{len(fraction)}"
    return Timestamp(
        instant=(local - offset).replace(tzinfo=UTC),
        local_date=day,
        separator=separator,
        precision=precision,
        zone="none" if zone is None else ("Z" if zone == "Z" else zone[0]),
    )


def parse_date(text: str) -> date | None:
    if not re.match(DATE_PATTERN, text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_money(text: str) -> Decimal | None:
    return Decimal(text) if re.match(MONEY_PATTERN, text) else None


def parse_quantity(text: str) -> int | None:
    if not re.match(QUANTITY_PATTERN, text):
        return None
    value = int(text)
    return value if 1 <= value <= QUANTITY_MAX else None


@dataclass
class FileCheck:
    """Fates of one file's rows."""

    read: int = 0
    valid: int = 0
    duplicates_dropped: int = 0
    after_as_of: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def summary(self, name: str) -> dict[str, Any]:
        by_reason = {reason.value: self.reasons[reason.value] for reason in REASONS_BY_FILE[name]}
        assert set(self.reasons) <= set(by_reason)
        return {
            "read": self.read,
            "valid": self.valid,
            "rejected": sum(by_reason.values()),
            "rejected_by_reason": by_reason,
            "duplicates_dropped": self.duplicates_dropped,
            "after_as_of": self.after_as_of,
        }


def read_rows(path: Path) -> tuple[list[str], list[list[str] | None], list[str]]:
    """Header, then each data row's trimmed fields (None when malformed), and the raw lines."""
    text = path.read_bytes().decode("utf-8-sig")
    assert text.endswith("\n")
    assert "\n\n" not in text.replace("\r\n", "\n"), "no blank lines"
    lines = [line.removesuffix("\r") for line in text[:-1].split("\n")]
    # Every record is one physical line: the csv module sees as many records as there are lines.
    assert sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) == len(lines)
    header = [name.strip(TRIM_CHARS) for name in next(csv.reader([lines[0]]))]
    rows: list[list[str] | None] = []
    for line in lines[1:]:
        fields = next(csv.reader([line])) if _RECORD.match(line) else None
        if fields is None or len(fields) != len(header):
            rows.append(None)
        else:
            rows.append([value.strip(TRIM_CHARS) for value in fields])
    return header, rows, lines[1:]


@dataclass
class Checked:
    """The checker's results: per-file summaries plus what the coverage tests look at."""

    files: dict[str, dict[str, Any]]
    output_rows: int
    timestamps: list[Timestamp]
    statuses: list[str]
    customers_with_orders: set[str]
    valid_customers: set[str]
    raw_lines: dict[str, list[str]]


def _dedupe(keyed: list[tuple[str, tuple[object, ...]]], check: FileCheck, reject: str) -> list[int]:
    """Indexes (into ``keyed``) of the rows kept after the duplicate rule."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (key, _) in enumerate(keyed):
        groups[key].append(index)
    kept: list[int] = []
    for indexes in groups.values():
        if len({keyed[i][1] for i in indexes}) == 1:
            kept.append(indexes[0])
            check.duplicates_dropped += len(indexes) - 1
        else:
            check.reasons[reject] += len(indexes)
    return sorted(kept)


def check_dir(directory: Path, as_of: date) -> Checked:
    """Re-derive expected.json's counts from the CSV files, following CONTRACT.md."""
    cutoff = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)
    raw: dict[str, list[str]] = {}

    def load(name: str, file_name: str) -> tuple[list[dict[str, str] | None], FileCheck]:
        header, rows, raw[name] = read_rows(directory / file_name)
        return [None if r is None else dict(zip(header, r, strict=True)) for r in rows], FileCheck(
            read=len(rows)
        )

    def required_missing(row: dict[str, str], columns: tuple[str, ...]) -> bool:
        return any(row[column] == "" for column in columns)

    # customers
    rows, customers = load(CUSTOMERS.name, CUSTOMERS.file_name)
    passed: list[tuple[str, tuple[object, ...]]] = []
    for row in rows:
        if row is None:
            customers.reasons["malformed_row"] += 1
        elif required_missing(row, CUSTOMERS.required):
            customers.reasons["missing_value"] += 1
        elif (signup := parse_date(row["signup_date"])) is None:
            customers.reasons["bad_date"] += 1
        else:
            key = row["customer_id"]
            passed.append((key, (key, signup, row["country"] or None)))
    valid_customers = {passed[i][0] for i in _dedupe(passed, customers, "conflicting_duplicate")}
    customers.valid = len(valid_customers)

    # orders
    rows, orders = load(ORDERS.name, ORDERS.file_name)
    order_passed: list[tuple[str, tuple[object, ...]]] = []
    timestamps: list[Timestamp] = []
    statuses: list[str] = []
    for row in rows:
        if row is None:
            orders.reasons["malformed_row"] += 1
        elif required_missing(row, ORDERS.required):
            orders.reasons["missing_value"] += 1
        elif (ts := parse_timestamp(row["order_ts"])) is None:
            orders.reasons["bad_timestamp"] += 1
        elif row["status"].lower() not in STATUSES:
            orders.reasons["bad_status"] += 1
        else:
            timestamps.append(ts)
            statuses.append(row["status"])
            key = row["order_id"]
            order_passed.append((key, (key, row["customer_id"], ts.instant, row["status"].lower())))
    valid_orders: dict[str, datetime] = {}
    customers_with_orders: set[str] = set()
    for i in _dedupe(order_passed, orders, "conflicting_duplicate"):
        key, (_, customer_id, instant, _) = order_passed[i]
        if customer_id not in valid_customers:
            orders.reasons["unknown_customer"] += 1
            continue
        assert isinstance(instant, datetime)
        valid_orders[key] = instant
        customers_with_orders.add(str(customer_id))
        orders.valid += 1
        orders.after_as_of += instant >= cutoff

    # order_items
    rows, items = load(ORDER_ITEMS.name, ORDER_ITEMS.file_name)
    for row in rows:
        if row is None:
            items.reasons["malformed_row"] += 1
        elif required_missing(row, ORDER_ITEMS.required):
            items.reasons["missing_value"] += 1
        elif (quantity := parse_quantity(row["quantity"])) is None:
            items.reasons["bad_quantity"] += 1
        elif (price := parse_money(row["unit_price"])) is None or (
            discount := parse_money(row["discount"] or "0")
        ) is None:
            items.reasons["bad_money"] += 1
        elif discount > quantity * price:
            items.reasons["discount_exceeds_amount"] += 1
        elif row["order_id"] not in valid_orders:
            items.reasons["unknown_order"] += 1
        else:
            items.valid += 1
            items.after_as_of += valid_orders[row["order_id"]] >= cutoff

    checks = {CUSTOMERS.name: customers, ORDERS.name: orders, ORDER_ITEMS.name: items}
    return Checked(
        files={name: check.summary(name) for name, check in checks.items()},
        output_rows=customers.valid,
        timestamps=timestamps,
        statuses=statuses,
        customers_with_orders=customers_with_orders,
        valid_customers=valid_customers,
        raw_lines=raw,
    )


def assert_matches_checker(result: GenerateResult, as_of: date) -> tuple[dict[str, Any], Checked]:
    expected = json.loads(result.expected_path.read_text(encoding="utf-8"))
    checked = check_dir(result.out_dir, as_of)
    assert expected["files"] == checked.files
    assert expected["output_rows"] == checked.output_rows
    assert {name: summary["read"] for name, summary in checked.files.items()} == result.rows
    return expected, checked


def _bytes(directory: Path) -> dict[str, bytes]:
    names = [f.file_name for f in INPUT_FILES] + [EXPECTED_FILE_NAME]
    return {name: (directory / name).read_bytes() for name in names}


AS_OF = date(2025, 12, 31)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateResult, dict[str, Any], Checked]:
    result = generate(tmp_path_factory.mktemp("dirty"), customers=300, seed=7, dirty_rows=2, as_of=AS_OF)
    expected, checked = assert_matches_checker(result, AS_OF)
    return result, expected, checked


def test_expected_counts_match_an_independent_reading_of_the_contract(
    dirty: tuple[GenerateResult, dict[str, Any], Checked],
) -> None:
    result, expected, _ = dirty
    assert set(result.files) == {f.name for f in INPUT_FILES}
    assert (expected["seed"], expected["customers"], expected["dirty_rows"]) == (7, 300, 2)
    assert expected["as_of"] == "2025-12-31"
    assert set(expected["params"]) == {"bgnbd", "gamma_gamma"}
    assert set(expected["params"]["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(expected["params"]["gamma_gamma"]) == {"p", "q", "v"}
    for name, summary in expected["files"].items():
        # At least K rows of every reason, and exact duplicates in the keyed files.
        assert all(count >= 2 for count in summary["rejected_by_reason"].values()), (name, summary)
        assert summary["read"] == summary["valid"] + summary["rejected"] + summary["duplicates_dropped"]
        assert (summary["duplicates_dropped"] > 0) == (name != ORDER_ITEMS.name)
    assert expected["files"]["orders"]["after_as_of"] > 0
    assert expected["files"]["order_items"]["after_as_of"] > 0


def test_every_timestamp_format_and_status_appears(
    dirty: tuple[GenerateResult, dict[str, Any], Checked],
) -> None:
    _, _, checked = dirty
    features = {(ts.separator, ts.precision, ts.zone) for ts in checked.timestamps}
    assert {s for s, _, _ in features} == {None, "T", " "}
    assert {p for _, p, _ in features} == {"date", "minutes", "seconds"} | {
        f"fraction{n}" for n in range(1, 7)
    }
    assert {z for _, _, z in features} == {"none", "Z", "+", "-"}
    crossings = {ts.zone for ts in checked.timestamps if ts.local_date != ts.instant.date()}
    assert {"+", "-"} <= crossings, "offsets that move the UTC day across midnight"
    assert {s.lower() for s in checked.statuses} == set(STATUSES)
    assert {"completed", "Completed", "COMPLETED"} <= set(checked.statuses)


def test_realistic_text(dirty: tuple[GenerateResult, dict[str, Any], Checked]) -> None:
    _, _, checked = dirty
    assert checked.valid_customers - checked.customers_with_orders, "some customers have no orders"
    assert {"007", "7"} <= checked.customers_with_orders
    customer_lines = checked.raw_lines["customers"]
    assert any('"Paris, FR"' in line for line in customer_lines)
    assert any(line != line.strip() or ", " in line or " ," in line for line in checked.raw_lines["orders"])
    prices = {line.split(",")[3] for line in checked.raw_lines["order_items"] if line.count(",") == 4}
    assert any(re.fullmatch(r"\d+", p) for p in prices)
    assert any(re.fullmatch(r"\d+\.\d", p) for p in prices)
    assert any(line.endswith(",") for line in checked.raw_lines["order_items"]), "empty discounts"


def test_the_checker_notices_a_conflicting_row(
    dirty: tuple[GenerateResult, dict[str, Any], Checked], tmp_path: Path
) -> None:
    result, expected, _ = dirty
    for f in INPUT_FILES:
        shutil.copy(result.files[f.name], tmp_path / f.file_name)
    orders_csv = tmp_path / ORDERS.file_name
    _, rows, _ = read_rows(orders_csv)
    keys = Counter(row[0] for row in rows if row is not None)
    # A clean row whose key occurs once: one more row with another status makes two rejects.
    first = next(
        row
        for row in rows
        if row is not None
        and keys[row[0]] == 1
        and all(row)
        and parse_timestamp(row[2]) is not None
        and row[3].lower() in STATUSES
    )
    status = "pending" if first[3].lower() != "pending" else "completed"
    with orders_csv.open("a", encoding="utf-8", newline="") as handle:
        handle.write(f"{first[0]},{first[1]},{first[2]},{status}\r\n")
    changed = check_dir(tmp_path, AS_OF).files["orders"]
    before = expected["files"]["orders"]
    assert changed["read"] == before["read"] + 1
    assert changed["rejected_by_reason"]["conflicting_duplicate"] == (
        before["rejected_by_reason"]["conflicting_duplicate"] + 2
    )


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    args: dict[str, Any] = {"customers": 200, "seed": 3, "dirty_rows": 1, "chunk_customers": 64}
    first = generate(tmp_path / "a", **args)
    second = generate(tmp_path / "b", **args)
    other = generate(tmp_path / "c", **{**args, "seed": 4})
    assert _bytes(first.out_dir) == _bytes(second.out_dir)
    assert all(_bytes(first.out_dir)[f.file_name] != _bytes(other.out_dir)[f.file_name] for f in INPUT_FILES)


def test_small_chunks_stream_to_disk_and_stay_consistent(tmp_path: Path) -> None:
    sizes: list[tuple[int, int]] = []

    def progress(done: int) -> None:
        sizes.append((done, sum(path.stat().st_size for path in tmp_path.iterdir())))

    result = generate(tmp_path, customers=150, seed=11, dirty_rows=3, chunk_customers=7, progress=progress)
    assert [done for done, _ in sizes] == [min(150, 7 * (i + 1)) for i in range(22)]
    # Each chunk reaches the file before the next one is generated (nothing is held back).
    grew = sum(1 for (_, a), (_, b) in itertools.pairwise(sizes) if b > a)
    assert grew >= 15
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f.file_name for f in INPUT_FILES] + [EXPECTED_FILE_NAME]
    )
    expected, _ = assert_matches_checker(result, date(2025, 12, 31))
    assert expected["customers"] == 150


def test_clean_data_has_no_rejects(tmp_path: Path) -> None:
    result = generate(tmp_path, customers=250, seed=5, dirty_rows=0, as_of=date(2024, 6, 30))
    expected, _ = assert_matches_checker(result, date(2024, 6, 30))
    for summary in expected["files"].values():
        assert (summary["rejected"], summary["duplicates_dropped"]) == (0, 0)
    assert expected["output_rows"] == 250
    assert not (tmp_path / "customers.csv").read_bytes().startswith(b"\xef\xbb\xbf")


@settings(max_examples=12, deadline=None)
@given(
    customers=st.integers(1, 120),
    seed=st.integers(0, 2**32),
    dirty_rows=st.integers(0, 4),
    chunk=st.integers(1, 200),
    as_of=st.dates(date(2021, 1, 1), date(2030, 12, 31)),
)
def test_counts_are_exact_for_any_arguments(
    tmp_path_factory: pytest.TempPathFactory,
    customers: int,
    seed: int,
    dirty_rows: int,
    chunk: int,
    as_of: date,
) -> None:
    out = tmp_path_factory.mktemp("any")
    result = generate(
        out, customers=customers, seed=seed, dirty_rows=dirty_rows, as_of=as_of, chunk_customers=chunk
    )
    expected, _ = assert_matches_checker(result, as_of)
    reasons = [n for s in expected["files"].values() for n in s["rejected_by_reason"].values()]
    assert all(n >= dirty_rows for n in reasons)


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="customers >= 1"):
        generate(tmp_path, customers=0)


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    generate(tmp_path, customers=20, seed=1)
    before = _bytes(tmp_path)

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, customers=20, seed=2, dirty_rows=1, chunk_customers=5, progress=interrupt)
    assert _bytes(tmp_path) == before
    assert len(list(tmp_path.iterdir())) == len(before)


def test_quote_all_writes_the_same_values_every_field_quoted(tmp_path: Path) -> None:
    args: dict[str, Any] = {
        "customers": 300,
        "seed": 7,
        "dirty_rows": 4,
        "as_of": AS_OF,
        "chunk_customers": 128,
    }
    plain = generate(tmp_path / "plain", **args)
    quoted = generate(tmp_path / "quoted", quote_all=True, **args)
    assert quoted.expected_path.read_bytes() == plain.expected_path.read_bytes()
    assert quoted.rows == plain.rows
    assert_matches_checker(quoted, AS_OF)
    for f in INPUT_FILES:
        header, rows, lines = read_rows(plain.files[f.name])
        q_header, q_rows, q_lines = read_rows(quoted.files[f.name])
        assert (q_header, q_rows) == (header, rows)  # the same fields, the same malformed rows
        first = quoted.files[f.name].read_text(encoding="utf-8-sig").split("\n", 1)[0]
        assert first.rstrip("\r") == ",".join(f'"{c}"' for c in f.columns)
        for line, q_line in zip(lines, q_lines, strict=True):
            if _RECORD.match(line):
                assert _ALL_QUOTED.match(q_line), (line, q_line)
            else:  # broken quoting has no quoted form that stays the same broken record
                assert q_line == line
    broken = [
        line for path in quoted.files.values() for line in read_rows(path)[2] if not _ALL_QUOTED.match(line)
    ]
    assert broken, "the injected rows with broken quoting (dirty_rows >= 4) are still there"


def test_a_quoted_export_extracts_exactly_like_the_unquoted_one(tmp_path: Path) -> None:
    """The native scanner on a fully quoted export: the same counts and the same staged rows."""
    args: dict[str, Any] = {"customers": 300, "seed": 5, "dirty_rows": 2, "as_of": AS_OF}
    plain = generate(tmp_path / "plain", **args)
    quoted = generate(tmp_path / "quoted", quote_all=True, **args)
    a = extract(str(plain.out_dir), tmp_path / "run-plain", AS_OF)
    b = extract(str(quoted.out_dir), tmp_path / "run-quoted", AS_OF)
    counts = {name: c.as_dict() for name, c in b.counts.items()}
    assert counts == {name: c.as_dict() for name, c in a.counts.items()}
    expected = json.loads(quoted.expected_path.read_text(encoding="utf-8"))
    want = expected["files"]
    assert {name: {k: c[k] for k in want[name]} for name, c in counts.items()} == want
    for name, path in a.valid.items():
        assert_frame_equal(pl.read_parquet(b.valid[name]), pl.read_parquet(path))
    # The rejects' raw text is the line as written (quoted or not); everything else is the same.
    assert_frame_equal(pl.read_parquet(b.rejects).drop("raw"), pl.read_parquet(a.rejects).drop("raw"))
