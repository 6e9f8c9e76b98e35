"""The SQL recompute: every historical column of ``customer_ltv`` from the staged, validated inputs.

DuckDB reads the staged Parquet files as views and materialises ``expected`` (one row per
valid customer, from the contract's definitions, without the Polars code) and
``side_by_side`` (``expected`` next to the staged output, full outer join on ``customer_id``),
which :mod:`fastclv.verify.checks` compares. Each intermediate table is dropped once the next
step has what it needs of it (``ledger_sums`` and ``item_links`` keep the few figures the
ledger and revenue checks take from them), so DuckDB's memory limit holds the join at hand, not
the ones before.

An item reaches its order by the staged link (``order_row``, the order's row number), confirmed
by a 64-bit DuckDB hash of its ``order_id``: an item linked to another order matches nothing,
and one linked to no staged order is missing from ``item_links``' count, so the pipeline's links
are checked, not trusted.
"""

# The SQL below is assembled from contract constants, dates and quoted local paths, never from
# user text, so the string-built-query rule does not apply here.
# ruff: noqa: S608

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fastclv import stage
from fastclv.contract import COUNTED_STATUS, INPUT_FILES, OUTPUT_SCHEMA, PREDICTIVE_COLUMNS

_EPOCH = date(1970, 1, 1)
_DAY_US = 86_400_000_000


def _sql_path(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def create_views(con: Any, run_dir: Path, part: int = 0, parts: int = 1) -> None:
    """One view per staged file: the three inputs by name, ``rejects`` and ``staged`` (the output).

    With ``parts`` > 1 the customers, orders and output rows are those of customer part
    ``part``: ``hash(customer_id) % parts`` (DuckDB's own hash, not the pipeline's), so one
    customer's rows are all in one part. The items stay whole: they reach a part through its
    orders. Called again, it replaces the views (the schema is checked on the whole files first).
    """
    for name in [f.name for f in INPUT_FILES] + ["rejects", "staged"]:
        file = {"rejects": stage.REJECTS, "staged": stage.OUTPUT}.get(name, f"{name}.parquet")
        where = ""
        if parts > 1 and name in ("customers", "orders", "staged"):
            where = f" WHERE hash(customer_id) % {int(parts)} = {int(part)}"
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_sql_path(run_dir / file)}){where}"
        )


def _cutoff(as_of: date) -> str:
    """The first instant outside the run, as a DuckDB TIMESTAMPTZ literal."""
    return f"TIMESTAMPTZ '{(as_of + timedelta(days=1)).isoformat()} 00:00:00+00:00'"


def _floor_days(epoch_us: str) -> str:
    """Whole days since 1970-01-01 of a microsecond epoch, rounded down (also before 1970).

    DuckDB's ``//`` truncates towards zero, so the remainder is made non-negative first.
    """
    remainder = f"(({epoch_us} % {_DAY_US}) + {_DAY_US}) % {_DAY_US}"
    return f"CAST(({epoch_us} - {remainder}) // {_DAY_US} AS INTEGER)"


