"""The sharded plan's transform: per-customer history, one model fit and predictions, by part.

The extract's order buckets (:mod:`fastclv.shard`) hold every order with its items, but a
customer's orders are spread over every bucket. So each item bucket's task also makes the
bucket's purchase days (:func:`days`): one row per (customer, day) with its orders, first and
last order time and value, cut by customer into ``parts`` (the exchange). Then::

    history  (per part)  the customers of one part: their days merged, the historical columns,
                         two histograms of the model's inputs (distinct rows with counts), and
                         the part's calibration customers of the holdout backtest with theirs
    fit      (one task)  BG/NBD and Gamma-Gamma on the merged histograms, and the backtest's
                         BG/NBD on the merged calibration histograms: the models' summaries
    score    (per part)  the part's predictions (and holdout predictions) from those parameters
    assemble            the parts, in order, as customer_ltv.parquet and holdout.parquet

A part is a range of customer rows (:func:`part_of`), so the parts in order are the customers in
file order, and ``customer_ltv.parquet`` is the unsharded run's file row for row. The merged
histograms hold the same distinct rows with the same counts as the customers' own rows, so the
fits see exactly the unsharded fits' data (:func:`fastclv.model.staged.fit_histograms`), and
the backtest's figures, summed over the assembled file in the unsharded order, are the same too.

Each history or score task holds about 1/parts of the customers (a history task's merged days
hold at most :data:`~fastclv.history.PART_CUSTOMERS` customers' at a time: :func:`sub_parts`);
the fit holds the histograms (distinct histories: a few hundred thousand rows at a million
customers); the assemble step
streams, then reads three columns of the calibration customers (16 bytes each) for the
backtest's figures. The cross-check runs by customer part too (:func:`fastclv.verify.check_part`,
by DuckDB's hash of customer_id); still whole: the load (streamed, over up to N connections).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from fastclv import holdout, stage
from fastclv.config import Settings
from fastclv.contract import ORDER_ITEMS, ORDERS
from fastclv.shard import PARTS, Plan, RangeScan, _bucket_files, _relative, pipeline_area
from fastclv.transform import (
    customer_ltv_from_days,
    merge_days,
    overflow_error,
    overflowing_totals,
    part_of,
    purchase_days,
)

log = logging.getLogger(__name__)

#: What the extract leaves for the transform of a local sharded run (:func:`run_local`).
HANDOFF = f"{PARTS}/plan.json"


def customer_rows(scans: Iterable[RangeScan]) -> int:
    """Records of customers.csv (the highest customer row number is at most this + 1)."""
    return sum(s.rows for s in scans if s.file == "customers")


def _days_name(bucket: int, part: int) -> str:
    return f"{PARTS}/days.b{bucket}.p{part}.arrow"


def _part_names(part: int) -> dict[str, str]:
    kinds = ("history", "bg", "gg", "output", "calibration", "calibration_bg", "holdout")
    return {kind: f"{PARTS}/{kind}.p{part}.parquet" for kind in kinds}


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_ipc(path)


# --------------------------------------------------------------------------- the tasks


def days(
    settings: Settings,
    the_plan: Plan,
    scans: Iterable[RangeScan],
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> int:
    """The purchase days of one resolved order bucket, cut by customer part; their row count.

    Runs after the bucket's items are resolved (it reads the bucket's valid orders and items).
    """
    rows = customer_rows(scans)
    parts = the_plan.parts
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        sources = [_bucket_files(staged, the_plan, spec.name, bucket).valid for spec in (ORDERS, ORDER_ITEMS)]
        staged.fetch(*(_relative(staged, p) for p in sources))
        frame = (
            purchase_days(_scan(sources[0]), _scan(sources[1]), settings.as_of)
            .with_columns(part_of("customer_row", rows, parts).alias("_part"))
            .collect(engine="streaming")
        )
        by_part = {key[0]: df for key, df in frame.partition_by("_part", as_dict=True).items()}
        empty = frame.clear().drop("_part")
        (staged.local_dir() / PARTS).mkdir(parents=True, exist_ok=True)
        names = []
        for j in range(parts):
            name = _days_name(bucket, j)
            part = by_part.get(j)
            stage.sink_ipc((empty if part is None else part.drop("_part")).lazy(), staged.path(name))
            names.append(name)
        staged.publish(*names)
    return frame.height


def history(
    settings: Settings,
    the_plan: Plan,
    scans: Iterable[RangeScan],
    part: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """The historical columns and model histograms of the customers of one part.

    A part of more than :data:`~fastclv.history.PART_CUSTOMERS` customers is made in that many
    customers at a time (its sub-parts, nested ranges of rows, one after the other, their files
    joined in order without decoding them), as the unsharded history is: the hash tables of the
    merged days then hold one sub-part (at 10M customers in 4 parts, a part's task peaked at
    3.5 GiB whole).

    Returns the part's customer count and up to 5 ids of customers whose total revenue does not
    fit numeric(18,2) (the fit task reports them, as the unsharded transform does).
    """
    rows, parts = customer_rows(scans), the_plan.parts
    names = _part_names(part)
    subs = sub_parts(rows, parts)
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        sources = _customer_sources(staged, the_plan)
        days_names = [_days_name(k, part) for k in range(the_plan.buckets)]
        staged.fetch(*sources, *days_names)
        outputs = [staged.path(names["history"])]
        if settings.holdout_days > 0:
            outputs.append(staged.path(names["calibration"]))
        pieces: list[list[Path]] = [[], []]
        try:
            for f in range(part * subs, (part + 1) * subs):
                customers = pl.scan_parquet([staged.path(n) for n in sources]).filter(
                    part_of("row", rows, parts * subs) == f
                )
                if len(sources) > 1:  # one sub-part's customers, in row order as staged
                    customers = customers.sort("row")
                days = pl.scan_ipc([staged.path(n) for n in days_names])
                if subs > 1:
                    days = days.filter(part_of("customer_row", rows, parts * subs) == f)
                # The sub-part's days once, for its history and its calibration.
                merged = merge_days(days).collect(engine="streaming").lazy()
                frames = [customer_ltv_from_days(customers, merged, settings.as_of)]
                if settings.holdout_days > 0:
                    frames.append(
                        holdout.calibration_from_days(
                            customers, merged, settings.as_of, settings.holdout_days, distinct=True
                        )
                    )
                for kind, (frame, out) in enumerate(zip(frames, outputs, strict=True)):
                    piece = out if subs == 1 else out.with_name(f"{out.stem}.s{f}.parquet")
                    stage.sink_parquet(frame, piece)
                    pieces[kind].append(piece)
                del merged
            if subs > 1:
                for kind, out in enumerate(outputs):
                    stage.join_parquet(pieces[kind], out)
        finally:
            if subs > 1:
                for piece in (p for kind in pieces for p in kind):
                    piece.unlink(missing_ok=True)
        out = outputs[0]
        too_big = overflowing_totals(pl.scan_parquet(out)).head(5).collect()["customer_id"].to_list()
        from fastclv.model.staged import histograms  # numpy: not at import

        bg, gg = histograms(out)
        stage.write_parquet(bg, staged.path(names["bg"]))
        stage.write_parquet(gg, staged.path(names["gg"]))
        customers_n = int(pl.scan_parquet(out).select(pl.len()).collect().item())
        staged.publish(names["history"], names["bg"], names["gg"])
        backtest = None
        if settings.holdout_days > 0:
            backtest = _calibration(staged, names)
    return {
        "part": part,
        "customers": customers_n,
        "too_big": too_big,
        "distinct": bg.height,
        "holdout": backtest,
    }


def _customer_sources(staged: stage.StagingArea, the_plan: Plan) -> list[str]:
    """The staged customers, or with several customer buckets their resolved parts.

    Each part is in row order. The parts, since the extract task stages customers.parquet
    beside the history tasks (a DAG does not order them).
    """
    if the_plan.customer_buckets == 1:
        return ["customers.parquet"]
    files = (_bucket_files(staged, the_plan, "customers", j).valid for j in range(the_plan.customer_buckets))
    return [_relative(staged, path) for path in files]


def sub_parts(rows: int, parts: int) -> int:
    """Sub-parts of each customer part: about :data:`~fastclv.history.PART_CUSTOMERS` customers each."""
    from fastclv.history import PART_CUSTOMERS, part_count

    return part_count(-(-rows // max(1, parts)), PART_CUSTOMERS)


def _calibration(staged: stage.StagingArea, names: dict[str, str]) -> dict[str, int]:
    """The histogram of the part's calibration customers of the holdout backtest (written)."""
    histogram = holdout.calibration_histogram(pl.scan_parquet(staged.path(names["calibration"])))
    stage.write_parquet(histogram.rows, staged.path(names["calibration_bg"]))
    staged.publish(names["calibration"], names["calibration_bg"])
    return {"customers": histogram.customers, "span": histogram.span}


