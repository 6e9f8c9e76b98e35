"""The benchmark session: data, a throwaway PostgreSQL, fastclv's reference run, the recorder.

Every contender runs in its own process (:mod:`benchmarks.harness`), ``rounds`` times, under
pytest-benchmark's ``pedantic`` mode (one call per round, no calibration). Each round's
result is checked against fastclv's reference output before the next round starts and after
the last one; a contender that disagrees (or crashes, or times out) is recorded as failed
and its times are not reported. At the end of the session the records go to
``benchmarks/results/<scale>.json`` (``<scale>-quoted.json`` for the fully quoted variant,
``BENCH_QUOTED=1``); pytest-benchmark writes its own JSON (``make bench``
passes ``--benchmark-json``), and ``python -m benchmarks.report`` turns both into RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import compare
from benchmarks.harness import Measurement, run_measured
from benchmarks.scales import AS_OF, RESULTS, ROOT, Config, config_from_env, ensure_input
from fastclv import localpg

#: Contender -> how RESULTS.md names it, and its table.
CONTENDERS: dict[str, tuple[str, str]] = {
    "fastclv": ("fastclv end to end (`fastclv run`, verify on, load)", "e2e"),
    "fastclv_extract": ("fastclv stage: extract + validate", "stage"),
    "fastclv_transform": ("fastclv stage: transform + model", "stage"),
    "fastclv_verify": ("fastclv stage: verify (DuckDB cross-check)", "stage"),
    "fastclv_load": ("fastclv stage: load (ADBC COPY + swap)", "stage"),
    "duckdb": ("DuckDB SQL + ADBC COPY", "e2e"),
    "duckdb_read_csv": ("DuckDB `read_csv` + SQL + ADBC COPY (idiomatic, not contract-exact)", "e2e"),
    "polars_scan_csv": (
        "Polars `scan_csv` + expressions + ADBC `write_database` (idiomatic, not contract-exact)",
        "e2e",
    ),
    "pandas_execute_values": ("pandas + psycopg2 `execute_values`", "e2e"),
    "pandas_copy_expert": ("pandas + psycopg2 `copy_expert`", "e2e"),
    "load_adbc": ("ADBC binary COPY (`fastclv.load.load_partition`)", "load"),
    "load_psql_copy": ("`psql \\copy` from CSV", "load"),
    "load_psycopg3_copy": ("psycopg 3 `cursor.copy` (binary)", "load"),
}


class ContenderError(Exception):
    """A contender crashed, timed out, or produced a result that differs from fastclv's."""


@dataclass
class Reference:
    """fastclv's reference run (no load): the output every contender is compared with."""

    staging: Path
    run_dir: Path
    output: Path
    summary: dict[str, Any]
    counts: dict[str, dict[str, Any]]
    input_rows: int
    output_rows: int
    problems: list[str]


@dataclass
class Record:
    """What one contender did in this session."""

    name: str
    label: str
    table: str
    status: str = "not run"
    reason: str = ""
    rows: int = 0
    rows_kind: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    check: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def medians(self) -> dict[str, float]:
        if not self.rounds:
            return {}
        return {
            key: statistics.median(r[key] for r in self.rounds)
            for key in ("wall_s", "cpu_s", "peak_rss_bytes")
        }


