"""The data contract, case by case, against hand-computed answers and ``lifetimes``.

Every case runs twice: on the Polars pipeline (extract + transform) and on the slow pure-Python
oracle (``tests/reference.py``), written independently from the contract. Every fixture is a
few rows written inline, and every expected value is worked out by hand in the test (never by
either implementation), so a reader can check each one against CONTRACT.md.
"""

from __future__ import annotations

import csv
import functools
import io
import random
import tempfile
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import (
    REASONS_BY_FILE,  # written out from CONTRACT.md, not fastclv's list
    ReferenceResult,
    reference_run,
)
from reference import InputError as OracleInputError

from fastclv.contract import OUTPUT_SCHEMA, PREDICTIVE_COLUMNS
from fastclv.errors import InputError as PipelineInputError
from fastclv.extract import extract
from fastclv.transform import customer_ltv

#: Each implementation raises its own error (the oracle imports nothing from fastclv).
InputError = (PipelineInputError, OracleInputError)

CUSTOMERS_HEADER = "customer_id,signup_date,country\n"
ORDERS_HEADER = "order_id,customer_id,order_ts,status\n"
ITEMS_HEADER = "order_id,sku,quantity,unit_price,discount\n"
AS_OF = date(2024, 1, 31)


def write_inputs(
    folder: Path,
    *,
    customers: str = CUSTOMERS_HEADER,
    orders: str = ORDERS_HEADER,
    items: str = ITEMS_HEADER,
) -> Path:
    """Write the three files byte for byte (UTF-8, no newline translation)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("customers.csv", customers), ("orders.csv", orders), ("order_items.csv", items)):
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


def ts(text: str) -> datetime:
    """An aware UTC datetime from an ISO string written in the test (already in UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def customer_row(
    customer_id: str,
    signup_date: date = date(2024, 1, 1),
    *,
    country: str | None = None,
    first: datetime | None = None,
    last: datetime | None = None,
    orders: int = 0,
    revenue: str = "0",
    avg: float | None = None,
    frequency: int | None = None,
    recency: int | None = None,
    t_days: int | None = None,
    monetary: float | None = None,
) -> dict[str, object]:
    """One expected output row; predictive columns are always null in the oracle."""
    return {
        "customer_id": customer_id,
        "signup_date": signup_date,
        "country": country,
        "first_order_at": first,
        "last_order_at": last,
        "orders_count": orders,
        "total_revenue": Decimal(revenue),
        "avg_order_value": avg,
        "frequency": frequency,
        "recency_days": recency,
        "t_days": t_days,
        "monetary_value": monetary,
    }


def expected_output(rows: list[dict[str, object]], as_of: date = AS_OF) -> pl.DataFrame:
    full = [{"as_of": as_of, **row, **dict.fromkeys(PREDICTIVE_COLUMNS)} for row in rows]
    return pl.DataFrame({name: [row[name] for row in full] for name in OUTPUT_SCHEMA}, schema=OUTPUT_SCHEMA)


def reject_rows(result: ReferenceResult) -> list[tuple[str, int, str]]:
    return [(file, row, reason) for file, row, reason in result.rejects.iter_rows()]


def pipeline_run(input_dir: Path, as_of: date, *, delimiter: str = ",", buckets: int = 0) -> ReferenceResult:
    """The Polars pipeline's extract + transform, shaped like the oracle's result."""
    run_dir = input_dir / "_staging" / as_of.isoformat()
    extracted = extract(str(input_dir), run_dir, as_of, delimiter=delimiter, buckets=buckets)
    output = customer_ltv(
        *(pl.scan_parquet(extracted.valid[name]) for name in ("customers", "orders", "order_items")), as_of
    ).collect(engine="streaming")
    rejects = pl.read_parquet(extracted.rejects).select("file", "row", "reason").sort("file", "row")
    counts = {}
    for name, file_counts in extracted.counts.items():
        counts[name] = {k: v for k, v in file_counts.as_dict().items() if k != "file"}
    return ReferenceResult(output=output.sort("customer_id"), rejects=rejects, counts=counts)


Impl = Callable[..., ReferenceResult]
pytestmark = pytest.mark.parametrize(
    "impl",
    [
        pytest.param(pipeline_run, id="pipeline"),
        # Orders and items resolved in 4 key-hash buckets, one at a time (as at scale).
        pytest.param(functools.partial(pipeline_run, buckets=4), id="pipeline-4-buckets"),
        pytest.param(reference_run, id="oracle"),
    ],
)


def run(impl: Impl, folder: Path, as_of: date = AS_OF, **files: str) -> ReferenceResult:
    return impl(write_inputs(folder, **files), as_of)


# --- the result's shape -------------------------------------------------------------------


def test_empty_inputs_give_empty_frames_with_the_contract_schemas(tmp_path: Path, impl: Impl) -> None:
    result = run(impl, tmp_path)
    assert result.output.schema == OUTPUT_SCHEMA
    assert result.output.is_empty()
    assert result.rejects.schema == pl.Schema({"file": pl.String, "row": pl.Int64, "reason": pl.String})
    assert result.rejects.is_empty()
    for name, reasons in REASONS_BY_FILE.items():
        assert result.counts[name] == {
            "read": 0,
            "valid": 0,
            "rejected": 0,
            "rejected_by_reason": dict.fromkeys(reasons, 0),
            "duplicates_dropped": 0,
            "after_as_of": 0,
        }


def test_customer_with_no_orders_and_completed_order_with_no_items(tmp_path: Path, impl: Impl) -> None:
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "lonely,2023-12-01,\nbuyer,2023-12-02,FR\n",
        orders=ORDERS_HEADER + "o1,buyer,2024-01-10T08:00:00Z,completed\n",
    )
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "buyer",
                    date(2023, 12, 2),
                    country="FR",
                    first=ts("2024-01-10T08:00"),
                    last=ts("2024-01-10T08:00"),
                    orders=1,
                    revenue="0.00",
                    avg=0.0,
                    frequency=0,
                    recency=0,
                    t_days=21,  # Jan 10 -> Jan 31
                    monetary=0.0,
                ),
                customer_row("lonely", date(2023, 12, 1)),
            ]
        ),
    )
    assert result.rejects.is_empty()


