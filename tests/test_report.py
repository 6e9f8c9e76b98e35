"""The run report in a real headless Chromium (Debian's), driven by Playwright.

It must open offline with no console error and no request but its own file, show something
(a screenshot that is not blank), and show hostile values from the data (markup, script tags,
escape codes in ids and raw rows) as text.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fastclv import report, stage
from fastclv.config import Settings
from fastclv.pipeline import run

AS_OF = date(2025, 12, 31)
SAMPLE = Path(__file__).parent.parent / "data" / "sample"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE_ID = "<script>document.title='PWNED'</script>\x1b[2J"
HOSTILE_RAW = "<img src=x onerror=\"document.title='PWNED'\">"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (CI installs Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser: Any, page_path: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """Load the report; return its console messages, requests, dialogs, title and text."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    seen: dict[str, Any] = {"console": [], "requests": [], "dialogs": [], "errors": []}
    page.on("console", lambda message: seen["console"].append((message.type, message.text)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    seen["title"] = page.title()
    seen["text"] = page.inner_text("body")
    seen["scripts"] = page.locator("script").count()
    seen["svgs"] = page.locator("svg").count()
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return seen


def _not_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 50  # None: more colours than that


def test_the_sample_report_loads_offline_with_no_error_and_shows_the_run(
    browser: Any, tmp_path: Path
) -> None:
    summary = run(Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, load=False))
    run_dir = tmp_path / AS_OF.isoformat()
    page = report.write(run_dir, json.loads((run_dir / stage.SUMMARY).read_text()))
    assert page == run_dir / report.REPORT
    assert page.stat().st_size < 500_000
    shot = tmp_path / "report.png"
    seen = _open(browser, page, shot)
    assert seen["console"] == []
    assert seen["errors"] == []
    assert seen["requests"] == [page.as_uri()]  # nothing but the file itself
    assert seen["scripts"] == 0
    assert seen["svgs"] >= 2  # the CLV histogram and the p_alive matrix at least
    assert _not_blank(shot)
    text = seen["text"]
    assert f"Customer lifetime value as of {AS_OF.isoformat()}" in text
    assert summary.run_id in text
    assert f"{summary.output_rows:,}" in text
    for reason in ("malformed_row", "unknown_customer", "discount_exceeds_amount"):
        assert reason in text
    assert "BG/NBD" in text
    assert "Gamma-Gamma" in text


def _hostile_input(folder: Path) -> None:
    """The sample, plus a customer whose id is markup and escape codes, and a malformed row."""
    folder.mkdir()
    for name in ("customers.csv", "orders.csv", "order_items.csv"):
        shutil.copy(SAMPLE / name, folder / name)
    header, *rows = (SAMPLE / "customers.csv").read_text().splitlines(keepends=True)
    # Row 1 is malformed (a quote inside an unquoted field): the first sample of its reason.
    (folder / "customers.csv").write_text(header + HOSTILE_RAW + ",,,,\n" + "".join(rows))
    with (folder / "customers.csv").open("a", newline="") as out:
        csv.writer(out).writerow([HOSTILE_ID, "2024-01-01", "<b>XX</b>"])
    with (folder / "orders.csv").open("a", newline="") as out:
        writer = csv.writer(out)
        for n, day in enumerate(("2025-01-05", "2025-03-05", "2025-06-05", "2025-09-05")):
            writer.writerow([f"HOSTILE-{n}", HOSTILE_ID, day, "completed"])
    with (folder / "order_items.csv").open("a", newline="") as out:
        writer = csv.writer(out)
        for n in range(4):
            writer.writerow([f"HOSTILE-{n}", "SKU", 1, "999999.00", ""])  # a top customer


def test_hostile_values_are_shown_as_text(browser: Any, tmp_path: Path) -> None:
    _hostile_input(tmp_path / "in")
    run(Settings(input=str(tmp_path / "in"), staging=str(tmp_path / "st"), as_of=AS_OF, load=False))
    run_dir = tmp_path / "st" / AS_OF.isoformat()
    page = report.write(run_dir, json.loads((run_dir / stage.SUMMARY).read_text()))
    html_text = page.read_text()
    assert "\x1b" not in html_text
    assert "<script" not in html_text.lower()
    seen = _open(browser, page)
    assert seen["dialogs"] == []
    assert seen["errors"] == []
    assert seen["scripts"] == 0
    assert "PWNED" not in seen["title"]
    assert seen["requests"] == [page.as_uri()]  # the <img src=x> never became an element
    text = seen["text"]
    assert "<script>document.title='PWNED'</script>\\x1b[2J" in text  # the id, as text, in the top table
    assert HOSTILE_RAW in text  # the malformed row's raw text, among the samples
