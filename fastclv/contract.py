"""The data contract (``CONTRACT.md``) as code: files, columns, reject reasons, output schema.

Everything that names a column, a reason code or an output type comes from here, so the
extract, the transform, the DuckDB cross-check and the PostgreSQL load cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

import polars as pl
import pyarrow as pa


@dataclass(frozen=True)
class InputFile:
    """One of the three input CSV files."""

    #: Short name used in rejects, the run summary and staged file names.
    name: str
    #: File name inside the input location.
    file_name: str
    #: Columns that must be present in the header (in contract order).
    required: tuple[str, ...]
    #: Columns read when present; a missing optional column is all nulls.
    optional: tuple[str, ...] = ()
    #: The key column, for files whose rows have one.
    key: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every contract column of the file, required first."""
        return self.required + self.optional


CUSTOMERS = InputFile(
    name="customers",
    file_name="customers.csv",
    required=("customer_id", "signup_date"),
    optional=("country",),
    key="customer_id",
)
ORDERS = InputFile(
    name="orders",
    file_name="orders.csv",
    required=("order_id", "customer_id", "order_ts", "status"),
    key="order_id",
)
ORDER_ITEMS = InputFile(
    name="order_items",
    file_name="order_items.csv",
    required=("order_id", "sku", "quantity", "unit_price"),
    optional=("discount",),
)
INPUT_FILES: tuple[InputFile, ...] = (CUSTOMERS, ORDERS, ORDER_ITEMS)


class Reason(StrEnum):
    """Reject reason codes, in the contract's priority order (the first that applies wins)."""

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


#: The reasons that can apply to each file, in priority order.
REASONS_BY_FILE: dict[str, tuple[Reason, ...]] = {
    "customers": (
        Reason.MALFORMED_ROW,
        Reason.MISSING_VALUE,
        Reason.BAD_DATE,
        Reason.CONFLICTING_DUPLICATE,
    ),
    "orders": (
        Reason.MALFORMED_ROW,
        Reason.MISSING_VALUE,
        Reason.BAD_TIMESTAMP,
        Reason.BAD_STATUS,
        Reason.CONFLICTING_DUPLICATE,
        Reason.UNKNOWN_CUSTOMER,
    ),
    "order_items": (
        Reason.MALFORMED_ROW,
        Reason.MISSING_VALUE,
        Reason.BAD_QUANTITY,
        Reason.BAD_MONEY,
        Reason.DISCOUNT_EXCEEDS_AMOUNT,
        Reason.UNKNOWN_ORDER,
    ),
}

STATUSES: tuple[str, ...] = ("completed", "cancelled", "refunded", "pending")
COUNTED_STATUS = "completed"

#: Money: digits (at most 16), optionally a point and one or two digits.
MONEY_PATTERN = r"^[0-9]{1,16}(\.[0-9]{1,2})?$"
#: Quantity: digits only (range checked separately: 1..2147483647).
QUANTITY_PATTERN = r"^[0-9]+$"
QUANTITY_MAX = 2_147_483_647
#: A calendar date.
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
#: A timestamp: date, optionally a time (T or one space) and then optionally Z or +HH:MM/-HH:MM.
#: Groups: 1 date, 2 hour, 3 minute, 4 second, 5 fraction, 6 offset, 7 sign, 8 hours, 9 minutes.
TIMESTAMP_PATTERN = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))?)?$"
)

#: Characters trimmed from every value and header name.
TRIM_CHARS = " \t\r\n"

MONEY = pl.Decimal(18, 2)
#: Wide enough for quantity * unit_price and any sum of them.
MONEY_WIDE = pl.Decimal(38, 2)
TIMESTAMP = pl.Datetime("us", "UTC")

#: Staged, validated inputs (one Parquet file each).
VALID_SCHEMAS: dict[str, pl.Schema] = {
    "customers": pl.Schema(
        {"row": pl.Int64(), "customer_id": pl.String(), "signup_date": pl.Date(), "country": pl.String()}
    ),
    "orders": pl.Schema(
        {
            "row": pl.Int64(),
            "order_id": pl.String(),
            "customer_id": pl.String(),
            "order_ts": TIMESTAMP,
            "status": pl.String(),
        }
    ),
    "order_items": pl.Schema(
        {
            "row": pl.Int64(),
            "order_id": pl.String(),
            "sku": pl.String(),
            "quantity": pl.Int32(),
            "unit_price": MONEY,
            "discount": MONEY,
        }
    ),
}