def test_values_per_purchase_day(tmp_path: Path, impl: Impl) -> None:
    """Orders on Jan 1 (10.00), Jan 3 (5.00 + 2.50) and Jan 6 (1.25); one pending order ignored."""
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "c,2023-06-30,DE\n",
        orders=ORDERS_HEADER
        + "o1,c,2024-01-01T09:00:00Z,completed\n"
        + "o2,c,2024-01-03T09:00:00Z,completed\n"
        + "o3,c,2024-01-03T18:00:00Z,Completed\n"
        + "o4,c,2024-01-06T07:15:30.5Z,completed\n"
        + "o5,c,2024-01-08T00:00:00Z,pending\n",
        items=ITEMS_HEADER
        + "o1,a,2,6.00,2\n"  # 2 * 6.00 - 2 = 10.00
        + "o2,a,1,5,\n"  # 5.00
        + "o3,b,3,1.5,2\n"  # 4.50 - 2 = 2.50
        + "o4,b,1,1.25,0\n"  # 1.25
        + "o5,b,1,99,\n",  # pending: not counted
    )
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "c",
                    date(2023, 6, 30),
                    country="DE",
                    first=ts("2024-01-01T09:00"),
                    last=ts("2024-01-06T07:15:30.500000"),
                    orders=4,
                    revenue="18.75",
                    avg=18.75 / 4,
                    frequency=2,  # three purchase days
                    recency=5,  # Jan 1 -> Jan 6
                    t_days=30,  # Jan 1 -> Jan 31
                    monetary=(7.50 + 1.25) / 2,  # Jan 1 excluded
                )
            ]
        ),
    )
    assert result.counts["orders"]["valid"] == 5
    assert result.counts["order_items"]["valid"] == 5


# --- tokenizing -----------------------------------------------------------------------------


