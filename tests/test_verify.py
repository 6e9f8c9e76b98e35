"""The DuckDB cross-check: passes on honest runs, catches every kind of corrupted output."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal
from psycopg import sql

from fastclv import stage
from fastclv.config import Settings
from fastclv.errors import InputError, TerminalError, VerificationError
from fastclv.pipeline import run, transform_stage
from fastclv.testing import generate
from fastclv.verify import REPORT_JSON, REPORT_MD, verify_run

AS_OF = date(2025, 12, 31)
SAMPLE = Path(__file__).parent.parent / "data" / "sample"
FASTCLV = [sys.executable, "-m", "fastclv.cli"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verify-input")
    generate(folder, customers=300, seed=23, dirty_rows=2)
    return folder


@pytest.fixture(scope="module")
def staged(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (verified by the pipeline itself); tests corrupt copies of it."""
    staging = tmp_path_factory.mktemp("verify-staging")
    summary = run(Settings(input=str(generated), staging=str(staging), as_of=AS_OF, load=False))
    assert summary.status == "succeeded"
    return staging / AS_OF.isoformat()


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / AS_OF.isoformat()
    shutil.copytree(run_dir, target)
    return target


def _summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / stage.SUMMARY).read_text())
    return data


def _rewrite(run_dir: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    path = run_dir / stage.OUTPUT
    frame = pl.read_parquet(path)
    stage.write_parquet(change(frame).cast(frame.schema), path)


def _first_buyer(run_dir: Path) -> str:
    output = pl.read_parquet(run_dir / stage.OUTPUT)
    return str(output.filter(pl.col("orders_count") > 1).sort("customer_id")["customer_id"][0])


def _verify(run_dir: Path, counts: dict[str, Any] | None = None) -> None:
    summary = _summary(run_dir)
    verify_run(run_dir, AS_OF, counts if counts is not None else summary["files"], summary["model"])


def _assert_caught(run_dir: Path, check: str, customer: str | None) -> str:
    """The error names the check, the customer and the report; the report shows the row."""
    with pytest.raises(VerificationError) as caught:
        _verify(run_dir)
    message = str(caught.value)
    report = run_dir / REPORT_MD
    assert check in message
    assert str(report) in message
    assert report.is_file()
    assert (run_dir / REPORT_JSON).is_file()
    text = report.read_text()
    assert f"## {check}" in text
    if customer is not None:
        assert f"first customer {customer!r}" in message
        assert f"| {customer} |" in text
    return text


def test_a_generated_run_with_injected_faults_passes_the_cross_check(staged: Path) -> None:
    verified = _summary(staged)["verify"]
    assert verified["ok"] is True
    assert verified["mismatches"] == 0
    assert verified["report"] is None
    checks = verified["checks"]
    assert all(c["ok"] and c["mismatches"] == 0 for c in checks.values())
    # Every historical and predictive column was compared on every customer with orders.
    assert {"column:total_revenue", "column:monetary_value", "column:predicted_clv"} <= set(checks)
    assert checks["column:p_alive"]["compared"] > 0
    assert not (staged / REPORT_MD).exists()


def test_the_sample_data_passes_the_cross_check(tmp_path: Path) -> None:
    summary = run(Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, load=False))
    assert summary.verify is not None
    checks = summary.verify["checks"]
    assert isinstance(checks, dict)
    # Every output row was compared, on the historical and the predictive columns.
    assert checks["column:total_revenue"]["compared"] == summary.output_rows
    assert checks["column:p_alive"]["compared"] > 0


