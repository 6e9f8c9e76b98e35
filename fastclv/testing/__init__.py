"""Test-data tooling: a deterministic generator of realistic, optionally dirty, input CSVs.

Not part of a pipeline run: ``fastclv generate``, the tests and the benchmarks use it.
Customers sign up over the six years before the as-of date; purchases follow a BG/NBD process
and order values a Gamma-Gamma spend model, so a fit on the generated data should recover the
parameters recorded in ``expected.json``. Generation streams chunks of customers to disk with
vectorised numpy/Polars code, so memory does not grow with the number of customers.

With ``dirty_rows=K`` every reject reason of every file gets at least K injected rows, plus exact
duplicates (dropped, not rejected) and valid edge cases. Each injected row has exactly one fault;
its fate (and the fate of everything that depends on it) is recorded as it is written, so
``expected.json`` holds the exact counts the pipeline must report.

The parts: :mod:`~fastclv.testing.clean` (valid rows, vectorised), :mod:`~fastclv.testing.dirty`
(injected rows), :mod:`~fastclv.testing.expected` (the counts), :mod:`~fastclv.testing.generator`
(chunks and files), :mod:`~fastclv.testing.common` (what they share).

Example:
    >>> generate(Path("data/small"), customers=1_000, seed=1, dirty_rows=3)  # doctest: +SKIP

"""

from __future__ import annotations

from fastclv.testing.common import BGNBD, GAMMA_GAMMA, BgNbdParams, GammaGammaParams
from fastclv.testing.expected import EXPECTED_FILE_NAME
from fastclv.testing.generator import GenerateResult, generate

__all__ = [
    "BGNBD",
    "EXPECTED_FILE_NAME",
    "GAMMA_GAMMA",
    "BgNbdParams",
    "GammaGammaParams",
    "GenerateResult",
    "generate",
]