def test_bom_crlf_quoted_delimiter_multiline_field_and_blank_lines(tmp_path: Path, impl: Impl) -> None:
    customers = (
        "\ufeffcustomer_id,signup_date,country\r\n"
        'c1,2024-01-01,"Bosnia, Herzegovina"\r\n'  # row 1: quoted delimiter
        "\r\n"  # blank: no row number
        'c2,2024-01-02,"multi\r\n'  # row 2 spans three physical lines
        "\r\n"  # an empty line inside a quoted field belongs to it
        'line"\r\n'
        "\n"
        "c3,2024-13-01,XX\r\n"  # row 3: bad_date, numbered after the blank lines
        "  \r\n"  # row 4: a line of spaces is a record, with one field
    )
    result = run(impl, tmp_path, customers=customers)
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row("c1", date(2024, 1, 1), country="Bosnia, Herzegovina"),
                customer_row("c2", date(2024, 1, 2), country="multi\n\nline"),
            ]
        ),
    )
    assert reject_rows(result) == [("customers.csv", 3, "bad_date"), ("customers.csv", 4, "malformed_row")]
    assert result.counts["customers"]["read"] == 4


def test_malformed_rows(tmp_path: Path, impl: Impl) -> None:
    customers = (
        CUSTOMERS_HEADER
        + "ok,2024-01-01,DE\n"  # 1
        + "short,2024-01-01\n"  # 2: two fields
        + "long,2024-01-01,DE,extra\n"  # 3: four fields
        + 'quote,2024-01-01,D"E"\n'  # 4: a quote inside an unquoted field
        + 'after,2024-01-01,"DE"x\n'  # 5: text after the closing quote
        + 'padded , 2024-01-01 ,  "D,""E"""  \n'  # 6: spaces around a quoted field are fine
        + ",,\n"  # 7: well formed, values missing
        + 'open,2024-01-01,"DE\n'  # 8: unterminated quote runs to the end of the file
        + "swallowed,2024-01-01,DE\n"
    )
    result = run(impl, tmp_path, customers=customers)
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row("ok", country="DE"),
                customer_row("padded", country='D,"E"'),
            ]
        ),
    )
    assert reject_rows(result) == [
        ("customers.csv", 2, "malformed_row"),
        ("customers.csv", 3, "malformed_row"),
        ("customers.csv", 4, "malformed_row"),
        ("customers.csv", 5, "malformed_row"),
        ("customers.csv", 7, "missing_value"),
        ("customers.csv", 8, "malformed_row"),
    ]
    assert result.counts["customers"]["read"] == 8


def test_a_row_holding_a_nul_character_is_malformed(tmp_path: Path, impl: Impl) -> None:
    """NUL is valid UTF-8 but no PostgreSQL text can hold it: the row is a malformed_row."""
    customers = (
        "customer_id,signup_date,country,note\n"
        + "ok,2024-01-01,DE,\n"  # 1
        + "c2,2024-01-01,U\x00S,\n"  # 2: in a value
        + "c3\x00,2024-01-01,DE,\n"  # 3: in the key
        + "c4,2024-01-01,DE,ignored \x00 column\n"  # 4: in a column the contract does not read
        + 'c5,2024-01-01,"multi\n\x00line",\n'  # 5: in a multi-line quoted field
        + "c6,2024-01-01,FR,\n"  # 6
    )
    result = run(impl, tmp_path, customers=customers)
    assert sorted(result.output["customer_id"].to_list()) == ["c6", "ok"]
    assert reject_rows(result) == [("customers.csv", row, "malformed_row") for row in (2, 3, 4, 5)]
    assert result.counts["customers"]["read"] == 6


def test_extra_reordered_and_repeated_header_columns_and_quoted_names(tmp_path: Path, impl: Impl) -> None:
    result = run(
        impl,
        tmp_path,
        customers=' "signup_date" ,note,customer_id\n2024-01-05,hello,c1\n',  # no country column
        orders="status,customer_id,extra,order_ts,order_id,customer_id\n"
        "COMPLETED,c1,x,2024-01-10,o1,ignored\n",  # the first customer_id column wins
        items="unit_price,order_id,quantity,sku\n3.10,o1,2,s\n",  # no discount column
    )
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "c1",
                    date(2024, 1, 5),
                    first=ts("2024-01-10T00:00"),
                    last=ts("2024-01-10T00:00"),
                    orders=1,
                    revenue="6.20",
                    avg=6.2,
                    frequency=0,
                    recency=0,
                    t_days=21,
                    monetary=0.0,
                )
            ]
        ),
    )
    assert result.rejects.is_empty()