def test_one_cent_more_revenue_for_one_customer_is_caught(staged: Path, tmp_path: Path) -> None:
    run_dir = _copy(staged, tmp_path)
    victim = _first_buyer(run_dir)
    before = pl.read_parquet(run_dir / stage.OUTPUT).filter(pl.col("customer_id") == victim)
    _rewrite(
        run_dir,
        lambda f: f.with_columns(
            pl.when(pl.col("customer_id") == victim)
            .then(pl.col("total_revenue") + Decimal("0.01"))
            .otherwise(pl.col("total_revenue"))
            .alias("total_revenue")
        ),
    )
    text = _assert_caught(run_dir, "column:total_revenue", victim)
    staged_value = before["total_revenue"][0]
    # Side by side: the corrupted staged value next to the recomputed (true) one.
    assert f"| {victim} | total_revenue | {staged_value + Decimal('0.01')} | {staged_value} |" in text
    assert "## revenue" in text  # the grand total no longer matches the items either


def test_a_dropped_output_row_is_caught(staged: Path, tmp_path: Path) -> None:
    run_dir = _copy(staged, tmp_path)
    victim = _first_buyer(run_dir)
    _rewrite(run_dir, lambda f: f.filter(pl.col("customer_id") != victim))
    text = _assert_caught(run_dir, "rows: one per valid customer", victim)
    assert f"| {victim} | row | missing | present |" in text


@pytest.mark.parametrize(
    ("column", "factor"),
    [("avg_order_value", 1 + 1e-8), ("p_alive", 1 + 1e-6)],
    ids=["history-double-1e-8", "predictive-double-1e-6"],
)
def test_a_double_perturbed_beyond_tolerance_is_caught(
    staged: Path, tmp_path: Path, column: str, factor: float
) -> None:
    run_dir = _copy(staged, tmp_path)
    victim = _first_buyer(run_dir)
    _rewrite(
        run_dir,
        lambda f: f.with_columns(
            pl.when(pl.col("customer_id") == victim)
            .then(pl.col(column) * factor)
            .otherwise(pl.col(column))
            .alias(column)
        ),
    )
    _assert_caught(run_dir, f"column:{column}", victim)
    failing = json.loads((run_dir / REPORT_JSON).read_text())["differences"]
    assert list(failing) == [f"column:{column}"]  # nothing else disagrees


def test_a_perturbation_within_tolerance_passes(staged: Path, tmp_path: Path) -> None:
    run_dir = _copy(staged, tmp_path)
    _rewrite(run_dir, lambda f: f.with_columns(pl.col("avg_order_value") * (1 + 1e-12)))
    _verify(run_dir)


@pytest.mark.parametrize(
    ("file", "key", "change"),
    [
        ("orders", "read", 1),
        ("order_items", "after_as_of", -1),
        ("customers", "rejected_by_reason", 1),
    ],
)
def test_a_broken_count_invariant_is_caught(
    staged: Path, tmp_path: Path, file: str, key: str, change: int
) -> None:
    run_dir = _copy(staged, tmp_path)
    counts = copy.deepcopy(_summary(run_dir)["files"])
    if key == "rejected_by_reason":
        reasons = counts[file][key]
        first = sorted(reasons)[0]
        reasons[first] += change  # now disagrees with rejects.parquet (and with "rejected")
    else:
        counts[file][key] += change
    with pytest.raises(VerificationError, match=rf"ledger:{file}.*verify_report\.md"):
        _verify(run_dir, counts)
    report = json.loads((run_dir / REPORT_JSON).read_text())
    assert list(report["differences"]) == [f"ledger:{file}"]
    assert report["checks"][f"ledger:{file}"]["mismatches"] >= 1


