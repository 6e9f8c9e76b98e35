"""The ``fastclv`` command line: thin wrappers over the library, friendly errors, exit codes.

Exit codes: 0 success, 1 failure, 2 bad input or usage, 3 cross-check mismatch,
75 transient failure (retry later).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastclv.config import Settings, parse_date, parse_option_pairs, storage_options_from_env
from fastclv.errors import ConfigError, FastclvError, TerminalError, printable
from fastclv.secrets import redact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Help texts are plain text: "[env FASTCLV_INPUT]" must not be read as rich markup.
    rich_markup_mode=None,
    help="fastclv: CSV exports -> validated, cross-checked customer lifetime value in PostgreSQL.",
)
pg_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="A throwaway local PostgreSQL for trying fastclv out."
)
app.add_typer(pg_app, name="pg")

out = Console()
err = Console(stderr=True)

#: Where `fastclv run` keeps its throwaway PostgreSQL when no URI is configured
#: (override with FASTCLV_LOCAL_PG_DIR).
DEFAULT_LOCAL_PG = Path(".fastclv") / "pg"


def _local_pg_dir() -> Path:
    return Path(os.environ.get("FASTCLV_LOCAL_PG_DIR") or DEFAULT_LOCAL_PG).resolve()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _date_option(value: str | None) -> date | None:
    return parse_date(value) if value else None


#: The repeatable ``--storage-option KEY=VALUE`` of the commands that touch object storage.
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="Object-storage option KEY=VALUE (repeatable; object_store key names, e.g. "
        "aws_region=eu-west-1) [env FASTCLV_STORAGE_OPTIONS as JSON; AWS_*/GOOGLE_*/AZURE_* apply too].",
        show_default=False,
    ),
]


def _storage_options(pairs: list[str] | None) -> dict[str, str] | None:
    """FASTCLV_STORAGE_OPTIONS, with the command line's KEY=VALUE pairs over it."""
    merged = {**(storage_options_from_env() or {}), **(parse_option_pairs(pairs) or {})}
    return merged or None