#: Staged orders and items also carry their parent's row number (``customers.csv`` row of the
#: order's customer; ``orders.csv`` row of the item's order): a unique integer key, so later
#: joins hash integers instead of text ids.
PARENT_ROW: dict[str, str] = {"orders": "customer_row", "order_items": "order_row"}

#: One row per rejected input row.
REJECTS_SCHEMA = pl.Schema(
    {
        "file": pl.String(),  # the input file name, e.g. "orders.csv"
        "row": pl.Int64(),  # 1-based data row number (the header is row 0)
        "reason": pl.String(),  # a Reason code
        "column": pl.String(),  # the offending column, null for row-level reasons
        "raw": pl.String(),  # the row as it appeared in the file
    }
)

#: The output table (contract section 4), in column order.
OUTPUT_SCHEMA = pl.Schema(
    {
        "as_of": pl.Date(),
        "customer_id": pl.String(),
        "signup_date": pl.Date(),
        "country": pl.String(),
        "first_order_at": TIMESTAMP,
        "last_order_at": TIMESTAMP,
        "orders_count": pl.Int32(),
        "total_revenue": MONEY,
        "avg_order_value": pl.Float64(),
        "frequency": pl.Int32(),
        "recency_days": pl.Int32(),
        "t_days": pl.Int32(),
        "monetary_value": pl.Float64(),
        "p_alive": pl.Float64(),
        "expected_purchases": pl.Float64(),
        "predicted_clv": MONEY,
    }
)
PREDICTIVE_COLUMNS: tuple[str, ...] = ("p_alive", "expected_purchases", "predicted_clv")

#: PostgreSQL types of the output columns (contract section 4).
OUTPUT_PG_TYPES: dict[str, str] = {
    "as_of": "date",
    "customer_id": "text",
    "signup_date": "date",
    "country": "text",
    "first_order_at": "timestamptz",
    "last_order_at": "timestamptz",
    "orders_count": "integer",
    "total_revenue": "numeric(18,2)",
    "avg_order_value": "double precision",
    "frequency": "integer",
    "recency_days": "integer",
    "t_days": "integer",
    "monetary_value": "double precision",
    "p_alive": "double precision",
    "expected_purchases": "double precision",
    "predicted_clv": "numeric(18,2)",
}
#: Columns that may never be null.
OUTPUT_NOT_NULL: tuple[str, ...] = (
    "as_of",
    "customer_id",
    "signup_date",
    "orders_count",
    "total_revenue",
)


def output_arrow_schema() -> pa.Schema:
    """The Arrow schema of ``customer_ltv.parquet`` (plain ``string``, not string views)."""
    arrow_types: dict[str, pa.DataType] = {
        "as_of": pa.date32(),
        "customer_id": pa.string(),
        "signup_date": pa.date32(),
        "country": pa.string(),
        "first_order_at": pa.timestamp("us", tz="UTC"),
        "last_order_at": pa.timestamp("us", tz="UTC"),
        "orders_count": pa.int32(),
        "total_revenue": pa.decimal128(18, 2),
        "avg_order_value": pa.float64(),
        "frequency": pa.int32(),
        "recency_days": pa.int32(),
        "t_days": pa.int32(),
        "monetary_value": pa.float64(),
        "p_alive": pa.float64(),
        "expected_purchases": pa.float64(),
        "predicted_clv": pa.decimal128(18, 2),
    }
    return pa.schema(
        [pa.field(name, arrow_types[name], nullable=name not in OUTPUT_NOT_NULL) for name in OUTPUT_SCHEMA]
    )


def as_of_cutoff(as_of: date) -> pl.Expr:
    """The first instant outside a run as of D: D + 1 day at 00:00 UTC (contract section 3)."""
    return pl.lit(datetime.combine(as_of + timedelta(days=1), time(), tzinfo=UTC)).cast(TIMESTAMP)
