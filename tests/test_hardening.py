"""Regression tests for issue 14's faults, as a user meets them: real files, mounts and processes.

Each test is named after the item it covers. The full-disk and read-only cases mount small
tmpfs file systems, which needs root (CI runs as root); they fail, not skip, without it.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fastclv import pipeline, stage
from fastclv.config import Settings
from fastclv.errors import ConfigError, InputError, TransientError

AS_OF = date(2025, 12, 31)
D = AS_OF.isoformat()
SAMPLE = Path(__file__).parent.parent / "data" / "sample"
FASTCLV = [sys.executable, "-m", "fastclv.cli"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FASTCLV, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``fastclv ARGS`` to the end, its output captured (the exit code is the test's to check)."""
    return subprocess.run([*FASTCLV, *args], capture_output=True, text=True, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[object]:
    """Mount small tmpfs file systems under tmp_path (as root); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


# -- item 1 ----------------------------------------------------------------------------------------


def test_item1_two_runs_of_one_date_on_one_staging_folder_both_end_cleanly(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    common = ("run", "--input", str(SAMPLE), "--staging", str(staging), "--as-of", D, "--no-load")
    first = _cli(*common, "--run-id", "first")
    time.sleep(0.5)
    second = _cli(*common, "--run-id", "second")
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    waited = [err for _, err in outputs if "waiting for run first" in err]
    assert len(waited) == 1, outputs  # the second run said why it waited
    summary = json.loads((staging / D / stage.SUMMARY).read_text())
    assert summary["status"] == "succeeded"
    assert summary["run_id"] == "second"  # the last run's whole result
    for name in (*stage.INPUTS, stage.REJECTS, stage.OUTPUT):
        assert (staging / D / name).is_file(), name
    assert not (staging / D / "_work").exists()


# -- item 2 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["120k", "700k"])  # full during the scan's work files / the Parquet
def test_item2_a_full_disk_is_a_transient_staging_error_naming_the_location(tmpfs: object, size: str) -> None:
    root = tmpfs("full", f"size={size}")  # type: ignore[operator]
    settings = Settings(input=str(SAMPLE), staging=str(root / "st"), as_of=AS_OF, load=False)
    with pytest.raises(TransientError, match="no space left on the device") as caught:
        pipeline.run(settings)
    message = str(caught.value)
    assert f"staging location {root / 'st' / D}" in message
    assert "encoding" not in message  # no input-read hint for a write
    assert "orders.csv: cannot read" not in message
    done = run_cli("run", "--input", str(SAMPLE), "--staging", str(root / "cli"), "--as-of", D, "--no-load")
    assert done.returncode == 75, done.stderr  # transient: the scheduler retries
    assert "no space left on the device" in done.stderr
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr


def test_item2_read_only_or_not_a_folder_staging_is_a_config_error(tmpfs: object, tmp_path: Path) -> None:
    read_only = tmpfs("ro", "ro,size=1m")  # type: ignore[operator]
    base = Settings(input=str(SAMPLE), staging=str(read_only / "st"), as_of=AS_OF, load=False)
    with pytest.raises(ConfigError, match="read-only file system") as caught:
        pipeline.run(base)
    assert str(read_only / "st") in str(caught.value)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError, match="is not a folder") as caught:
        pipeline.run(base.replace(staging=str(a_file / "st")))
    assert str(a_file / "st") in str(caught.value)
    done = run_cli("run", "--input", str(SAMPLE), "--staging", str(a_file), "--as-of", D, "--no-load")
    assert done.returncode == 2, done.stderr
    assert "internal error" not in done.stderr


# -- item 3 ----------------------------------------------------------------------------------------


def test_item3_a_loaded_run_whose_summary_cannot_be_written_still_succeeded(
    pg_uri: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One truth: the table is loaded and the ledger says succeeded, so the run succeeded."""
    real = stage.StagingArea.write_json

    def full_disk(self: stage.StagingArea, name: str, data: object) -> None:
        if name == stage.SUMMARY:
            raise OSError(28, "No space left on device", str(self.path(name)))
        real(self, name, data)

    monkeypatch.setattr(stage.StagingArea, "write_json", full_disk)
    settings = Settings(
        input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema
    )
    summary = pipeline.run(settings)
    assert summary.status == "succeeded"
    assert summary.warnings
    assert "was not written" in summary.warnings[0]
    assert "no space left on the device" in summary.warnings[0]
    with psycopg.connect(pg_uri) as conn:
        runs = conn.execute(
            sql.SQL("SELECT status FROM {}.customer_ltv_runs").format(sql.Identifier(pg_schema))
        ).fetchall()
    assert runs == [("succeeded",)]
    # Without a load the staged folder is the result: no summary, no success.
    with pytest.raises(TransientError, match="no space left"):
        pipeline.run(settings.replace(load=False, staging=str(tmp_path / "noload")))


# -- item 14 ---------------------------------------------------------------------------------------


def test_item14_off_a_terminal_each_stage_is_logged_with_rows_and_seconds(tmp_path: Path) -> None:
    done = run_cli("run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", D, "--no-load")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for name in ("extract", "transform", "verify"):
        assert any(line.endswith(f"{name}: started") for line in lines), (name, lines)
        assert any(f" {name}: " in line and " in " in line and line.endswith(" s") for line in lines), name
    assert any("orders.csv: scanned 10759 rows" in line for line in lines)
    assert any("customers 1028 read, 1009 valid" in line for line in lines)


def test_item14_on_a_terminal_a_progress_bar_shows_bytes_and_rows(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*FASTCLV, "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", D, "--no-load"],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(60) == 0, seen[-2000:]
    text = seen.decode(errors="replace")
    assert "scan orders.csv" in text
    assert "10,759 rows" in text
    assert "MB" in text or "kB" in text  # bytes read, shown by the bar


# -- issue 13 in the run ---------------------------------------------------------------------------


def test_a_run_writes_its_report_and_holdout_and_the_report_command_rebuilds_it(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    settings = Settings(
        input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema
    )
    summary = pipeline.run(settings)
    page = tmp_path / D / "report.html"
    assert summary.report == str(page)
    assert page.is_file()
    staged = json.loads((tmp_path / D / stage.SUMMARY).read_text())
    assert staged["report"] == str(page)
    assert staged["holdout"]["status"] == "ran"
    assert staged["holdout"]["holdout_days"] == 90
    assert (tmp_path / D / "holdout.parquet").is_file()
    with psycopg.connect(pg_uri) as conn:
        [(model,)] = conn.execute(
            sql.SQL("SELECT model FROM {}.customer_ltv_runs").format(sql.Identifier(pg_schema))
        ).fetchall()
    assert model["holdout"]["mean_absolute_error"] == pytest.approx(staged["holdout"]["mean_absolute_error"])
    assert model["clv_total"] == pytest.approx(staged["clv_total"])

    page.unlink()
    done = run_cli(
        "report", "--staging", str(tmp_path), "--as-of", D, "--pg-uri", pg_uri, "--schema", pg_schema
    )
    assert done.returncode == 0, done.stderr
    assert f"report: {page}" in done.stdout
    text = page.read_text()
    assert "Earlier dates (from the run ledger)" in text
    assert "Holdout backtest" in text

    off = pipeline.run(settings.replace(holdout_days=0, staging=str(tmp_path / "off"), load=False))
    assert off.holdout is not None
    assert off.holdout["status"] == "off"


def test_the_end_of_run_summary_says_clv_model_holdout_partition_and_report(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    args = [*FASTCLV, "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", D,
            "--pg-uri", pg_uri, "--schema", pg_schema]  # fmt: skip
    subprocess.run(args, capture_output=True, text=True, check=True)
    again = subprocess.run(
        args, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"}
    )
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "total predicted CLV: " in out
    assert "model: converged" in out
    assert "holdout (90 days): mean absolute error" in out
    assert "partition customer_ltv_p20251231 (replacing its 1,009 rows)" in out
    assert f"report: {tmp_path / D / 'report.html'}" in out


def test_a_killed_run_is_marked_abandoned_by_the_next_run(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    """Issue 14 item 4, end to end: SIGKILL a real `fastclv run` in its extract."""
    big = tmp_path / "in"
    shutil.copytree(SAMPLE, big)
    with (big / "order_items.csv").open("a") as out:  # enough rows to be caught mid-run
        rows = (SAMPLE / "order_items.csv").read_text().splitlines()[1:]
        for _ in range(150):
            out.write("\n".join(rows) + "\n")
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    args = ["run", "--input", str(big), "--staging", str(tmp_path / "st"), "--as-of", D, "--pg-uri", pg_uri,
            "--schema", pg_schema, "--no-verify"]  # fmt: skip
    victim = _cli(*args, "--run-id", run_id)
    query = sql.SQL("SELECT run_id, status, error FROM {}.customer_ltv_runs").format(
        sql.Identifier(pg_schema)
    )
    deadline = time.monotonic() + 60
    started = False
    while time.monotonic() < deadline and not started:
        time.sleep(0.1)
        with psycopg.connect(pg_uri) as conn:
            try:
                started = (run_id, "running") in [(r, s) for r, s, _ in conn.execute(query).fetchall()]
            except psycopg.errors.UndefinedTable:
                continue
    assert started
    victim.kill()
    victim.communicate(timeout=30)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_uri) as conn:
        runs = {r: (s, e) for r, s, e in conn.execute(query).fetchall()}
    assert runs[run_id][0] == "abandoned"
    assert "ended without recording its outcome" in runs[run_id][1]
    assert sorted(s for s, _ in runs.values()) == ["abandoned", "succeeded"]


# -- item 6 ----------------------------------------------------------------------------------------


def test_item6_escape_codes_from_data_never_reach_the_terminal_in_an_error(tmp_path: Path) -> None:
    """The error naming a customer whose total overflows numeric(18,2) shows its id escaped."""
    hostile = "C1\x1b[2J\x1b]0;PWNED\x07"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "customers.csv").write_text(f"customer_id,signup_date,country\n{hostile},2024-01-01,DE\n")
    (folder / "orders.csv").write_text(
        f"order_id,customer_id,order_ts,status\nO1,{hostile},2025-01-02,completed\n"
    )
    (folder / "order_items.csv").write_text(
        "order_id,sku,quantity,unit_price,discount\nO1,S,2,9999999999999999.99,\n"
    )
    done = run_cli(
        "run", "--input", str(folder), "--staging", str(tmp_path / "st"), "--as-of", D, "--no-load"
    )
    assert done.returncode == 1, done.stderr  # terminal: not retried
    assert "exceeds numeric(18,2)" in done.stderr
    assert "\x1b" not in done.stderr
    assert "\x07" not in done.stderr
    assert "C1\\x1b[2J\\x1b]0;PWNED\\x07" in done.stderr.replace("\n", "")


def test_a_failed_run_writes_a_report_that_says_why(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(SAMPLE, folder)
    orders = (folder / "orders.csv").read_text().splitlines()
    (folder / "orders.csv").write_text("\n".join([orders[0].replace("status", "state"), *orders[1:]]) + "\n")
    with pytest.raises(InputError, match="required column 'status'"):
        pipeline.run(Settings(input=str(folder), staging=str(tmp_path / "st"), as_of=AS_OF, load=False))
    page = (tmp_path / "st" / D / "report.html").read_text()
    assert 'class="status failed"' in page
    assert "required column &#x27;status&#x27; is missing" in page
