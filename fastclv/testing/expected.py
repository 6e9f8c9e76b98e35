"""``expected.json``: the exact counts a pipeline run on the generated files must report."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from fastclv.contract import CUSTOMERS, REASONS_BY_FILE
from fastclv.testing.common import AFTER, BGNBD, DUP, FILE_NAMES, GAMMA_GAMMA, VALID

if TYPE_CHECKING:
    from collections import Counter
    from datetime import date

__all__ = ["EXPECTED_FILE_NAME", "expected_summary", "file_summary"]

EXPECTED_FILE_NAME = "expected.json"


def file_summary(name: str, counts: Counter[str], read: int) -> dict[str, object]:
    """One file's counts in the run summary's shape; checks read = valid + rejected + dropped."""
    by_reason = {reason.value: counts[reason.value] for reason in REASONS_BY_FILE[name]}
    unexpected = set(counts) - set(by_reason) - {VALID, AFTER, DUP}
    rejected = sum(by_reason.values())
    if unexpected or read != counts[VALID] + rejected + counts[DUP]:
        raise AssertionError(f"{name}: inconsistent counts {dict(counts)} for {read} rows")
    return {
        "read": read,
        "valid": counts[VALID],
        "rejected": rejected,
        "rejected_by_reason": by_reason,
        "duplicates_dropped": counts[DUP],
        "after_as_of": counts[AFTER],
    }


def expected_summary(
    *,
    seed: int,
    customers: int,
    dirty_rows: int,
    as_of: date,
    fates: dict[str, Counter[str]],
    rows: dict[str, int],
) -> dict[str, object]:
    """The content of expected.json: the arguments, the true parameters and every file's counts.

    ``fates`` counts each file's rows by fate (a reason code, valid, after_as_of or
    duplicates_dropped); ``rows`` holds the data rows written per file.
    """
    return {
        "seed": seed,
        "customers": customers,
        "dirty_rows": dirty_rows,
        "as_of": as_of.isoformat(),
        "params": {"bgnbd": asdict(BGNBD), "gamma_gamma": asdict(GAMMA_GAMMA)},
        "files": {name: file_summary(name, fates[name], rows[name]) for name in FILE_NAMES},
        "output_rows": fates[CUSTOMERS.name][VALID],
    }