class Session:
    """Shared state of one benchmark session (one scale)."""

    def __init__(self, config: Config, expected: dict[str, Any], pg: localpg.LocalPostgres) -> None:
        self.config = config
        self.expected = expected
        self.pg = pg
        self.pg_uri = pg.uri
        self.records: dict[str, Record] = {}
        self._reference: Reference | None = None
        self._schemas = 0
        self.started = datetime.now(UTC)
        self.loadavg_start = os.getloadavg()
        shutil.rmtree(config.work, ignore_errors=True)
        config.work.mkdir(parents=True)

    # -- helpers --------------------------------------------------------------------------

    @property
    def work(self) -> Path:
        return self.config.work

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def measure(self, argv: list[str], log_prefix: Path) -> Measurement:
        return run_measured(
            argv,
            log_prefix=log_prefix,
            cwd=ROOT,
            env=self.env(),
            timeout_s=self.config.timeout_s,
            min_available=self.config.min_available,
        )

    def new_schema(self, name: str) -> str:
        self._schemas += 1
        return f"bench_{name}_{self._schemas}"

    def drop_schema(self, schema: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.pg_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    def input_rows(self) -> int:
        files = self.expected["files"]
        return int(sum(f["read"] for f in files.values()))

    # -- the reference --------------------------------------------------------------------

    def reference(self) -> Reference:
        """Run fastclv once (no load; verify on), untimed: the output all contenders must match."""
        if self._reference is not None:
            return self._reference
        staging = self.work / "reference"
        m = self.measure(
            [
                sys.executable,
                "-m",
                "fastclv.cli",
                "run",
                "--input",
                str(self.config.input_dir),
                "--staging",
                str(staging),
                "--as-of",
                AS_OF.isoformat(),
                "--no-load",
            ],
            self.work / "logs" / "reference",
        )
        if not m.ok:
            raise ContenderError(f"fastclv's reference run failed: {m.describe_failure()}")
        run_dir = staging / AS_OF.isoformat()
        summary = json.loads((run_dir / "summary.json").read_text())
        problems = counts_problems(summary.get("files", {}), self.expected["files"], "expected.json")
        if summary.get("output_rows") != self.expected["output_rows"]:
            problems.append(
                f"output_rows {summary.get('output_rows')} != expected {self.expected['output_rows']}"
            )
        self._reference = Reference(
            staging=staging,
            run_dir=run_dir,
            output=run_dir / "customer_ltv.parquet",
            summary=summary,
            counts=summary["files"],
            input_rows=self.input_rows(),
            output_rows=int(summary["output_rows"]),
            problems=problems,
        )
        return self._reference

    # -- results --------------------------------------------------------------------------

    def record(self, name: str) -> Record:
        label, table = CONTENDERS[name]
        return self.records.setdefault(name, Record(name, label, table))

    def write_results(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.config.label}.json"
        ref = self._reference
        data = {
            "scale": self.config.scale.name,
            "label": self.config.label,
            "quoted": self.config.quoted,
            "customers": self.config.scale.customers,
            "dirty_rows": self.config.scale.dirty_rows,
            "input_rows": self.input_rows(),
            "input_files": {k: v["read"] for k, v in self.expected["files"].items()},
            "input_bytes": sum(p.stat().st_size for p in self.config.input_dir.glob("*.csv")),
            "output_rows": self.expected["output_rows"],
            "as_of": AS_OF.isoformat(),
            "rounds": self.config.rounds,
            "timeout_s": self.config.timeout_s,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_start": self.loadavg_start,
            "loadavg_end": os.getloadavg(),
            "machine": machine_info(),
            "versions": versions(self.pg_uri),
            "reference_problems": ref.problems if ref else ["the reference run did not happen"],
            "contenders": {
                name: {
                    "label": r.label,
                    "table": r.table,
                    "status": r.status,
                    "reason": r.reason,
                    "rows": r.rows,
                    "rows_kind": r.rows_kind,
                    "rounds": r.rounds,
                    "medians": r.medians(),
                    "check": r.check,
                    "notes": r.notes,
                    "extra": r.extra,
                }
                for name, r in self.records.items()
            },
        }
        carry_over(data, path)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path


def carry_over(data: dict[str, Any], path: Path) -> None:
    """Keep an earlier session's result for contenders this session did not select.

    So ``BENCH_CONTENDERS=duckdb make bench`` re-measures one contender without dropping the
    others of the same scale. Carried records say when they were measured.
    """
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for name, rec in data["contenders"].items():
        before = old.get("contenders", {}).get(name)
        if rec["status"] != "skipped" or not rec["reason"].startswith("not selected") or not before:
            continue
        if before["status"] == "skipped":
            continue
        before.setdefault("measured", old.get("started"))
        data["contenders"][name] = before


def counts_problems(got: dict[str, Any], want: dict[str, Any], what: str) -> list[str]:
    """Per-file count totals that differ from ``want``."""
    return [f"{p} (vs {what})" for p in compare.compare_counts(got, want).problems]


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
    }