@contextmanager
def _user_errors(verbose: bool) -> Iterator[None]:
    """Show any failure as a message and an exit code, never as a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: every error becomes a message
        raise _fail(exc, verbose) from None


def _safe(text: str) -> str:
    """Text from anywhere (data included) as rich prints it: markup and control characters escaped."""
    return escape(printable(text, keep="\n"))


def _fail(exc: BaseException, verbose: bool) -> typer.Exit:
    """Turn an exception into a one-paragraph message and an exit code (no traceback)."""
    if isinstance(exc, FastclvError):
        err.print(f"[bold red]error:[/] {_safe(str(exc))}", highlight=False, soft_wrap=True)
        return typer.Exit(exc.exit_code)
    if verbose:
        err.print_exception()
    err.print(
        f"[bold red]internal error:[/] {type(exc).__name__}: {_safe(str(exc))}\n"
        "Hint: this is a bug in fastclv; rerun with --verbose for details and report it.",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(1)


@app.command()
def run(
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Folder or URI holding the three CSVs [env FASTCLV_INPUT]."),
    ] = None,
    staging: Annotated[
        str | None,
        typer.Option(
            help="Staging root; the run writes <staging>/<as-of>/ [env FASTCLV_STAGING, default ./staging]."
        ),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: yesterday, UTC).")
    ] = None,
    pg_uri: Annotated[
        str | None,
        typer.Option(
            "--pg-uri",
            help="libpq URI of the target PostgreSQL [env FASTCLV_PG_URI]; default: throwaway local server.",
            show_default=False,
        ),
    ] = None,
    pg_schema: Annotated[
        str | None, typer.Option("--schema", help="PostgreSQL schema [default: public].")
    ] = None,
    load: Annotated[
        bool | None, typer.Option("--load/--no-load", help="Load into PostgreSQL [env FASTCLV_LOAD].")
    ] = None,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify", help="Cross-check with DuckDB before loading [env FASTCLV_VERIFY]."
        ),
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter [default: ,].")] = None,
    horizon_months: Annotated[
        int | None, typer.Option(help="CLV horizon in months of 30 days [default: 12].")
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Profit margin [default: 1.0].")] = None,
    discount_rate: Annotated[
        float | None, typer.Option(help="Monthly discount rate [default: 0.01].")
    ] = None,
    penalizer: Annotated[
        float | None, typer.Option(help="L2 penalty on model parameters [default: 0].")
    ] = None,
    holdout_days: Annotated[
        int | None,
        typer.Option(
            "--holdout-days", help="Days of the holdout backtest of the model; 0 turns it off [default: 90]."
        ),
    ] = None,
    reject_rate_threshold: Annotated[
        float | None,
        typer.Option(help="Warn when a file's rejected/read is above this [default: 0.05]."),
    ] = None,
    lock_timeout: Annotated[
        float | None,
        typer.Option("--lock-timeout", help="Seconds the partition swap waits for locks [default: 10]."),
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run id (default: generated).")] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Run the sharded plan (extract, history, model, backtest by shard) in N worker processes "
            "[env FASTCLV_SHARDS, default 1].",
        ),
    ] = None,
    storage_option: StorageOptions = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stage.")] = False,
) -> None:
    """Validate, transform, cross-check and load one as-of date."""
    _setup_logging(verbose)
    from fastclv import pipeline

    with _user_errors(verbose):
        settings = Settings.from_env(
            input=input,
            staging=staging,
            as_of=_date_option(as_of),
            pg_uri=pg_uri,
            pg_schema=pg_schema,
            load=load,
            verify=verify,
            delimiter=delimiter,
            horizon_months=horizon_months,
            margin=margin,
            discount_rate=discount_rate,
            penalizer=penalizer,
            reject_rate_threshold=reject_rate_threshold,
            holdout_days=holdout_days,
            lock_timeout_s=lock_timeout,
            run_id=run_id,
            shards=shards,
            storage_options=parse_option_pairs(storage_option),
        )
        if settings.load and not settings.pg_uri:
            settings = settings.replace(pg_uri=_throwaway_postgres())
        summary = _run_with_progress(pipeline, settings)
    _print_summary(summary)


def _run_with_progress(pipeline: Any, settings: Settings) -> Any:
    """Run, telling how it goes: a progress bar on a terminal, log lines anywhere else.

    Off a terminal (CI, cron, Airflow), each stage's start and end (with rows and seconds) and
    the scan's progress every 10 s are logged to stderr, so a long run is never silent.
    """
    if not err.is_terminal:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        for name in ("fastclv.pipeline", "fastclv.extract"):  # the stages, and the scan's progress
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.addHandler(handler)
                logger.setLevel(logging.INFO)
                logger.propagate = False
        return pipeline.run(settings)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        tasks: dict[str, Any] = {}
        stage_task = bar.add_task("starting", total=None, rows="")

        def progress(stage_name: str, event: str) -> None:
            if event == "start":
                bar.update(stage_task, description=f"{stage_name} ...")
            else:
                bar.update(stage_task, description=f"{stage_name} done")

        def scanned(file_name: str, rows: int, done: int, size: int | None) -> None:
            if file_name not in tasks:
                tasks[file_name] = bar.add_task(f"scan {file_name}", total=size, rows="0")
            bar.update(tasks[file_name], completed=done, rows=f"{rows:,}")

        return pipeline.run(settings, progress=progress, scan_progress=scanned)


def _stop_hint(data_dir: Path) -> str:
    """The command that stops the throwaway server in ``data_dir``."""
    default = Path(data_dir).resolve() == _local_pg_dir().resolve()
    return "fastclv pg stop" + ("" if default else f" --data-dir {shlex.quote(str(data_dir))}")


def _throwaway_postgres() -> str:
    from fastclv import localpg

    server = localpg.start_local_postgres(_local_pg_dir())
    err.print(
        f"No PostgreSQL configured: using a throwaway local server at [bold]{server.uri}[/]\n"
        f"  (data in {server.data_dir}; stop it with: {_stop_hint(server.data_dir)})",
        highlight=False,
        soft_wrap=True,
    )
    return server.uri


def _print_summary(summary: Any) -> None:
    files = list(summary.files.values())
    table = Table(title=f"fastclv run {summary.run_id} (as of {summary.as_of})", title_justify="left")
    for column in ("file", "read", "valid", "rejected", "duplicates", "after as-of"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for counts in files:
        table.add_row(
            str(counts["file"]),
            *(f"{counts[k]:,}" for k in ("read", "valid", "rejected", "duplicates_dropped", "after_as_of")),
        )
    out.print(table)
    from fastclv.contract import Reason

    seen = {reason for c in files for reason, n in c["rejected_by_reason"].items() if n}
    reasons = [reason.value for reason in Reason if reason.value in seen]  # contract order
    if reasons:
        by_reason = Table(title="rejects by reason", title_justify="left")
        by_reason.add_column("reason")
        for counts in files:
            by_reason.add_column(str(counts["file"]), justify="right")
        for reason in reasons:
            by_reason.add_row(reason, *(f"{c['rejected_by_reason'].get(reason, 0):,}" for c in files))
        out.print(by_reason)
    stages = ", ".join(
        f"{'transform (incl. model)' if k == 'transform' else k} {v:.2f}s" for k, v in summary.timings.items()
    )
    out.print(f"customers out: [bold]{summary.output_rows:,}[/]   seconds: {stages}", highlight=False)
    _print_outcome(summary)


def _print_outcome(summary: Any) -> None:
    """The model, the holdout, the load, where things are: the end of a run's summary."""
    if summary.clv_total is not None:
        out.print(f"total predicted CLV: [bold]{summary.clv_total:,.2f}[/]", highlight=False)
    model = summary.model or {}
    if model.get("converged"):
        out.print("model: converged (BG/NBD and Gamma-Gamma)", highlight=False)
    else:
        out.print(f"[yellow]model: not converged:[/] {_safe(str(model.get('reason')))}", highlight=False)
    backtest = summary.holdout or {}
    if backtest.get("status") == "ran":
        out.print(
            f"holdout ({backtest['holdout_days']} days): mean absolute error "
            f"{backtest['mean_absolute_error']:.3f} purchases per customer; "
            f"{backtest['actual_total']:,} actual against {backtest['predicted_total']:,.0f} predicted",
            highlight=False,
        )
    elif backtest:
        reason = _safe(str(backtest.get("reason")))
        out.print(f"holdout: {backtest.get('status')}: {reason}", highlight=False)
    if summary.load:
        replaced = summary.load.get("replaced_rows", 0)
        before = f"replacing its {replaced:,} rows" if replaced else "a new partition"
        out.print(
            f"loaded {summary.load['rows']:,} rows into {summary.load['table']} partition "
            f"{summary.load['partition']} ({before})",
            highlight=False,
        )
    from fastclv import storage

    staged = storage.join(summary.staging, summary.as_of.isoformat())
    out.print(f"staged: {staged}", highlight=False, soft_wrap=True)  # paths stay whole, to copy
    if summary.report:
        out.print(f"report: {summary.report}", highlight=False, soft_wrap=True)
    for warning in summary.warnings:
        err.print(f"[yellow]warning:[/] {_safe(warning)}", highlight=False, soft_wrap=True)


