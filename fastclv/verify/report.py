"""The cross-check's report on a mismatch (``verify_report.md`` and ``.json``) and its error message."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from fastclv import files, stage
from fastclv.verify.checks import Check

REPORT_MD = "verify_report.md"
REPORT_JSON = "verify_report.json"


def write_report(run_dir: Path, as_of: date, checks: list[Check], seconds: float, label: str) -> Path:
    """Write ``verify_report.json`` and then ``verify_report.md`` into ``run_dir``; return the latter."""
    failing = [c for c in checks if c.mismatches]
    data = {
        "run_dir": label,
        "as_of": as_of.isoformat(),
        "seconds": seconds,
        "checks": {c.name: c.as_dict() for c in checks},
        "differences": {
            c.name: [{"key": k, "column": col, "staged": s, "recomputed": e} for k, col, s, e in c.examples]
            for c in failing
        },
    }
    stage.write_json(data, run_dir / REPORT_JSON)
    lines = [
        f"# Cross-check report: {label} (as of {as_of.isoformat()})",
        "",
        f"**FAILED**: {len(failing)} of {len(checks)} checks disagree "
        f"({sum(c.mismatches for c in checks)} mismatching values). DuckDB recomputed the staged "
        f"inputs in {seconds:.2f} s. A pipeline run stops here, before the load.",
        "",
        "| check | compared | mismatches | note |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {_md(c.name)} | {c.compared:,} | {c.mismatches:,} | {_md(c.note or '')} |" for c in checks]
    for c in failing:
        lines += [
            "",
            f"## {_md(c.name)}: {c.mismatches:,} mismatch(es)",
            "",
            f"First {len(c.examples)}, staged (Polars) next to recomputed (DuckDB / numpy):",
            "",
            "| customer_id / key | column | staged | recomputed |",
            "|---|---|---|---|",
        ]
        lines += [f"| {_md(k)} | {_md(col)} | {_md(s)} | {_md(e)} |" for k, col, s, e in c.examples]
    path = run_dir / REPORT_MD
    with files.atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def error_message(checks: list[Check], report: str) -> str:
    """The VerificationError's text: which checks disagree, the first customer, the report."""
    failing = [c for c in checks if c.mismatches]
    named = ", ".join(f"{c.name} ({c.mismatches:,})" for c in failing)
    firsts = sorted(
        (k, c.name) for c in failing for k, *_ in c.examples[:1] if c.name.startswith(("column:", "rows"))
    )
    where = f"; first customer {firsts[0][0]!r} ({firsts[0][1]})" if firsts else ""
    return (
        f"the DuckDB cross-check disagrees with the staged output: {named}{where}. "
        f"Report with the differing rows side by side: {report}. "
        "Hint: a run stops here, before the load; find the cause from those rows, rerun the date, "
        "and check again with `fastclv verify`."
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
