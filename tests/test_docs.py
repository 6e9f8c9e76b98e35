"""The user docs' SQL examples run, as written, against a real loaded database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fastclv.config import Settings
from fastclv.pipeline import run

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "data" / "sample"
AS_OF = date(2025, 12, 31)


def _statements(markdown: Path) -> list[str]:
    """Every statement of the ```sql blocks of a Markdown file."""
    blocks = re.findall(r"```sql\n(.*?)```", markdown.read_text(), re.DOTALL)
    text = "\n".join(blocks)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def test_the_data_page_queries_run_against_a_loaded_table(
    pg_uri: str, pg_schema: str, tmp_path: Path
) -> None:
    run(Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema))
    statements = _statements(ROOT / "docs" / "data.md")
    assert len(statements) >= 7
    with psycopg.connect(pg_uri) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        results = [conn.execute(sql.SQL(statement)).fetchall() for statement in statements]
    top, _history, _winback, partitions, runs, files, models = results
    assert len(top) == 10
    assert top[0][1] >= top[-1][1]  # ordered by predicted_clv
    assert [row[0] for row in partitions] == ["customer_ltv_p20251231"]
    assert runs[0][2] == "succeeded"
    assert {row[1] for row in files} == {"customers", "orders", "order_items"}
    assert all(row[2] > 0 for row in files)  # rows read per file
    assert set(models[0][1]) == {"r", "alpha", "a", "b"}


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_the_docs_link_only_to_files_that_exist(page: Path) -> None:
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"


def test_the_airflow_pages_steps_work_when_pasted() -> None:
    """Issue 14 item 9: the docs' Airflow page's 'Trying it locally' block runs as written.

    Every line but ``uv sync`` (CI has just built the environment, and the copy here has no
    project to sync) and ``airflow standalone`` (it blocks), in a folder that looks like the
    repository's root: the environment, the DAGs and the sample data linked in.
    """
    text = (ROOT / "docs" / "airflow.md").read_text()
    fence = r"<!-- airflow-try:start -->\n```bash\n(.*?)```\n<!-- airflow-try:end -->"
    block = re.search(fence, text, re.DOTALL)
    assert block is not None
    lines = block.group(1).splitlines()
    assert any(line.startswith("airflow db migrate") for line in lines)
    assert any(line.startswith("airflow standalone") for line in lines)
    script = ["set -euo pipefail", "source .venv/bin/activate"]
    script += [line for line in lines if not line.startswith(("uv sync", "airflow standalone"))]
    script += ["fastclv pg stop"]  # as the README says, to stop everything
    # Not pytest's tmp_path: the postgres system user must reach the cluster folder inside it.
    root = Path(tempfile.mkdtemp(prefix="fastclv-readme-"))
    root.chmod(0o711)
    for name in (".venv", "dags", "data"):
        (root / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FASTCLV_"))}
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=root, env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads((root / "staging" / "2025-12-31" / "summary.json").read_text())
        assert summary["status"] == "succeeded"
        assert (root / "staging" / "2025-12-31" / "report.html").is_file()
        assert "queued" in done.stdout, done.stdout[-2000:]  # the trigger queued a run
        assert not (root / ".fastclv" / "pg" / "postmaster.pid").exists()  # stopped
    finally:
        stop = "source .venv/bin/activate && fastclv pg stop"
        subprocess.run(["bash", "-c", stop], cwd=root, env=env, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
