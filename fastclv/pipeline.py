"""The pipeline: ``run(settings) -> RunSummary`` chains the stages and records the run.

begin -> extract -> transform (with the model) -> verify -> load -> finish. Each stage is one
library call with a JSON-ready result (:func:`run_stage`): :func:`run` chains them in one
process; a scheduler runs them one task each (``dags/customer_ltv.py``) and ends with
:func:`finish_stages`, which folds the same results into the same summary
(:func:`record_stage`). Whatever happens, the run ends with a ``summary.json`` in its staging
folder, its metrics (:mod:`fastclv.metrics`) and (when a database is configured) one row in
the run ledger; a failed run leaves the target table exactly as it was.

Each stage can run in a process of its own (an Airflow task, maybe on another machine): it
reads what it needs from the staging location through a :class:`~fastclv.stage.StagingArea`
and publishes what it made. :func:`run` hands one area to every stage, so nothing is
downloaded again within one process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import polars as pl

from fastclv import memory, stage, storage
from fastclv.config import Settings
from fastclv.errors import ConfigError, FastclvError, TransientError
from fastclv.extract import ScanProgress, extract
from fastclv.report import REPORT
from fastclv.secrets import redact
from fastclv.transform import customer_ltv, overflow_error, overflowing_totals

if TYPE_CHECKING:
    from fastclv.holdout import HoldoutResult

log = logging.getLogger(__name__)

#: Called with (stage name, "start" | "done") so a CLI can show progress.
ProgressHook = Callable[[str, str], None]
#: The stages between begin and finish, in order.
STAGES = ("extract", "transform", "verify", "load")


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
    #: The model settings the run used (so a later ``fastclv verify`` re-checks with them).
    settings: dict[str, object] = field(default_factory=dict)
    #: Sum of predicted_clv over the output (a float: a figure for metrics, not money).
    clv_total: float | None = None
    #: The holdout backtest's figures (contract 5.1; :meth:`fastclv.holdout.HoldoutResult.as_dict`).
    holdout: dict[str, object] | None = None
    #: Where the run's HTML report is (``S/D/report.html``; None when it could not be written).
    report: str | None = None
    #: What went wrong without failing the run (e.g. summary.json not written after the load).
    warnings: list[str] = field(default_factory=list)

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
    """Show progress and keep the stage's time, also when it fails."""
    if progress:
        progress(name, "start")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        summary.timings[name] = round(time.perf_counter() - t0, 3)
        if progress:
            progress(name, "done")


def run(
    settings: Settings, *, progress: ProgressHook | None = None, scan_progress: ScanProgress | None = None
) -> RunSummary:
    """Run the whole pipeline for ``settings.as_of``; raise FastclvError on failure.

    The same stages the Airflow DAG runs one task at a time, chained. The summary is written
    (and the run recorded) even when a stage fails.
    """
    settings = settings.replace(run_id=settings.run_id or new_run_id(settings.as_of))
    assert settings.run_id is not None
    started_at = datetime.now(UTC)
    with ExitStack() as stack:
        t_start = time.perf_counter()
        try:
            area = stack.enter_context(staging_area(settings))
            stack.enter_context(stage.run_lock(area, settings.run_id))
            summary = begin(settings, area=area, record=False)
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            # No run folder (an unusable staging location, the date's lock not had in time): no
            # summary either, but the ledger still records the failed run.
            _record_unstarted(settings, exc, started_at)
            _reraise(exc, settings)
        claim = None
        try:
            # inside: a database that is down still ends in a summary
            claim = record_start(settings, summary, hold=True)
            results: dict[str, dict[str, Any]] = {}
            for name in STAGES:
                if stage_enabled(name, settings):
                    with _timed(summary, name, progress):
                        results[name] = run_stage(
                            name, settings, results, area=area, scan_progress=scan_progress
                        )
                    record_stage(summary, name, results[name])
            summary.status = "succeeded"
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            fail(summary, exc, settings)
            _reraise(exc, settings)
        finally:
            summary.timings["total"] = round(time.perf_counter() - t_start, 3)
            try:
                finish(settings, summary, area=area)
            finally:
                if claim is not None:
                    claim.release()
                write_report(settings, summary, area=area)  # a failed run's report says why; never raises
    return summary