def test_other_delimiter(tmp_path: Path, impl: Impl) -> None:
    folder = write_inputs(
        tmp_path,
        customers='customer_id;signup_date;country\nc,1;2024-01-01;"a;b"\n',
        orders="order_id;customer_id;order_ts;status\n",
        items="order_id;sku;quantity;unit_price\n",
    )
    result = impl(folder, AS_OF, delimiter=";")
    assert_frame_equal(result.output, expected_output([customer_row("c,1", country="a;b")]))


def test_missing_file_or_column_fails_naming_it(tmp_path: Path, impl: Impl) -> None:
    write_inputs(tmp_path / "no_status", orders="order_id,customer_id,order_ts\n")
    with pytest.raises(InputError, match=r"orders\.csv.*'status'"):
        impl(tmp_path / "no_status", AS_OF)
    folder = write_inputs(tmp_path / "no_items")
    (folder / "order_items.csv").unlink()
    with pytest.raises(InputError, match=r"order_items\.csv"):
        impl(folder, AS_OF)


# --- one test per reject reason -------------------------------------------------------------


def test_customer_missing_value_and_bad_date(tmp_path: Path, impl: Impl) -> None:
    customers = (
        CUSTOMERS_HEADER
        + ",2024-01-01,DE\n"  # 1 missing id
        + 'c2," \t ",DE\n'  # 2 blank after trimming
        + "c3,2023-02-29,DE\n"  # 3 not a leap year
        + "c4,2024-1-05,DE\n"  # 4
        + "c5,2024/01/05,DE\n"  # 5
        + "c6,２０２４-01-05,DE\n"  # 6 full-width digits
        + "c7,2024-01-05T00:00,DE\n"  # 7 a timestamp is not a date
        + "c8,0000-01-01,DE\n"  # 8 there is no year 0
        + "c9, 2024-02-29 ,\n"  # 9 valid; country missing
    )
    result = run(impl, tmp_path, customers=customers)
    assert_frame_equal(result.output, expected_output([customer_row("c9", date(2024, 2, 29))]))
    assert reject_rows(result) == [
        ("customers.csv", 1, "missing_value"),
        ("customers.csv", 2, "missing_value"),
        *[("customers.csv", row, "bad_date") for row in range(3, 9)],
    ]
    assert result.counts["customers"]["rejected_by_reason"] == {
        "malformed_row": 0,
        "missing_value": 2,
        "bad_date": 6,
        "conflicting_duplicate": 0,
    }


def test_order_missing_value_bad_timestamp_and_bad_status(tmp_path: Path, impl: Impl) -> None:
    orders = (
        ORDERS_HEADER
        + ",c,2024-01-01,completed\n"  # 1
        + "o2,c,,completed\n"  # 2
        + "o3,c,2024-01-01,\n"  # 3
        + "o4,c,2024-01-01T24:00,completed\n"  # 4 hour 24
        + "o5,c,2024-02-30,completed\n"  # 5 no such day
        + "o6,c,2024-01-01T10:00+0200,completed\n"  # 6 offset without colon
        + "o7,c,2024-01-01T10:00:00.1234567,completed\n"  # 7 seven fraction digits
        + "o8,c,2024-01-01T10:00:00 UTC,completed\n"  # 8
        + "o9,c,2024-01-01T10,completed\n"  # 9 hour only
        + "o10,c,2024-01-01  10:00,completed\n"  # 10 two spaces
        + "o11,c,bad,shipped\n"  # 11 bad_timestamp comes first
        + "o12,c,2024-01-01,shipped\n"  # 12
        + "o13,c,2024-01-01 10:00,  PENDING \n"  # 13 valid
    )
    result = run(impl, tmp_path, customers=CUSTOMERS_HEADER + "c,2024-01-01,\n", orders=orders)
    assert reject_rows(result) == [
        ("orders.csv", 1, "missing_value"),
        ("orders.csv", 2, "missing_value"),
        ("orders.csv", 3, "missing_value"),
        *[("orders.csv", row, "bad_timestamp") for row in range(4, 12)],
        ("orders.csv", 12, "bad_status"),
    ]
    assert result.counts["orders"]["valid"] == 1
    assert_frame_equal(result.output, expected_output([customer_row("c")]))  # pending is not counted


