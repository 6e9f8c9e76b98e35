"""The comparisons: schema, ledger counts, rows, each historical column, the predictive columns.

Each check returns a :class:`Check` (values compared, mismatches, the first few differing
rows). They read the tables :mod:`fastclv.verify.recompute` made; the predictive columns are
re-evaluated with :mod:`fastclv.verify.closed_forms` from the parameters in the run summary.
"""

# The SQL below is assembled from contract constants and column names, never from user text,
# so the string-built-query rule does not apply here.
# ruff: noqa: S608

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fastclv.contract import INPUT_FILES, OUTPUT_PG_TYPES, OUTPUT_SCHEMA, PREDICTIVE_COLUMNS
from fastclv.model.params import BgNbdParams, FloatArray, GammaGammaParams
from fastclv.verify.closed_forms import (
    A_SINGULAR,
    bgnbd_p_alive,
    gamma_gamma_spend,
    monthly_curve,
)

#: Differing rows shown per check in the report.
EXAMPLES = 20
#: Doubles of the historical columns: relative tolerance (two engines, one correctly rounded
#: division each; they may still differ in the last bits).
HISTORY_RTOL = 1e-9
#: Predictive doubles: relative tolerance between two different, equivalent closed forms.
MODEL_RTOL = 1e-7
#: Predictive values this close to zero compare absolutely (relative error is meaningless there).
MODEL_ATOL = 1e-12
#: predicted_clv is rounded to the cent when staged.
CLV_ATOL = 0.01

_DOUBLE_COLUMNS = ("avg_order_value", "monetary_value")
#: Historical columns compared exactly (with null equality).
_EXACT_COLUMNS = tuple(
    c
    for c in OUTPUT_SCHEMA.names()
    if c not in (*_DOUBLE_COLUMNS, "customer_id", "p_alive", "expected_purchases", "predicted_clv")
)


@dataclass
class Check:
    """One comparison: how many values were compared, which differ, a few examples."""

    name: str
    compared: int = 0
    mismatches: int = 0
    #: (key, column, staged value, recomputed value), first few in key order.
    examples: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: What the check's figures mean beyond its name (without the skipped values' count).
    remark: str | None = None
    #: Values not compared (the independent closed form is not finite there).
    skipped: int = 0

    @property
    def note(self) -> str | None:
        """The remark and, when values were skipped, how many and why."""
        if not self.skipped:
            return self.remark
        extra = (
            f"{self.skipped} customer(s) not compared: the independent closed form is not finite "
            "there (huge T or frequency overflows 2F1)"
        )
        return f"{self.remark}; {extra}" if self.remark else extra

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (one entry of :attr:`~fastclv.verify.VerifyResult.checks`)."""
        return {
            "ok": self.mismatches == 0,
            "compared": self.compared,
            "mismatches": self.mismatches,
            "note": self.note,
        }

    def to_json(self) -> dict[str, object]:
        """Everything, examples included (what a part of the check passes on, see :func:`merge`)."""
        return {
            "name": self.name,
            "compared": self.compared,
            "mismatches": self.mismatches,
            "examples": [list(e) for e in self.examples],
            "remark": self.remark,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        """The inverse of :meth:`to_json`."""
        return cls(
            str(data["name"]),
            compared=int(data["compared"]),
            mismatches=int(data["mismatches"]),
            examples=[(str(k), str(c), str(s), str(e)) for k, c, s, e in data["examples"]],
            remark=None if data["remark"] is None else str(data["remark"]),
            skipped=int(data["skipped"]),
        )


def merge(parts: Iterable[Iterable[Check]]) -> list[Check]:
    """The checks of customer parts as one check each: figures summed, the first examples by key.

    Every part holds whole customers (all rows of a customer_id are in one part), so the sums
    are the whole check's figures and the first :data:`EXAMPLES` keys over all parts are its
    examples. The checks keep the first part's order.
    """
    merged: dict[str, Check] = {}
    examples: dict[str, list[tuple[str, str, str, str]]] = {}
    for checks in parts:
        for check in checks:
            into = merged.setdefault(check.name, Check(check.name, remark=check.remark))
            into.compared += check.compared
            into.mismatches += check.mismatches
            into.skipped += check.skipped
            examples.setdefault(check.name, []).extend(check.examples)
    for name, check in merged.items():
        check.examples = sorted(examples[name], key=lambda e: e[0])[:EXAMPLES]  # stable: a part's order
    return list(merged.values())


#: DuckDB's name for each PostgreSQL type of the output table (contract section 4).
_DUCKDB_TYPES = {
    "date": "DATE",
    "text": "VARCHAR",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "integer": "INTEGER",
    "numeric(18,2)": "DECIMAL(18,2)",
    "double precision": "DOUBLE",
}


def schema_check(con: Any) -> Check:
    """The staged output has the contract's columns, in order, with their types."""
    expected = [(c, _DUCKDB_TYPES[OUTPUT_PG_TYPES[c]]) for c in OUTPUT_SCHEMA.names()]
    staged = [(str(n), str(t)) for n, t, *_ in con.execute("DESCRIBE staged").fetchall()]
    check = Check("schema: customer_ltv.parquet columns and types", compared=len(expected))
    for position in range(max(len(expected), len(staged))):
        want = expected[position] if position < len(expected) else ("-", "-")
        got = staged[position] if position < len(staged) else ("-", "-")
        if want != got:
            check.mismatches += 1
            check.examples.append((f"column {position + 1}", "name type", " ".join(got), " ".join(want)))
    return check