@pytest.mark.parametrize("target", ["no-staged-order", "another-order"])
def test_an_item_linked_to_the_wrong_order_is_caught_even_when_the_output_follows_the_link(
    staged: Path, tmp_path: Path, target: str
) -> None:
    # A bug in the extract's links, as the transform would then see it: one staged item's
    # order_row names no staged order (the row of a rejected duplicate, say), or another order.
    # The output is recomputed from the corrupted staging, so it agrees with the wrong link.
    run_dir = _copy(staged, tmp_path)
    items = pl.read_parquet(run_dir / "order_items.parquet")
    orders = pl.read_parquet(run_dir / "orders.parquet").filter(pl.col("status") == "completed")
    victim = items.join(orders.select(pl.col("row").alias("order_row")), on="order_row").row(0, named=True)
    if target == "no-staged-order":
        rejected = pl.read_parquet(run_dir / stage.REJECTS).filter(pl.col("file") == "orders.csv")
        wrong = int(rejected["row"][0])
    else:
        wrong = int(orders.filter(pl.col("order_id") != victim["order_id"])["row"][0])
    assert wrong not in set(orders.filter(pl.col("order_id") == victim["order_id"])["row"])
    relinked = items.with_columns(
        pl.when(pl.col("row") == victim["row"]).then(wrong).otherwise(pl.col("order_row")).alias("order_row")
    )
    stage.write_parquet(relinked.cast(items.schema), run_dir / "order_items.parquet")
    settings = Settings(input=str(tmp_path), staging=str(tmp_path), as_of=AS_OF, load=False)
    model = transform_stage(settings).model
    summary = _summary(run_dir)
    with pytest.raises(VerificationError, match=r"ledger:order_items"):
        verify_run(run_dir, AS_OF, summary["files"], model)
    report = json.loads((run_dir / REPORT_JSON).read_text())
    ledger = report["checks"]["ledger:order_items"]
    assert ledger["mismatches"] == 1
    staged_items = str(items.height)
    assert [d for d in report["differences"]["ledger:order_items"] if d["staged"] == staged_items] == [
        {
            "key": "order_items",
            "column": "rows of order_items.parquet = items linked to a staged order",
            "staged": staged_items,
            "recomputed": str(items.height - 1),
        }
    ]


def test_an_output_column_of_the_wrong_type_is_caught(staged: Path, tmp_path: Path) -> None:
    run_dir = _copy(staged, tmp_path)
    frame = pl.read_parquet(run_dir / stage.OUTPUT).with_columns(pl.col("orders_count").cast(pl.Int64))
    stage.write_parquet(frame, run_dir / stage.OUTPUT)
    text = _assert_caught(run_dir, "schema: customer_ltv.parquet columns and types", None)
    assert "| column 7 | name type | orders_count BIGINT | orders_count INTEGER |" in text


def test_predictive_columns_must_be_null_without_model_parameters(staged: Path, tmp_path: Path) -> None:
    run_dir = _copy(staged, tmp_path)
    model = copy.deepcopy(_summary(run_dir)["model"])
    model["bgnbd"]["params"] = None
    with pytest.raises(VerificationError, match="column:p_alive"):
        verify_run(run_dir, AS_OF, _summary(run_dir)["files"], model)


def test_purchase_days_before_1970_round_down_as_polars_does(tmp_path: Path) -> None:
    # Regression: DuckDB's // truncates towards zero, which put 1969-12-31 12:00 on 1970-01-01.
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "customers.csv").write_text("customer_id,signup_date,country\nA,1960-01-01,FR\nB,0001-01-01,\n")
    (folder / "orders.csv").write_text(
        "order_id,customer_id,order_ts,status\n"
        "o1,A,1969-12-31T12:00:00Z,completed\n"
        "o2,A,1970-01-01T00:00:00Z,completed\n"
        "o3,B,0001-01-01T00:00:00Z,completed\n"
        "o4,B,0001-01-02T10:00:00+11:00,completed\n"
    )
    (folder / "order_items.csv").write_text(
        "order_id,sku,quantity,unit_price,discount\no1,s,1,10,\no2,s,2,5.50,1\no3,s,1,1,\no4,s,1,2,\n"
    )
    summary = run(
        Settings(input=str(folder), staging=str(tmp_path / "s"), as_of=date(1970, 1, 1), load=False)
    )
    assert summary.verify is not None
    assert summary.verify["ok"] is True
    output = pl.read_parquet(tmp_path / "s" / "1970-01-01" / stage.OUTPUT).sort("customer_id")
    assert output.select("frequency", "recency_days", "t_days").rows() == [(1, 1, 1), (0, 0, 719162)]