def versions(pg_uri: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "polars",
        "duckdb",
        "pandas",
        "pyarrow",
        "adbc-driver-postgresql",
        "psycopg",
        "psycopg2-binary",
        "numpy",
        "pytest-benchmark",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    try:
        import psycopg

        with psycopg.connect(pg_uri) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = str(row[0]) if row else "?"
    except Exception as exc:  # noqa: BLE001 - informative only
        out["postgresql"] = f"unknown ({type(exc).__name__})"
    out["fastclv"] = fastclv_revision()
    psql = shutil.which("psql")
    if psql:
        out["psql"] = subprocess.run(
            [psql, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return out


def fastclv_revision() -> str:
    """The commit of the code measured, and whether fastclv/ had uncommitted changes."""
    git = shutil.which("git")
    if not git:
        return "unknown (no git)"
    head = subprocess.run(
        [git, "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    dirty = subprocess.run(
        [git, "-C", str(ROOT), "status", "--porcelain", "--", "fastclv"],
        check=False,
        capture_output=True,
        text=True,
    )
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    changed = len(dirty.stdout.splitlines())
    return head.stdout.strip() + (f" + uncommitted changes in {changed} fastclv/ files" if changed else "")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def config() -> Config:
    return config_from_env()


@pytest.fixture(scope="session")
def postgres() -> Iterator[localpg.LocalPostgres]:
    """A throwaway PostgreSQL cluster in a temporary folder, stopped and removed at the end."""
    # Not under /tmp/pytest-of-root (mode 700): the postgres system user (the server runs
    # as it when we are root) must be able to reach the data folder.
    root = Path(tempfile.mkdtemp(prefix="fastclv-bench-pg-"))
    root.chmod(0o711)
    server = localpg.start_local_postgres(root / "data")
    try:
        yield server
    finally:
        localpg.stop_local_postgres(server.data_dir)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def session(config: Config, postgres: localpg.LocalPostgres) -> Iterator[Session]:
    expected = ensure_input(config)
    bench = Session(config, expected, postgres)
    try:
        yield bench
    finally:
        path = bench.write_results()
        print(f"\nbenchmark records: {path.relative_to(ROOT)}")


# -- running one contender ----------------------------------------------------------------------


Check = Callable[[dict[str, Any]], compare.Comparison]


def run_contender(
    benchmark: Any,
    session: Session,
    name: str,
    *,
    rows: int,
    rows_kind: str,
    prepare: Callable[[int], dict[str, Any]],
    argv: Callable[[dict[str, Any]], list[str]],
    check: Check,
    cleanup: Callable[[dict[str, Any]], None] | None = None,
) -> Record:
    """Measure ``name`` for ``session.config.rounds`` rounds; check every round's result.

    ``prepare(round)`` makes a round's state (fresh schema, folders; untimed) with a ``log``
    path; ``argv(state)`` is the command to time; ``check(state)`` compares the round's result
    with fastclv's reference (untimed, before the next round); ``cleanup(state)`` removes what
    the round made.
    """
    record = session.record(name)
    if name not in session.config.contenders:
        record.status = "skipped"
        record.reason = f"not selected (BENCH_CONTENDERS, or not in scale {session.config.scale.name}'s set)"
        pytest.skip(record.reason)
    record.rows, record.rows_kind = rows, rows_kind
    benchmark.group = record.table
    benchmark.name = name
    states: list[dict[str, Any]] = []

    def finish_round(state: dict[str, Any]) -> None:
        if state.get("done"):
            return
        state["done"] = True
        try:
            result = check(state)
            record.check = result.summary()
            if not result.ok:
                raise ContenderError(f"result differs from fastclv's: {result.summary()}")
        finally:
            if cleanup is not None:
                cleanup(state)

    def setup() -> tuple[tuple[dict[str, Any]], dict[str, Any]]:
        if states:
            finish_round(states[-1])
        state = prepare(len(states) + 1)
        states.append(state)
        return (state,), {}

    def target(state: dict[str, Any]) -> None:
        m = session.measure(argv(state), state["log"])
        state["measurement"] = m
        if not m.ok:
            raise ContenderError(m.describe_failure())
        record.rounds.append({**m.as_dict(), "round": len(states)})

    record.status = "running"
    started = time.perf_counter()
    try:
        benchmark.pedantic(target, setup=setup, rounds=session.config.rounds, iterations=1, warmup_rounds=0)
        finish_round(states[-1])
    except ContenderError as exc:
        record.status = "failed"
        record.reason = str(exc)
        record.rounds.clear()
        for state in states:
            if cleanup is not None and not state.get("done"):
                cleanup(state)
        pytest.fail(f"{name}: {exc}", pytrace=False)
    except BaseException as exc:
        record.status = "error"
        record.reason = f"harness error: {type(exc).__name__}: {exc}"
        record.rounds.clear()
        raise
    record.status = "ok"
    medians = record.medians()
    benchmark.extra_info.update(
        {
            "contender": name,
            "label": record.label,
            "rows": rows,
            "rows_kind": rows_kind,
            "cpu_s_median": medians["cpu_s"],
            "peak_rss_bytes_median": medians["peak_rss_bytes"],
            "wall_s_rounds": [r["wall_s"] for r in record.rounds],
            "cpu_s_rounds": [r["cpu_s"] for r in record.rounds],
            "peak_rss_bytes_rounds": [r["peak_rss_bytes"] for r in record.rounds],
            "check": record.check,
            "notes": record.notes,
            "session_seconds": round(time.perf_counter() - started, 1),
        }
    )
    return record
