"""End to end and per stage: fastclv against the DuckDB and pandas contenders, on one scale.

Every contender turns the three CSVs into the contract's customer_ltv rows in PostgreSQL;
each round's loaded rows are compared with fastclv's reference output (historical columns;
money exact, doubles to 1e-9 relative, timestamps as instants) and its per-file counts with
fastclv's, before the round's time counts. See benchmarks/conftest.py.

The idiomatic contenders (``duckdb_read_csv``, ``polars_scan_csv``) use their library's own CSV
reader and casts, so they are not contract-exact on dirty data: their rows and counts are compared
with fastclv's all the same, and the differences recorded as notes; a round fails only when the
contender crashed or loaded nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks import compare
from benchmarks.conftest import Record, Session, counts_problems, run_contender
from benchmarks.harness import phases_from_stdout
from benchmarks.scales import AS_OF

D = AS_OF.isoformat()
ALL_COLUMNS = compare.HISTORICAL + compare.PREDICTIVE


def _python(module: str, *args: object) -> list[str]:
    return [sys.executable, "-m", module, *(str(a) for a in args)]


def _round_dir(session: Session, name: str, n: int) -> Path:
    path = session.work / "rounds" / f"{name}_{n}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _log(session: Session, name: str, n: int) -> Path:
    return session.work / "logs" / f"{name}_{n}"


def _link_run_dir(source: Path, target: Path) -> None:
    """Hard-link a finished run folder (fast at any scale; the stages replace files, never edit them)."""
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("_work", ".*"))


# -- fastclv end to end ---------------------------------------------------------------------------


def bench_fastclv(benchmark: Any, session: Session) -> None:
    """`fastclv run` as a user runs it: extract, transform + model, verify, load."""
    ref = session.reference()
    timings: list[dict[str, float]] = []

    def prepare(n: int) -> dict[str, Any]:
        return {
            "schema": session.new_schema("fastclv"),
            "staging": _round_dir(session, "fastclv", n),
            "log": _log(session, "fastclv", n),
        }

    def argv(s: dict[str, Any]) -> list[str]:
        return _python(
            "fastclv.cli",
            "run",
            "--input",
            session.config.input_dir,
            "--staging",
            s["staging"],
            "--as-of",
            D,
            "--pg-uri",
            session.pg_uri,
            "--schema",
            s["schema"],
        )

    def check(s: dict[str, Any]) -> compare.Comparison:
        run_dir = s["staging"] / D
        summary = json.loads((run_dir / "summary.json").read_text())
        result = compare.Comparison(rows=int(summary.get("output_rows") or 0))
        if summary.get("status") != "succeeded":
            result.problems.append(f"summary.json status {summary.get('status')}: {summary.get('error')}")
            return result
        timings.append(summary["timings"])
        result.problems += counts_problems(summary["files"], ref.counts, "the reference run")
        result.problems += counts_problems(summary["files"], session.expected["files"], "expected.json")
        staged = pl.read_parquet(run_dir / "customer_ltv.parquet")
        reference = pl.read_parquet(ref.output)
        result.problems += [f"staged: {p}" for p in compare.compare_frames(staged, reference, AS_OF).problems]
        predictive = compare.compare_frames(staged, reference, AS_OF, ("customer_id", *compare.PREDICTIVE))
        if not predictive.ok:
            record.notes.append(f"predictive columns differ from the reference run: {predictive.summary()}")
        loaded = compare.compare_pg(
            session.pg_uri, s["schema"], "customer_ltv", run_dir / "customer_ltv.parquet", AS_OF, ALL_COLUMNS
        )
        result.problems += [f"loaded: {p}" for p in loaded.problems]
        result.ok_text = (
            "counts = expected.json; staged historical columns identical to the reference run's; "
            "loaded rows identical to the staged file (all columns)"
        )
        return result

    def cleanup(s: dict[str, Any]) -> None:
        session.drop_schema(s["schema"])
        shutil.rmtree(s["staging"], ignore_errors=True)

    record = session.record("fastclv")
    run_contender(
        benchmark,
        session,
        "fastclv",
        rows=ref.input_rows,
        rows_kind="input rows",
        prepare=prepare,
        argv=argv,
        check=check,
        cleanup=cleanup,
    )
    record.extra["summary_timings"] = timings
    record.extra["inprocess"] = [t["total"] for t in timings]
    if ref.problems:
        record.notes += [f"reference run: {p}" for p in ref.problems]


# -- fastclv stage by stage -----------------------------------------------------------------------


def _bench_stage(benchmark: Any, session: Session, stage: str) -> None:
    ref = session.reference()
    name = f"fastclv_{stage}"
    record = session.record(name)
    inprocess: list[float] = []

    def prepare(n: int) -> dict[str, Any]:
        staging = _round_dir(session, name, n)
        state: dict[str, Any] = {
            "staging": staging,
            "log": _log(session, name, n),
            "result": staging / "result.json",
        }
        if stage != "extract":  # the stages before this one already ran: reuse their files
            _link_run_dir(ref.run_dir, staging / D)
        if stage == "load":
            state["schema"] = session.new_schema(name)
        return state

    def argv(s: dict[str, Any]) -> list[str]:
        args: list[object] = [
            stage,
            "--input",
            session.config.input_dir,
            "--staging",
            s["staging"],
            "--as-of",
            D,
            "--result",
            s["result"],
        ]
        if stage == "verify":
            args += ["--summary", ref.run_dir / "summary.json"]
        if stage == "load":
            args += ["--pg-uri", session.pg_uri, "--schema", s["schema"]]
        return _python("benchmarks.contenders.fastclv_stage", *args)

    def check(s: dict[str, Any]) -> compare.Comparison:
        data = json.loads(s["result"].read_text())
        inprocess.append(data["seconds"])
        result = data["result"]
        out = compare.Comparison(ok_text=f"{stage} result identical to the reference run's")
        run_dir = s["staging"] / D
        if stage == "extract":
            out.problems += counts_problems(result, ref.counts, "the reference run")
            for file in ("customers", "orders", "order_items", "rejects"):
                got = pl.scan_parquet(run_dir / f"{file}.parquet").select(pl.len()).collect().item()
                want = pl.scan_parquet(ref.run_dir / f"{file}.parquet").select(pl.len()).collect().item()
                if got != want:
                    out.problems.append(f"{file}.parquet has {got} rows, the reference {want}")
        elif stage == "transform":
            staged = pl.read_parquet(run_dir / "customer_ltv.parquet")
            out = compare.compare_frames(staged, pl.read_parquet(ref.output), AS_OF, ALL_COLUMNS)
            out.ok_text = "customer_ltv.parquet identical to the reference run's (all columns)"
        elif stage == "verify":
            out.ok_text = "exit 0: the cross-check found no mismatch"
            if isinstance(result, dict) and result.get("status") == "skipped":
                note = f"verify_stage skipped the cross-check: {result.get('reason')}"
                if note not in record.notes:
                    record.notes.append(note)
        else:
            out = compare.compare_pg(
                session.pg_uri, s["schema"], "customer_ltv", ref.output, AS_OF, ALL_COLUMNS
            )
            out.ok_text = "loaded rows identical to the reference output (all columns)"
        return out

    def cleanup(s: dict[str, Any]) -> None:
        if "schema" in s:
            session.drop_schema(s["schema"])
        shutil.rmtree(s["staging"], ignore_errors=True)

    rows = ref.output_rows if stage == "load" else ref.input_rows
    record.extra["inprocess"] = inprocess
    run_contender(
        benchmark,
        session,
        name,
        rows=rows,
        rows_kind="output rows" if stage == "load" else "input rows",
        prepare=prepare,
        argv=argv,
        check=check,
        cleanup=cleanup,
    )


def bench_fastclv_extract(benchmark: Any, session: Session) -> None:
    """CSV -> validated, typed Parquet + rejects (pipeline.extract_stage)."""
    _bench_stage(benchmark, session, "extract")


def bench_fastclv_transform(benchmark: Any, session: Session) -> None:
    """Staged inputs -> historical columns + BG/NBD/Gamma-Gamma -> customer_ltv.parquet."""
    _bench_stage(benchmark, session, "transform")


def bench_fastclv_verify(benchmark: Any, session: Session) -> None:
    """The DuckDB cross-check of the staged output (pipeline.verify_stage)."""
    _bench_stage(benchmark, session, "verify")


def bench_fastclv_load(benchmark: Any, session: Session) -> None:
    """customer_ltv.parquet -> PostgreSQL (pipeline.load_stage: ADBC COPY + partition swap)."""
    _bench_stage(benchmark, session, "load")


# -- the contenders ---------------------------------------------------------------------------------


def _add_note(record: Record, note: str) -> None:
    if note not in record.notes:
        record.notes.append(note)


def _bench_baseline(
    benchmark: Any, session: Session, name: str, module: str, extra: list[object], *, exact: bool = True
) -> None:
    """One baseline contender; ``exact=False``: differences from fastclv are notes, not failures."""
    ref = session.reference()
    record = session.record(name)
    phases: list[dict[str, float]] = []
    inprocess: list[float] = []
    record.extra["inprocess"] = inprocess

    def prepare(n: int) -> dict[str, Any]:
        work = _round_dir(session, name, n)
        return {
            "schema": session.new_schema(name),
            "work": work,
            "counts": work / "counts.json",
            "log": _log(session, name, n),
        }

    def argv(s: dict[str, Any]) -> list[str]:
        args = ["--input", session.config.input_dir, "--as-of", D, "--pg-uri", session.pg_uri]
        args += ["--schema", s["schema"], "--counts", s["counts"], "--rejects", s["work"] / "rejects.csv"]
        return _python(module, *args, *(a if a != "{work}" else s["work"] for a in extra))

    def check(s: dict[str, Any]) -> compare.Comparison:
        phases.append(phases_from_stdout(Path(s["measurement"].stdout).read_text()))
        inprocess.append(sum(phases[-1].values()))
        if not exact:
            return check_idiomatic(s)
        out = compare.compare_pg(session.pg_uri, s["schema"], "customer_ltv", ref.output, AS_OF)
        counts = json.loads(s["counts"].read_text())
        out.problems += counts_problems(counts, ref.counts, "fastclv")
        out.ok_text = "loaded rows identical to fastclv's (historical columns); per-file counts identical"
        for note in compare.reason_notes(counts, ref.counts):
            _add_note(record, f"rejects per reason differ: {note}")
        return out

    def check_idiomatic(s: dict[str, Any]) -> compare.Comparison:
        try:
            got = compare.read_pg_table(session.pg_uri, s["schema"], "customer_ltv", AS_OF)
        except Exception as exc:  # noqa: BLE001 - any failure to read is a failed check
            return compare.Comparison(problems=[f"cannot read the loaded table: {type(exc).__name__}: {exc}"])
        out = compare.Comparison(rows=got.height)
        if got.height == 0:
            out.problems.append("loaded no rows")
            return out
        diff = compare.differences(got, pl.read_parquet(ref.output))
        counts = json.loads(s["counts"].read_text())
        record.extra["differences"] = {
            "customers": diff.customers,
            "missing": diff.missing,
            "extra": diff.extra,
            "differing": diff.differing,
            "by_column": diff.by_column,
            "counts": compare.compare_counts(counts, ref.counts).problems,
            "reasons": compare.reason_notes(counts, ref.counts),
        }
        _add_note(record, f"loaded rows: {diff.summary()}")
        for problem in compare.compare_counts(counts, ref.counts).problems:
            _add_note(record, f"per-file counts differ: {problem}")
        for note in compare.reason_notes(counts, ref.counts):
            _add_note(record, f"rejects per reason differ: {note}")
        out.ok_text = (
            f"loaded {got.height:,} rows; not contract-exact, so its rows and counts are compared with "
            f"fastclv's and the differences noted below (a round fails only on a crash or an empty load)"
        )
        return out

    def cleanup(s: dict[str, Any]) -> None:
        session.drop_schema(s["schema"])
        shutil.rmtree(s["work"], ignore_errors=True)

    run_contender(
        benchmark,
        session,
        name,
        rows=ref.input_rows,
        rows_kind="input rows",
        prepare=prepare,
        argv=argv,
        check=check,
        cleanup=cleanup,
    )
    record.extra["phases"] = phases


def bench_duckdb(benchmark: Any, session: Session) -> None:
    """The contract in DuckDB SQL; ADBC binary COPY into PostgreSQL."""
    _bench_baseline(benchmark, session, "duckdb", "benchmarks.contenders.duckdb_sql", ["--work", "{work}"])


def bench_duckdb_read_csv(benchmark: Any, session: Session) -> None:
    """Idiomatic DuckDB: read_csv with its rejects table, SQL checks, ADBC COPY (not contract-exact)."""
    _bench_baseline(
        benchmark,
        session,
        "duckdb_read_csv",
        "benchmarks.contenders.duckdb_read_csv",
        ["--work", "{work}"],
        exact=False,
    )


def bench_polars_scan_csv(benchmark: Any, session: Session) -> None:
    """Idiomatic Polars: scan_csv with a schema, expressions, write_database (not contract-exact)."""
    _bench_baseline(
        benchmark,
        session,
        "polars_scan_csv",
        "benchmarks.contenders.polars_scan_csv",
        ["--work", "{work}"],
        exact=False,
    )


def bench_pandas_execute_values(benchmark: Any, session: Session) -> None:
    """The seed-style baseline: pandas + psycopg2 execute_values."""
    _bench_baseline(
        benchmark,
        session,
        "pandas_execute_values",
        "benchmarks.contenders.pandas_baseline",
        ["--method", "execute_values"],
    )


def bench_pandas_copy_expert(benchmark: Any, session: Session) -> None:
    """The seed-style baseline: pandas + psycopg2 copy_expert (CSV through COPY)."""
    _bench_baseline(
        benchmark,
        session,
        "pandas_copy_expert",
        "benchmarks.contenders.pandas_baseline",
        ["--method", "copy_expert"],
    )