def test_item_missing_value_bad_quantity_bad_money_and_discount(tmp_path: Path, impl: Impl) -> None:
    items = (
        ITEMS_HEADER
        + ",s,1,1,\n"  # 1 missing_value
        + "o,,1,1,\n"  # 2 missing_value
        + "o,s,,1,\n"  # 3 missing_value
        + "o,s,1,,\n"  # 4 missing_value
        + "o,s,0,1,\n"  # 5 bad_quantity
        + "o,s,-1,1,\n"  # 6
        + "o,s,1.5,1,\n"  # 7
        + "o,s,2147483648,1,\n"  # 8 above the int32 maximum
        + "o,s,+1,1,\n"  # 9
        + "o,s,x,bad,\n"  # 10 bad_quantity comes before bad_money
        + "o,s,1,12.,\n"  # 11 bad_money
        + "o,s,1,.5,\n"  # 12
        + "o,s,1,+1,\n"  # 13
        + "o,s,1,-0,\n"  # 14
        + "o,s,1,1e3,\n"  # 15
        + 'o,s,1,"1,000",\n'  # 16
        + "o,s,1,1.234,\n"  # 17
        + "o,s,1,12345678901234567,\n"  # 18 seventeen digits
        + "o,s,1,1,0.001\n"  # 19 discount has three decimals
        + "o,s,2,1.50,3.01\n"  # 20 discount_exceeds_amount (2 * 1.50 = 3.00)
        + "o,s,2,1.50,3.00\n"  # 21 valid, value 0
        + "o,s,2147483647,0.01,\n"  # 22 valid, value 21474836.47
        + "o,s,007,1234567890123456.99,1234567890123456.99\n"  # 23 valid, value 6 * 1234567890123456.99
    )
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "c,2024-01-01,\n",
        orders=ORDERS_HEADER + "o,c,2024-01-02,completed\n",
        items=items,
    )
    assert reject_rows(result) == [
        *[("order_items.csv", row, "missing_value") for row in range(1, 5)],
        *[("order_items.csv", row, "bad_quantity") for row in range(5, 11)],
        *[("order_items.csv", row, "bad_money") for row in range(11, 20)],
        ("order_items.csv", 20, "discount_exceeds_amount"),
    ]
    revenue = Decimal("21474836.47") + 6 * Decimal("1234567890123456.99")  # 7407407362215578.41
    assert str(revenue) == "7407407362215578.41"
    assert result.output["total_revenue"].to_list() == [revenue]
    assert result.counts["order_items"]["valid"] == 3


