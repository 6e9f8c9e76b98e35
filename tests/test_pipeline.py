"""The pipeline on generated data: exact counts, oracle parity, lifetimes parity, invariants."""

from __future__ import annotations

import json
import logging
import warnings
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import reference_run

from fastclv import stage
from fastclv.config import Settings
from fastclv.contract import OUTPUT_SCHEMA, PREDICTIVE_COLUMNS, REJECTS_SCHEMA
from fastclv.extract import extract
from fastclv.pipeline import run
from fastclv.testing import generate
from fastclv.transform import customer_ltv

AS_OF = date(2025, 12, 31)
SAMPLE = Path(__file__).parent.parent / "data" / "sample"


def _history(run_dir: Path, as_of: date) -> pl.DataFrame:
    frames = (pl.scan_parquet(run_dir / f"{name}.parquet") for name in ("customers", "orders", "order_items"))
    return customer_ltv(*frames, as_of).collect(engine="streaming").sort("customer_id")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("generated")
    generate(folder, customers=400, seed=11, dirty_rows=2, chunk_customers=150)
    return folder


def _assert_counts_match(summary_files: dict[str, dict[str, object]], expected: dict[str, object]) -> None:
    for name, counts in expected["files"].items():  # type: ignore[attr-defined]
        got = {k: summary_files[name][k] for k in counts}
        assert got == counts, name


def test_generated_counts_equal_the_generators_expected_json(generated: Path, tmp_path: Path) -> None:
    summary = run(Settings(input=str(generated), staging=str(tmp_path), as_of=AS_OF, load=False))
    expected = json.loads((generated / "expected.json").read_text())
    _assert_counts_match(summary.files, expected)
    assert summary.output_rows == expected["output_rows"]
    assert summary.status == "succeeded"
    on_disk = json.loads((tmp_path / AS_OF.isoformat() / stage.SUMMARY).read_text())
    assert on_disk["files"] == summary.files
    assert on_disk["status"] == "succeeded"


def test_sample_data_counts_equal_its_expected_json(tmp_path: Path) -> None:
    expected = json.loads((SAMPLE / "expected.json").read_text())
    summary = run(Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, load=False))
    _assert_counts_match(summary.files, expected)
    assert summary.output_rows == expected["output_rows"]


def test_staged_files_have_the_contract_schemas(generated: Path, tmp_path: Path) -> None:
    run(Settings(input=str(generated), staging=str(tmp_path), as_of=AS_OF, load=False))
    run_dir = tmp_path / AS_OF.isoformat()
    assert pl.read_parquet_schema(run_dir / stage.OUTPUT) == OUTPUT_SCHEMA
    assert pl.read_parquet_schema(run_dir / stage.REJECTS) == REJECTS_SCHEMA
    assert not (run_dir / "_work").exists()
    assert not list(run_dir.glob(".*tmp-*"))
    output = pl.read_parquet(run_dir / stage.OUTPUT)
    assert output["customer_id"].is_unique().all()
    # Customers with orders get predictions (the generated data has plenty of repeat buyers).
    with_orders = output.filter(pl.col("orders_count") > 0)
    assert with_orders.select(pl.col(c).null_count() for c in PREDICTIVE_COLUMNS).row(0) == (0, 0, 0)
    assert (
        output.filter(pl.col("orders_count") == 0).select(PREDICTIVE_COLUMNS).null_count().row(0)
        == (output.filter(pl.col("orders_count") == 0).height,) * 3
    )


@pytest.mark.parametrize("buckets", [0, 8])
def test_pipeline_equals_the_oracle_on_generated_data(generated: Path, tmp_path: Path, buckets: int) -> None:
    extracted = extract(str(generated), tmp_path, AS_OF, buckets=buckets)
    oracle = reference_run(generated, AS_OF)
    assert_frame_equal(_history(tmp_path, AS_OF), oracle.output)
    rejects = pl.read_parquet(extracted.rejects).select("file", "row", "reason")
    assert_frame_equal(rejects, oracle.rejects)
    for name, counts in extracted.counts.items():
        assert {k: v for k, v in counts.as_dict().items() if k != "file"} == oracle.counts[name]