@dataclass
class LedgerCounts:
    """What the ledger is checked against, counted in the staged files (summed over parts)."""

    #: Rows of each staged input.
    staged_rows: dict[str, int] = field(default_factory=dict)
    #: Rows of rejects.parquet by file and reason.
    rejects: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Orders and items after the as-of date (orders and order_items; customers: 0).
    after: dict[str, int] = field(default_factory=dict)
    #: Items whose link (order_row, confirmed by the order_id's hash) names a staged order.
    linked_items: int = 0

    def to_json(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "staged_rows": self.staged_rows,
            "rejects": self.rejects,
            "after": self.after,
            "linked_items": self.linked_items,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerCounts:
        """The inverse of :meth:`to_json`."""
        return cls(
            {str(k): int(v) for k, v in data["staged_rows"].items()},
            {str(f): {str(r): int(n) for r, n in by.items()} for f, by in data["rejects"].items()},
            {str(k): int(v) for k, v in data["after"].items()},
            int(data["linked_items"]),
        )

    def add(self, other: LedgerCounts) -> None:
        """Add another part's counts to these."""
        for name, n in other.staged_rows.items():
            self.staged_rows[name] = self.staged_rows.get(name, 0) + n
        for file, by_reason in other.rejects.items():
            mine = self.rejects.setdefault(file, {})
            for reason, n in by_reason.items():
                mine[reason] = mine.get(reason, 0) + n
        for name, n in other.after.items():
            self.after[name] = self.after.get(name, 0) + n
        self.linked_items += other.linked_items


def ledger_counts(con: Any, *, whole_files: bool) -> LedgerCounts:
    """The staged rows, rejects and after-as-of counts of this session's customers.

    ``whole_files``: also count what belongs to no customer part (rows of order_items.parquet,
    rejects.parquet); exactly one part of a check does.
    """
    staged_rows = {
        f.name: int(con.execute(f"SELECT count(*) FROM {f.name}").fetchall()[0][0])
        for f in INPUT_FILES
        if f.name != "order_items" or whole_files
    }
    rejects: dict[str, dict[str, int]] = {}
    if whole_files:
        for file, reason, n in con.execute(
            "SELECT file, reason, count(*) FROM rejects GROUP BY ALL ORDER BY ALL"
        ).fetchall():
            rejects.setdefault(str(file), {})[str(reason)] = int(n)
    orders_after, items_after, linked_items = (
        int(v)
        for v in con.execute(
            "SELECT orders_after, items_after, (SELECT linked_items FROM item_links) FROM ledger_sums"
        ).fetchall()[0]
    )
    return LedgerCounts(
        staged_rows, rejects, {"orders": orders_after, "order_items": items_after}, linked_items
    )


def ledger_checks(counts: Mapping[str, Mapping[str, object]], found: LedgerCounts) -> list[Check]:
    """Check the ledger: read = valid + rejected + dropped, valid = staged rows, rejects, after-as-of.

    Also that every staged item is linked to a staged order (its order_row names an order with
    its order_id).
    """
    staged_rows, rejects = found.staged_rows, found.rejects
    after = {"customers": 0, **found.after}

    checks: list[Check] = []
    known_files: set[str] = set()
    for spec in INPUT_FILES:
        check = Check(f"ledger:{spec.name}")
        got = counts.get(spec.name)
        if got is None:
            check.compared, check.mismatches = 1, 1
            check.examples.append((spec.name, "counts", "missing", "present"))
            check.remark = "the run summary has no counts for this file"
            checks.append(check)
            continue
        file_name = str(got.get("file", spec.file_name))
        known_files.add(file_name)
        by_reason = {str(k): _int(v) for k, v in _mapping(got.get("rejected_by_reason")).items() if _int(v)}
        rejected = _int(got.get("rejected"))
        pairs: list[tuple[str, object, object]] = [
            (
                "read = valid + rejected + duplicates_dropped",
                _int(got.get("read")),
                _int(got.get("valid")) + rejected + _int(got.get("duplicates_dropped")),
            ),
            ("rejected = sum of rejected_by_reason", rejected, sum(by_reason.values())),
            (f"valid = rows of {spec.name}.parquet", _int(got.get("valid")), staged_rows.get(spec.name, 0)),
            ("after_as_of", _int(got.get("after_as_of")), after.get(spec.name, 0)),
        ]
        if spec.name == "order_items":
            pairs.append(
                (
                    "rows of order_items.parquet = items linked to a staged order",
                    staged_rows.get(spec.name, 0),
                    found.linked_items,
                )
            )
        actual = rejects.get(file_name, {})
        for reason in sorted(set(by_reason) | set(actual)):
            pairs.append(
                (
                    f"rejected_by_reason[{reason}] = rows in rejects.parquet",
                    by_reason.get(reason, 0),
                    actual.get(reason, 0),
                )
            )
        for column, staged_value, recomputed in pairs:
            check.compared += 1
            if staged_value != recomputed:
                check.mismatches += 1
                check.examples.append((spec.name, column, str(staged_value), str(recomputed)))
        checks.append(check)
    strays = {f: n for f, n in rejects.items() if f not in known_files}
    if strays:
        check = Check("ledger:rejects", compared=len(rejects), mismatches=len(strays))
        for f, n in sorted(strays.items()):
            check.examples.append((f, "rejects of an unknown file", str(sum(n.values())), "0"))
        checks.append(check)
    return checks


def row_check(con: Any) -> Check:
    """One staged row per valid customer, no extra, none twice.

    A null customer_id shows as ``(null)``, so the examples sort as text the same in DuckDB and
    in :func:`merge`.
    """
    rows = Check("rows: one per valid customer")
    (n_expected, n_missing, n_extra, n_dup, n_dup_valid) = con.execute(
        """
        SELECT count(*) FILTER (WHERE in_expected),
               count(*) FILTER (WHERE in_expected AND NOT in_staged),
               count(*) FILTER (WHERE in_staged AND NOT in_expected),
               (SELECT count(*) - count(DISTINCT customer_id) FROM staged),
               (SELECT count(*) - count(DISTINCT customer_id) FROM customers)
        FROM side_by_side
        """
    ).fetchall()[0]
    rows.compared = int(n_expected)
    rows.mismatches = int(n_missing) + int(n_extra) + int(n_dup) + int(n_dup_valid)
    if rows.mismatches:
        rows.examples = [
            (str(k), "row", s, e)
            for k, s, e in con.execute(
                f"""
                SELECT coalesce(customer_id, '(null)'),
                       CASE WHEN in_staged THEN 'present' ELSE 'missing' END,
                       CASE WHEN in_expected THEN 'present' ELSE 'not a valid customer' END
                FROM side_by_side WHERE in_expected <> in_staged
                UNION ALL
                SELECT coalesce(customer_id, '(null)'), 'present ' || count(*) || ' times', 'once'
                FROM staged GROUP BY customer_id HAVING count(*) > 1
                UNION ALL
                SELECT coalesce(customer_id, '(null)'),
                       'valid ' || count(*) || ' times in customers.parquet', 'once'
                FROM customers GROUP BY customer_id HAVING count(*) > 1
                ORDER BY 1 LIMIT {EXAMPLES}
                """
            ).fetchall()
        ]
    return rows


def revenue_sums(con: Any) -> tuple[str, str]:
    """sum(total_revenue) of the staged output and the sum of counted item amounts, exact text."""
    staged_sum, items_sum = con.execute(
        "SELECT CAST((SELECT sum(total_revenue) FROM staged) AS VARCHAR),"
        " CAST((SELECT counted_amount FROM ledger_sums) AS VARCHAR)"
    ).fetchall()[0]
    return (
        str(staged_sum) if staged_sum is not None else "0",
        str(items_sum) if items_sum is not None else "0",
    )


def revenue_check(sums: Iterable[tuple[str, str]]) -> Check:
    """Total revenue conserved: the staged total equals the counted items' total (over all parts)."""
    from decimal import Decimal, localcontext

    staged_sum = items_sum = Decimal(0)
    with localcontext(prec=80):  # exact: DuckDB's sums are DECIMAL(38,2)
        for staged_part, items_part in sums:
            staged_sum += Decimal(staged_part)
            items_sum += Decimal(items_part)
    revenue = Check("revenue: sum(total_revenue) = sum of counted item amounts", compared=1)
    if staged_sum != items_sum:
        revenue.mismatches = 1
        revenue.examples.append(("(all)", "sum(total_revenue)", str(staged_sum), str(items_sum)))
    return revenue


def column_checks(con: Any) -> list[Check]:
    """Each historical column on the rows present on both sides."""
    conditions: dict[str, str] = {}
    for c in _EXACT_COLUMNS:
        conditions[c] = f"e_{c} IS DISTINCT FROM s_{c}"
    for c in _DOUBLE_COLUMNS:
        conditions[c] = (
            f"(e_{c} IS NULL) <> (s_{c} IS NULL) OR (e_{c} <> s_{c} AND NOT "
            f"abs(e_{c} - s_{c}) <= {HISTORY_RTOL} * greatest(abs(e_{c}), abs(s_{c})))"
        )
    # Predictive columns must be null for customers without counted orders.
    for c in PREDICTIVE_COLUMNS:
        conditions[f"{c} (no orders)"] = f"e_orders_count = 0 AND s_{c} IS NOT NULL"
    selects = ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in conditions.values())
    both = "in_expected AND in_staged"
    row = con.execute(f"SELECT count(*), {selects} FROM side_by_side WHERE {both}").fetchall()[0]
    compared = int(row[0])
    checks = []
    for (name, cond), n in zip(conditions.items(), row[1:], strict=True):
        check = Check(f"column:{name}", compared=compared, mismatches=int(n))
        if check.mismatches:
            column = name.split(" ")[0]
            check.examples = [
                (str(k), column, str(s), str(e))
                for k, s, e in con.execute(
                    f"""
                    SELECT customer_id, coalesce(CAST(s_{column} AS VARCHAR), 'null'),
                           coalesce(CAST(e_{column} AS VARCHAR), 'null')
                    FROM side_by_side WHERE {both} AND ({cond})
                    ORDER BY customer_id LIMIT {EXAMPLES}
                    """
                ).fetchall()
            ]
        checks.append(check)
    return checks