def test_duplicates_exact_and_conflicting(tmp_path: Path, impl: Impl) -> None:
    customers = (
        CUSTOMERS_HEADER
        + "a,2024-01-01,DE\n"  # 1 kept
        + " a , 2024-01-01 ,DE \n"  # 2 identical after trimming: dropped
        + "b,2024-01-01,DE\n"  # 3 conflicting
        + "b,2024-01-01,DE\n"  # 4 conflicting
        + "b,2024-01-01,\n"  # 5 conflicting (country differs)
        + "c,not-a-date,DE\n"  # 6 bad_date: not part of the duplicate judgement
        + "c,2024-01-03,\n"  # 7 kept
    )
    orders = (
        ORDERS_HEADER
        + "o1,a,2024-01-10T10:00:00Z,completed\n"  # 1 kept
        + "o1,a,2024-01-10 12:00+02:00,COMPLETED\n"  # 2 same instant and status: dropped
        + "o2,a,2024-01-11,completed\n"  # 3 conflicting
        + "o2,a,2024-01-11,cancelled\n"  # 4 conflicting
        + "o3,b,2024-01-12,completed\n"  # 5 unknown_customer (b was rejected)
        + "o3,b,2024-01-12,completed\n"  # 6 exact duplicate of 5: dropped
        + "o4,c,2024-01-13,completed\n"  # 7
    )
    items = (
        ITEMS_HEADER
        + "o1,s,1,10,\n"  # 1
        + "o1,s,1,10,\n"  # 2 identical items are both kept
        + "o2,s,1,10,\n"  # 3 unknown_order: o2 was rejected
        + "o3,s,1,10,\n"  # 4 unknown_order: o3 was rejected
        + "o4,s,1,7,\n"  # 5
    )
    result = run(impl, tmp_path, customers=customers, orders=orders, items=items)
    assert reject_rows(result) == [
        ("customers.csv", 3, "conflicting_duplicate"),
        ("customers.csv", 4, "conflicting_duplicate"),
        ("customers.csv", 5, "conflicting_duplicate"),
        ("customers.csv", 6, "bad_date"),
        ("order_items.csv", 3, "unknown_order"),
        ("order_items.csv", 4, "unknown_order"),
        ("orders.csv", 3, "conflicting_duplicate"),
        ("orders.csv", 4, "conflicting_duplicate"),
        ("orders.csv", 5, "unknown_customer"),
    ]
    day10 = ts("2024-01-10T10:00")
    day13 = ts("2024-01-13T00:00")
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "a",
                    country="DE",
                    first=day10,
                    last=day10,
                    orders=1,
                    revenue="20",
                    avg=20.0,
                    frequency=0,
                    recency=0,
                    t_days=21,
                    monetary=0.0,
                ),
                customer_row(
                    "c",
                    date(2024, 1, 3),
                    first=day13,
                    last=day13,
                    orders=1,
                    revenue="7",
                    avg=7.0,
                    frequency=0,
                    recency=0,
                    t_days=18,
                    monetary=0.0,
                ),
            ]
        ),
    )
    assert result.counts["customers"] == {
        "read": 7,
        "valid": 2,
        "rejected": 4,
        "rejected_by_reason": {
            "malformed_row": 0,
            "missing_value": 0,
            "bad_date": 1,
            "conflicting_duplicate": 3,
        },
        "duplicates_dropped": 1,
        "after_as_of": 0,
    }
    assert result.counts["orders"]["rejected_by_reason"] == {
        "malformed_row": 0,
        "missing_value": 0,
        "bad_timestamp": 0,
        "bad_status": 0,
        "conflicting_duplicate": 2,
        "unknown_customer": 1,
    }
    assert (result.counts["orders"]["read"], result.counts["orders"]["valid"]) == (7, 2)
    assert result.counts["orders"]["duplicates_dropped"] == 2
    assert (result.counts["order_items"]["read"], result.counts["order_items"]["valid"]) == (5, 3)


def test_keys_are_text_007_is_not_7(tmp_path: Path, impl: Impl) -> None:
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "007,2024-01-01,\n7,2024-01-02,\n",
        orders=ORDERS_HEADER
        + "1,007,2024-01-05,completed\n"
        + "01,7,2024-01-06,completed\n"
        + "001,07,2024-01-07,completed\n",  # 3: unknown_customer
        items=ITEMS_HEADER + "1,s,1,1,\n01,s,1,2,\n001,s,1,3,\n",  # 3: unknown_order
    )
    assert reject_rows(result) == [
        ("order_items.csv", 3, "unknown_order"),
        ("orders.csv", 3, "unknown_customer"),
    ]
    jan5, jan6 = ts("2024-01-05T00:00"), ts("2024-01-06T00:00")
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "007",
                    first=jan5,
                    last=jan5,
                    orders=1,
                    revenue="1",
                    avg=1.0,
                    frequency=0,
                    recency=0,
                    t_days=26,
                    monetary=0.0,
                ),
                customer_row(
                    "7",
                    date(2024, 1, 2),
                    first=jan6,
                    last=jan6,
                    orders=1,
                    revenue="2",
                    avg=2.0,
                    frequency=0,
                    recency=0,
                    t_days=25,
                    monetary=0.0,
                ),
            ]
        ),
    )


# --- time -----------------------------------------------------------------------------------


def test_offsets_move_orders_to_another_utc_day(tmp_path: Path, impl: Impl) -> None:
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "next,2024-01-01,\nprev,2024-01-01,\n",
        orders=ORDERS_HEADER
        # local Jan 10 23:30 at -01:00 is Jan 11 00:30 UTC: the same UTC day as the second order
        + "n1,next,2024-01-10T23:30:00-01:00,completed\n"
        + "n2,next,2024-01-11 12:00,completed\n"
        # local Jan 11 00:30 at +01:00 is Jan 10 23:30 UTC: the same UTC day as the second order
        + "p1,prev,2024-01-11T00:30+01:00,completed\n"
        + "p2,prev,2024-01-10T08:00Z,completed\n",
        items=ITEMS_HEADER + "n1,s,1,1,\nn2,s,1,2,\np1,s,1,3,\np2,s,1,4,\n",
    )
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "next",
                    first=ts("2024-01-11T00:30"),
                    last=ts("2024-01-11T12:00"),
                    orders=2,
                    revenue="3",
                    avg=1.5,
                    frequency=0,
                    recency=0,
                    t_days=20,
                    monetary=0.0,
                ),
                customer_row(
                    "prev",
                    first=ts("2024-01-10T08:00"),
                    last=ts("2024-01-10T23:30"),
                    orders=2,
                    revenue="7",
                    avg=3.5,
                    frequency=0,
                    recency=0,
                    t_days=21,
                    monetary=0.0,
                ),
            ]
        ),
    )