@pytest.mark.parametrize("customer_buckets", [1, 8])
def test_key_hash_buckets_stage_the_same_rows_rejects_and_counts(
    generated: Path, tmp_path: Path, customer_buckets: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Orders and items resolved in 16 buckets, one at a time (and the customers in 8, their
    orders' customers found by the lookup exchange), stage what one bucket stages."""
    one = extract(str(generated), tmp_path / "one", AS_OF, buckets=1, customer_buckets=1)
    with caplog.at_level(logging.INFO, logger="fastclv.extract"):
        many = extract(
            str(generated), tmp_path / "many", AS_OF, buckets=16, customer_buckets=customer_buckets
        )
    exchanged = f"customers looked up across 16 x {customer_buckets} buckets" in caplog.text
    assert exchanged == (customer_buckets > 1)
    assert one.counts["orders"].rejected_by_reason["unknown_customer"] > 0  # the lookup has misses
    for name, path in one.valid.items():
        whole, bucketed = pl.read_parquet(path), pl.read_parquet(many.valid[name])
        assert whole["row"].is_sorted()  # one bucket stages in row order
        if name == "customers":  # ... and so do several customer buckets
            assert_frame_equal(bucketed, whole)
        assert_frame_equal(bucketed.sort("row"), whole)
    assert_frame_equal(pl.read_parquet(many.rejects), pl.read_parquet(one.rejects))
    assert many.counts == one.counts
    # No bucket's work file is left behind (the per-file rejects go when the run ends).
    left = sorted(p.name for p in (tmp_path / "many" / "_work").iterdir())
    assert left == [f"{name}.rejects.parquet" for name in ("customers", "order_items", "orders")]


def test_rfm_equals_lifetimes_summary_data_from_transaction_data(generated: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        # lifetimes 0.11 sets a pandas option that pandas 3 deprecates; it only warns.
        warnings.simplefilter("ignore")
        from lifetimes.utils import summary_data_from_transaction_data

    extract(str(generated), tmp_path, AS_OF)
    ours = _history(tmp_path, AS_OF).filter(pl.col("orders_count") > 0)
    # The transactions, one per counted order with its value, built straight from the
    # staged inputs (not from the transform): lifetimes does the RFM arithmetic itself.
    orders = pl.read_parquet(tmp_path / "orders.parquet").filter(
        (pl.col("status") == "completed") & (pl.col("order_ts").dt.date() <= AS_OF)
    )
    items = pl.read_parquet(tmp_path / "order_items.parquet").with_columns(
        amount=(pl.col("quantity") * pl.col("unit_price") - pl.col("discount")).cast(pl.Float64)
    )
    values = items.group_by("order_id").agg(pl.col("amount").sum())
    transactions = (
        orders.join(values, on="order_id", how="left")
        .with_columns(pl.col("amount").fill_null(0.0), pl.col("order_ts").dt.replace_time_zone(None))
        .to_pandas()
    )
    summary = summary_data_from_transaction_data(
        transactions,
        "customer_id",
        "order_ts",
        monetary_value_col="amount",
        observation_period_end=AS_OF.isoformat(),
        freq="D",
    )
    theirs = pl.from_pandas(summary.reset_index()).sort("customer_id")
    assert ours["customer_id"].to_list() == theirs["customer_id"].to_list()
    for mine, their in (("frequency", "frequency"), ("recency_days", "recency"), ("t_days", "T")):
        assert ours[mine].cast(pl.Float64).to_list() == theirs[their].to_list(), mine
    # lifetimes sums float amounts; we divide exact cents once: equal to the last few ulps.
    diff = (ours["monetary_value"] - theirs["monetary_value"]).abs().max()
    assert diff is not None
    assert diff <= 1e-9


# --- invariants on arbitrary small inputs ------------------------------------------------

IDS = st.sampled_from(["c1", "c2", "007", "7", " c1", ""])
ORDER_IDS = st.sampled_from(["o1", "o2", "o3", "O1", ""])
DATES = st.sampled_from(["2024-01-01", "2024-02-30", "2023-12-31", "", "2024-1-1"])
TIMESTAMPS = st.sampled_from(
    [
        "2024-01-10",
        "2024-01-31T23:59:59.999999",
        "2024-02-01T00:30+01:00",
        "2024-02-01T00:00Z",
        "2024-01-15 12:00",
        "2024-01-15T25:00",
        "",
    ]
)
STATUSES = st.sampled_from(["completed", "COMPLETED", "pending", "cancelled", "refunded", "done"])
QTY = st.sampled_from(["1", "2", "0", "x", "01", ""])
MONEY = st.sampled_from(["1", "2.5", "10.00", "0", "1.234", "", "-1", "0.01"])


def _csv(header: str, rows: list[tuple[str, ...]]) -> str:
    return header + "".join(",".join(row) + "\n" for row in rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    customers=st.lists(st.tuples(IDS, DATES, st.sampled_from(["FR", "", "DE"])), max_size=6),
    orders=st.lists(st.tuples(ORDER_IDS, IDS, TIMESTAMPS, STATUSES), max_size=8),
    items=st.lists(st.tuples(ORDER_IDS, st.just("s"), QTY, MONEY, MONEY), max_size=10),
)
def test_invariants_and_oracle_parity_on_random_inputs(
    tmp_path_factory: pytest.TempPathFactory,
    customers: list[tuple[str, ...]],
    orders: list[tuple[str, ...]],
    items: list[tuple[str, ...]],
) -> None:
    folder = tmp_path_factory.mktemp("random")
    (folder / "customers.csv").write_text(_csv("customer_id,signup_date,country\n", customers))
    (folder / "orders.csv").write_text(_csv("order_id,customer_id,order_ts,status\n", orders))
    (folder / "order_items.csv").write_text(_csv("order_id,sku,quantity,unit_price,discount\n", items))
    as_of = date(2024, 1, 31)
    extracted = extract(str(folder), folder / "_run", as_of)
    output = _history(folder / "_run", as_of)
    for name, n_rows in (("customers", len(customers)), ("orders", len(orders)), ("order_items", len(items))):
        counts = extracted.counts[name]
        assert counts.read == n_rows == counts.valid + counts.rejected + counts.duplicates_dropped
    # One output row per valid customer.
    assert output.height == extracted.counts["customers"].valid
    assert output["customer_id"].is_unique().all()
    # Money is conserved: total revenue = the counted items' amounts, summed here from the
    # staged inputs with Python's Decimal.
    valid_orders = pl.read_parquet(folder / "_run" / "orders.parquet")
    counted = {
        order_id
        for order_id, status, ts in valid_orders.select("order_id", "status", "order_ts").iter_rows()
        if status == "completed" and ts.date() <= as_of
    }
    expected_total = sum(
        (
            Decimal(q) * price - discount
            for order_id, q, price, discount in pl.read_parquet(folder / "_run" / "order_items.parquet")
            .select("order_id", "quantity", "unit_price", "discount")
            .iter_rows()
            if order_id in counted
        ),
        Decimal(0),
    )
    assert sum(output["total_revenue"].to_list(), Decimal(0)) == expected_total
    # And everything equals the independent oracle.
    oracle = reference_run(folder, as_of)
    assert_frame_equal(output, oracle.output)
    assert_frame_equal(pl.read_parquet(extracted.rejects).select("file", "row", "reason"), oracle.rejects)


# --- with PostgreSQL ------------------------------------------------------------------------


def _table(pg_uri: str, schema: str, query: str) -> pl.DataFrame:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(pg_uri) as conn, conn.cursor() as cur:
        cur.execute(query.format(schema=schema))
        return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]


#: The output table as PostgreSQL holds it; numeric travels as text, then back to Decimal.
LOADED = "SELECT {columns} FROM {{schema}}.customer_ltv ORDER BY customer_id".format(
    columns=", ".join(
        f"{c}::text AS {c}" if c in ("total_revenue", "predicted_clv") else c for c in OUTPUT_SCHEMA
    )
)


def _loaded(pg_uri: str, schema: str) -> pl.DataFrame:
    return _table(pg_uri, schema, LOADED).cast(OUTPUT_SCHEMA)


def test_run_loads_the_output_and_records_the_run(
    generated: Path, tmp_path: Path, pg_uri: str, pg_schema: str
) -> None:
    settings = Settings(
        input=str(generated), staging=str(tmp_path), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema
    )
    summary = run(settings)
    assert summary.load is not None
    staged = pl.read_parquet(tmp_path / AS_OF.isoformat() / stage.OUTPUT).sort("customer_id")
    loaded = _loaded(pg_uri, pg_schema)
    assert_frame_equal(loaded, staged)  # every column, money exact
    runs = _table(
        pg_uri,
        pg_schema,
        "SELECT run_id, status, output_rows, counts::text AS counts FROM {schema}.customer_ltv_runs",
    )
    assert runs.select("run_id", "status", "output_rows").rows() == [
        (summary.run_id, "succeeded", staged.height)
    ]
    assert json.loads(runs["counts"][0]) == summary.files
    # The same date again: the same table, one more ledger row.
    run(settings)
    again = _loaded(pg_uri, pg_schema)
    assert_frame_equal(again, loaded)
    assert _table(pg_uri, pg_schema, "SELECT count(*) AS n FROM {schema}.customer_ltv_runs").item() == 2


def test_failed_run_leaves_the_table_as_it_was_and_is_recorded(
    generated: Path, tmp_path: Path, pg_uri: str, pg_schema: str
) -> None:
    settings = Settings(
        input=str(generated), staging=str(tmp_path / "s"), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema
    )
    run(settings)
    before = _loaded(pg_uri, pg_schema)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("customers.csv", "orders.csv"):
        (broken / name).write_bytes((generated / name).read_bytes())
    (broken / "order_items.csv").write_text("order_id,sku,quantity\no1,s,1\n")  # no unit_price
    from fastclv.errors import InputError

    with pytest.raises(InputError, match=r"order_items\.csv.*unit_price"):
        run(settings.replace(input=str(broken)))
    after = _loaded(pg_uri, pg_schema)
    assert_frame_equal(after, before)
    runs = _table(
        pg_uri, pg_schema, "SELECT status, error FROM {schema}.customer_ltv_runs ORDER BY started_at"
    )
    assert runs["status"].to_list() == ["succeeded", "failed"]
    assert "unit_price" in runs["error"][1]


@pytest.mark.parametrize("shards", [1, 2])  # 2: the check is made per customer part, then reported
def test_a_total_beyond_numeric_18_2_is_a_clear_error_naming_the_customer(
    tmp_path: Path, shards: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "customers.csv").write_text(
        "customer_id,signup_date,country\nbig,2024-01-01,\nsmall,2024-01-01,\n"
    )
    (folder / "orders.csv").write_text("order_id,customer_id,order_ts,status\no1,big,2024-01-02,completed\n")
    # 2 * 9999999999999999.99 fits each value's rules but not numeric(18,2).
    (folder / "order_items.csv").write_text(
        "order_id,sku,quantity,unit_price,discount\no1,s,2,9999999999999999.99,\n"
    )
    summary = _fails_terminally(
        r"customer\(s\) big exceeds numeric\(18,2\)", folder, tmp_path, date(2024, 1, 31), shards=shards
    )
    assert "big" in summary["error"]


def _fails_terminally(
    match: str, folder: Path, tmp_path: Path, as_of: date, **options: Any
) -> dict[str, Any]:
    """Run (no load) expecting a TerminalError that matches ``match``; the failed run's summary."""
    from fastclv.errors import TerminalError

    with pytest.raises(TerminalError, match=match):
        run(Settings(input=str(folder), staging=str(tmp_path / "s"), as_of=as_of, load=False, **options))
    summary: dict[str, Any] = json.loads((tmp_path / "s" / as_of.isoformat() / stage.SUMMARY).read_text())
    assert summary["status"] == "failed"
    return summary


@pytest.mark.parametrize("shards", [1, 2])  # 2: each part is scored in a worker process
def test_a_predicted_clv_beyond_numeric_18_2_is_a_clear_error_naming_customers(
    tmp_path: Path, shards: int
) -> None:
    """A margin of 10^16 makes every positive CLV too large for numeric(18,2): a clear error."""
    names = r"predicted CLV of customer\(s\) ([^ ,]+, ){4}[^ ,]+ exceeds numeric\(18,2\)"
    summary = _fails_terminally(names, SAMPLE, tmp_path, date(2025, 12, 31), margin=1e16, shards=shards)
    assert "predicted CLV" in summary["error"]


def test_a_run_whose_staging_cannot_be_made_is_still_recorded_as_failed(
    tmp_path: Path, pg_uri: str, pg_schema: str
) -> None:
    from fastclv.errors import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = Settings(
        input=str(SAMPLE), staging=str(blocker), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema, run_id="r-1"
    )
    with pytest.raises(ConfigError, match="not a folder"):
        run(settings)
    runs = _table(pg_uri, pg_schema, "SELECT run_id, as_of, status, error FROM {schema}.customer_ltv_runs")
    assert runs.select("run_id", "as_of", "status").rows() == [("r-1", AS_OF, "failed")]
    assert "not a folder" in runs["error"][0]


def test_an_export_without_customers_runs_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "customers.csv").write_text("customer_id,signup_date,country\n")
    (folder / "orders.csv").write_text("order_id,customer_id,order_ts,status\n")
    (folder / "order_items.csv").write_text("order_id,sku,quantity,unit_price,discount\n")
    with caplog.at_level(logging.WARNING, logger="fastclv"):
        summary = run(Settings(input=str(folder), staging=str(tmp_path / "s"), as_of=AS_OF, load=False))
    assert summary.status == "succeeded"
    assert summary.output_rows == 0
    assert "customers.csv has no valid customer (0 read)" in caplog.text


def test_a_failed_rerun_leaves_no_stale_output_behind(generated: Path, tmp_path: Path) -> None:
    settings = Settings(input=str(generated), staging=str(tmp_path / "s"), as_of=AS_OF, load=False)
    run(settings)
    run_dir = tmp_path / "s" / AS_OF.isoformat()
    assert (run_dir / stage.OUTPUT).exists()
    assert (run_dir / stage.HOLDOUT).exists()
    from fastclv.errors import InputError

    with pytest.raises(InputError):
        run(settings.replace(input=str(tmp_path / "nowhere")))
    assert not (run_dir / stage.OUTPUT).exists()
    assert not (run_dir / stage.REJECTS).exists()
    assert not (run_dir / stage.HOLDOUT).exists()
    assert json.loads((run_dir / stage.SUMMARY).read_text())["status"] == "failed"


def test_a_rerun_without_the_backtest_leaves_no_holdout_file_behind(generated: Path, tmp_path: Path) -> None:
    settings = Settings(input=str(generated), staging=str(tmp_path), as_of=AS_OF, load=False)
    run(settings)
    assert (tmp_path / AS_OF.isoformat() / stage.HOLDOUT).exists()
    summary = run(settings.replace(holdout_days=0))
    assert summary.status == "succeeded"
    assert not (tmp_path / AS_OF.isoformat() / stage.HOLDOUT).exists()


def test_a_database_that_is_down_at_the_start_still_ends_in_a_failed_summary(
    generated: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        input=str(generated),
        staging=str(tmp_path),
        as_of=AS_OF,
        pg_uri=f"postgresql://fastclv:s3cret-pw@127.0.0.1:{port}/fastclv?connect_timeout=2",
    )
    from fastclv.errors import TransientError

    with pytest.raises(TransientError):
        run(settings)
    summary = json.loads((tmp_path / AS_OF.isoformat() / stage.SUMMARY).read_text())
    assert summary["status"] == "failed"
    assert summary["transient"] is True
    assert "s3cret-pw" not in json.dumps(summary)


def _lookup_table(ids: list[str]) -> pl.DataFrame:
    frame = pl.DataFrame({"customer_id": ids, "_parent": [10 * (i + 1) for i in range(len(ids))]})
    return frame.with_columns(pl.col("customer_id").hash().alias("_h")).sort("_h")


def test_the_customer_lookup_finds_exactly_the_staged_ids_by_hash_search_and_by_text_join() -> None:
    from fastclv.extract import _answers

    ids = [f"c{i}" for i in range(200)]
    table = _lookup_table(ids)
    asked = ["c5", "nope", "c199", "c0", "c5 ", "C5", "c1000", "", "c42"]
    questions = pl.DataFrame({"row": list(range(1, len(asked) + 1)), "customer_id": asked})
    # c5 -> row 60, c199 -> 2000, c0 -> 10, c42 -> 430 (the table's _parent is 10 * (index + 1)).
    want = pl.DataFrame({"row": [1, 3, 4, 9], "_parent": [60, 2000, 10, 430]})
    assert_frame_equal(_answers(table, questions, unique=True).sort("row"), want)
    assert_frame_equal(_answers(table, questions, unique=False).sort("row"), want)
    # Two staged ids sharing a hash: the text join tells them apart.
    clash = table.with_columns(
        pl.when(pl.col("customer_id") == "c6").then(table.filter(pl.col("customer_id") == "c5")["_h"][0])
        .otherwise(pl.col("_h")).alias("_h")
    ).sort("_h")  # fmt: skip
    asked_clash = pl.DataFrame({"row": [1, 2], "customer_id": ["c6", "c5"]})
    assert_frame_equal(
        _answers(clash, asked_clash, unique=False).sort("row"),
        pl.DataFrame({"row": [1, 2], "_parent": [70, 60]}),
    )
    # No staged customer in the bucket, or no question: no answer.
    assert _answers(table.clear(), questions, unique=True).height == 0
    assert _answers(table, questions.clear(), unique=True).height == 0