def _params(model: Mapping[str, object] | None, key: str, names: tuple[str, ...]) -> dict[str, float] | None:
    """The fitted parameters ``model[key]["params"]`` as floats, or None when not fitted."""
    if not model:
        return None
    params = _mapping(_mapping(model.get(key)).get("params"))
    if not params or any(n not in params for n in names):
        return None
    return {n: float(params[n]) for n in names}  # type: ignore[arg-type]


def predictive_checks(
    con: Any,
    model: Mapping[str, object] | None,
    *,
    horizon_months: int,
    margin: float,
    discount_rate: float,
) -> list[Check]:
    """Re-evaluate p_alive, expected_purchases and predicted_clv from the fitted parameters."""
    bg_raw = _params(model, "bgnbd", tuple(f.name for f in fields(BgNbdParams)))
    gg_raw = _params(model, "gamma_gamma", tuple(f.name for f in fields(GammaGammaParams)))
    reader = con.sql(
        """
        SELECT customer_id,
               CAST(e_frequency AS DOUBLE) AS x, CAST(e_recency_days AS DOUBLE) AS tx,
               CAST(e_t_days AS DOUBLE) AS t, CAST(e_monetary_value AS DOUBLE) AS m,
               CAST(s_p_alive AS DOUBLE) AS s_p_alive,
               CAST(s_expected_purchases AS DOUBLE) AS s_expected_purchases,
               CAST(s_predicted_clv AS DOUBLE) AS s_clv
        FROM side_by_side
        WHERE in_expected AND in_staged AND e_orders_count > 0
        """
    ).to_arrow_reader(PREDICTIVE_CHUNK)
    chunks = []
    # In chunks of customers: the closed forms hold horizon_months doubles per customer.
    for batch in reader:
        data = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
        chunks.append(_predictive_chunk(data, bg_raw, gg_raw, horizon_months, margin, discount_rate))
    if not chunks:
        empty = np.zeros(0, dtype=np.float64)
        data = dict.fromkeys(("x", "tx", "t", "m", "s_p_alive", "s_expected_purchases", "s_clv"), empty)
        data["customer_id"] = np.zeros(0, dtype=object)
        chunks.append(_predictive_chunk(data, bg_raw, gg_raw, horizon_months, margin, discount_rate))
    return merge(chunks)