def _record_unstarted(settings: Settings, exc: BaseException, started_at: datetime) -> None:
    """The ledger row of a run that failed before its run folder was ready (best effort)."""
    summary = _new_summary(settings, started_at)
    fail(summary, exc, settings)
    summary.finished_at = datetime.now(UTC)
    _record(settings, summary)


@contextmanager
def staging_area(settings: Settings, area: stage.StagingArea | None = None) -> Iterator[stage.StagingArea]:
    """``area`` if given (it stays open), else the run's own area, closed afterwards."""
    if area is not None:
        yield area
        return
    with stage.StagingArea.for_run(settings.staging, settings.as_of, settings.storage_options) as own:
        yield own


def model_settings(settings: Settings) -> dict[str, object]:
    """The settings that shape the output's numbers, as recorded in the summary."""
    return {
        "horizon_months": settings.horizon_months,
        "margin": settings.margin,
        "discount_rate": settings.discount_rate,
        "penalizer": settings.penalizer,
        "delimiter": settings.delimiter,
    }


def begin(settings: Settings, *, area: stage.StagingArea | None = None, record: bool = True) -> RunSummary:
    """Start a run: a fresh run id, an empty run folder, a ``running`` row in the ledger.

    With ``record=False`` the ledger row is left to :func:`record_start`.
    """
    summary = _new_summary(settings)
    with staging_area(settings, area) as staged:
        staged.prepare()
    if record:
        record_start(settings, summary)
    return summary


def _new_summary(settings: Settings, started_at: datetime | None = None) -> RunSummary:
    return RunSummary(
        run_id=settings.run_id or new_run_id(settings.as_of),
        as_of=settings.as_of,
        input=redact(settings.input, settings),
        staging=settings.staging,
        started_at=started_at or datetime.now(UTC),
        settings=model_settings(settings),
    )


def record_start(settings: Settings, summary: RunSummary, *, hold: bool = False) -> Any:
    """The run's ``running`` row in the ledger (when a database is configured).

    With ``hold`` (one process runs the whole run) the run claims its row until the returned
    :class:`~fastclv.ledger.RunClaim` is released, so that a later run can tell a killed run's
    row from a live one's (and mark it ``abandoned``); returns None otherwise.
    """
    if settings.load and settings.pg_uri:
        from fastclv import ledger

        return ledger.start_run(
            settings.pg_uri,
            schema=settings.pg_schema,
            runs_table=settings.runs_table,
            run_id=summary.run_id,
            as_of=settings.as_of,
            input=summary.input,
            started_at=summary.started_at,
            hold=hold,
        )
    return None


# -- the stages ------------------------------------------------------------------------------


def stage_enabled(name: str, settings: Settings) -> bool:
    """Whether the stage ``name`` runs with ``settings`` (``verify`` and ``load`` may be off)."""
    return {"verify": settings.verify, "load": settings.load}.get(name, True)


def run_stage(
    name: str,
    settings: Settings,
    earlier: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    area: stage.StagingArea | None = None,
    scan_progress: ScanProgress | None = None,
) -> dict[str, Any]:
    """Run one stage; its result, JSON-ready (what a scheduler's task passes on), with its seconds.

    ``earlier`` holds the results of the stages before it (verify compares the staged output with
    the extract's counts and the transform's model). A stage that is off returns ``{}``. The
    extract's result has the reject rate of every file and, when one is above
    ``settings.reject_rate_threshold``, a ``warning`` (the run goes on).

    ``"begin"`` (:func:`begin`, for a scheduler) returns the run's settings without secrets
    (:meth:`Settings.public`, with the new run id) and when it started, for the other tasks
    and :func:`finish_stages`.
    """
    if name == "begin":
        summary = begin(settings, area=area)
        log.info("begin: run %s for as-of %s", summary.run_id, settings.as_of)
        public = settings.replace(run_id=summary.run_id).public()
        return {"settings": public, "started_at": summary.started_at.isoformat()}
    if not stage_enabled(name, settings):
        log.info("%s: off", name)
        return {}
    memory.limit()
    t0 = time.perf_counter()
    log.info("%s: started", name)
    result: dict[str, Any]
    if name == "extract":
        sharded = (earlier or {}).get("sharded")
        files = extract_stage(settings, area=area, on_progress=scan_progress, sharded=sharded)
        result = {"files": files, "reject_rates": reject_rates(files)}
    elif name == "transform":
        done = transform_stage(settings, area=area, sharded=(earlier or {}).get("sharded"))
        result = {
            "output_rows": done.output_rows,
            "model": done.model,
            "model_seconds": done.model_seconds,
            "clv_total": done.clv_total,
            "holdout": done.holdout,
            "holdout_seconds": done.holdout_seconds,
        }
    elif name == "verify":
        counts, model = (earlier or {})["extract"]["files"], (earlier or {})["transform"]["model"]
        partials: Any = (earlier or {}).get("sharded")  # the verify_part tasks' results (a list)
        result = {"verify": verify_stage(settings, counts, model, area=area, partials=partials)}
    elif name == "load":
        parts_done: Any = (earlier or {}).get("sharded")  # the load_part tasks' results (a list)
        result = {"load": load_stage(settings, area=area, parts=parts_done)}
    else:
        raise ValueError(f"no stage {name!r}; the stages are {', '.join(STAGES)}")
    memory.release()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("%s: %s in %.2f s", name, _describe(name, result), result["seconds"])
    if name == "extract":
        found = [
            reject_rate_warning(result["reject_rates"], settings.reject_rate_threshold),
            empty_input_warning(result["files"]),
        ]
        warning = "; ".join(w for w in found if w)
        if warning:
            result["warning"] = warning
            log.warning("extract: %s (the run continues)", warning)
    return result