# ------------------------------------------------------------------- through the pipeline


def _loaded(pg_uri: str, schema: str) -> pl.DataFrame:
    with psycopg.connect(pg_uri) as conn:
        cur = conn.execute(
            sql.SQL(
                "SELECT customer_id, total_revenue::text AS total FROM {}.customer_ltv ORDER BY 1"
            ).format(sql.Identifier(schema))
        )
        return pl.DataFrame(cur.fetchall(), schema=["customer_id", "total"], orient="row")


@pytest.mark.parametrize("shards", [1, 2])  # 2: the check in two worker processes, one verdict
def test_a_corrupted_transform_output_fails_the_run_and_nothing_is_loaded(
    generated: Path, tmp_path: Path, pg_uri: str, pg_schema: str, shards: int
) -> None:
    settings = Settings(
        input=str(generated), staging=str(tmp_path), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema,
        shards=shards,
    )  # fmt: skip
    run(settings)  # a good load of the date first
    before = _loaded(pg_uri, pg_schema)
    run_dir = tmp_path / AS_OF.isoformat()
    victim = _first_buyer(run_dir)

    def corrupt_before_verify(stage_name: str, event: str) -> None:
        # The transform has written customer_ltv.parquet; tamper with it as a buggy one would.
        if (stage_name, event) == ("verify", "start"):
            _rewrite(
                run_dir,
                lambda f: f.with_columns(
                    pl.when(pl.col("customer_id") == victim)
                    .then(pl.col("orders_count") + 1)
                    .otherwise(pl.col("orders_count"))
                    .alias("orders_count")
                ),
            )

    with pytest.raises(VerificationError, match=victim):
        run(settings, progress=corrupt_before_verify)
    summary = _summary(run_dir)
    assert summary["status"] == "failed"
    assert summary["error_type"] == "VerificationError"
    assert summary["load"] is None
    assert "load" not in summary["timings"]
    report = json.loads((run_dir / REPORT_JSON).read_text())
    assert list(report["differences"]) == ["column:orders_count"]
    assert [d["key"] for d in report["differences"]["column:orders_count"]] == [victim]
    assert_frame_equal(_loaded(pg_uri, pg_schema), before)
    with psycopg.connect(pg_uri) as conn:
        runs = conn.execute(
            sql.SQL("SELECT status, error FROM {}.customer_ltv_runs ORDER BY started_at").format(
                sql.Identifier(pg_schema)
            )
        ).fetchall()
    assert [r[0] for r in runs] == ["succeeded", "failed"]
    assert victim in runs[1][1]


# -------------------------------------------------------------------------- command line


def fastclv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FASTCLV, *args], capture_output=True, text=True, check=False, timeout=120)


def test_cli_verify_exit_codes(staged: Path, tmp_path: Path) -> None:
    ok = fastclv("verify", "--staging", str(staged.parent), "--as-of", AS_OF.isoformat())
    assert ok.returncode == 0, ok.stderr
    assert "column:predicted_clv" in ok.stdout
    assert "checks agree" in ok.stdout

    run_dir = _copy(staged, tmp_path)
    victim = _first_buyer(run_dir)
    _rewrite(run_dir, lambda f: f.filter(pl.col("customer_id") != victim))
    bad = fastclv("verify", "--staging", str(tmp_path), "--as-of", AS_OF.isoformat())
    assert bad.returncode == 3, bad.stderr
    assert victim in bad.stderr
    assert "Traceback" not in bad.stderr
    report = (run_dir / REPORT_MD).read_text()
    # In customer parts, one after the other: the same verdict and report (but its seconds).
    cut = fastclv("verify", "--staging", str(tmp_path), "--as-of", AS_OF.isoformat(), "--parts", "3")
    assert cut.returncode == 3, cut.stderr
    assert cut.stderr == bad.stderr
    seconds = re.compile(r"in \d+\.\d\d s")
    assert seconds.sub("", (run_dir / REPORT_MD).read_text()) == seconds.sub("", report)
    cut_ok = fastclv("verify", "--staging", str(staged.parent), "--as-of", AS_OF.isoformat(), "--parts", "3")
    assert cut_ok.returncode == 0, cut_ok.stderr
    assert "checks agree" in cut_ok.stdout
    assert "3 customer parts" in cut_ok.stdout
    assert fastclv("verify", "--staging", str(staged.parent), "--parts", "0").returncode == 2

    (run_dir / stage.SUMMARY).unlink()
    no_summary = fastclv("verify", "--staging", str(tmp_path), "--as-of", AS_OF.isoformat())
    assert no_summary.returncode == 2
    assert "summary.json" in no_summary.stderr