def test_orders_at_the_as_of_cutoff(tmp_path: Path, impl: Impl) -> None:
    """as_of Jan 31: orders before Feb 1 00:00 UTC count, later valid ones are after_as_of."""
    result = run(
        impl,
        tmp_path,
        customers=CUSTOMERS_HEADER + "c,2024-01-01,\n",
        orders=ORDERS_HEADER
        + "in1,c,2024-01-31T23:59:59.999999,completed\n"
        + "in2,c,2024-02-01T00:59:59+01:00,completed\n"  # Jan 31 23:59:59 UTC
        + "out1,c,2024-02-01T00:00:00Z,completed\n"
        + "out2,c,2024-01-31T23:30:00-01:00,completed\n"  # Feb 1 00:30 UTC
        + "out3,c,2024-02-01,cancelled\n",
        items=ITEMS_HEADER + "in1,s,1,1,\nin2,s,1,2,\nout1,s,1,4,\nout1,t,1,8,\nout2,s,1,16,\nout3,s,1,32,\n",
    )
    assert_frame_equal(
        result.output,
        expected_output(
            [
                customer_row(
                    "c",
                    first=ts("2024-01-31T23:59:59"),
                    last=ts("2024-01-31T23:59:59.999999"),
                    orders=2,
                    revenue="3",
                    avg=1.5,
                    frequency=0,
                    recency=0,
                    t_days=0,
                    monetary=0.0,
                ),
            ]
        ),
    )
    assert result.rejects.is_empty()
    assert (result.counts["orders"]["valid"], result.counts["orders"]["after_as_of"]) == (5, 3)
    assert (result.counts["order_items"]["valid"], result.counts["order_items"]["after_as_of"]) == (6, 4)
    # Validation does not depend on as_of: a later date only moves orders into the run.
    later = impl(tmp_path, date(2024, 2, 1))
    assert later.counts["orders"]["after_as_of"] == 0
    assert later.output["orders_count"].to_list() == [4]


# --- cross-checks -----------------------------------------------------------------------------