def fit(
    settings: Settings,
    the_plan: Plan,
    histories: Iterable[Mapping[str, Any]],
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """Both model fits on the merged histograms of every part: the model's summary (JSON).

    Raises:
        TerminalError: a customer's total revenue does not fit numeric(18,2) (the first five
            such customers in file order, as the unsharded transform reports them).
    """
    done = sorted(histories, key=lambda h: int(h["part"]))
    if [int(h["part"]) for h in done] != list(range(the_plan.parts)):
        raise ValueError("fit: the histories are not every part of the plan")
    too_big = [i for h in done for i in h["too_big"]][:5]
    if too_big:
        raise overflow_error(too_big)
    t0 = time.perf_counter()
    with pipeline_area(settings, area) as staged:
        names = [_part_names(j) for j in range(the_plan.parts)]
        staged.fetch(*(n[kind] for n in names for kind in ("bg", "gg")))
        bg = pl.concat([pl.read_parquet(staged.path(n["bg"])) for n in names])
        gg = pl.concat([pl.read_parquet(staged.path(n["gg"])) for n in names])
    from fastclv.model.staged import fit_histograms

    result = fit_histograms(bg, gg, penalizer=settings.penalizer)
    if result.reason:
        log.warning("predictive columns partly or wholly null: %s", result.reason)
    log.info("fit: %d distinct histories in %.2f s", bg.height, time.perf_counter() - t0)
    seconds = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    backtest = _holdout_fit(settings, the_plan, [h["holdout"] for h in done], area)
    return {
        "model": result.summary(),
        "seconds": seconds,
        "holdout": backtest,
        "holdout_seconds": round(time.perf_counter() - t0, 3),
    }


def _holdout_fit(
    settings: Settings,
    the_plan: Plan,
    parts: list[Mapping[str, Any] | None],
    area: stage.StagingArea | None,
) -> dict[str, Any]:
    """The holdout backtest's fit on the parts' calibration histograms (or why it is skipped)."""
    if settings.holdout_days <= 0:
        return {"status": "off"}
    with pipeline_area(settings, area) as staged:
        names = [_part_names(j)["calibration_bg"] for j in range(the_plan.parts)]
        staged.fetch(*names)
        histogram = holdout.Histogram(
            pl.concat([pl.read_parquet(staged.path(n)) for n in names]),
            sum(int(p["customers"]) for p in parts if p),
            max((int(p["span"]) for p in parts if p), default=0),
        )
    fitted = holdout.fit_histogram(
        histogram, settings.as_of, settings.holdout_days, penalizer=settings.penalizer
    )
    if isinstance(fitted, str):
        return {"status": "skipped", "reason": fitted, "customers": histogram.customers}
    params, log_likelihood = fitted
    return {
        "status": "fit",
        "customers": histogram.customers,
        "params": asdict(params),
        "log_likelihood": log_likelihood,
    }


def score(
    settings: Settings,
    model: Mapping[str, Any],
    part: int,
    *,
    backtest: Mapping[str, Any] | None = None,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """The predictions of one part's customers from the fitted model (its output rows).

    With ``backtest`` (the fit's holdout result) fitted, also the part's holdout predictions.
    """
    from fastclv.model.staged import score_staged

    names = _part_names(part)
    t0 = time.perf_counter()
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        staged.fetch(names["history"])
        rows = score_staged(
            staged.path(names["history"]),
            staged.path(names["output"]),
            dict(model),
            horizon_months=settings.horizon_months,
            margin=settings.margin,
            discount_rate=settings.discount_rate,
        )
        staged.publish(names["output"])
        if backtest is not None and backtest.get("status") == "fit":
            from fastclv.model import BgNbdParams

            staged.fetch(names["calibration"])
            params = BgNbdParams(**backtest["params"])
            holdout.predict_part(
                staged.path(names["calibration"]),
                params,
                settings.holdout_days,
                staged.path(names["holdout"]),
            )
            staged.publish(names["holdout"])
    return {"part": part, "rows": rows, "seconds": round(time.perf_counter() - t0, 3)}


def assemble(
    settings: Settings,
    the_plan: Plan,
    scores: Iterable[Mapping[str, Any]],
    backtest: Mapping[str, Any],
    *,
    area: stage.StagingArea | None = None,
) -> holdout.HoldoutResult:
    """The parts' outputs, in part order, as the run's ``customer_ltv.parquet`` (published).

    The holdout backtest's ``holdout.parquet`` likewise; returns the backtest's figures.
    """
    done = sorted(int(s["part"]) for s in scores)
    if done != list(range(the_plan.parts)):
        raise ValueError("assemble: the scores are not every part of the plan")
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        names = [_part_names(j)["output"] for j in done]
        staged.fetch(*names)
        stage.join_parquet([staged.path(n) for n in names], staged.path(stage.OUTPUT))
        staged.publish(stage.OUTPUT)
        return _holdout_result(settings, staged, done, backtest)


def _holdout_result(
    settings: Settings, staged: stage.StagingArea, parts: list[int], backtest: Mapping[str, Any]
) -> holdout.HoldoutResult:
    """The holdout figures, from the parts' holdout predictions (in order: the unsharded sums)."""
    days = settings.holdout_days
    cal_end = settings.as_of - timedelta(days=days)
    if backtest["status"] == "off":
        return holdout.HoldoutResult("off", days, reason="holdout_days is 0")
    if backtest["status"] == "skipped":
        return holdout.skipped(str(backtest["reason"]), days, cal_end, int(backtest["customers"]))
    names = [_part_names(j)["holdout"] for j in parts]
    staged.fetch(*names)
    result = holdout.result_of_parts(
        [staged.path(n) for n in names],
        staged.path(holdout.HOLDOUT),
        settings.as_of,
        days,
        dict(backtest["params"]),
        backtest["log_likelihood"],
    )
    staged.publish(holdout.HOLDOUT)
    return result


def remove_work(settings: Settings, the_plan: Plan, *, area: stage.StagingArea | None = None) -> None:
    """Drop the sharded transform's work files (the published objects too when remote)."""
    with pipeline_area(settings, area) as staged:
        if staged.remote:
            names = [_days_name(k, j) for k in range(the_plan.buckets) for j in range(the_plan.parts)]
            names += [n for j in range(the_plan.parts) for n in _part_names(j).values()]
            if the_plan.customer_buckets > 1:  # the customer buckets' files (shard._bucket_files)
                for j in range(the_plan.customer_buckets):
                    done = _bucket_files(staged, the_plan, "customers", j)
                    names += [_relative(staged, done.valid), _relative(staged, done.late)]
            staged.remove(*names, HANDOFF)
        shutil.rmtree(staged.local_dir() / PARTS, ignore_errors=True)


# --------------------------------------------------------------------------- one machine


def write_handoff(
    settings: Settings, the_plan: Plan, scans: Iterable[RangeScan], *, area: stage.StagingArea | None = None
) -> None:
    """What a local sharded transform needs from the extract: the plan and the stitched scans."""
    with pipeline_area(settings, area) as staged:
        staged.write_json(HANDOFF, {"plan": the_plan.as_dict(), "scans": [s.as_dict() for s in scans]})


def run_local(settings: Settings, *, workers: int, area: stage.StagingArea | None = None) -> Transformed:
    """The sharded transform on this machine, in ``workers`` processes.

    Needs the work files of a sharded extract of the same run (:func:`fastclv.shard.run_local`).
    Leaves ``customer_ltv.parquet`` in the run folder, as the unsharded transform does.
    """
    from fastclv.shard import _init_worker

    with pipeline_area(settings, area) as staged:
        handoff = staged.read_json(HANDOFF)
        the_plan = Plan.from_dict(handoff["plan"])
        scans = [RangeScan.from_dict(s) for s in handoff["scans"]]
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
        ) as pool:
            jobs = [pool.submit(history, settings, the_plan, scans, j) for j in range(the_plan.parts)]
            histories = [job.result() for job in jobs]
            t1 = time.perf_counter()
            fitted = fit(settings, the_plan, histories, area=staged)
            t2 = time.perf_counter()
            backtest = fitted["holdout"]
            jobs = [
                pool.submit(score, settings, fitted["model"], j, backtest=backtest)
                for j in range(the_plan.parts)
            ]
            scores = [job.result() for job in jobs]
        result = assemble(settings, the_plan, scores, backtest, area=staged)
        remove_work(settings, the_plan, area=staged)
    log.info(
        "sharded transform in %d parts: histories %.1f s, fit %.1f s, scores and output %.1f s",
        the_plan.parts, t1 - t0, t2 - t1, time.perf_counter() - t2,
    )  # fmt: skip
    return Transformed(fitted["model"], round(time.perf_counter() - t1, 3), result, fitted["holdout_seconds"])


@dataclass(frozen=True)
class Transformed:
    """What the sharded transform made: the model's summary, the holdout backtest, their seconds."""

    model: dict[str, Any]
    model_seconds: float
    holdout: holdout.HoldoutResult
    holdout_seconds: float


# --------------------------------------------------------------------------- JSON tasks


def history_task(
    settings: Settings,
    planned: Mapping[str, Any],
    scans: Iterable[Mapping[str, Any]],
    part: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """:func:`history` of one part."""
    stitched = [RangeScan.from_dict(s) for s in scans]
    return history(settings, Plan.from_dict(planned), stitched, part, area=area)


def fit_task(
    settings: Settings,
    planned: Mapping[str, Any],
    histories: Iterable[Mapping[str, Any]],
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """:func:`fit` on the mapped histories' results."""
    return fit(settings, Plan.from_dict(planned), histories, area=area)


def score_task(
    settings: Settings, fitted: Mapping[str, Any], part: int, *, area: stage.StagingArea | None = None
) -> dict[str, Any]:
    """:func:`score` of one part (``fitted``: :func:`fit`'s result)."""
    return score(settings, fitted["model"], part, backtest=fitted["holdout"], area=area)


def finish_task(
    settings: Settings,
    fitted: Mapping[str, Any],
    scores: Iterable[Mapping[str, Any]],
    *,
    area: stage.StagingArea | None = None,
) -> Transformed:
    """:func:`assemble` the output, then :func:`remove_work`.

    ``fitted`` is the fit task's result, with the plan.
    """
    the_plan = Plan.from_dict(fitted["plan"])
    t0 = time.perf_counter()
    result = assemble(settings, the_plan, scores, fitted["holdout"], area=area)
    remove_work(settings, the_plan, area=area)
    seconds = float(fitted["seconds"]) + time.perf_counter() - t0
    return Transformed(dict(fitted["model"]), round(seconds, 3), result, float(fitted["holdout_seconds"]))


__all__ = [
    "HANDOFF",
    "PARTS",
    "assemble",
    "customer_rows",
    "days",
    "fit",
    "history",
    "remove_work",
    "run_local",
    "score",
]