#: Customers per chunk of the predictive checks (a few MB of closed-form values each). At 10M
#: customers the cross-check peaked at 1.56 GiB with 262,144, 1.47 with 65,536 and 1.40 with
#: 16,384, where its SQL checks peak too (benchmarks/ANALYSIS.md, eighth session).
PREDICTIVE_CHUNK = 16_384


def _predictive_chunk(
    data: Mapping[str, Any],
    bg_raw: dict[str, float] | None,
    gg_raw: dict[str, float] | None,
    horizon_months: int,
    margin: float,
    discount_rate: float,
) -> list[Check]:
    """The predictive checks of one chunk of customers (merged over chunks by :func:`merge`)."""
    ids = data["customer_id"]
    x, tx, age, m = (np.asarray(data[k], dtype=np.float64) for k in ("x", "tx", "t", "m"))
    staged = {
        "p_alive": _nullable(data["s_p_alive"]),
        "expected_purchases": _nullable(data["s_expected_purchases"]),
        "predicted_clv": _nullable(data["s_clv"]),
    }
    nan = np.full(x.shape[0], np.nan)
    notes: dict[str, str | None] = dict.fromkeys(PREDICTIVE_COLUMNS)
    if bg_raw is None:
        recomputed = dict.fromkeys(PREDICTIVE_COLUMNS, nan)
        must_be_null = set(PREDICTIVE_COLUMNS)
        notes = dict.fromkeys(PREDICTIVE_COLUMNS, "no BG/NBD parameters in the model: must be null")
    else:
        bg = BgNbdParams(**bg_raw)
        must_be_null = set() if gg_raw is not None else {"predicted_clv"}
        with np.errstate(all="ignore"):
            alive = bgnbd_p_alive(bg, x, tx, age)
            curve = monthly_curve(bg, x, age, horizon_months)
            purchases = alive * curve[:, -1]
            clv = nan
            if gg_raw is not None:
                months = np.arange(1, horizon_months + 1, dtype=np.float64)
                increments = np.diff(curve, axis=1, prepend=0.0)
                discounted = alive * (increments / (1.0 + discount_rate) ** months).sum(axis=1)
                clv = margin * gamma_gamma_spend(GammaGammaParams(**gg_raw), x, m) * discounted
        recomputed = {"p_alive": alive, "expected_purchases": purchases, "predicted_clv": clv}
        if gg_raw is None:
            notes["predicted_clv"] = "no Gamma-Gamma parameters in the model: must be null"
        if abs(bg.a - 1.0) < A_SINGULAR:
            notes["expected_purchases"] = notes["predicted_clv"] = (
                f"a = {bg.a:.9g} is within {A_SINGULAR:g} of 1, where the closed form is 0/0: "
                "not re-evaluated"
            )
    return [
        _compare_predictive(
            column, ids, staged[column], recomputed[column], column in must_be_null, notes[column]
        )
        for column in PREDICTIVE_COLUMNS
    ]