def test_a_memory_limit_spills_to_the_work_folder_and_still_agrees(staged: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(staged, run_dir)
    summary = _summary(run_dir)
    result = verify_run(run_dir, AS_OF, summary["files"], summary["model"], memory_limit="64MB")
    assert result.ok
    assert result.checks["column:total_revenue"]["compared"] == summary["output_rows"]  # type: ignore[index]
    assert (run_dir / "_work" / "duckdb").is_dir()  # DuckDB's spill folder is the run's, not the cwd


def test_a_memory_limit_too_small_to_spill_says_so_and_names_the_setting(
    staged: Path, tmp_path: Path
) -> None:
    """Not the hint of a damaged staged file: the data is fine, the limit is not."""
    run_dir = tmp_path / "run"
    shutil.copytree(staged, run_dir)
    summary = _summary(run_dir)
    with pytest.raises(VerificationError) as caught:
        verify_run(run_dir, AS_OF, summary["files"], summary["model"], memory_limit="1MB")
    message = str(caught.value)
    assert "ran out of DuckDB's memory limit (1MB)" in message
    assert "FASTCLV_DUCKDB_MEMORY_LIMIT" in message
    assert "lacks the contract's columns" not in message


def _perturb(column: str, factor: float, every: int) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Scale ``column`` of every ``every``-th customer with orders (so many parts disagree at once)."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        hit = (pl.col("orders_count") > 1) & (pl.int_range(pl.len()) % every == 0)
        return frame.with_columns(pl.when(hit).then(pl.col(column) * factor).otherwise(pl.col(column)))

    return change


#: Corruptions of the staged output (or the counts) that the check cut into parts must report as
#: the whole check does: 0 examples, one, and more than the report shows (merged across parts).
CORRUPTIONS: dict[str, Callable[[pl.DataFrame], pl.DataFrame] | None] = {
    "honest": None,
    "cent-more-revenue": lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.col("total_revenue") + Decimal("0.01"))
        .otherwise(pl.col("total_revenue"))
    ),
    "rows-dropped-and-duplicated": lambda f: pl.concat([f.slice(3), f.slice(40, 2)]),
    # 40 customers missing and 2 rows without a customer_id (in one part: DuckDB hashes null too).
    "null-ids": lambda f: pl.concat(
        [f.slice(40), f.slice(0, 2).with_columns(pl.lit(None).alias("customer_id"))]
    ),
    "monetary-value-of-many": _perturb("monetary_value", 1 + 1e-6, 3),
    "p-alive-of-many": _perturb("p_alive", 1 + 1e-5, 2),
    "ledger": None,
}