def lifetimes_summary(
    transactions: list[tuple[str, datetime, int]], as_of: date
) -> dict[str, tuple[float, ...]]:
    """lifetimes' (frequency, recency, T, monetary_value) per customer, from (id, UTC time, cents)."""
    import pandas as pd  # type: ignore[import-untyped]  # only this cross-check needs pandas

    with warnings.catch_warnings():
        # lifetimes sets pandas' deprecated 'mode.chained_assignment' option at import time
        warnings.filterwarnings("ignore", message=".*mode.chained_assignment.*")
        from lifetimes.utils import summary_data_from_transaction_data  # type: ignore[import-untyped]

    frame = pd.DataFrame(
        {
            "customer_id": [customer for customer, _, _ in transactions],
            "at": [at.replace(tzinfo=None) for _, at, _ in transactions],
            "value": [cents / 100 for _, _, cents in transactions],
        }
    )
    summary = summary_data_from_transaction_data(
        frame, "customer_id", "at", monetary_value_col="value", observation_period_end=as_of, freq="D"
    )
    return {
        str(customer): (row["frequency"], row["recency"], row["T"], row["monetary_value"])
        for customer, row in summary.iterrows()
    }


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def test_agrees_with_lifetimes_summary(tmp_path: Path, impl: Impl) -> None:
    rng = random.Random(20240131)
    as_of = date(2024, 3, 31)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    customers = [CUSTOMERS_HEADER]
    orders = [ORDERS_HEADER]
    items = [ITEMS_HEADER]
    counted: list[tuple[str, datetime, int]] = []  # completed orders up to as_of, value in cents
    for c in range(40):
        customer_id = f"c{c:02d}"
        customers.append(f"{customer_id},2023-12-{rng.randint(1, 31):02d},\n")
        previous_at = start
        for o in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
            order_id = f"{customer_id}-o{o}"
            at = start + timedelta(minutes=rng.randrange(0, 100 * 24 * 60))  # some after as_of
            if o > 0 and rng.random() < 0.3:
                at = previous_at.replace(hour=rng.randrange(24))  # another order on the same day
            previous_at = at
            status = rng.choice(["completed"] * 4 + ["cancelled"])
            orders.append(f"{order_id},{customer_id},{at:%Y-%m-%dT%H:%M}:00Z,{status}\n")
            cents = 0
            for _ in range(rng.randint(0, 3)):
                quantity, price, discount = rng.randint(1, 3), rng.randint(0, 5000), rng.randint(0, 300)
                discount = min(discount, quantity * price)
                items.append(f"{order_id},sku,{quantity},{money(price)},{money(discount)}\n")
                cents += quantity * price - discount
            if status == "completed" and at.date() <= as_of:
                counted.append((customer_id, at, cents))
    result = run(
        impl, tmp_path, as_of, customers="".join(customers), orders="".join(orders), items="".join(items)
    )
    assert result.rejects.is_empty()

    expected = lifetimes_summary(counted, as_of)
    # The generator produced enough of each case to mean something.
    assert len(expected) > 20
    assert sum(frequency > 0 for frequency, *_ in expected.values()) > 10
    assert result.counts["orders"]["after_as_of"] != 0
    assert (result.output["frequency"] + 1 < result.output["orders_count"]).sum() > 3  # same-day orders
    with_orders = result.output.filter(pl.col("orders_count") > 0)
    assert sorted(with_orders["customer_id"]) == sorted(expected)
    for row in with_orders.iter_rows(named=True):
        frequency, recency, t_days, monetary = expected[row["customer_id"]]
        assert (row["frequency"], row["recency_days"], row["t_days"]) == (frequency, recency, t_days)
        assert row["monetary_value"] == pytest.approx(monetary, rel=1e-12, abs=1e-9)
    total_cents = sum(cents for _, _, cents in counted)
    assert sum(result.output["total_revenue"], Decimal(0)) == Decimal(total_cents) / 100


# --- the tokenizer round-trips what a CSV writer writes ------------------------------------------

FIELD_TEXT = st.text(alphabet=st.sampled_from(list('ab ,"\n\t;é')), max_size=6)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(FIELD_TEXT, FIELD_TEXT), max_size=5), quote_all=st.booleans())
def test_tokenizer_reads_back_what_csv_writer_wrote(
    rows: list[tuple[str, str]], quote_all: bool, impl: Impl
) -> None:
    """Customer rows (id, country) written by Python's csv module come back trimmed, in order."""
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    )
    writer.writerow(["customer_id", "signup_date", "country"])
    for n, (customer_id, country) in enumerate(rows):
        writer.writerow([f"{n}{customer_id}", "2024-01-01", country])  # a unique, non-empty id
    with tempfile.TemporaryDirectory() as folder:
        result = run(impl, Path(folder), customers=buffer.getvalue())
    assert result.rejects.is_empty()
    trim = " \t\r\n"
    expected = sorted(
        (f"{n}{customer_id}".strip(trim), country.strip(trim) or None)
        for n, (customer_id, country) in enumerate(rows)
    )
    assert sorted(result.output.select("customer_id", "country").iter_rows()) == expected


def test_blank_lines_in_a_mostly_clean_file(tmp_path: Path, impl: Impl) -> None:
    # Regression guard for the fast path: clean lines go through Polars' native reader, which
    # must keep one row per physical line, blank ones included, or every row number after a
    # blank line would shift (and a line could silently vanish).
    rows = [f"c{i},2024-01-0{1 + i % 9},FR\n" for i in range(1, 10)]
    customers = CUSTOMERS_HEADER + "".join(rows[:2]) + "\n" + "".join(rows[2:]) + "c10,bad,FR\n\n\n"
    result = run(impl, tmp_path, customers=customers)
    assert result.output["customer_id"].to_list() == [f"c{i}" for i in range(1, 10)]
    assert reject_rows(result) == [("customers.csv", 10, "bad_date")]
    assert result.counts["customers"]["read"] == 10