def recompute(con: Any, as_of: date) -> None:
    """Materialise ``side_by_side``, ``ledger_sums`` and ``item_links``; only those remain afterwards.

    ``expected`` holds every valid customer's historical columns, computed from the definitions.
    It sits in ``side_by_side`` beside the staged output, and is dropped like the tables before it.
    Days are whole UTC days since 1970-01-01 (floor of the microsecond epoch), so purchase
    days, recency and T are integer arithmetic, independent of any time zone setting.
    Customers get a surrogate integer key so that the big groupings hash integers, not text.
    """
    cutoff = _cutoff(as_of)
    as_of_day = (as_of - _EPOCH).days
    con.execute(
        "CREATE TEMP TABLE cust AS SELECT row_number() OVER () AS ck, customer_id, signup_date, country"
        " FROM customers"
    )
    # The orders that matter: counted ones (completed, before the cutoff) and those after it,
    # keyed by their row (what an item's order_row names) and a 64-bit DuckDB hash of their
    # order_id (what confirms that link). ck is null for an order whose customer is not valid
    # (the revenue check catches those).
    con.execute(
        f"""
        CREATE TEMP TABLE keyed AS
        SELECT o.row, hash(o.order_id) AS h, c.ck, o.order_ts, o.order_ts >= {cutoff} AS after,
               {_floor_days("epoch_us(o.order_ts)")} AS day
        FROM orders o LEFT JOIN cust c ON c.customer_id = o.customer_id
        WHERE (o.status = '{COUNTED_STATUS}' AND o.order_ts < {cutoff}) OR o.order_ts >= {cutoff}
        """
    )
    con.execute(
        """
        CREATE TEMP TABLE per_customer AS
        WITH per_day AS (
            SELECT ck, day, count(*) AS orders, min(order_ts) AS first_ts, max(order_ts) AS last_ts
            FROM keyed WHERE NOT after GROUP BY ck, day
        )
        SELECT ck, sum(orders) AS orders_count,
               min(first_ts) AS first_order_at, max(last_ts) AS last_order_at,
               count(*) AS purchase_days, min(day) AS first_day, max(day) AS last_day
        FROM per_day GROUP BY ck
        """
    )
    # Every item of a kept order, reached by its link (order_row, confirmed by the hash of its
    # order_id; an integer join, where one on the text spilled past the memory limit and took
    # twice as long at 1M customers): its exact amount (DECIMAL(38,2) sums), summed per customer
    # and on the customer's first purchase day; items of orders after the cutoff counted apart.
    con.execute(
        """
        CREATE TEMP TABLE item_totals AS
        SELECT k.ck, k.after, count(*) AS items,
               sum(CAST(i.quantity AS DECIMAL(38, 0)) * i.unit_price - i.discount) AS amount,
               sum(CAST(i.quantity AS DECIMAL(38, 0)) * i.unit_price - i.discount)
                   FILTER (WHERE k.day = p.first_day) AS first_day_amount
        FROM order_items i JOIN keyed k ON k.row = i.order_row AND k.h = hash(i.order_id)
        LEFT JOIN per_customer p ON p.ck = k.ck AND NOT k.after
        GROUP BY k.ck, k.after
        """
    )
    # What the ledger and revenue checks need from the orders and items, kept apart (one row),
    # so that each big table can go as soon as it is spent: DuckDB's pool (its memory limit)
    # then holds the next join, not the tables before it (at 10M customers 900MB ran out of
    # memory in ``expected`` while ``keyed``, 113M rows, was still there).
    con.execute(
        """
        CREATE TEMP TABLE ledger_sums AS
        SELECT (SELECT count(*) FROM keyed WHERE after) AS orders_after,
               (SELECT coalesce(sum(items), 0) FROM item_totals WHERE after) AS items_after,
               (SELECT sum(amount) FROM item_totals WHERE NOT after) AS counted_amount
        """
    )
    con.execute("DROP TABLE keyed")
    # The links themselves: every staged item must be linked to one staged order. Those of the
    # kept orders were matched above; the others' orders are the rest (not completed, before the
    # cutoff: a smaller join than one with every order, 0.9 s against 1.7 s at 1M customers). A
    # link to no staged order (a dropped duplicate's row, say) would leave an item out on both
    # sides above; the ledger check compares this count, summed over the parts, with the
    # staged items.
    con.execute(
        f"""
        CREATE TEMP TABLE item_links AS
        SELECT (SELECT coalesce(sum(items), 0) FROM item_totals) + count(*) AS linked_items
        FROM order_items i SEMI JOIN (
            SELECT row, order_id FROM orders WHERE status <> '{COUNTED_STATUS}' AND order_ts < {cutoff}
        ) o ON o.row = i.order_row AND hash(o.order_id) = hash(i.order_id)
        """
    )
    # One join at a time (two hash tables of one row per customer at once are what ran out).
    con.execute(
        """
        CREATE TEMP TABLE totals AS
        SELECT p.*, t.amount, t.first_day_amount
        FROM per_customer p LEFT JOIN item_totals t ON t.ck = p.ck AND NOT t.after
        """
    )
    con.execute("DROP TABLE item_totals")
    con.execute("DROP TABLE per_customer")
    revenue = "coalesce(p.amount, 0)"
    con.execute(
        f"""
        CREATE TEMP TABLE expected AS
        SELECT DATE '{as_of.isoformat()}' AS as_of,
               c.customer_id, c.signup_date, c.country,
               p.first_order_at, p.last_order_at,
               coalesce(p.orders_count, 0) AS orders_count,
               {revenue} AS total_revenue,
               CASE WHEN p.orders_count > 0 THEN CAST({revenue} AS DOUBLE) / p.orders_count END
                   AS avg_order_value,
               p.purchase_days - 1 AS frequency,
               p.last_day - p.first_day AS recency_days,
               {as_of_day} - p.first_day AS t_days,
               CASE WHEN p.purchase_days > 1
                    THEN CAST({revenue} - coalesce(p.first_day_amount, 0) AS DOUBLE) / (p.purchase_days - 1)
                    WHEN p.purchase_days = 1 THEN 0.0 END AS monetary_value
        FROM cust c LEFT JOIN totals p ON p.ck = c.ck
        """
    )
    con.execute("DROP TABLE totals")
    con.execute("DROP TABLE cust")
    # Side by side: one row per customer_id on either side (a staged duplicate shows twice).
    pairs = ", ".join(
        (f"e.{c} AS e_{c}, " if c not in PREDICTIVE_COLUMNS else "") + f"s.{c} AS s_{c}"
        for c in OUTPUT_SCHEMA.names()
        if c != "customer_id"
    )
    con.execute(
        f"""
        CREATE TEMP TABLE side_by_side AS
        SELECT coalesce(e.customer_id, s.customer_id) AS customer_id,
               e.customer_id IS NOT NULL AS in_expected,
               s.customer_id IS NOT NULL AS in_staged,
               {pairs}
        FROM expected e FULL OUTER JOIN staged s ON s.customer_id = e.customer_id
        """
    )
    con.execute("DROP TABLE expected")
