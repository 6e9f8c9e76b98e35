"""The command line as a user meets it: real processes, exit codes, messages, staged files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest

from fastclv import stage

SAMPLE = Path(__file__).parent.parent / "data" / "sample"
FASTCLV = [sys.executable, "-m", "fastclv.cli"]


def fastclv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FASTCLV, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=300
    )


def test_run_no_load_stages_the_sample_and_prints_a_summary(tmp_path: Path) -> None:
    done = fastclv(
        "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 0, done.stderr
    assert "customers out" in done.stdout
    run_dir = tmp_path / "2025-12-31"
    summary = json.loads((run_dir / stage.SUMMARY).read_text())
    assert summary["status"] == "succeeded"
    expected = json.loads((SAMPLE / "expected.json").read_text())
    assert summary["output_rows"] == expected["output_rows"]
    assert pl.read_parquet(run_dir / stage.OUTPUT).height == expected["output_rows"]
    assert set(summary["timings"]) >= {"extract", "transform", "model", "total"}


def test_missing_column_exits_2_naming_file_and_column_without_traceback(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLE, inputs)
    lines = (inputs / "orders.csv").read_text().splitlines(keepends=True)
    header = lines[0].lstrip("\ufeff").replace(",status", ",state")
    (inputs / "orders.csv").write_text(header + "".join(lines[1:]))
    done = fastclv(
        "run", "--input", str(inputs), "--staging", str(tmp_path / "s"), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 2
    assert "orders.csv" in done.stderr
    assert "'status'" in done.stderr
    assert "Traceback" not in done.stderr
    run_dir = tmp_path / "s" / "2025-12-31"
    assert not (run_dir / stage.OUTPUT).exists()  # nothing staged as if it were a result
    assert json.loads((run_dir / stage.SUMMARY).read_text())["status"] == "failed"


def test_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLE, inputs)
    (inputs / "order_items.csv").unlink()
    done = fastclv(
        "run", "--input", str(inputs), "--staging", str(tmp_path / "s"), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 2
    assert "order_items.csv" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_as_of_is_a_usage_error(tmp_path: Path) -> None:
    done = fastclv(
        "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-13-01", "--no-load"
    )
    assert done.returncode == 2
    assert "2025-13-01" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--as-of", "9999-12-31"], "as_of 9999-12-31 is the last calendar date"),
        (["--as-of", "0001-02-01"], "holdout_days 90 reaches back before 0001-01-01"),
        (["--as-of", "2025-12-31", "--delimiter", "é"], "must be one ASCII character"),
        (
            ["--as-of", "2025-12-31", "--staging", "/proc/fastclv-nowhere"],
            "cannot be created (/proc/fastclv-",
        ),
    ],
)
def test_out_of_range_settings_are_usage_errors_not_internal_ones(
    tmp_path: Path, options: list[str], message: str
) -> None:
    done = fastclv("run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--no-load", *options)
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split())
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_line_break_in_the_input_path_is_shown_escaped(tmp_path: Path) -> None:
    done = fastclv(
        "run", "--input", str(tmp_path / "a\nb"), "--staging", str(tmp_path), "--as-of", "2025-12-31"
    )
    assert done.returncode == 2, done.stderr
    assert "a\\nb/customers.csv" in done.stderr.replace("\n", "")
    assert "a\nb" not in done.stderr


def test_generate_is_deterministic_and_writes_expected_counts(tmp_path: Path) -> None:
    for name in ("a", "b"):
        done = fastclv(
            "generate", "--customers", "50", "--seed", "3", "--dirty-rows", "1", "--out", str(tmp_path / name)
        )
        assert done.returncode == 0, done.stderr
    for file in ("customers.csv", "orders.csv", "order_items.csv", "expected.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_generate_quote_all_quotes_every_field_and_keeps_expected_json(tmp_path: Path) -> None:
    args = ["--customers", "50", "--seed", "3", "--dirty-rows", "1"]
    for name, extra in (("plain", []), ("quoted", ["--quote-all"])):
        done = fastclv("generate", *args, "--out", str(tmp_path / name), *extra)
        assert done.returncode == 0, done.stderr
    expected = (tmp_path / "quoted" / "expected.json").read_bytes()
    assert expected == (tmp_path / "plain" / "expected.json").read_bytes()
    header = (tmp_path / "quoted" / "orders.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == '"order_id","customer_id","order_ts","status"'


def test_run_without_a_uri_loads_into_a_throwaway_postgres(tmp_path: Path) -> None:
    import os
    import tempfile

    # Not under pytest's tmp_path: the postgres system user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="fastclv-cli-pg-"))
    root.chmod(0o711)
    env = {**os.environ, "FASTCLV_LOCAL_PG_DIR": str(root / "pg")}
    env.pop("FASTCLV_PG_URI", None)
    try:
        done = subprocess.run(
            [*FASTCLV, "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-12-31"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert "throwaway local server at postgresql://" in done.stderr
        assert "stop it with:" in done.stderr
        assert "loaded" in done.stdout
    finally:
        subprocess.run([*FASTCLV, "pg", "stop"], env=env, check=False, capture_output=True, timeout=120)
        import shutil as _shutil

        _shutil.rmtree(root, ignore_errors=True)


def test_error_text_with_brackets_is_shown_literally(tmp_path: Path) -> None:
    # Regression: rich read "[/x]" in an error message as markup and crashed the CLI.
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLE, inputs)
    (inputs / "customers.csv").write_text("customer_id,[/signup_date],country\nc1,2024-01-01,FR\n")
    done = fastclv(
        "run", "--input", str(inputs), "--staging", str(tmp_path / "s"), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 2
    assert "[/signup_date]" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_row_that_is_not_utf8_is_rejected_and_the_run_goes_on(tmp_path: Path) -> None:
    """CONTRACT.md 1.1: a data row that is not valid UTF-8 is a malformed_row (it used to fail the run)."""
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLE, inputs)
    with (inputs / "order_items.csv").open("ab") as items:
        items.write(b"O1,s,1,\xff\xfe,\n")  # Latin-1 bytes in a UTF-8 export
    done = fastclv(
        "run", "--input", str(inputs), "--staging", str(tmp_path / "s"), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 0, done.stderr
    rejects = pl.read_parquet(tmp_path / "s" / "2025-12-31" / "rejects.parquet")
    last = rejects.filter(pl.col("file") == "order_items.csv").sort("row").tail(1)
    assert last.select("reason", "raw").rows() == [("malformed_row", "O1,s,1,\\xff\\xfe,")]


def test_a_header_that_is_not_utf8_exits_2_naming_the_file(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLE, inputs)
    (inputs / "order_items.csv").write_bytes(b"order_id,sku,quantity,unit_pr\xefce\n")
    done = fastclv(
        "run", "--input", str(inputs), "--staging", str(tmp_path / "s"), "--as-of", "2025-12-31", "--no-load"
    )
    assert done.returncode == 2
    assert "order_items.csv" in done.stderr
    assert "UTF-8" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_keeps_the_env_and_default_notes_in_brackets() -> None:
    """Regression: rich read "[env FASTCLV_INPUT]" as markup and dropped every such note."""
    done = subprocess.run(
        [*FASTCLV, "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # the help is wrapped at 80 columns
    notes = (
        "[env FASTCLV_INPUT]",
        "[env FASTCLV_STAGING, default ./staging]",
        "[default: 12]",
        "[default: public]",
    )
    for note in notes:
        assert note in text


@pytest.mark.parametrize("password", ["Leak#6x", "Le?ak6x", "Le/ak#?6x"])
def test_a_password_with_uri_delimiters_never_leaks(tmp_path: Path, password: str) -> None:
    """Regression: '#' and '?' in a password cut the URI early and part of it was printed."""
    from fastclv import localpg

    uri = f"postgresql://app:{password}@127.0.0.1:{localpg._free_port()}/db?connect_timeout=2"
    done = fastclv(
        "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-12-31", "--pg-uri", uri
    )
    assert done.returncode != 0
    summary = (tmp_path / "2025-12-31" / "summary.json").read_text()
    for text in (done.stdout, done.stderr, summary):
        for piece in ("Leak", "ak6x", "Le?", "Le/"):
            assert piece not in text
    assert "127.0.0.1" in done.stderr  # the server is still named


def test_a_pg_uri_that_is_no_uri_says_what_one_looks_like(tmp_path: Path) -> None:
    """Regression: '127.0.0.1:5432' reached libpq, which answered 'missing "="'."""
    done = fastclv(
        "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-12-31",
        "--pg-uri", "127.0.0.1:5432",
    )  # fmt: skip
    assert done.returncode == 2
    assert "postgresql://USER:PASSWORD@HOST:5432/DATABASE" in done.stderr
    assert 'missing "="' not in done.stderr
    assert done.stderr.count("127.0.0.1:5432") == 1  # said once, not by a ledger warning too


def test_a_connection_error_is_printed_once(tmp_path: Path) -> None:
    """Regression: the same failure came out twice, as a ledger warning and as the error."""
    from fastclv import localpg

    uri = f"postgresql://app@127.0.0.1:{localpg._free_port()}/db?connect_timeout=2"
    done = fastclv(
        "run", "--input", str(SAMPLE), "--staging", str(tmp_path), "--as-of", "2025-12-31", "--pg-uri", uri
    )
    assert done.returncode == 75, done.stderr
    assert done.stderr.count("connecting to PostgreSQL at 127.0.0.1") == 1, done.stderr


def test_pg_start_stop_say_what_they_did_and_hints_name_our_command() -> None:
    """Regression: the hint was a runuser/pg_ctl line, `pg stop` printed nothing, and a second
    `pg start` did not say it reused the running server."""
    root = Path(tempfile.mkdtemp(prefix="fastclv-cli-pg-"))
    root.chmod(0o711)  # reachable by the postgres user
    env = {**os.environ, "FASTCLV_LOCAL_PG_DIR": str(root / "pg")}

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FASTCLV, "pg", *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )

    first = pg("start")
    try:
        assert first.returncode == 0, first.stderr
        assert "started a local PostgreSQL" in first.stderr
        assert "stop it with: fastclv pg stop\n" in first.stderr
        second = pg("start")
        assert "reusing the local PostgreSQL already running" in second.stderr
        assert second.stdout == first.stdout  # the same URI
    finally:
        stopped = pg("stop")
    assert "stopped the local PostgreSQL" in stopped.stderr
    assert "nothing to stop" in pg("stop").stderr
    shutil.rmtree(root, ignore_errors=True)


def test_run_stages_under_the_same_default_staging_as_sql(tmp_path: Path) -> None:
    sample = str(SAMPLE.resolve())
    done = fastclv("run", "--input", sample, "--as-of", "2025-12-31", "--no-load", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "staging" / "2025-12-31" / "summary.json").exists()
    query = fastclv("sql", "--format", "csv", "SELECT count(*) AS n FROM customer_ltv", cwd=tmp_path)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines()[-1] == "1009"
