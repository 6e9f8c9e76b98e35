"""The sharded plan (fastclv/shard.py): byte ranges, buckets and worker processes change nothing.

Its tasks run here the way any executor runs them (one call each, results passed as JSON);
``run_local`` runs them in real worker processes. The staged inputs, rejects and counts must be
exactly those of the unsharded extract, and the hostile-bytes differential must agree with the
independent oracle ``tests/reference.py`` whatever the cuts.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import reference_run
from test_native import AS_OF, csv_file

from fastclv import shard, stage
from fastclv.config import Settings
from fastclv.errors import InputError
from fastclv.extract import extract
from fastclv.pipeline import staging_area, transform_stage, verify_stage
from fastclv.testing import generate

SAMPLE = Path(__file__).parent.parent / "data" / "sample"
STAGED = ["customers.parquet", "orders.parquet", "order_items.parquet", "rejects.parquet"]


def sharded_inline(
    settings: Settings, *, range_bytes: int, buckets: int = 0, customer_buckets: int = 0
) -> tuple[dict[str, dict[str, object]], list[shard.RangeScan]]:
    """Every task of the plan in this process, each result through JSON (as XCom passes it)."""

    def through_json(data: object) -> object:
        return json.loads(json.dumps(data))

    with staging_area(settings) as area:
        area.prepare()
    the_plan = shard.Plan.from_dict(
        through_json(
            shard.plan(
                settings, 2, range_bytes=range_bytes, buckets=buckets, customer_buckets=customer_buckets
            ).as_dict()
        )
    )  # type: ignore[arg-type]
    scans = [
        shard.RangeScan.from_dict(through_json(shard.scan(settings, the_plan, file, k).as_dict()))  # type: ignore[arg-type]
        for file, k in the_plan.scans()
    ]
    scans = shard.stitch(settings, the_plan, scans)
    resolved = [
        shard.resolve(settings, the_plan, scans, "customers", j) for j in range(the_plan.customer_buckets)
    ]
    if the_plan.customer_buckets > 1:  # the orders' customer lookup, as the DAG's tasks run it
        planned, stitched = through_json(the_plan.as_dict()), through_json([s.as_dict() for s in scans])
        for k in range(the_plan.buckets):
            assert shard.route_task(settings, planned, stitched, k) == {"bucket": k}  # type: ignore[arg-type]
        for j in range(the_plan.customer_buckets):
            assert shard.lookup_task(settings, planned, j) == {"bucket": j}  # type: ignore[arg-type]
    for file in ("orders", "order_items"):
        resolved += [shard.resolve(settings, the_plan, scans, file, k) for k in range(the_plan.buckets)]
    return shard.stage_inputs(settings, the_plan, scans, resolved), scans


def unsharded(
    input_dir: Path, staging: Path, as_of: date, buckets: int, customer_buckets: int = 0
) -> dict[str, dict[str, object]]:
    run_dir = staging / as_of.isoformat()
    done = extract(str(input_dir), run_dir, as_of, buckets=buckets, customer_buckets=customer_buckets)
    return {n: c.as_dict() for n, c in done.counts.items()}


def assert_same_staged(left: Path, right: Path) -> None:
    for name in STAGED:
        assert_frame_equal(pl.read_parquet(left / name), pl.read_parquet(right / name), check_exact=True)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customers=csv_file("customers"),
    orders=csv_file("orders"),
    items=csv_file("order_items"),
    range_bytes=st.sampled_from([1, 5, 17, 64]),
    buckets=st.sampled_from([1, 2, 8]),
    customer_buckets=st.sampled_from([1, 2, 4]),
)
def test_sharded_tasks_agree_with_the_oracle_on_hostile_bytes(
    customers: bytes, orders: bytes, items: bytes, range_bytes: int, buckets: int, customer_buckets: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for file_name, data in (
            ("customers.csv", customers),
            ("orders.csv", orders),
            ("order_items.csv", items),
        ):
            (folder / file_name).write_bytes(data)
        expected = reference_run(folder, AS_OF)
        settings_ = Settings(input=str(folder), staging=str(Path(tmp) / "s"), as_of=AS_OF, load=False)
        counts, _ = sharded_inline(
            settings_, range_bytes=range_bytes, buckets=buckets, customer_buckets=customer_buckets
        )
        run_dir = Path(tmp) / "s" / AS_OF.isoformat()
        rejects = pl.read_parquet(run_dir / stage.REJECTS).select("file", "row", "reason").sort("file", "row")
        assert_frame_equal(rejects, expected.rejects)
        assert {n: {k: v for k, v in c.items() if k != "file"} for n, c in counts.items()} == expected.counts
        # ... and byte for byte what the unsharded extract stages with the same buckets.
        assert unsharded(folder, Path(tmp) / "u", AS_OF, buckets, customer_buckets) == counts
        assert_same_staged(run_dir, Path(tmp) / "u" / AS_OF.isoformat())
        assert not (run_dir / shard.SHARDS).exists()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("generated")
    generate(folder, customers=300, seed=5, dirty_rows=3, chunk_customers=100)
    return folder


@pytest.mark.parametrize(  # shards 1 is the unsharded run itself
    ("workers", "customer_buckets"), [(2, 1), (3, 4), (8, 2)]
)
def test_worker_processes_stage_and_fit_exactly_the_unsharded_run(
    generated: Path, tmp_path: Path, workers: int, customer_buckets: int
) -> None:
    as_of = date(2025, 12, 31)
    expected = unsharded(generated, tmp_path / "u", as_of, 4, customer_buckets)
    whole = Settings(input=str(generated), staging=str(tmp_path / "u"), as_of=as_of, load=False)
    whole_done = transform_stage(whole)
    whole_model = whole_done.model
    settings_ = Settings(
        input=str(generated), staging=str(tmp_path / "s"), as_of=as_of, load=False, shards=workers
    )
    with staging_area(settings_) as area:
        area.prepare()
        counts = shard.run_local(
            settings_,
            workers=workers,
            range_bytes=4096,
            buckets=4,
            customer_buckets=customer_buckets,
            area=area,
        )
        assert counts == expected
        assert all(int(c["rejected"]) > 0 for c in counts.values())  # dirty rows in every file
        assert sum(int(c["duplicates_dropped"]) for c in counts.values()) > 0
        assert_same_staged(tmp_path / "s" / as_of.isoformat(), tmp_path / "u" / as_of.isoformat())
        # The transform by customer part: the same output file, row for row, and the same fit.
        sharded_done = transform_stage(settings_, area=area)
        sharded_model = sharded_done.model
        # The cross-check by customer part, in worker processes: the whole check's figures.
        sharded_checked = verify_stage(settings_, counts, sharded_model, area=area)
    whole_checked = verify_stage(whole, expected, whole_model)
    assert sharded_checked["ok"]
    assert sharded_checked["parts"] == workers
    assert whole_checked["parts"] == 1
    assert sharded_checked["checks"] == whole_checked["checks"]
    for fit in ("bgnbd", "gamma_gamma"):
        params, want = sharded_model[fit]["params"], whole_model[fit]["params"]  # type: ignore[index]
        assert want is not None, f"the unsharded {fit} fit is degenerate: the comparison would be empty"
        assert params.keys() == want.keys()
        for name, value in want.items():
            assert params[name] == pytest.approx(value, rel=1e-9, abs=0), (fit, name)
        for figure in ("n_customers", "n_distinct", "log_likelihood"):
            assert sharded_model[fit][figure] == whole_model[fit][figure]  # type: ignore[index]
    run = tmp_path / "s" / as_of.isoformat()
    for name in (stage.OUTPUT, "holdout.parquet"):
        assert_frame_equal(
            pl.read_parquet(run / name),
            pl.read_parquet(tmp_path / "u" / as_of.isoformat() / name),
            check_exact=True,
        )
    # The holdout backtest by part: its fit on the merged calibration histograms, the same figures.
    assert whole_done.holdout is not None
    assert whole_done.holdout["status"] == "ran"
    assert sharded_done.holdout == whole_done.holdout
    assert not (run / shard.SHARDS).exists()
    assert not (run / shard.PARTS).exists()


def test_a_quoted_field_over_lines_across_a_cut_is_scanned_again_from_its_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [f'c{i},2024-01-01,"line one\nline two\nline three {i}"' for i in range(40)]
    # A line inside a field that looks like a whole customer row, so a wrong guess frames it.
    rows.insert(20, 'c99,2024-01-02,"x\nc98,2024-01-03,FR\ny"')
    (folder / "customers.csv").write_text("customer_id,signup_date,country\n" + "\n".join(rows) + "\n")
    (folder / "orders.csv").write_text("order_id,customer_id,order_ts,status\no1,c98,2024-01-05,completed\n")
    (folder / "order_items.csv").write_text("order_id,sku,quantity,unit_price,discount\no1,s,1,2.50,\n")
    settings_ = Settings(input=str(folder), staging=str(tmp_path / "s"), as_of=AS_OF, load=False)
    with caplog.at_level(logging.INFO, logger="fastclv.shard"):
        counts, scans = sharded_inline(settings_, range_bytes=23)
    assert "scanned again" in caplog.text
    assert any(not s.align and s.index > 0 for s in scans)  # the rescans began at a known record start
    assert counts["customers"]["valid"] == 41
    assert counts["orders"]["rejected_by_reason"]["unknown_customer"] == 1  # c98 is no customer
    assert unsharded(folder, tmp_path / "u", AS_OF, 0) == counts
    assert_same_staged(tmp_path / "s" / AS_OF.isoformat(), tmp_path / "u" / AS_OF.isoformat())


def test_a_missing_column_fails_the_plan_before_any_row_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("customers.csv", "orders.csv", "order_items.csv"):
        (folder / name).write_bytes((SAMPLE / name).read_bytes())
    (folder / "orders.csv").write_text("order_id,customer_id,status\no1,c1,completed\n")
    settings_ = Settings(input=str(folder), staging=str(tmp_path / "s"), as_of=AS_OF, load=False)
    with pytest.raises(InputError, match=r"orders\.csv: required column 'order_ts' is missing"):
        shard.plan(settings_, 3)


def test_run_with_shards_loads_exactly_the_rows_of_the_unsharded_run(
    tmp_path: Path, pg_uri: str, pg_schema: str
) -> None:
    loaded = {}
    for shards in (1, 3):
        done = subprocess.run(
            [sys.executable, "-m", "fastclv.cli", "run", "--input", str(SAMPLE), "--staging",
             str(tmp_path / str(shards)), "--as-of", "2025-12-31", "--pg-uri", pg_uri, "--schema",
             f"{pg_schema}_{shards}", "--shards", str(shards)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / str(shards) / "2025-12-31" / "summary.json").read_text())
        # Sharded, the load is by part: N COPYs into the run's staging table, then one swap.
        assert summary["load"].get("parts") == (shards if shards > 1 else None)
        with psycopg.connect(pg_uri) as conn:
            loaded[shards] = conn.execute(
                f"SELECT * FROM {pg_schema}_{shards}.customer_ltv ORDER BY customer_id"
            ).fetchall()
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (f"{pg_schema}_{shards}",)
            ).fetchall()
            assert tables == [("customer_ltv",), ("customer_ltv_p20251231",), ("customer_ltv_runs",)]
            conn.execute(f"DROP SCHEMA {pg_schema}_{shards} CASCADE")
    assert len(loaded[1]) == json.loads((SAMPLE / "expected.json").read_text())["output_rows"]
    assert loaded[3] == loaded[1]


def test_a_retried_resolve_gives_its_result_again_once_its_inputs_are_freed(
    generated: Path, tmp_path: Path
) -> None:
    as_of = date(2025, 12, 31)
    settings_ = Settings(input=str(generated), staging=str(tmp_path / "s"), as_of=as_of, load=False)
    with staging_area(settings_) as area:
        area.prepare()
    the_plan = shard.plan(settings_, 2, buckets=2)
    scans = shard.stitch(
        settings_, the_plan, [shard.scan(settings_, the_plan, f, k) for f, k in the_plan.scans()]
    )
    work = tmp_path / "s" / as_of.isoformat() / shard.SHARDS
    assert list(work.glob("orders.r*.b1.arrow"))
    shard.resolve(settings_, the_plan, scans, "customers", 0)
    first = shard.resolve(settings_, the_plan, scans, "orders", 1)
    assert first.valid > 0
    assert not list(work.glob("orders.r*.b1.arrow"))  # resolved: the scanned rows are freed
    assert shard.resolve(settings_, the_plan, scans, "orders", 1) == first  # a retry does nothing again
    # A new plan of the same date never takes the earlier plan's results for its own.
    assert shard.plan(settings_, 2, buckets=2).id != the_plan.id


def test_a_customer_part_made_in_sub_parts_is_the_part_made_whole(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastclv import history as history_module
    from fastclv import shard_transform

    settings_ = Settings(
        input=str(generated), staging=str(tmp_path / "s"), as_of=AS_OF, load=False, shards=2, holdout_days=60
    )
    with staging_area(settings_) as area:
        area.prepare()
    the_plan = shard.plan(settings_, 2, range_bytes=4096, buckets=4)
    scans = shard.stitch(
        settings_, the_plan, [shard.scan(settings_, the_plan, f, k) for f, k in the_plan.scans()]
    )
    resolved = [shard.resolve(settings_, the_plan, scans, "customers", 0)]
    resolved += [shard.resolve(settings_, the_plan, scans, "orders", k) for k in range(4)]
    resolved += [shard.resolve_items(settings_, the_plan, scans, k) for k in range(4)]
    shard.stage_inputs(settings_, the_plan, scans, resolved)
    run = tmp_path / "s" / AS_OF.isoformat()
    kinds = ("history", "bg", "gg", "calibration", "calibration_bg")
    names = shard_transform._part_names(1)

    def made() -> tuple[dict[str, object], dict[str, pl.DataFrame]]:
        done = shard_transform.history(settings_, the_plan, scans, 1)
        return done, {kind: pl.read_parquet(run / names[kind]) for kind in kinds}

    whole, whole_files = made()
    assert shard_transform.sub_parts(shard_transform.customer_rows(scans), 2) == 1
    monkeypatch.setattr(history_module, "PART_CUSTOMERS", 7)  # part 1 (about 150 customers) in 22
    assert shard_transform.sub_parts(shard_transform.customer_rows(scans), 2) > 10
    cut, cut_files = made()
    assert cut == whole
    assert whole["holdout"] is not None
    assert int(whole["customers"]) > 100  # type: ignore[call-overload]
    for kind in kinds:
        # The histograms are sets of distinct rows with counts: their row order is the group-by's.
        by = [] if kind in ("history", "calibration") else cut_files[kind].columns
        assert_frame_equal(cut_files[kind].sort(by), whole_files[kind].sort(by), check_exact=True)
    assert not list((run / shard.PARTS).glob("*.s*.parquet"))  # the sub-parts' files are gone


def test_history_tasks_read_the_customer_buckets_beside_the_extract_task_that_stages_them(
    generated: Path, tmp_path: Path
) -> None:
    """The DAG runs the history tasks beside the extract task (which stages customers.parquet and
    removes _shards/): with several customer buckets they read the buckets' parts, before or after."""
    from fastclv import shard_transform

    settings_ = Settings(input=str(generated), staging=str(tmp_path / "s"), as_of=AS_OF, load=False, shards=2)
    with staging_area(settings_) as area:
        area.prepare()
    the_plan = shard.plan(settings_, 2, range_bytes=4096, buckets=2, customer_buckets=4)
    scans = shard.stitch(
        settings_, the_plan, [shard.scan(settings_, the_plan, f, k) for f, k in the_plan.scans()]
    )
    resolved = [shard.resolve(settings_, the_plan, scans, "customers", j) for j in range(4)]
    for k in range(2):
        shard.route(settings_, the_plan, scans, k)
    for j in range(4):
        shard.lookup(settings_, the_plan, j)
    resolved += [shard.resolve(settings_, the_plan, scans, "orders", k) for k in range(2)]
    resolved += [shard.resolve_items(settings_, the_plan, scans, k) for k in range(2)]
    run = tmp_path / "s" / AS_OF.isoformat()
    assert not (run / "customers.parquet").exists()  # not staged yet: the extract task does it
    before = [shard_transform.history(settings_, the_plan, scans, j) for j in range(2)]
    shard.stage_inputs(settings_, the_plan, scans, resolved)
    assert not (run / shard.SHARDS).exists()
    assert [shard_transform.history(settings_, the_plan, scans, j) for j in range(2)] == before
    staged = pl.read_parquet(run / "customers.parquet")
    assert sum(int(h["customers"]) for h in before) == staged.height  # type: ignore[call-overload]
    assert staged["row"].is_sorted()
