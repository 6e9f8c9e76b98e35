"""fastclv: columnar, streaming, verified customer lifetime value.

The public API, importable from the package::

    from fastclv import Settings, run, RunSummary, FastclvError

    summary = run(Settings.from_env(input="data/sample", load=False))

A scheduler runs the same stages one task each: :func:`begin`, :func:`run_stage` for each of
:data:`STAGES`, then :func:`finish_stages` (see ``dags/customer_ltv.py``). The names are
imported on first use, so ``import fastclv`` (and an Airflow DAG file that imports it) stays
light: Polars, DuckDB and the native scanner load only when a stage runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fastclv.config import Settings
    from fastclv.errors import (
        ConfigError,
        FastclvError,
        InputError,
        LoadError,
        TerminalError,
        TransientError,
        VerificationError,
    )
    from fastclv.pipeline import (
        STAGES,
        RunSummary,
        begin,
        describe_error,
        finish_stages,
        run,
        run_stage,
        write_report,
    )
    from fastclv.secrets import redact

__all__ = [
    "STAGES",
    "ConfigError",
    "FastclvError",
    "InputError",
    "LoadError",
    "RunSummary",
    "Settings",
    "TerminalError",
    "TransientError",
    "VerificationError",
    "begin",
    "describe_error",
    "finish_stages",
    "redact",
    "run",
    "run_stage",
    "write_report",
]
#: The module that defines each public name.
_MODULES = {
    "fastclv.config": ("Settings",),
    "fastclv.secrets": ("redact",),
    "fastclv.errors": (
        "FastclvError",
        "TerminalError",
        "TransientError",
        "ConfigError",
        "InputError",
        "VerificationError",
        "LoadError",
    ),
    "fastclv.pipeline": (
        "run",
        "RunSummary",
        "STAGES",
        "begin",
        "run_stage",
        "finish_stages",
        "describe_error",
        "write_report",
    ),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastclv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
