"""The DuckDB cross-check: recompute ``customer_ltv`` from the staged inputs and compare.

DuckDB recomputes every historical column of contract section 4 in SQL, straight from the
staged, validated Parquet inputs, and compares them with the staged output row by row (full
outer join on ``customer_id``): integers, text, dates, timestamps and money exactly, doubles
within 1e-9 relative, nulls must match. It also checks the run's ledger (read = valid +
rejected + duplicates dropped, rejects by reason, after-as-of counts, one output row per valid
customer, revenue conserved). The predictive columns are re-evaluated with numpy/scipy from
the fitted parameters in the run summary, with closed forms of its own (not
``fastclv.model``'s, see :mod:`fastclv.verify.closed_forms`), and compared within 1e-7 relative
(``predicted_clv`` within a cent).

On any mismatch a report (``verify_report.md`` and ``.json``) is written into the run folder
and :class:`~fastclv.errors.VerificationError` is raised, so the run stops before the load.

The parts: ``crosscheck`` (:func:`verify_run`, :func:`verify_staged`: one DuckDB session),
``recompute`` (the SQL that recomputes the output from the staged inputs), ``checks`` (the
comparisons), ``closed_forms`` (the independent BG/NBD and Gamma-Gamma formulas) and ``report``
(``verify_report.md`` / ``.json`` and the error message).

Example::

    result = verify_run(Path("staging/2025-12-31"), date(2025, 12, 31), counts, model)
    print(result.as_dict()["checks"])
"""

from __future__ import annotations

from fastclv.verify.crosscheck import (
    CHECKED,
    VerifyResult,
    check_part,
    conclude,
    verify_run,
    verify_staged,
)
from fastclv.verify.report import REPORT_JSON, REPORT_MD

__all__ = [
    "CHECKED",
    "REPORT_JSON",
    "REPORT_MD",
    "VerifyResult",
    "check_part",
    "conclude",
    "verify_run",
    "verify_staged",
]
