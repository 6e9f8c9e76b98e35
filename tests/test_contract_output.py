"""The output table ``customer_ltv`` and the input columns, written out from CONTRACT.md.

Every name and type below is copied by hand from CONTRACT.md (sections 1 and 4), never
computed from ``fastclv.contract``: a typo there (a type, a column, its order, a column that
may be null) fails here, and again in the table a real PostgreSQL gets from ``fastclv.load``.
(Separate from test_contract.py, whose tests all run on both the pipeline and the oracle.)
"""

from __future__ import annotations

import polars as pl
import psycopg
import pyarrow as pa

from fastclv import ddl
from fastclv.contract import (
    INPUT_FILES,
    OUTPUT_NOT_NULL,
    OUTPUT_PG_TYPES,
    OUTPUT_SCHEMA,
    output_arrow_schema,
)

#: CONTRACT.md section 4, row by row: (column, PostgreSQL type), in the table's order.
CUSTOMER_LTV = [
    ("as_of", "date"),
    ("customer_id", "text"),
    ("signup_date", "date"),
    ("country", "text"),
    ("first_order_at", "timestamptz"),
    ("last_order_at", "timestamptz"),
    ("orders_count", "integer"),
    ("total_revenue", "numeric(18,2)"),
    ("avg_order_value", "double precision"),
    ("frequency", "integer"),
    ("recency_days", "integer"),
    ("t_days", "integer"),
    ("monetary_value", "double precision"),
    ("p_alive", "double precision"),
    ("expected_purchases", "double precision"),
    ("predicted_clv", "numeric(18,2)"),
]
#: The columns the contract always fills: the key, signup_date (required in customers.csv),
#: orders_count and total_revenue (0 for a customer without orders). Every other may be null.
NEVER_NULL = ["as_of", "customer_id", "signup_date", "orders_count", "total_revenue"]
PRIMARY_KEY = ["as_of", "customer_id"]

#: Each PostgreSQL type as a Polars and an Arrow type (microseconds, UTC, exact decimals).
POLARS_TYPE = {
    "date": pl.Date(),
    "text": pl.String(),
    "timestamptz": pl.Datetime("us", "UTC"),
    "integer": pl.Int32(),
    "numeric(18,2)": pl.Decimal(18, 2),
    "double precision": pl.Float64(),
}
ARROW_TYPE = {
    "date": pa.date32(),
    "text": pa.string(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "integer": pa.int32(),
    "numeric(18,2)": pa.decimal128(18, 2),
    "double precision": pa.float64(),
}
#: How PostgreSQL's format_type() spells the contract's types.
PG_SPELLING = {"timestamptz": "timestamp with time zone"}

#: CONTRACT.md section 1: file -> (required columns, optional columns, key).
INPUT_COLUMNS = {
    "customers.csv": (("customer_id", "signup_date"), ("country",), "customer_id"),
    "orders.csv": (("order_id", "customer_id", "order_ts", "status"), (), "order_id"),
    "order_items.csv": (("order_id", "sku", "quantity", "unit_price"), ("discount",), None),
}


def test_output_columns_and_their_postgresql_types_are_the_contracts() -> None:
    assert list(OUTPUT_PG_TYPES.items()) == CUSTOMER_LTV
    assert list(OUTPUT_NOT_NULL) == NEVER_NULL


def test_staged_output_types_are_the_postgresql_types() -> None:
    polars_types = {name: POLARS_TYPE[pg_type] for name, pg_type in CUSTOMER_LTV}
    arrow_fields = [
        pa.field(name, ARROW_TYPE[pg_type], nullable=name not in NEVER_NULL) for name, pg_type in CUSTOMER_LTV
    ]
    assert pl.Schema(polars_types) == OUTPUT_SCHEMA
    assert pa.schema(arrow_fields) == output_arrow_schema()


def test_input_files_and_their_columns_are_the_contracts() -> None:
    found = {f.file_name: (f.required, f.optional, f.key) for f in INPUT_FILES}
    assert found == INPUT_COLUMNS
    assert [f.file_name for f in INPUT_FILES] == list(INPUT_COLUMNS)


def test_the_created_table_has_the_contracts_columns_types_and_key(pg_uri: str, pg_schema: str) -> None:
    ddl.create_tables(pg_uri, schema=pg_schema)
    table = f'"{pg_schema}".customer_ltv'
    with psycopg.connect(pg_uri) as conn:
        columns = conn.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        ).fetchall()
        key = conn.execute(
            "SELECT a.attname::text FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.position",
            (table,),
        ).fetchall()
    assert columns == [
        (name, PG_SPELLING.get(pg_type, pg_type), name in NEVER_NULL) for name, pg_type in CUSTOMER_LTV
    ]
    assert [name for (name,) in key] == PRIMARY_KEY
