"""The pipeline: ``run(settings) -> RunSummary`` chains the stages and records the run.

extract -> transform -> model -> verify -> load, each a library call with a typed result.
Whatever happens, the run ends with a ``summary.json`` in its staging folder and (when a
database is configured) one row in the run ledger; a failed run leaves the target table
exactly as it was.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fastclv import stage, storage
from fastclv.config import Settings, redact_uri
from fastclv.contract import MONEY, OUTPUT_SCHEMA, PREDICTIVE_COLUMNS
from fastclv.errors import FastclvError
from fastclv.extract import ExtractResult, extract
from fastclv.transform import customer_ltv

log = logging.getLogger(__name__)

#: Called with (stage name, "start" | "done") so a CLI can show progress.
ProgressHook = Callable[[str, str], None]


@dataclass
class RunSummary:
    """Everything a run did; also written to ``summary.json`` and the run ledger."""

    run_id: str
    as_of: date
    input: str
    staging: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    files: dict[str, dict[str, object]] = field(default_factory=dict)
    output_rows: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, object] | None = None
    verify: dict[str, object] | None = None
    load: dict[str, object] | None = None
    error: str | None = None
    error_type: str | None = None
    transient: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (dates as ISO strings)."""
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


def new_run_id(as_of: date) -> str:
    """A sortable, unique run id: ``<as_of>T<utc time>-<random>``."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{as_of.isoformat()}_{now}_{uuid.uuid4().hex[:8]}"


@contextmanager
def _timed(summary: RunSummary, name: str, progress: ProgressHook | None) -> Iterator[None]:
    if progress:
        progress(name, "start")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        summary.timings[name] = round(time.perf_counter() - t0, 3)
        if progress:
            progress(name, "done")
        log.info("stage %s took %.2f s", name, summary.timings[name])


def run(settings: Settings, *, progress: ProgressHook | None = None) -> RunSummary:
    """Run the whole pipeline for ``settings.as_of``; raise FastclvError on failure.

    The summary is written (and the run recorded) even when a stage fails.
    """
    run_id = settings.run_id or new_run_id(settings.as_of)
    summary = RunSummary(
        run_id=run_id,
        as_of=settings.as_of,
        input=redact_uri(settings.input),
        staging=settings.staging,
        started_at=datetime.now(UTC),
    )
    run_path = stage.run_dir(settings.staging, settings.as_of)
    stage.prepare_run_dir(run_path)
    (run_path / stage.SUMMARY).unlink(missing_ok=True)
    ledger = _Ledger(settings, summary)
    t_start = time.perf_counter()
    try:
        ledger.start()
        with _timed(summary, "extract", progress):
            extracted = extract(
                settings.input,
                run_path,
                settings.as_of,
                delimiter=settings.delimiter,
                storage_options=settings.storage_options,
            )
        summary.files = {name: counts.as_dict() for name, counts in extracted.counts.items()}
        with _timed(summary, "transform", progress):
            history = run_path / "_work" / "history.parquet"
            stage.sink_parquet(_transform(extracted, settings.as_of), history)
        with _timed(summary, "model", progress):
            output = run_path / stage.OUTPUT
            summary.model = _predict(history, output, settings)
        summary.output_rows = pl.scan_parquet(output).select(pl.len()).collect().item()
        if settings.verify:
            with _timed(summary, "verify", progress):
                summary.verify = _verify(run_path, settings)
        if settings.load:
            with _timed(summary, "load", progress):
                summary.load = _load(output, settings, run_id)
        summary.status = "succeeded"
    except FastclvError as exc:
        summary.status = "failed"
        summary.error = str(exc)
        summary.error_type = type(exc).__name__
        summary.transient = exc.transient
        raise
    except Exception as exc:  # an unexpected failure still ends as a recorded, failed run
        summary.status = "failed"
        summary.error = f"internal error: {type(exc).__name__}: {exc}"
        summary.error_type = type(exc).__name__
        summary.transient = False
        raise
    finally:
        summary.timings["total"] = round(time.perf_counter() - t_start, 3)
        summary.finished_at = datetime.now(UTC)
        stage.write_json(summary.as_dict(), run_path / stage.SUMMARY)
        ledger.finish()
        if summary.status == "succeeded":
            stage.clean_work(run_path)
    return summary


def _transform(extracted: ExtractResult, as_of: date) -> pl.LazyFrame:
    return customer_ltv(
        pl.scan_parquet(extracted.valid["customers"]),
        pl.scan_parquet(extracted.valid["orders"]),
        pl.scan_parquet(extracted.valid["order_items"]),
        as_of,
    )


def _predict(history: Path, output: Path, settings: Settings) -> dict[str, object]:
    """Fit the predictive model on the customers with orders and fill its three columns."""
    from fastclv import model  # numpy/scipy work; imported here to keep CLI start fast

    rfm = (
        pl.scan_parquet(history)
        .filter(pl.col("orders_count") > 0)
        .select("customer_id", "frequency", "recency_days", "t_days", "monetary_value")
        .collect(engine="streaming")
    )
    result = model.fit_and_predict(
        rfm["frequency"].to_numpy().astype(np.float64),
        rfm["recency_days"].to_numpy().astype(np.float64),
        rfm["t_days"].to_numpy().astype(np.float64),
        rfm["monetary_value"].to_numpy().astype(np.float64),
        horizon_months=settings.horizon_months,
        margin=settings.margin,
        discount_rate=settings.discount_rate,
        penalizer=settings.penalizer,
    )
    info = result.summary()
    if result.reason:
        log.warning("predictive columns partly or wholly null: %s", result.reason)
    frame = pl.scan_parquet(history).drop(PREDICTIVE_COLUMNS)
    if result.predictions is not None:
        preds = result.predictions
        scored = pl.DataFrame(
            {
                "customer_id": rfm["customer_id"],
                "p_alive": preds.p_alive,
                "expected_purchases": preds.expected_purchases,
                "_clv": preds.predicted_clv,
            },
            nan_to_null=True,
        ).with_columns(
            # Round half away from zero to the cent, as PostgreSQL does for numeric.
            pl.col("_clv")
            .round(2, mode="half_away_from_zero")
            .cast(MONEY, strict=False)
            .alias("predicted_clv")
        )
        frame = frame.join(scored.drop("_clv").lazy(), on="customer_id", how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in PREDICTIVE_COLUMNS)
    stage.sink_parquet(frame.select(OUTPUT_SCHEMA.names()).cast(OUTPUT_SCHEMA), output)
    return info


def _verify(run_path: Path, settings: Settings) -> dict[str, object]:
    """The DuckDB cross-check (its own issue); a placeholder until it lands."""
    try:
        from fastclv import verify
    except ImportError:
        return {"status": "skipped", "reason": "cross-check not available"}
    return verify.verify_run(run_path, settings).as_dict()


def _load(output: Path, settings: Settings, run_id: str) -> dict[str, object]:
    from fastclv import load

    if not settings.pg_uri:
        raise FastclvError("no PostgreSQL URI configured. Hint: pass --pg-uri or --no-load.")
    result = load.load_partition(
        settings.pg_uri,
        output,
        settings.as_of,
        schema=settings.pg_schema,
        table=settings.table,
        lock_timeout_s=settings.lock_timeout_s,
        run_id=run_id,
    )
    return {
        "table": result.table,
        "partition": result.partition,
        "rows": result.rows,
        "seconds": result.seconds,
    }


class _Ledger:
    """Records the run in ``customer_ltv_runs`` when a database is configured."""

    def __init__(self, settings: Settings, summary: RunSummary) -> None:
        self.settings = settings
        self.summary = summary
        self.started = False

    def start(self) -> None:
        if not (self.settings.load and self.settings.pg_uri):
            return
        from fastclv import load

        load.start_run(
            self.settings.pg_uri,
            schema=self.settings.pg_schema,
            runs_table=self.settings.runs_table,
            run_id=self.summary.run_id,
            as_of=self.summary.as_of,
            input=self.summary.input,
            started_at=self.summary.started_at,
        )
        self.started = True

    def finish(self) -> None:
        if not self.started or not self.settings.pg_uri:
            return
        from fastclv import load

        try:
            load.finish_run(
                self.settings.pg_uri,
                schema=self.settings.pg_schema,
                runs_table=self.settings.runs_table,
                run_id=self.summary.run_id,
                status=self.summary.status,
                finished_at=self.summary.finished_at or datetime.now(UTC),
                counts=self.summary.files,
                output_rows=self.summary.output_rows,
                model=self.summary.model,
                timings=self.summary.timings,
                error=self.summary.error,
            )
        except FastclvError as exc:  # never mask the run's own error with a ledger error
            log.error("could not record run %s in the ledger: %s", self.summary.run_id, exc)


def staged_location(settings: Settings, name: str) -> str:
    """Where a staged file of this run lives."""
    return storage.join(settings.staging, settings.as_of.isoformat(), name)