def _describe(name: str, result: Mapping[str, Any]) -> str:
    """A stage's result in one line of the log."""
    if name == "extract":
        return "; ".join(
            f"{file} {c['read']} read, {c['valid']} valid, {c['rejected']} rejected, "
            f"{c['duplicates_dropped']} duplicates, {c['after_as_of']} after as-of"
            for file, c in result["files"].items()
        )
    if name == "transform":
        model = result["model"]
        fitted = "converged" if model.get("converged") else f"not converged ({model.get('reason')})"
        backtest = result.get("holdout") or {}
        held = (
            f"holdout MAE {backtest['mean_absolute_error']:.3f} per customer"
            if backtest.get("status") == "ran"
            else f"holdout {backtest.get('status', 'off')}"
        )
        seconds = result["model_seconds"]
        return f"{result['output_rows']} customers, model {fitted} (model {seconds:.2f} s), {held}"
    if name == "verify":
        checks = result["verify"].get("checks")
        return (
            f"{len(checks)} checks agree" if isinstance(checks, dict) else str(result["verify"].get("status"))
        )
    load = result["load"]
    return (
        f"{load['rows']} rows into {load['table']} partition {load['partition']} "
        f"(replacing {load.get('replaced_rows', 0)} rows)"
    )


def reject_rates(files: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """rejected/read of every file that has rows."""
    return {
        name: round(int(c["rejected"]) / int(c["read"]), 6) for name, c in files.items() if int(c["read"]) > 0
    }


def reject_rate_warning(rates: Mapping[str, float], threshold: float) -> str | None:
    """The warning when a file's reject rate is above ``threshold`` (None when none is).

    >>> reject_rate_warning({"customers": 0.0156, "orders": 0.002}, 0.01)
    'reject rate above 1.00%: customers 1.56%'
    """
    over = {name: rate for name, rate in rates.items() if rate > threshold}
    if not over:
        return None
    return f"reject rate above {threshold:.2%}: " + ", ".join(f"{n} {r:.2%}" for n, r in over.items())


def empty_input_warning(files: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The warning when no customer is valid (None otherwise): the output, and the date, empty.

    The contract's answer to an export without customers is a date without rows, which is
    almost always an export that went wrong upstream: the run goes on, and says so.

    >>> empty_input_warning({"customers": {"read": 2, "valid": 0}})[:45]
    'customers.csv has no valid customer (2 read):'
    """
    customers = files.get("customers")
    if customers is None or int(customers["valid"]) > 0:
        return None
    return (
        f"customers.csv has no valid customer ({int(customers['read'])} read): the output is empty, "
        "and a load replaces the date with no rows"
    )


def record_stage(summary: RunSummary, name: str, result: Mapping[str, Any]) -> None:
    """Fold a stage's result (from :func:`run_stage`; ``{}`` if it did not run) into the summary."""
    if not result:
        return
    summary.timings[name] = result["seconds"]
    if name == "extract":
        summary.files = dict(result["files"])
    elif name == "transform":
        summary.output_rows = result["output_rows"]
        summary.model = result["model"]
        summary.clv_total = result["clv_total"]
        summary.timings["model"] = result["model_seconds"]
        summary.holdout = result.get("holdout")
        if result.get("holdout_seconds") is not None:
            summary.timings["holdout"] = result["holdout_seconds"]
    elif name == "verify":
        summary.verify = result["verify"]
    elif name == "load":
        summary.load = result["load"]


def extract_stage(
    settings: Settings,
    *,
    area: stage.StagingArea | None = None,
    on_progress: ScanProgress | None = None,
    sharded: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, object]]:
    """Validate the inputs and stage them; returns the counts per file (JSON-ready).

    Reads the CSVs (streamed, also from object storage); publishes the three validated
    inputs and ``rejects.parquet``. With ``settings.shards`` > 1, the sharded plan does it in
    that many worker processes (:func:`fastclv.shard.run_local`): the same files and counts.
    ``sharded`` holds the results of the sharded plan's tasks when a scheduler ran them (``plan``,
    ``scans``, ``resolved``: see :func:`fastclv.shard.stage_task`); this stage then only stages.
    """
    if settings.shards > 1:
        from fastclv import shard

        with staging_area(settings, area) as staged:
            if sharded is not None:
                return shard.stage_task(
                    settings, sharded["plan"], sharded["scans"], sharded["resolved"], area=staged
                )
            return shard.run_local(settings, workers=settings.shards, area=staged, on_progress=on_progress)
    with staging_area(settings, area) as staged:
        extracted = extract(
            settings.input,
            staged.local_dir(),
            settings.as_of,
            delimiter=settings.delimiter,
            storage_options=settings.storage_options,
            bucket_bytes=settings.bucket_mib * 2**20,
            customer_buckets=settings.customer_buckets,
            on_progress=on_progress,
        )
        staged.publish(*stage.INPUTS, stage.REJECTS)
    return {name: counts.as_dict() for name, counts in extracted.counts.items()}


@dataclass(frozen=True)
class TransformResult:
    """What the transform stage produced (``customer_ltv.parquet`` in the run folder)."""

    output_rows: int
    model: dict[str, object]
    model_seconds: float
    #: Sum of predicted_clv (None when no customer has a prediction).
    clv_total: float | None = None
    #: The holdout backtest's figures (``status`` "off" when ``holdout_days`` is 0).
    holdout: dict[str, object] | None = None
    holdout_seconds: float | None = None


def transform_stage(
    settings: Settings,
    *,
    area: stage.StagingArea | None = None,
    sharded: Mapping[str, Any] | None = None,
) -> TransformResult:
    """Historical columns from the staged inputs, then the predictive model: the output file.

    Reads the three validated inputs (fetched when an earlier process staged them);
    publishes ``customer_ltv.parquet``, and ``holdout.parquet`` when the holdout backtest ran.
    With ``settings.shards`` > 1 the history, the model and the backtest run by customer part
    (:mod:`fastclv.shard_transform`): in local worker processes, or, given ``sharded`` (the
    scheduler's mapped tasks ran them: ``{"fitted", "scores"}``), only the output is assembled here.
    """
    with staging_area(settings, area) as staged:
        run_path = staged.local_dir()
        if settings.shards > 1:
            from fastclv import shard_transform

            if sharded is not None:
                done = shard_transform.finish_task(
                    settings, sharded["fitted"], sharded["scores"], area=staged
                )
            else:
                done = shard_transform.run_local(settings, workers=settings.shards, area=staged)
            model, model_seconds = done.model, done.model_seconds
            backtest, holdout_seconds = done.holdout, done.holdout_seconds
        else:
            model, model_seconds, backtest, holdout_seconds = _transform_whole(settings, staged)
        t0 = time.perf_counter()
        rows, clv_total, predicted = (
            pl.scan_parquet(run_path / stage.OUTPUT)
            .select(
                pl.len(),
                pl.col("predicted_clv").sum().alias("total"),
                pl.col("predicted_clv").count().alias("n"),
            )
            .collect()
            .row(0)
        )
        model_seconds = round(model_seconds + time.perf_counter() - t0, 3)
    total = float(clv_total) if predicted and clv_total is not None else None
    return TransformResult(int(rows), model, model_seconds, total, backtest.as_dict(), holdout_seconds)


def _transform_whole(
    settings: Settings, staged: stage.StagingArea
) -> tuple[dict[str, object], float, HoldoutResult, float]:
    """The unsharded transform: the history of every customer, the model, the holdout backtest.

    Returns the model's summary and seconds, the backtest's result and seconds. Inputs staged in
    several key-hash buckets are taken bucket by bucket, then customer part by part, the model
    and the backtest too (:mod:`fastclv.history`); an input of one bucket in one query.
    """
    from fastclv import holdout  # numpy/scipy: not at CLI start
    from fastclv.history import history_by_parts
    from fastclv.model.staged import predict_parts

    staged.fetch(*stage.INPUTS)
    run_path = staged.local_dir()
    work = staged.work_dir()
    work.mkdir(parents=True, exist_ok=True)
    by_parts = history_by_parts(run_path, work, settings.as_of, holdout_days=settings.holdout_days)
    try:
        if by_parts is None:
            histories = [work / "history.parquet"]
            frames = {
                name: pl.scan_parquet(run_path / f"{name}.parquet")
                for name in ("customers", "orders", "order_items")
            }
            stage.sink_parquet(
                customer_ltv(frames["customers"], frames["orders"], frames["order_items"], settings.as_of),
                histories[0],
            )
        else:
            histories = by_parts.histories
        too_big = overflowing_totals(pl.scan_parquet(histories)).head(5).collect()
        if too_big.height:
            raise overflow_error(too_big["customer_id"].to_list())
        t0 = time.perf_counter()
        model = predict_parts(
            histories,
            run_path / stage.OUTPUT,
            horizon_months=settings.horizon_months,
            margin=settings.margin,
            discount_rate=settings.discount_rate,
            penalizer=settings.penalizer,
        )
        staged.publish(stage.OUTPUT)
        model_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_path / holdout.HOLDOUT
        if by_parts is None:
            backtest = holdout.backtest(
                run_path / "customers.parquet",
                run_path / "orders.parquet",
                settings.as_of,
                settings.holdout_days,
                out,
                penalizer=settings.penalizer,
            )
        else:
            backtest = holdout.backtest_parts(
                by_parts.calibrations,
                settings.as_of,
                settings.holdout_days,
                out,
                penalizer=settings.penalizer,
            )
        if backtest.status == "ran":
            staged.publish(holdout.HOLDOUT)
        return model, model_seconds, backtest, round(time.perf_counter() - t0, 3)
    finally:
        if by_parts is not None:
            by_parts.remove()
        (work / "history.parquet").unlink(missing_ok=True)


def verify_stage(
    settings: Settings,
    counts: dict[str, dict[str, object]],
    model: dict[str, object] | None,
    *,
    area: stage.StagingArea | None = None,
    partials: Sequence[Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """The DuckDB cross-check of the staged output; raises VerificationError on a mismatch.

    ``partials``: the customer parts' figures (:func:`verify_part_stage`, a scheduler's mapped
    tasks), concluded on here. Without them a sharded run (``shards`` > 1) checks its parts in
    ``shards`` local worker processes, and an unsharded one in this process.
    """
    from fastclv.verify import REPORT_JSON, REPORT_MD, verify_staged  # duckdb only when the check runs

    with staging_area(settings, area) as staged:
        seconds = None
        if partials is None and settings.shards > 1:
            t0 = time.perf_counter()
            staged.remove(REPORT_MD, REPORT_JSON)  # a failed part must not leave an earlier report
            partials = _check_parts_locally(settings, model, staged)
            seconds = time.perf_counter() - t0
        result = verify_staged(
            staged,
            settings.as_of,
            counts,
            model,
            partials=partials,
            seconds=seconds,
            **_check_settings(settings),
        )
    return result.as_dict()


def verify_part_stage(
    settings: Settings,
    model: dict[str, object] | None,
    part: int,
    parts: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, object]:
    """One customer part of the cross-check (a sharded run's mapped task): its figures, JSON.

    With the cross-check off (``settings.verify`` false) it checks nothing and returns ``{}``.
    """
    from fastclv.verify import CHECKED, check_part

    if not stage_enabled("verify", settings):
        log.info("verify_part: off")
        return {}
    memory.limit()
    with staging_area(settings, area) as staged:
        staged.fetch(*CHECKED)
        return check_part(
            staged.local_dir(), settings.as_of, model, part=part, parts=parts, **_check_settings(settings)
        )


def _check_settings(settings: Settings) -> dict[str, Any]:
    """The settings a cross-check (or one of its parts) runs with, as its keyword arguments."""
    return {
        "horizon_months": settings.horizon_months,
        "margin": settings.margin,
        "discount_rate": settings.discount_rate,
        "memory_limit": settings.duckdb_memory_limit or None,
    }


def _check_parts_locally(
    settings: Settings, model: dict[str, object] | None, staged: stage.StagingArea
) -> list[dict[str, object]]:
    """The cross-check's ``shards`` customer parts, each in a worker process of its own."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from fastclv.verify import CHECKED, check_part

    staged.fetch(*CHECKED)
    parts = settings.shards
    threads = max(1, (os.cpu_count() or 1) // parts)
    with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [
            pool.submit(
                check_part,
                staged.local_dir(),
                settings.as_of,
                model,
                part=j,
                parts=parts,
                threads=threads,
                **_check_settings(settings),
            )
            for j in range(parts)
        ]
        return [job.result() for job in jobs]


def load_stage(
    settings: Settings,
    *,
    area: stage.StagingArea | None = None,
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, object]:
    """Load the staged output into PostgreSQL, replacing the partition of the as-of date.

    A sharded run (``shards`` > 1) loads by part: the run's staging table, then ``shards``
    parts of the output's row groups COPYed on connections of their own, then one swap. With
    ``parts`` (the results of :func:`load_part_stage`, a scheduler's mapped tasks, after
    :func:`load_prepare_stage`) only the swap is left; else this does every step, the parts
    on threads.
    """
    from fastclv import load

    if not settings.pg_uri:
        raise ConfigError("no PostgreSQL URI configured. Hint: pass --pg-uri or --no-load.")
    t0 = time.perf_counter()
    with staging_area(settings, area) as staged:
        if settings.shards > 1:
            local = parts is None  # every step here: what fails is dropped here
            try:
                if parts is None:
                    parts = _load_parts_locally(settings, staged)
                rows = load.output_rows(staged.uri(stage.OUTPUT), settings.storage_options)
                result = load.finish_load_by_part(
                    settings.pg_uri, settings.as_of, settings.shards, rows, **_load_settings(settings)
                )
            except BaseException:
                if local:
                    abandon_load(settings)
                raise
        else:
            staged.fetch(stage.OUTPUT)
            result = load.load_partition(
                settings.pg_uri,
                staged.path(stage.OUTPUT),
                settings.as_of,
                schema=settings.pg_schema,
                table=settings.table,
                lock_timeout_s=settings.lock_timeout_s,
                run_id=settings.run_id or "manual",
            )
    done: dict[str, object] = {
        "table": result.table,
        "partition": result.partition,
        "rows": result.rows,
        "seconds": round(time.perf_counter() - t0, 3),
        "replaced_rows": result.replaced_rows,
    }
    if parts is not None:
        done["parts"] = len(parts)
        done["part_seconds"] = [part.get("seconds") for part in sorted(parts, key=lambda p: int(p["part"]))]
    return done


def _load_settings(settings: Settings) -> dict[str, Any]:
    """Where a load by part goes, as the keyword arguments of its steps."""
    return {
        "schema": settings.pg_schema,
        "table": settings.table,
        "run_id": settings.run_id or "manual",
        "lock_timeout_s": settings.lock_timeout_s,
    }


def abandon_load(settings: Settings) -> None:
    """A failed sharded run: drop what its load by part left in the database (best effort)."""
    from fastclv import load

    if settings.shards > 1 and stage_enabled("load", settings) and settings.pg_uri:
        where = _load_settings(settings)
        load.abandon_load_by_part(
            settings.pg_uri,
            settings.as_of,
            schema=where["schema"],
            table=where["table"],
            run_id=where["run_id"],
        )


def load_prepare_stage(settings: Settings) -> list[dict[str, int]]:
    """A sharded run's load, first task: the run's staging table; one job per part to COPY.

    Not sharded, or the load off: nothing to prepare, no job (the load is one task).
    """
    from fastclv import load

    if settings.shards <= 1 or not stage_enabled("load", settings):
        return []
    if not settings.pg_uri:
        raise ConfigError("no PostgreSQL URI configured. Hint: pass --pg-uri or --no-load.")
    load.begin_load_by_part(settings.pg_uri, settings.as_of, **_load_settings(settings))
    return [{"part": j, "parts": settings.shards} for j in range(settings.shards)]


def load_part_stage(
    settings: Settings, part: int, parts: int, *, area: stage.StagingArea | None = None
) -> dict[str, Any]:
    """One part of a sharded run's load (a mapped task): its row groups of the output COPYed."""
    from fastclv import load

    if not settings.pg_uri:
        raise ConfigError("no PostgreSQL URI configured. Hint: pass --pg-uri or --no-load.")
    where = _load_settings(settings)
    with staging_area(settings, area) as staged:
        return load.load_part(
            settings.pg_uri,
            staged.uri(stage.OUTPUT),
            settings.as_of,
            part,
            parts,
            schema=where["schema"],
            table=where["table"],
            run_id=where["run_id"],
            storage_options=settings.storage_options,
        )


def _load_parts_locally(settings: Settings, staged: stage.StagingArea) -> list[dict[str, Any]]:
    """Every step of a load by part but the swap, the parts on threads (each its connection)."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = load_prepare_stage(settings)
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="fastclv-load") as pool:
        futures = [pool.submit(load_part_stage, settings, j["part"], j["parts"], area=staged) for j in jobs]
        return [future.result() for future in futures]


def describe_error(exc: BaseException, settings: Settings | None = None) -> dict[str, Any]:
    """The error as the summary records it: message (never a traceback, never a secret), type, transient."""
    mapped = _as_fastclv_error(exc, settings)
    if isinstance(mapped, FastclvError):
        error, transient = str(mapped) or type(mapped).__name__, mapped.transient
    else:
        error, transient = f"internal error: {type(exc).__name__}: {exc}", False
    return {"error": redact(error, settings), "error_type": type(mapped).__name__, "transient": transient}


def _reraise(exc: BaseException, settings: Settings) -> NoReturn:
    """Raise ``exc``, or the staging error it is (see :func:`_as_fastclv_error`), from it."""
    mapped = _as_fastclv_error(exc, settings)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _as_fastclv_error(exc: BaseException, settings: Settings | None) -> BaseException:
    """``exc``, or the staging error it is (a full disk, a read-only or unusable staging folder)."""
    if isinstance(exc, FastclvError) or settings is None:
        return exc
    return stage.staging_error(exc, storage.join(settings.staging, settings.as_of.isoformat())) or exc


def fail(summary: RunSummary, exc: BaseException, settings: Settings | None = None) -> None:
    """Mark the summary failed with the error (:func:`describe_error`)."""
    _failed(summary, describe_error(exc, settings))


def _failed(summary: RunSummary, error: Mapping[str, Any]) -> None:
    summary.status = "failed"
    summary.error = error.get("error")
    summary.error_type = error.get("error_type")
    summary.transient = error.get("transient")


def finish_stages(
    settings: Settings,
    results: Mapping[str, Mapping[str, Any]],
    *,
    failed: str | None = None,
    error: Mapping[str, Any] | None = None,
) -> RunSummary:
    """End a run whose stages ran apart (a scheduler's tasks): its summary, then :func:`finish`.

    ``results`` maps each stage that succeeded, ``"begin"`` included, to its :func:`run_stage`
    result. ``failed`` names the stage that failed (None: every stage succeeded) and ``error``
    is what it recorded (:func:`describe_error`; None if it could not, e.g. killed).
    ``settings.run_id`` is the run's id from begin (a new one if begin never ran).
    """
    if failed is not None and not error:
        error = {
            "error": f"stage {failed} ended without recording an error (killed, timed out or out of "
            "memory?). Hint: read that task's log."
        }
    started = (results.get("begin") or {}).get("started_at")
    summary = _new_summary(settings, datetime.fromisoformat(started) if started else None)
    for name in STAGES:
        record_stage(summary, name, results.get(name) or {})
    summary.timings["total"] = round((datetime.now(UTC) - summary.started_at).total_seconds(), 3)
    if failed is None:
        summary.status = "succeeded"
    else:
        _failed(summary, error or {})
        abandon_load(settings.replace(run_id=summary.run_id))
    finish(settings.replace(run_id=summary.run_id), summary)
    return summary


def finish(settings: Settings, summary: RunSummary, *, area: stage.StagingArea | None = None) -> None:
    """End a run: write summary.json (last), record the outcome in the ledger, emit the metrics.

    Never masks a failed run's own error: if summary.json cannot be written, the ledger and
    the metrics are still done, and the error is raised only when the run had succeeded.
    """
    summary.finished_at = datetime.now(UTC)
    summary_error: FastclvError | None = None
    raise_it = False
    with staging_area(settings, area) as staged:
        summary.report = staged.uri(REPORT)  # written after the ledger row (write_report)
        try:
            staged.write_json(stage.SUMMARY, summary.as_dict())
        except (FastclvError, OSError) as exc:
            log.error("could not write %s: %s", staged.uri(stage.SUMMARY), exc)
            mapped = _as_fastclv_error(exc, settings)
            summary_error = (
                mapped
                if isinstance(mapped, FastclvError)
                else TransientError(f"cannot write {staged.uri(stage.SUMMARY)}: {exc}. Hint: check the disk.")
            )
            if summary.status == "succeeded" and summary.load:
                # The table is loaded and the ledger will say so: that is the run's outcome.
                missing = staged.uri(stage.SUMMARY)
                summary.warnings.append(f"the run loaded, but {missing} was not written: {summary_error}")
                summary_error = None
            elif summary.status == "succeeded":  # nothing loaded: the staged folder is the result
                _failed(summary, describe_error(summary_error, settings))
                raise_it = True
        _record(settings, summary)
        if summary.status == "succeeded" and summary_error is None:
            staged.finish(succeeded=True)
    from fastclv import metrics

    metrics.emit(summary.as_dict(), statsd_host=settings.statsd_host, prefix=settings.statsd_prefix)
    if raise_it and summary_error is not None:
        raise summary_error


def _record(settings: Settings, summary: RunSummary) -> None:
    """The run's row in the ledger (errors are logged: they never mask the run's outcome)."""
    assert summary.finished_at is not None
    if settings.load and settings.pg_uri:
        from fastclv import ledger

        try:
            ledger.finish_run(
                settings.pg_uri,
                schema=settings.pg_schema,
                runs_table=settings.runs_table,
                run_id=summary.run_id,
                status=summary.status,
                finished_at=summary.finished_at,
                counts=summary.files,
                output_rows=summary.output_rows,
                model=_ledger_model(summary),
                timings=summary.timings,
                error=summary.error,
                as_of=summary.as_of,
                input=summary.input,
                started_at=summary.started_at,
            )
        except FastclvError as exc:  # never mask the run's own outcome with a ledger error
            if summary.error and str(exc) in summary.error:
                # The run failed on this very error (the database is down): it is reported
                # once, as the run's error, not a second time as a ledger warning.
                log.debug("could not record run %s in the ledger: %s", summary.run_id, exc)
            else:
                log.error("could not record run %s in the ledger: %s", summary.run_id, exc)


def _ledger_model(summary: RunSummary) -> dict[str, object] | None:
    """The ledger's ``model`` column: the fit, with the holdout figures and the total CLV."""
    if summary.model is None and summary.holdout is None:
        return None
    return {**(summary.model or {}), "holdout": summary.holdout, "clv_total": summary.clv_total}


# -- the report ------------------------------------------------------------------------------


def write_report(
    settings: Settings, summary: RunSummary | None = None, *, area: stage.StagingArea | None = None
) -> str | None:
    """Write the run's ``report.html`` next to its staged files; its location, or None.

    Best effort: a report that cannot be written is logged (and the summary's ``report`` set to
    None) but never fails the run. Without ``summary``, the staged summary.json is read (what
    ``fastclv report`` and the DAG's report task do). With a database configured, the report shows
    the earlier dates of the ledger.
    """
    from fastclv import report

    try:
        with staging_area(settings, area) as staged:
            data = summary.as_dict() if summary is not None else staged.read_json(stage.SUMMARY)
            staged.fetch(*(name for name in (stage.OUTPUT, stage.REJECTS) if staged.exists(name)))
            history: list[report.HistoryRow] = []
            # A run that did not load may have failed on the database: do not ask it again.
            loaded = summary is None or summary.load is not None
            if settings.load and settings.pg_uri and loaded:
                from fastclv import ledger

                try:
                    history = ledger.history(settings.pg_uri, schema=settings.pg_schema,
                                             runs_table=settings.runs_table)  # fmt: skip
                except FastclvError as exc:
                    log.warning("report: no history of earlier dates (%s)", exc)
            report.write(staged.local_dir(), data, history)
            staged.publish(REPORT)
            location = staged.uri(REPORT)
    except Exception as exc:  # noqa: BLE001 - the report never fails a run
        log.warning("could not write the run report: %s", redact(f"{type(exc).__name__}: {exc}", settings))
        if summary is not None:
            summary.report = None
        return None
    return location
