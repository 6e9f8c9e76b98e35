"""`fastclv sql`: ad hoc DuckDB queries over a staged run, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from fastclv import explore, stage
from fastclv.config import Settings
from fastclv.errors import ConfigError, InputError
from fastclv.pipeline import run

AS_OF = date(2025, 12, 31)
SAMPLE = Path(__file__).parent.parent / "data" / "sample"
FASTCLV = [sys.executable, "-m", "fastclv.cli"]
TOP3 = (
    "SELECT customer_id, predicted_clv, orders_count FROM customer_ltv "
    "ORDER BY predicted_clv DESC NULLS LAST, customer_id LIMIT 3"
)


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explore-staging")
    run(Settings(input=str(SAMPLE), staging=str(root), as_of=AS_OF, load=False, verify=False))
    # A later run that failed: never the default.
    failed = root / "2026-01-05"
    failed.mkdir()
    (failed / stage.SUMMARY).write_text(json.dumps({"status": "failed"}))
    return root


@pytest.fixture(scope="module")
def top3(staging: Path) -> pl.DataFrame:
    return (
        pl.read_parquet(staging / AS_OF.isoformat() / stage.OUTPUT)
        .sort(["predicted_clv", "customer_id"], descending=[True, False], nulls_last=True)
        .select("customer_id", "predicted_clv", "orders_count")
        .head(3)
    )


def fastclv_sql(
    *args: str, staging: Path, stdin: str | None = None, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    # The default staging root comes from the environment; no --as-of picks the latest good run.
    env = {**os.environ, "FASTCLV_STAGING": str(staging), "COLUMNS": str(columns)}
    return subprocess.run(
        [*FASTCLV, "sql", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_csv_answers_over_the_latest_succeeded_run(staging: Path, top3: pl.DataFrame) -> None:
    done = fastclv_sql("--format", "csv", TOP3, staging=staging)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [
        (r["customer_id"], Decimal(r["predicted_clv"]), int(r["orders_count"])) for r in rows
    ] == top3.rows()


def test_json_keeps_money_exact(staging: Path, top3: pl.DataFrame) -> None:
    done = fastclv_sql("--format", "json", "--as-of", AS_OF.isoformat(), TOP3, staging=staging)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout, parse_float=Decimal)
    assert [(r["customer_id"], r["predicted_clv"], r["orders_count"]) for r in rows] == top3.rows()


def test_table_prints_the_rows_and_a_count(staging: Path, top3: pl.DataFrame) -> None:
    done = fastclv_sql(TOP3, staging=staging)
    assert done.returncode == 0, done.stderr
    for customer_id, clv, _ in top3.rows():
        assert customer_id in done.stdout
        assert str(clv) in done.stdout
    assert "3 row(s)" in done.stdout


def test_sql_says_which_as_of_it_queried(staging: Path) -> None:
    queried = f"the run of {AS_OF.isoformat()} (as-of date; succeeded) in {staging / AS_OF.isoformat()}"
    table = fastclv_sql("SELECT 1 AS one", staging=staging, columns=400)
    assert table.returncode == 0, table.stderr
    assert f"1 row(s) from {queried}" in table.stdout  # the table's footer
    done = fastclv_sql("--format", "csv", "SELECT 1 AS one", staging=staging)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "one\n1\n"  # csv and json: stdout holds the data only
    assert f"querying {queried}" in done.stderr


def test_wide_results_print_one_record_per_block_when_the_table_does_not_fit(staging: Path) -> None:
    query = "SELECT * FROM customer_ltv ORDER BY customer_id LIMIT 2"
    narrow = fastclv_sql(query, staging=staging, columns=80)
    assert narrow.returncode == 0, narrow.stderr
    assert "-[ RECORD 1 ]-" in narrow.stdout
    assert "-[ RECORD 2 ]-" in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    first = pl.read_parquet(staging / AS_OF.isoformat() / stage.OUTPUT).sort("customer_id").row(0, named=True)
    block = narrow.stdout.split("-[ RECORD 2 ]-")[0]
    for name in ("customer_id", "predicted_clv", "p_alive", "t_days"):
        assert re.search(rf"^{name} +\S", block, re.MULTILINE), name
    assert first["customer_id"] in block
    assert "2 row(s)" in narrow.stdout

    wide = fastclv_sql(query, staging=staging, columns=1000)
    assert wide.returncode == 0, wide.stderr
    assert "RECORD" not in wide.stdout
    assert all(name in wide.stdout.splitlines()[1] for name in ("customer_id", "predicted_clv"))


def test_the_table_escapes_control_characters_from_values_and_names(staging: Path) -> None:
    """Issue 14 item 6: escape codes in data never reach the terminal raw."""
    query = (
        "SELECT customer_id || chr(27) || '[2J' || chr(27) || ']0;PWNED' || chr(7) AS \"id\u001b[31m\" "
        "FROM customers ORDER BY customer_id LIMIT 1"
    )
    for columns in (20, 400):  # one record per block, then the table
        done = fastclv_sql(query, staging=staging, columns=columns)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout
        assert "\x07" not in done.stdout
    assert "\\x1b[2J\\x1b]0;PWNED\\x07" in done.stdout
    assert "id\\x1b[31m" in done.stdout


def test_reject_reasons_by_file(staging: Path) -> None:
    done = fastclv_sql(
        "-f",
        "csv",
        "SELECT file, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY ALL",
        staging=staging,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((staging / AS_OF.isoformat() / stage.SUMMARY).read_text())
    expected = sorted(
        (c["file"], reason, n)
        for c in summary["files"].values()
        for reason, n in c["rejected_by_reason"].items()
    )
    got = [(r["file"], r["reason"], int(r["n"])) for r in csv.DictReader(io.StringIO(done.stdout))]
    assert got == expected


def test_the_prompt_reads_queries_until_quit_and_survives_an_error(staging: Path) -> None:
    stdin = (
        "SELECT count(*) AS customers FROM customers;\n"
        "SELECT no_such_column FROM orders;\n"
        "SELECT count(*) AS rows\n"
        "FROM customer_ltv;\n"
        ".quit\n"
        "SELECT 'never run' AS x;\n"
    )
    done = fastclv_sql("-f", "csv", staging=staging, stdin=stdin)
    valid = json.loads((staging / AS_OF.isoformat() / stage.SUMMARY).read_text())["files"]["customers"][
        "valid"
    ]
    assert done.stdout == f"customers\n{valid}\nrows\n{valid}\n"
    assert "no_such_column" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == 1  # one query failed


def test_a_bad_query_is_one_line_and_exit_1(staging: Path) -> None:
    done = fastclv_sql("SELEC * FROM customer_ltv", staging=staging)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "syntax error" in done.stderr


def test_missing_run_and_bad_format_are_usage_errors(staging: Path, tmp_path: Path) -> None:
    missing = fastclv_sql("--as-of", "2020-01-01", "SELECT 1", staging=staging)
    assert missing.returncode == 2
    assert "2020-01-01" in missing.stderr
    with pytest.raises(InputError, match="does not exist") as nowhere:
        explore.run_folder(tmp_path / "nowhere", None)
    assert nowhere.value.exit_code == 2
    with pytest.raises(ConfigError, match="table, csv, json") as bad:
        explore.check_format("xml")
    assert bad.value.exit_code == 2


def test_statements_split_on_semicolons_and_blank_lines() -> None:
    lines = ["SELECT 1;\n", "SELECT\n", "  2\n", "\n", "SELECT 3; \n", "  \n", ".exit\n", "SELECT 4;\n"]
    assert list(explore.statements(lines)) == ["SELECT 1;", "SELECT\n  2", "SELECT 3; "]


def test_latest_run_skips_failed_and_foreign_folders(staging: Path) -> None:
    (staging / "notes").mkdir(exist_ok=True)
    assert explore.latest_run(staging) == AS_OF
    assert explore.latest_run(staging, succeeded_only=False) == date(2026, 1, 5)
