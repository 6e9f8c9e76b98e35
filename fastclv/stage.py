"""Staging: the only place that writes files. Every write is atomic (temporary name, rename).

Layout for staging root ``S`` and as-of date ``D`` (pinned; later checks read it)::

    S/D/customers.parquet      validated inputs (typed)
    S/D/orders.parquet
    S/D/order_items.parquet
    S/D/rejects.parquet        file, row, reason, column, raw
    S/D/customer_ltv.parquet   the output table (contract section 4)
    S/D/summary.json           the run summary (counts, timings, model, status)
    S/D/_work/                 intermediate files of the last run
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

SUMMARY = "summary.json"
OUTPUT = "customer_ltv.parquet"
REJECTS = "rejects.parquet"


def run_dir(staging: str | Path, as_of: date) -> Path:
    """The folder of one as-of date's run."""
    return Path(staging) / as_of.isoformat()


def temporary(path: Path) -> Path:
    """A unique temporary name next to ``path`` (never mistaken for a finished file)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def commit(tmp: Path, final: Path) -> None:
    """Atomically move a finished temporary file into place."""
    os.replace(tmp, final)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write a DataFrame to Parquet atomically."""
    tmp = temporary(path)
    try:
        frame.write_parquet(tmp)
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sink_parquet(frame: pl.LazyFrame, path: Path) -> None:
    """Stream a LazyFrame to Parquet atomically."""
    tmp = temporary(path)
    try:
        frame.sink_parquet(tmp, engine="streaming")
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sink_ipc(frame: pl.LazyFrame, path: Path) -> None:
    """Stream a LazyFrame to an Arrow IPC file atomically (work files: cheap to write)."""
    tmp = temporary(path)
    try:
        frame.sink_ipc(tmp, engine="streaming", compression="lz4")
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (sorted keys, readable)."""
    tmp = temporary(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_run_dir(path: Path) -> None:
    """Create the run folder; clear a previous run's work files and stale outputs."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path / "_work", ignore_errors=True)
    for stale in path.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)


def clean_work(path: Path) -> None:
    """Remove the intermediate files of a finished run."""
    shutil.rmtree(path / "_work", ignore_errors=True)