@app.command()
def generate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the three CSVs and expected.json into.")
    ],
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    dirty_rows: Annotated[int, typer.Option(help="Rows of every reject reason to inject.")] = 0,
    as_of: Annotated[
        str, typer.Option("--as-of", help="The as-of date the expected counts are for.")
    ] = "2025-12-31",
    quote_all: Annotated[
        bool,
        typer.Option(
            "--quote-all",
            help="Write every field, header included, in double quotes (same data, same expected.json).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Generate realistic (optionally dirty) input data with its exact expected counts."""
    _setup_logging(verbose)
    from fastclv.testing import generate as run_generate

    with _user_errors(verbose):
        if customers < 1 or dirty_rows < 0:
            raise ConfigError(
                "--customers must be >= 1 and --dirty-rows >= 0. Hint: e.g. --customers 1000 --dirty-rows 3."
            )
        result = run_generate(
            out_dir,
            customers=customers,
            seed=seed,
            dirty_rows=dirty_rows,
            as_of=parse_date(as_of),
            quote_all=quote_all,
        )
    rows = ", ".join(f"{name}: {n:,}" for name, n in result.rows.items())
    out.print(
        f"wrote {out_dir} ({rows}) in {result.seconds:.1f}s; expected counts in {result.expected_path}",
        highlight=False,
    )


@pg_app.command("start")
def pg_start(
    data_dir: Annotated[Path | None, typer.Option(help="Cluster folder [default: .fastclv/pg].")] = None,
) -> None:
    """Start (or reuse) the throwaway local PostgreSQL and print its URI."""
    from fastclv import localpg

    folder = data_dir.resolve() if data_dir else _local_pg_dir()
    with _user_errors(False):
        running = localpg.local_postgres_status(folder)
        server = localpg.start_local_postgres(folder)
    out.print(server.uri, highlight=False)
    done = "reusing the local PostgreSQL already running" if running else "started a local PostgreSQL"
    err.print(f"{done} on port {server.port} (data in {server.data_dir})", highlight=False, soft_wrap=True)
    err.print(f"stop it with: {_stop_hint(server.data_dir)}", highlight=False, soft_wrap=True)


@pg_app.command("stop")
def pg_stop(
    data_dir: Annotated[Path | None, typer.Option(help="Cluster folder [default: .fastclv/pg].")] = None,
) -> None:
    """Stop the throwaway local PostgreSQL."""
    from fastclv import localpg

    folder = data_dir.resolve() if data_dir else _local_pg_dir()
    with _user_errors(False):
        running = localpg.local_postgres_status(folder)
        localpg.stop_local_postgres(folder)
    if running:
        err.print(
            f"stopped the local PostgreSQL on port {running.port} (data in {folder})",
            highlight=False,
            soft_wrap=True,
        )
    else:
        err.print(
            f"no local PostgreSQL is running in {folder}: nothing to stop", highlight=False, soft_wrap=True
        )


@pg_app.command("status")
def pg_status(
    data_dir: Annotated[Path | None, typer.Option(help="Cluster folder [default: .fastclv/pg].")] = None,
) -> None:
    """Print the URI of the running throwaway PostgreSQL (exit 1 if not running)."""
    from fastclv import localpg

    server = localpg.local_postgres_status(data_dir.resolve() if data_dir else _local_pg_dir())
    if server is None:
        err.print("not running")
        raise typer.Exit(1)
    out.print(redact(server.uri), highlight=False)


def _staged_run(staging: str | None, as_of: str | None, storage_option: list[str] | None) -> tuple[str, Any]:
    """The staging root and its staged run ``S/D`` (the latest when no date), with the storage options."""
    from fastclv import explore

    root = staging or explore.default_staging()
    options = _storage_options(storage_option)
    area = explore.run_folder(root, _date_option(as_of), succeeded_only=False, storage_options=options)
    return root, area


@app.command()
def verify(
    staging: Annotated[
        str | None, typer.Option(help="Staging root [env FASTCLV_STAGING, default ./staging].")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: the latest staged run)."),
    ] = None,
    horizon_months: Annotated[
        int | None, typer.Option(help="CLV horizon the run used [env, default: 12].")
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Profit margin the run used [default: 1.0].")] = None,
    discount_rate: Annotated[
        float | None, typer.Option(help="Monthly discount rate the run used [default: 0.01].")
    ] = None,
    parts: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            help="Check N customer parts one after the other, each in its own DuckDB session: the "
            "same verdict, about 1/N of the data in DuckDB's joins (a large run in less memory).",
        ),
    ] = 1,
    storage_option: StorageOptions = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Cross-check a staged run with DuckDB again (exit 3 on a mismatch, with a report)."""
    _setup_logging(verbose)
    from fastclv import stage
    from fastclv.verify import verify_staged

    with _user_errors(verbose):
        root, run_area = _staged_run(staging, as_of, storage_option)
        summary = run_area.read_json(stage.SUMMARY)
        recorded = summary.get("settings") or {}  # what the run used, unless overridden here
        settings = Settings.from_env(
            input=str(summary.get("input") or "-"),
            staging=str(root),
            as_of=date.fromisoformat(run_area.name),
            horizon_months=horizon_months if horizon_months is not None else recorded.get("horizon_months"),
            margin=margin if margin is not None else recorded.get("margin"),
            discount_rate=discount_rate if discount_rate is not None else recorded.get("discount_rate"),
        )
        if summary.get("status") != "succeeded":
            err.print(f"note: the run of {run_area.name} ended {summary.get('status')!r}", highlight=False)
        with run_area:  # a remote run's files are fetched into a temporary folder, removed after
            result = verify_staged(
                run_area,
                settings.as_of,
                summary.get("files") or {},
                summary.get("model"),
                horizon_months=settings.horizon_months,
                margin=settings.margin,
                discount_rate=settings.discount_rate,
                memory_limit=settings.duckdb_memory_limit,
                parts=parts,
            )
    table = Table(title=f"fastclv verify {run_area.location}", title_justify="left")
    for column in ("check", "compared", "mismatches", "note"):
        table.add_column(column, justify="right" if column in ("compared", "mismatches") else "left")
    for name, check in result.checks.items():
        assert isinstance(check, dict)
        table.add_row(name, f"{check['compared']:,}", f"{check['mismatches']:,}", str(check["note"] or ""))
    out.print(table)
    cut = f", {result.parts} customer parts" if result.parts > 1 else ""
    out.print(f"[bold green]ok[/]: all {len(result.checks)} checks agree ({result.seconds:.2f} s{cut})")


@app.command()
def report(
    staging: Annotated[
        str | None, typer.Option(help="Staging root [env FASTCLV_STAGING, default ./staging].")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: the latest staged run)."),
    ] = None,
    pg_uri: Annotated[
        str | None,
        typer.Option(
            "--pg-uri",
            help="PostgreSQL of the run ledger, for the history of earlier dates [env FASTCLV_PG_URI].",
        ),
    ] = None,
    pg_schema: Annotated[
        str | None, typer.Option("--schema", help="Schema of the ledger [default: public].")
    ] = None,
    storage_option: StorageOptions = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Rebuild a staged run's HTML report (S/D/report.html) from its staged files."""
    _setup_logging(verbose)
    from fastclv import pipeline

    with _user_errors(verbose):
        root, run_area = _staged_run(staging, as_of, storage_option)
        settings = Settings.from_env(
            input="-", staging=str(root), as_of=date.fromisoformat(run_area.name), pg_uri=pg_uri,
            pg_schema=pg_schema, storage_options=run_area.storage_options,
        )  # fmt: skip
        settings = settings.replace(load=bool(settings.pg_uri))
        written = pipeline.write_report(settings, area=run_area)
        if written is None:
            raise TerminalError(
                f"the report of {run_area.location} could not be written (see the warning above). "
                "Hint: rerun with --verbose for details."
            )
    out.print(f"report: {written}", highlight=False, soft_wrap=True)  # a path stays whole


@app.command()
def sql(
    query: Annotated[
        str | None, typer.Argument(help="SQL to run; omit it for an interactive prompt (stdin).")
    ] = None,
    staging: Annotated[
        str | None, typer.Option(help="Staging root [env FASTCLV_STAGING, default ./staging].")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: the latest succeeded run)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output: table, csv or json.")] = "table",
    max_rows: Annotated[
        int, typer.Option(help="Rows shown by --format table (csv and json print every row).")
    ] = 100,
    storage_option: StorageOptions = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Query a staged run with DuckDB: views customers, orders, order_items, rejects, customer_ltv."""
    _setup_logging(verbose)
    from fastclv import explore

    with _user_errors(verbose):
        explore.check_format(fmt)
        root = staging or explore.default_staging()
        run_area = explore.run_folder(
            root, _date_option(as_of), storage_options=_storage_options(storage_option)
        )
        status = explore.run_status(run_area)
        queried = f"the run of {run_area.name} (as-of date; {status or 'no summary'}) in {run_area.location}"
        if fmt != "table":  # stdout holds the data only; the table's footer names the run
            err.print(f"querying {queried}", highlight=False, markup=False)
        if status != "succeeded":
            err.print(f"note: the run of {run_area.name} did not succeed; querying what it staged")
        if missing := explore.missing_views(run_area):
            err.print(
                f"note: no view for {', '.join(missing)} (file missing in {run_area.location})",
                highlight=False,
            )
        con = explore.connect(run_area)
        if query is not None:
            _print_result(explore, con, query, fmt, max_rows, queried)
            return
    failed = _sql_prompt(explore, con, fmt, max_rows, queried)
    raise typer.Exit(1 if failed else 0)


def _sql_prompt(explore: Any, con: Any, fmt: str, max_rows: int, queried: str) -> int:
    """Read queries from stdin until EOF or .quit; print each result; count the failures."""
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"fastclv sql on {queried}: end a query with ';', leave with .quit", highlight=False)

    def lines() -> Iterator[str]:
        while True:
            if interactive:
                err.print("sql> ", end="")
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    failed = 0
    for statement in explore.statements(lines()):
        try:
            _print_result(explore, con, statement, fmt, max_rows, queried)
        except FastclvError as exc:
            failed += 1
            err.print(f"[bold red]error:[/] {_safe(str(exc))}", highlight=False, soft_wrap=True)
    return failed


def _print_result(explore: Any, con: Any, query: str, fmt: str, max_rows: int, queried: str) -> None:
    """Print one query's result: csv and json stream every row, the table the first ones."""
    if fmt in ("csv", "json"):
        writer = explore.write_csv if fmt == "csv" else explore.write_json
        writer(explore.open_query(con, query), sys.stdout)
    else:
        result = explore.run_query(con, query, max_rows=max_rows)
        out.print(explore.rich_table(result, width=out.width))
        more = result.total - len(result.rows)
        shown = f"{result.total:,} row(s)" + (f", first {len(result.rows):,} shown" if more else "")
        out.print(f"{shown} from {queried}", style="dim", highlight=False, markup=False)
    sys.stdout.flush()


def main() -> None:
    """Console-script entry point."""
    # The model's small optimisation steps are slower with a multithreaded BLAS than without
    # (thread start-up dominates); the heavy lifting is in Polars and DuckDB, not BLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app()


if __name__ == "__main__":
    main()
