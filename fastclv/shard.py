"""The sharded plan: one run's extract as small tasks that any executor can run.

Each function takes and returns small JSON-ready results (offsets, counts); the rows move
through files in the run's staging area (``S/D/_shards/``), published whole and fetched by
the task that needs them, so the tasks can run in other processes (``fastclv run --shards
N``: :func:`run_local`) or on other machines (Airflow's Celery or Kubernetes workers, with
object storage as the staging area)::

    plan                       headers checked, each CSV cut into N byte ranges, the bucket count
    scan     (per byte range)  the native scanner on one range: rows by key-hash bucket, rejects
    stitch                     each range's guessed start checked against the range before
    resolve  (per bucket)      each customer bucket (and, with several, the orders' exchange:
                               route per order bucket, lookup per customer bucket), then each
                               order bucket, then each item bucket
    stage                      the staged inputs, rejects.parquet and the counts

The staged inputs, rejects and counts are exactly those of the unsharded extract
(:func:`fastclv.extract.extract`, same ``bucket_mib``): the same buckets, resolved by the same
functions, with row numbers shifted by the rows of the ranges before.

**Byte ranges.** A range owns the records that *start* in it. A range after the first cannot
know whether its first byte is inside a quoted field that spans lines, so its scan guesses
that the first line start is a record start; :func:`stitch` then checks the guess against
where the range before really ended (its ``next`` record) and scans a range again from that
offset when they differ (rare: a multi-line field across a cut). Every byte is read once
unless a guess was wrong.

**Where each rule is decided.** Duplicates and conflicts: inside one key's bucket (customers
by the customer_id hash, orders and items by the order_id hash). ``unknown_order``: inside the
order_id bucket, which an item shares with its order. ``unknown_customer``: with one customer
bucket (customers.csv under a quarter of the bucket bytes), each order bucket against every
staged customer; with several, by one small exchange: :func:`route` sends each order bucket's
(row, customer_id) to the customer bucket of the id's hash, :func:`lookup` answers with the
customer's row, and each order bucket joins its answers on its row numbers. So no task holds
more than one bucket of any file.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastclv import extract as ex
from fastclv import native, stage, storage
from fastclv.config import Settings
from fastclv.contract import INPUT_FILES, ORDER_ITEMS, ORDERS, InputFile, as_of_cutoff

log = logging.getLogger(__name__)

#: The folder of the sharded plan's work files in the run's staging area.
SHARDS = "_shards"
#: The folder of the sharded transform's work files (:mod:`fastclv.shard_transform`).
PARTS = "_parts"
_SPECS: dict[str, InputFile] = {spec.name: spec for spec in INPUT_FILES}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FilePlan:
    """One input file cut into byte ranges: ``[data_start, cuts[0])``, ``[cuts[0], cuts[1])``...

    The last range runs to the end of the file.
    """

    file: str
    size: int | None
    data_start: int
    cuts: list[int] = field(default_factory=list)

    def ranges(self) -> list[native.ByteRange]:
        """The byte ranges, in file order (the first starts at the data: no guess)."""
        starts = [self.data_start, *self.cuts]
        ends: list[int | None] = [*self.cuts, None]
        return [
            native.ByteRange(a, b, align=k > 0) for k, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` decided: the byte ranges of each file and the key-hash buckets."""

    files: dict[str, FilePlan]
    #: Buckets of orders and items.
    buckets: int
    #: This plan's own id: names what its tasks leave behind (a rerun never takes an earlier plan's).
    id: str = ""
    #: Customer parts of the transform (:mod:`fastclv.shard_transform`): ranges of customer rows.
    parts: int = 1
    #: Buckets of the customers (by the customer_id hash).
    customer_buckets: int = 1

    def buckets_of(self, file: str) -> int:
        """Key-hash buckets of ``file``."""
        return self.customer_buckets if file == "customers" else self.buckets

    def scans(self) -> list[tuple[str, int]]:
        """Every (file, range index) to scan, largest files first."""
        order = sorted(self.files.values(), key=lambda f: -(f.size or 0))
        return [(f.file, k) for f in order for k in range(len(f.cuts) + 1)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (an XCom value)."""
        return {
            "files": {name: asdict(f) for name, f in self.files.items()},
            "buckets": self.buckets,
            "id": self.id,
            "parts": self.parts,
            "customer_buckets": self.customer_buckets,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """The plan from :meth:`as_dict`."""
        return cls(
            {name: FilePlan(**f) for name, f in data["files"].items()},
            int(data["buckets"]),
            str(data["id"]),
            int(data.get("parts", 1)),
            int(data.get("customer_buckets", 1)),
        )


@dataclass(frozen=True)
class RangeScan:
    """One byte range after its scan."""

    file: str
    index: int
    #: Where the scan began, and whether that was a guess (see the module's doc).
    start: int
    align: bool
    #: Records owned by the range (row numbers 1..rows in its work files).
    rows: int
    #: File offset of the first record framed (None: none), and of the first one after the range.
    first: int | None
    next: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RangeScan:
        """The scan from :meth:`as_dict`."""
        return cls(**data)


# --------------------------------------------------------------------------- work files


def _scan_stem(file: str, index: int) -> str:
    return f"{file}.r{index}"


def _scan_names(file: str, index: int, buckets: int) -> list[str]:
    stem = f"{SHARDS}/{_scan_stem(file, index)}"
    return [f"{stem}.rejected.arrow", *(f"{stem}.b{k}.arrow" for k in range(buckets))]


def _relative(area: stage.StagingArea, path: Path) -> str:
    return path.relative_to(area.local_dir()).as_posix()


def _bucket_files(area: stage.StagingArea, the_plan: Plan, file: str, k: int) -> ex.BucketFiles:
    """Where bucket ``k`` of ``file`` is resolved to.

    Several customer buckets resolve into the transform's folder (``_parts/``): its history
    tasks read them, beside the extract task that stages customers.parquet and removes ``_shards/``.
    """
    spec = _SPECS[file]
    work = PARTS if file == "customers" and the_plan.customer_buckets > 1 else SHARDS
    return ex.bucket_files(spec, k, the_plan.buckets_of(file), area.local_dir(), area.local_dir() / work)


def _order_parts(area: stage.StagingArea, the_plan: Plan) -> list[Path]:
    """The work files with the orders' keys that the items' buckets look their order up in."""
    outputs = [_bucket_files(area, the_plan, ORDERS.name, k) for k in range(the_plan.buckets)]
    return [b.keys for b in outputs if b.keys is not None]


def _scanned(area: stage.StagingArea, the_plan: Plan, file: str, scans: list[RangeScan]) -> ex.Scanned:
    """A file's range scans as one :class:`~fastclv.extract.Scanned` (fetched when remote)."""
    mine = sorted((s for s in scans if s.file == file), key=lambda s: s.index)
    buckets = the_plan.buckets_of(file)
    names = [_scan_names(file, s.index, buckets) for s in mine]
    shifts = [0]
    for s in mine[:-1]:
        shifts.append(shifts[-1] + s.rows)
    return ex.Scanned(
        rows=sum(s.rows for s in mine),
        rejected=[area.path(n[0]) for n in names],
        buckets=[[area.path(n[1 + k]) for n in names] for k in range(buckets)],
        shifts=shifts,
    )


# --------------------------------------------------------------------------- the tasks


def plan(
    settings: Settings,
    shards: int,
    *,
    range_bytes: int = 0,
    buckets: int = 0,
    customer_buckets: int = 0,
    area: stage.StagingArea | None = None,
) -> Plan:
    """Check the three headers and cut each file into ``shards`` byte ranges.

    ``range_bytes`` > 0 cuts ranges of about that many bytes instead (more ranges than
    shards: tests, and files far larger than the workers' memory). ``buckets`` and
    ``customer_buckets`` (powers of two) override the bucket counts that ``settings.bucket_mib``
    gives, as in :func:`fastclv.extract.extract`. Clears the work files of an earlier sharded run of the date.

    Raises:
        InputError: a file is missing, unreadable or lacks a required column.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, not {shards}")
    headers = {
        spec.name: ex.open_input(spec, settings.input, settings.delimiter, settings.storage_options)
        for spec in INPUT_FILES
    }
    files: dict[str, FilePlan] = {}
    for name, header in headers.items():
        start = header.scan.data_start
        data = (header.size or start) - start
        n = max(1, math.ceil(data / range_bytes)) if range_bytes > 0 else shards
        n = 1 if header.size is None else min(n, max(1, data))
        cuts = sorted({start + data * i // n for i in range(1, n)} - {start})
        files[name] = FilePlan(name, header.size, start, cuts)
    sizes = (headers[ORDERS.name].size, headers[ORDER_ITEMS.name].size)
    bucket_bytes = settings.bucket_mib * 2**20
    buckets = buckets or ex.bucket_count(*sizes, bucket_bytes=bucket_bytes)
    customer_buckets = (
        customer_buckets
        or settings.customer_buckets
        or ex.customer_bucket_count(headers["customers"].size, bucket_bytes=bucket_bytes)
    )
    for n in (buckets, customer_buckets):
        if n & (n - 1) or n < 1:
            raise ValueError(f"bucket counts must be powers of two, not {n}")
    with pipeline_area(settings, area) as staged:
        for work in (SHARDS, PARTS):
            shutil.rmtree(staged.local_dir() / work, ignore_errors=True)
    the_plan = Plan(files, buckets, uuid.uuid4().hex[:12], parts=shards, customer_buckets=customer_buckets)
    log.info(
        "plan: %s; %d key-hash buckets (customers %d)",
        ", ".join(f"{name} {len(f.cuts) + 1} byte ranges" for name, f in files.items()),
        buckets,
        customer_buckets,
    )
    return the_plan


def scan(
    settings: Settings,
    the_plan: Plan,
    file: str,
    index: int,
    *,
    start: int | None = None,
    threads: int = 0,
    area: stage.StagingArea | None = None,
) -> RangeScan:
    """Scan byte range ``index`` of ``file`` into its work files (published when remote).

    ``start`` scans the range from that offset, a known record start (:func:`stitch`), instead
    of its planned, guessed one. ``threads`` caps the scanner's threads (0: every core).
    """
    spec = _SPECS[file]
    planned = the_plan.files[file].ranges()[index]
    byte_range = planned if start is None else native.ByteRange(start, planned.end, align=False)
    header = ex.open_input(
        spec, settings.input, settings.delimiter, settings.storage_options, threads=threads
    )
    buckets = the_plan.buckets_of(file)
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        work = staged.local_dir() / SHARDS
        scanned = ex.scan_file(
            header,
            work,
            buckets,
            settings.storage_options,
            stem=_scan_stem(file, index),
            byte_range=byte_range,
        )
        staged.publish(*_scan_names(file, index, buckets))
    after = header.scan.next_record
    if after is None:  # a bug: a finished scan always knows where it stopped
        raise AssertionError(f"{spec.file_name}: byte range {index} ended without its end offset")
    return RangeScan(
        file, index, byte_range.start, byte_range.align, scanned.rows, header.scan.first_record, after
    )


def stitch(
    settings: Settings,
    the_plan: Plan,
    scans: Iterable[RangeScan],
    *,
    area: stage.StagingArea | None = None,
    rescan: Callable[..., RangeScan] | None = None,
) -> list[RangeScan]:
    """Check every range's guessed start against the range before; scan again where it was wrong.

    A range after the first began at a guessed record start; its records are right when its
    first record is where the range before ended (``next``). Otherwise (a quoted field over
    several lines crossed the cut) it is scanned again, in this task, from that offset, which
    may move its own end and so the next range's check. Returns the scans in plan order.
    """
    by_file: dict[str, list[RangeScan]] = {}
    for s in scans:
        by_file.setdefault(s.file, []).append(s)
    again = rescan or scan
    out: list[RangeScan] = []
    for name, file_plan in the_plan.files.items():
        mine = sorted(by_file.get(name, []), key=lambda s: s.index)
        if [s.index for s in mine] != list(range(len(file_plan.cuts) + 1)):
            raise ValueError(f"stitch: the scans of {name} are not every byte range of the plan")
        for k in range(1, len(mine)):
            expected = mine[k - 1].next
            if (mine[k].first if mine[k].first is not None else mine[k].next) != expected:
                log.info(
                    "stitch: %s byte range %d starts inside a record: scanned again from %d",
                    name,
                    k,
                    expected,
                )
                mine[k] = again(settings, the_plan, name, k, start=expected, area=area)
        if file_plan.size is not None and mine[-1].next != file_plan.size:
            raise AssertionError(f"stitch: {name} ends at {mine[-1].next}, not at {file_plan.size}")
        out += mine
    return out


@dataclass(frozen=True)
class BucketResult:
    """Counts of one resolved bucket (valid rows, exact duplicates dropped, after as-of)."""

    file: str
    bucket: int
    valid: int
    dropped: int
    after: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketResult:
        """The result from :meth:`as_dict`."""
        return cls(**data)


def resolve(
    settings: Settings,
    the_plan: Plan,
    scans: list[RangeScan],
    file: str,
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> BucketResult:
    """Resolve bucket ``bucket`` of ``file``: duplicates and foreign keys, exactly as unsharded.

    Customers come first: with one customer bucket, every order bucket looks its customer up
    in the staged customers; with several, in the answers of :func:`lookup`. An item bucket
    needs the resolved order bucket of the same number.
    """
    spec = _SPECS[file]
    cutoff = as_of_cutoff(settings.as_of)
    # Written once the bucket's files are: a retry after that finds it and does nothing again.
    receipt = f"{SHARDS}/{file}.b{bucket}.{the_plan.id}.json"
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        if staged.exists(receipt):
            log.info("resolve: %s bucket %d was resolved already (a retry)", spec.file_name, bucket)
            return BucketResult.from_dict(staged.read_json(receipt))
        scanned = _scanned(staged, the_plan, file, scans)
        inputs = [_relative(staged, p) for p in scanned.buckets[bucket]]
        staged.fetch(*inputs)
        parents: ex.Parents | None = None
        if spec is ORDERS and the_plan.customer_buckets == 1:
            staged.fetch("customers.parquet")
            parents = ex.order_parents(staged.path("customers.parquet"))
        elif spec is ORDERS:
            answers = _answers(staged, the_plan, bucket)
            staged.fetch(*(_relative(staged, p) for p in answers))
            parents = ex.known_parents(answers)
        elif spec is ORDER_ITEMS:
            part = _order_parts(staged, the_plan)[bucket]
            staged.fetch(_relative(staged, part))
            parents = ex.item_parents(_order_parts(staged, the_plan), cutoff)(bucket)
        out = _bucket_files(staged, the_plan, file, bucket)
        out.late.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        done = ex.resolve_bucket(spec, scanned.bucket(bucket), parents, cutoff, out)
        staged.publish(*(_relative(staged, p) for p in (out.valid, out.late, out.keys) if p is not None))
        result = BucketResult(file, bucket, done.valid, done.dropped, done.after)
        staged.write_json(receipt, result.as_dict())
        # The bucket's scanned rows are resolved: free their space (the scans hold the whole input).
        staged.remove(*inputs)
    log.info("resolve: %s bucket %d in %.2f s", spec.file_name, bucket, time.perf_counter() - t0)
    return result


def _asks(area: stage.StagingArea, the_plan: Plan, bucket: int) -> list[Path]:
    """The questions of order bucket ``bucket``, one file per customer bucket."""
    work = area.local_dir() / SHARDS
    return [ex.ask_file(work, bucket, j) for j in range(the_plan.customer_buckets)]


def _answers(area: stage.StagingArea, the_plan: Plan, bucket: int) -> list[Path]:
    """The answers to order bucket ``bucket``, one file per customer bucket."""
    work = area.local_dir() / SHARDS
    return [ex.answer_file(work, bucket, j) for j in range(the_plan.customer_buckets)]


def route(
    settings: Settings,
    the_plan: Plan,
    scans: list[RangeScan],
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, int]:
    """The customer lookup's questions of order bucket ``bucket``, one file per customer bucket.

    Its orders' (row, customer_id), by :func:`fastclv.extract.route_orders`.

    Only with several customer buckets; runs beside the customers' resolve. Rewrites its files
    whole when retried.
    """
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        scanned = _scanned(staged, the_plan, ORDERS.name, scans)
        staged.fetch(*(_relative(staged, p) for p in scanned.buckets[bucket]))
        out = _asks(staged, the_plan, bucket)
        out[0].parent.mkdir(parents=True, exist_ok=True)
        ex.route_orders(scanned.bucket(bucket), out)
        staged.publish(*(_relative(staged, p) for p in out))
    return {"bucket": bucket}


def lookup(
    settings: Settings, the_plan: Plan, bucket: int, *, area: stage.StagingArea | None = None
) -> dict[str, int]:
    """Customer bucket ``bucket``'s answers to every order bucket's questions.

    By :func:`fastclv.extract.lookup_customers`, after that bucket's resolve and every route.
    """
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        customers = _bucket_files(staged, the_plan, "customers", bucket).valid
        asks = [_asks(staged, the_plan, k)[bucket] for k in range(the_plan.buckets)]
        answers = [_answers(staged, the_plan, k)[bucket] for k in range(the_plan.buckets)]
        staged.fetch(*(_relative(staged, p) for p in (customers, *asks)))
        ex.lookup_customers(customers, asks, answers)
        staged.publish(*(_relative(staged, p) for p in answers))
    return {"bucket": bucket}


def resolve_items(
    settings: Settings,
    the_plan: Plan,
    scans: list[RangeScan],
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> BucketResult:
    """:func:`resolve` of one item bucket, then its purchase days for the sharded transform."""
    from fastclv.shard_transform import days

    result = resolve(settings, the_plan, scans, ORDER_ITEMS.name, bucket, area=area)
    days(settings, the_plan, scans, bucket, area=area)
    return result


def stage_inputs(
    settings: Settings,
    the_plan: Plan,
    scans: list[RangeScan],
    resolved: Iterable[BucketResult],
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, dict[str, object]]:
    """Stage the resolved buckets as the three validated inputs and ``rejects.parquet``.

    Returns the counts per file, as :func:`fastclv.pipeline.extract_stage` does; removes the
    plan's work files.
    """
    results = list(resolved)
    counts: dict[str, dict[str, object]] = {}
    with pipeline_area(settings, area) as staged, stage.writing(staged.local_dir()):
        reject_parts: dict[str, Path] = {}
        for spec in INPUT_FILES:
            mine = {r.bucket: r for r in results if r.file == spec.name}
            buckets = the_plan.buckets_of(spec.name)
            if sorted(mine) != list(range(buckets)):
                raise ValueError(
                    f"stage: the resolved buckets of {spec.name} are not every bucket of the plan"
                )
            scanned = _scanned(staged, the_plan, spec.name, scans)
            outputs = [_bucket_files(staged, the_plan, spec.name, k) for k in range(buckets)]
            wanted = [*scanned.rejected, *(b.late for b in outputs)]
            if buckets > 1:
                wanted += [b.valid for b in outputs]
            staged.fetch(*(_relative(staged, p) for p in wanted))
            total = ex.Resolved()
            for k in range(buckets):
                total += ex.Resolved(mine[k].valid, mine[k].dropped, mine[k].after)
            out = staged.path(f"{spec.name}.parquet")
            reject_parts[spec.name] = staged.local_dir() / SHARDS / f"{spec.name}.rejects.parquet"
            counts[spec.name] = ex.finish_file(
                spec, scanned, total, outputs, out, reject_parts[spec.name], keep_work=True
            ).as_dict()
        locations = {spec.name: storage.join(settings.input, spec.file_name) for spec in INPUT_FILES}
        ex.write_rejects(reject_parts, locations, staged.path(stage.REJECTS), settings.storage_options)
        # A file of one bucket was staged (and published) by its resolve task.
        made = [f"{spec.name}.parquet" for spec in INPUT_FILES if the_plan.buckets_of(spec.name) > 1]
        staged.publish(*made, stage.REJECTS)
        _remove_work(staged, the_plan)
    return counts


def _remove_work(area: stage.StagingArea, the_plan: Plan) -> None:
    """Drop the plan's work files (local folder; the published objects too when remote)."""
    if area.remote:
        names = [n for file, k in the_plan.scans() for n in _scan_names(file, k, the_plan.buckets_of(file))]
        for spec in INPUT_FILES:
            for k in range(the_plan.buckets_of(spec.name)):
                b = _bucket_files(area, the_plan, spec.name, k)
                names += [_relative(area, p) for p in (b.valid, b.late, b.keys) if p is not None]
        if the_plan.customer_buckets > 1:
            for k in range(the_plan.buckets):
                names += [
                    _relative(area, p) for p in (*_asks(area, the_plan, k), *_answers(area, the_plan, k))
                ]
        names += [f"{SHARDS}/{spec.name}.b{k}.{the_plan.id}.json" for spec in INPUT_FILES
                  for k in range(the_plan.buckets_of(spec.name))]  # fmt: skip
        area.remove(*(n for n in names if n.startswith(f"{SHARDS}/")))
    shutil.rmtree(area.local_dir() / SHARDS, ignore_errors=True)


def pipeline_area(settings: Settings, area: stage.StagingArea | None) -> Any:
    """The run's staging area (``area`` if given), as :func:`fastclv.pipeline.staging_area`."""
    from fastclv.pipeline import staging_area

    return staging_area(settings, area)


# --------------------------------------------------------------------------- one machine

T = TypeVar("T")


def _init_worker(threads: int) -> None:
    """A worker process: its share of the cores for Polars (read when its pool first starts)."""
    os.environ["POLARS_MAX_THREADS"] = str(threads)


def run_local(
    settings: Settings,
    *,
    workers: int,
    range_bytes: int = 0,
    buckets: int = 0,
    customer_buckets: int = 0,
    area: stage.StagingArea | None = None,
    on_progress: ex.ScanProgress | None = None,
) -> dict[str, dict[str, object]]:
    """The sharded extract on this machine, in ``workers`` processes; the counts per file.

    What ``fastclv run --shards N`` does: the same tasks an Airflow deployment maps over its
    workers, run by a local process pool (each worker gets its share of the cores). The pool
    starts its workers with ``spawn``: a script that calls this (or :func:`fastclv.run` with
    ``shards`` > 1) must guard its own work with ``if __name__ == "__main__":``.
    """
    t0 = time.perf_counter()
    the_plan = plan(
        settings,
        workers,
        range_bytes=range_bytes,
        buckets=buckets,
        customer_buckets=customer_buckets,
        area=area,
    )
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {
            pool.submit(scan, settings, the_plan, file, k, threads=threads): (file, k)
            for file, k in the_plan.scans()
        }
        done: list[RangeScan] = []
        for future in _completed(futures):
            done.append(future.result())
            if on_progress is not None:
                _report(on_progress, the_plan, done)
        t1 = time.perf_counter()
        scans = stitch(settings, the_plan, done, area=area)
        if the_plan.customer_buckets == 1:
            resolved = [resolve(settings, the_plan, scans, "customers", 0, area=area)]
        else:  # the customers' buckets and the orders' questions, then the answers
            first = [pool.submit(resolve, settings, the_plan, scans, "customers", j)
                     for j in range(the_plan.customer_buckets)]  # fmt: skip
            routes = [pool.submit(route, settings, the_plan, scans, k) for k in range(the_plan.buckets)]
            resolved = [job.result() for job in first]
            for job in routes:
                job.result()
            for job in [pool.submit(lookup, settings, the_plan, j) for j in range(the_plan.customer_buckets)]:
                job.result()
        jobs = [
            pool.submit(resolve, settings, the_plan, scans, ORDERS.name, k) for k in range(the_plan.buckets)
        ]
        resolved += [job.result() for job in jobs]
        jobs = [pool.submit(resolve_items, settings, the_plan, scans, k) for k in range(the_plan.buckets)]
        resolved += [job.result() for job in jobs]
    t2 = time.perf_counter()
    counts = stage_inputs(settings, the_plan, scans, resolved, area=area)
    from fastclv.shard_transform import write_handoff

    write_handoff(settings, the_plan, scans, area=area)
    log.info(
        "sharded extract in %d workers: plan and scans %.1f s, stitch and resolve %.1f s, stage %.1f s",
        workers, t1 - t0, t2 - t1, time.perf_counter() - t2,
    )  # fmt: skip
    return counts


def _completed(futures: Mapping[Future[T], Any]) -> Iterable[Future[T]]:
    """The futures as they finish; the first failure cancels the rest and is raised."""
    try:
        for future in as_completed(futures):
            future.result()
            yield future
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _report(on_progress: ex.ScanProgress, the_plan: Plan, done: list[RangeScan]) -> None:
    """Progress of the scans: rows and bytes of the finished ranges, per file."""
    for name, file_plan in the_plan.files.items():
        mine = [s for s in done if s.file == name]
        if not mine:
            continue
        ranges = file_plan.ranges()
        read = sum(((ranges[s.index].end or file_plan.size or s.next) - ranges[s.index].start) for s in mine)
        spec = _SPECS[name]
        on_progress(spec.file_name, sum(s.rows for s in mine), read, file_plan.size)


# --------------------------------------------------------------------------- JSON tasks

#: What the plan task returns when the run is not sharded (the mapped tasks map over nothing).
UNSHARDED: dict[str, Any] = {"plan": None, "scans": [], "buckets": []}


def plan_task(settings: Settings, *, area: stage.StagingArea | None = None) -> dict[str, Any]:
    """:func:`plan` for a scheduler: the plan, the scans to map and the buckets to map (JSON).

    With ``settings.shards`` 1 nothing is planned (:data:`UNSHARDED`): the extract runs whole.
    """
    if settings.shards <= 1:
        return dict(UNSHARDED)
    the_plan = plan(settings, settings.shards, area=area)
    return {
        "plan": the_plan.as_dict(),
        "scans": [{"file": file, "index": k} for file, k in the_plan.scans()],
        "buckets": list(range(the_plan.buckets)),
        "customer_buckets": list(range(the_plan.customer_buckets)),
    }


def scan_task(
    settings: Settings,
    planned: Mapping[str, Any],
    job: Mapping[str, Any],
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """:func:`scan` of one mapped job (``{"file", "index"}``)."""
    the_plan = Plan.from_dict(planned)
    return scan(settings, the_plan, str(job["file"]), int(job["index"]), area=area).as_dict()


def stitch_task(
    settings: Settings,
    planned: Mapping[str, Any],
    scans: Iterable[Mapping[str, Any]],
    *,
    area: stage.StagingArea | None = None,
) -> list[dict[str, Any]]:
    """:func:`stitch` of the mapped scans' results: the scans every later task reads."""
    the_plan = Plan.from_dict(planned)
    done = stitch(settings, the_plan, [RangeScan.from_dict(s) for s in scans], area=area)
    return [s.as_dict() for s in done]


def resolve_task(
    settings: Settings,
    planned: Mapping[str, Any],
    scans: Iterable[Mapping[str, Any]],
    file: str,
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, Any]:
    """:func:`resolve` of one bucket of ``file`` (items: :func:`resolve_items`)."""
    the_plan = Plan.from_dict(planned)
    stitched = [RangeScan.from_dict(s) for s in scans]
    if file == ORDER_ITEMS.name:
        return resolve_items(settings, the_plan, stitched, bucket, area=area).as_dict()
    return resolve(settings, the_plan, stitched, file, bucket, area=area).as_dict()


def route_task(
    settings: Settings,
    planned: Mapping[str, Any],
    scans: Iterable[Mapping[str, Any]],
    bucket: int,
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, int]:
    """:func:`route` of one order bucket."""
    stitched = [RangeScan.from_dict(s) for s in scans]
    return route(settings, Plan.from_dict(planned), stitched, bucket, area=area)


def lookup_task(
    settings: Settings, planned: Mapping[str, Any], bucket: int, *, area: stage.StagingArea | None = None
) -> dict[str, int]:
    """:func:`lookup` of one customer bucket."""
    return lookup(settings, Plan.from_dict(planned), bucket, area=area)


def stage_task(
    settings: Settings,
    planned: Mapping[str, Any],
    scans: Iterable[Mapping[str, Any]],
    resolved: Iterable[Mapping[str, Any]],
    *,
    area: stage.StagingArea | None = None,
) -> dict[str, dict[str, object]]:
    """:func:`stage_inputs` from the JSON results of the tasks before: the counts per file."""
    the_plan = Plan.from_dict(planned)
    stitched = [RangeScan.from_dict(s) for s in scans]
    return stage_inputs(
        settings, the_plan, stitched, [BucketResult.from_dict(r) for r in resolved], area=area
    )