@pytest.mark.parametrize("parts", [2, 5])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_the_check_cut_into_customer_parts_reports_exactly_what_the_whole_check_does(
    staged: Path, tmp_path: Path, corruption: str, parts: int
) -> None:
    run_dir = _copy(staged, tmp_path)
    change = CORRUPTIONS[corruption]
    if change is not None:
        _rewrite(run_dir, change)
    summary = _summary(run_dir)
    counts = copy.deepcopy(summary["files"])
    if corruption == "ledger":
        counts["orders"]["after_as_of"] += 1
        counts["order_items"]["valid"] -= 1

    def verdict(n: int) -> tuple[dict[str, Any], str | None]:
        try:
            result = verify_run(run_dir, AS_OF, counts, summary["model"], parts=n)
        except VerificationError as exc:
            report = json.loads((run_dir / REPORT_JSON).read_text())
            return {k: report[k] for k in ("checks", "differences")}, str(exc)
        return {"checks": result.checks, "differences": {}}, None

    whole, whole_error = verdict(1)
    cut, cut_error = verdict(parts)
    assert (whole_error is None) == (corruption == "honest")
    assert cut == whole
    assert cut_error == whole_error
    if corruption.endswith("-of-many"):  # more differing rows than the report shows: the first by key
        differences = next(iter(whole["differences"].values()))
        assert len(differences) == 20
        assert [d["key"] for d in differences] == sorted(d["key"] for d in differences)


def test_each_part_compares_only_its_own_customers(staged: Path) -> None:
    from fastclv.verify import check_part, conclude

    summary = _summary(staged)
    partials = [check_part(staged, AS_OF, summary["model"], part=j, parts=3) for j in range(3)]
    compared = [
        next(c["compared"] for c in p["checks"] if c["name"] == "column:total_revenue")  # type: ignore[attr-defined, index]
        for p in partials
    ]
    assert sum(compared) == summary["output_rows"]
    assert all(0 < n < summary["output_rows"] for n in compared)
    assert conclude(staged, AS_OF, summary["files"], partials, seconds=1.0).ok
    with pytest.raises(TerminalError, match=r"needs each of its parts once; it got 0 of 3, 2 of 3"):
        conclude(staged, AS_OF, summary["files"], [partials[0], partials[2]], seconds=1.0)
    with pytest.raises(TerminalError, match="it got 0 of 3, 0 of 3, 1 of 3"):
        conclude(staged, AS_OF, summary["files"], [partials[0], *partials[:2]], seconds=1.0)
    # A part whose result is lost (None from XCom) or cut short fails fast, with a hint.
    for broken in (None, {"part": 1, "parts": 3}, {**partials[1], "ledger": {"staged_rows": {}}}):
        with pytest.raises(TerminalError, match="rerun the verify tasks"):
            conclude(staged, AS_OF, summary["files"], [partials[0], broken, partials[2]], seconds=1.0)  # type: ignore[list-item]


def test_a_part_of_a_check_that_is_off_checks_nothing(tmp_path: Path) -> None:
    from fastclv.pipeline import verify_part_stage

    off = Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, load=False, verify=False, shards=3)
    assert verify_part_stage(off, None, 1, 3) == {}  # nothing staged here: a check would fail
    on = off.replace(verify=True)
    with pytest.raises(InputError, match="missing staged file"):
        verify_part_stage(on, None, 1, 3)


@pytest.mark.parametrize("corruption", ["p-alive-of-many", "honest"])
def test_the_predictive_checks_in_chunks_report_exactly_what_one_chunk_does(
    staged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corruption: str
) -> None:
    """The closed forms run over chunks of customers (bounded memory): the same figures and examples."""
    from fastclv.verify import checks

    run_dir = _copy(staged, tmp_path)
    change = CORRUPTIONS[corruption]
    if change is not None:
        _rewrite(run_dir, change)
    summary = _summary(run_dir)

    def verdict() -> tuple[dict[str, Any], Any]:
        try:
            result = verify_run(run_dir, AS_OF, summary["files"], summary["model"])
        except VerificationError:
            report = json.loads((run_dir / REPORT_JSON).read_text())
            return report["checks"], report["differences"]
        return result.checks, {}

    one = verdict()
    monkeypatch.setattr(checks, "PREDICTIVE_CHUNK", 7)
    chunked = verdict()
    assert chunked == one
    p_alive = one[0]["column:p_alive"]
    assert p_alive["compared"] > 7 * 3  # several chunks
    if corruption != "honest":
        assert p_alive["mismatches"] > 20  # more than the report's examples, over many chunks
        assert len(next(iter(one[1].values()))) == 20
