"""The user docs' SQL examples run, as written, against a real loaded database."""

from __future__ import annotations

import re
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