def _compare_predictive(
    column: str,
    ids: Any,
    staged: FloatArray,
    mine: FloatArray,
    must_be_null: bool,
    note: str | None,
) -> Check:
    check = Check(f"column:{column}", compared=int(staged.shape[0]), remark=note)
    if must_be_null:
        bad = ~np.isnan(staged)
    else:
        finite = np.isfinite(mine)
        check.skipped = int((~finite).sum())
        with np.errstate(all="ignore"):
            if column == "predicted_clv":
                close = np.abs(staged - mine) <= CLV_ATOL + MODEL_RTOL * np.abs(mine)
            else:
                close = np.abs(staged - mine) <= np.maximum(
                    MODEL_RTOL * np.maximum(np.abs(staged), np.abs(mine)), MODEL_ATOL
                )
        bad = finite & ~close  # a staged null (NaN here) where we have a value is a mismatch
        check.compared -= check.skipped
    check.mismatches = int(bad.sum())
    first = sorted((str(ids[i]), int(i)) for i in np.flatnonzero(bad))[:EXAMPLES]
    check.examples = [(key, column, _fmt(staged[i]), _fmt(mine[i])) for key, i in first]
    return check


# --------------------------------------------------------------------------- helpers


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def _nullable(values: Any) -> FloatArray:
    """A fetched double column as float64, nulls as NaN."""
    if isinstance(values, np.ma.MaskedArray):
        return np.asarray(np.ma.filled(values.astype(np.float64), np.nan), dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def _fmt(value: float) -> str:
    return "null" if math.isnan(value) else repr(float(value))
