"""Ad hoc SQL over one staged run: DuckDB views over the run's Parquet files.

The views are ``customers``, ``orders``, ``order_items``, ``rejects`` and ``customer_ltv``
(contract section 7), over the files of ``S/D``. Results print as a table, CSV or JSON.
The staging root may be in object storage (``s3://bucket/staging``): DuckDB then reads each
file as an Arrow dataset over the object, streamed, with columns and filters pushed down.

Example::

    con = connect(run_folder("staging", None))
    write_csv(run_query(con, "SELECT count(*) FROM customer_ltv"), sys.stdout)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from fastclv import stage
from fastclv.config import DEFAULT_STAGING
from fastclv.contract import INPUT_FILES
from fastclv.errors import ConfigError, InputError, TerminalError, first_line, printable
from fastclv.stage import StagingArea

#: View name -> staged file name.
VIEWS: dict[str, str] = {
    **{f.name: f"{f.name}.parquet" for f in INPUT_FILES},
    "rejects": stage.REJECTS,
    "customer_ltv": stage.OUTPUT,
}
FORMATS = ("table", "csv", "json")
_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Words that end the interactive prompt.
QUIT = frozenset({".quit", ".exit", "\\q"})


class QueryError(TerminalError):
    """DuckDB rejected a query (syntax, unknown table or column, bad cast)."""


@dataclass(frozen=True)
class QueryResult:
    """The columns and (the first) rows of a result; ``total`` counts every row."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    total: int


@dataclass(frozen=True)
class Rows:
    """A running query: its columns, and its rows streamed batch by batch."""

    columns: list[str]
    types: list[str]
    batches: Iterator[list[tuple[Any, ...]]]


def default_staging() -> str:
    """The staging root: ``$FASTCLV_STAGING`` or ``./staging`` (a folder or a URI)."""
    return os.environ.get("FASTCLV_STAGING") or DEFAULT_STAGING


def _area(run: StagingArea | Path | str) -> StagingArea:
    return run if isinstance(run, StagingArea) else StagingArea(run)


def run_status(run: StagingArea | Path | str) -> str | None:
    """The ``status`` of a run folder's summary.json (None if missing or unreadable)."""
    try:
        status = json.loads(_area(run).read_text(stage.SUMMARY)).get("status")
    except (TerminalError, ValueError, AttributeError):
        return None
    return str(status) if status is not None else None


def latest_run(
    staging: Path | str, *, succeeded_only: bool = True, storage_options: dict[str, str] | None = None
) -> date:
    """The latest as-of date under ``staging`` whose run succeeded (or has any summary)."""
    folders = stage.staged_dates(staging, storage_options)
    if folders is None:
        raise InputError(
            f"staging folder {staging} does not exist. "
            "Hint: pass --staging or set FASTCLV_STAGING to the folder `fastclv run` staged into."
        )
    dates = []
    for name in folders:
        if _DATE_FOLDER.match(name):
            try:
                dates.append(date.fromisoformat(name))
            except ValueError:
                continue
    for day in sorted(dates, reverse=True):  # newest first: usually one summary to read
        status = run_status(StagingArea.for_run(staging, day, storage_options))
        if status == "succeeded" or (status is not None and not succeeded_only):
            return day
    what = "succeeded" if succeeded_only else "has a summary.json"
    raise InputError(
        f"no run under {staging} {what}. "
        "Hint: run `fastclv run --staging ...` first, or pass --as-of for a specific date."
    )


def run_folder(
    staging: Path | str,
    as_of: date | None,
    *,
    succeeded_only: bool = True,
    storage_options: dict[str, str] | None = None,
) -> StagingArea:
    """The staged run ``S/D`` (D defaults to the latest succeeded run); it must exist."""
    day = as_of or latest_run(staging, succeeded_only=succeeded_only, storage_options=storage_options)
    area = StagingArea.for_run(staging, day, storage_options)
    if day.isoformat() not in (stage.staged_dates(staging, storage_options) or []):
        raise InputError(
            f"no staged run for {day.isoformat()}: {area.location} does not exist. "
            "Hint: check --staging and --as-of (dates are folder names under the staging root)."
        )
    return area


def connect(run: StagingArea | Path | str) -> Any:
    """An in-memory DuckDB connection with one view per staged file of the run.

    Returns the connection and sets its time zone to UTC (timestamps print as UTC).
    Files that are missing (a run that failed early) get no view.
    """
    import duckdb

    area = _area(run)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for view, file in VIEWS.items():
        if not area.exists(file):
            continue
        source = area.query_source(file)
        if isinstance(source, Path):
            literal = "'" + str(source.resolve()).replace("'", "''") + "'"
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({literal})")  # noqa: S608 - quoted path
        else:  # an Arrow dataset over an object: DuckDB scans it lazily
            con.register(view, source)
    return con


def missing_views(run: StagingArea | Path | str) -> list[str]:
    """Views that ``connect`` could not create because their file is missing."""
    area = _area(run)
    return [view for view, file in VIEWS.items() if not area.exists(file)]


def open_query(con: Any, sql: str) -> Rows:
    """Start ``sql``; its rows stream from DuckDB as Arrow batches (never all in memory).

    Raises:
        QueryError: DuckDB rejected the query (the message is DuckDB's first line), also
            when the error surfaces while the rows stream.
    """
    import duckdb

    try:
        reader = con.sql(sql).to_arrow_reader()
    except duckdb.Error as exc:
        raise _query_error(exc) from None

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        try:
            for batch in reader:
                yield list(zip(*(column.to_pylist() for column in batch.columns), strict=True))
        except duckdb.Error as exc:
            raise _query_error(exc) from None

    return Rows(list(reader.schema.names), [str(t) for t in reader.schema.types], batches())


def run_query(con: Any, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """Run ``sql``; keep the first ``max_rows`` rows (all if None) and count the rest."""
    result = open_query(con, sql)
    rows: list[tuple[Any, ...]] = []
    total = 0
    for batch in result.batches:
        total += len(batch)
        rows.extend(batch if max_rows is None else batch[: max(0, max_rows - len(rows))])
    return QueryResult(result.columns, result.types, rows, total)


def _query_error(exc: BaseException) -> QueryError:
    return QueryError(f"query failed: {first_line(exc)}. Hint: {_hint(exc)}")


def _hint(exc: BaseException) -> str:
    text = str(exc)
    if "Catalog Error" in text:
        return f"the tables are the views {', '.join(VIEWS)}; `DESCRIBE customer_ltv` lists columns"
    return "check the SQL (DuckDB dialect); `SHOW TABLES` lists the views"


# ---------------------------------------------------------------------------- output


def text(value: object, *, sep: str = "T") -> str:
    """One value as text: ISO dates and times, exact decimals, ``null`` for missing."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=sep)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, default=text, ensure_ascii=False)
    return str(value)


def _json_value(value: object) -> str:
    """A JSON value; decimals stay exact numbers, dates/times are ISO strings, NaN is null."""
    if isinstance(value, list):
        return "[" + ", ".join(_json_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)  # exact number text: money never goes through a float
    if value is None or isinstance(value, Decimal) or (isinstance(value, float) and not math.isfinite(value)):
        return "null"
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(text(value), ensure_ascii=False)


def write_csv(result: Rows, stream: IO[str]) -> int:
    """Stream RFC 4180 CSV with a header (missing values are empty fields); returns the row count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(result.columns)
    total = 0
    for batch in result.batches:
        writer.writerows(["" if v is None else text(v) for v in row] for row in batch)
        total += len(batch)
    return total


def write_json(result: Rows, stream: IO[str]) -> int:
    """Stream a JSON array with one object per row; returns the row count."""
    keys = [json.dumps(c, ensure_ascii=False) + ": " for c in result.columns]
    total = 0
    for batch in result.batches:
        for row in batch:
            stream.write(
                ("[\n  {" if total == 0 else ",\n  {")
                + ", ".join(k + _json_value(v) for k, v in zip(keys, row, strict=True))
                + "}"
            )
            total += 1
    stream.write("\n]\n" if total else "[]\n")
    return total


def rich_table(result: QueryResult, width: int | None = None) -> Any:
    """The result as a rich Table: numbers right-aligned, nulls dimmed, control characters escaped.

    When ``width`` is given and the rows would not fit in it, one record per block instead
    (``column | value`` lines, as psql's expanded display), so wide results stay readable.
    """
    from rich.table import Table

    columns = [printable(name) for name in result.columns]
    cells = [["null" if v is None else printable(text(v, sep=" ")) for v in row] for row in result.rows]
    if width is not None and columns and _table_width(columns, cells) > width:
        return _records(columns, cells, result.rows)
    numeric = ("int", "uint", "float", "double", "decimal")
    table = Table(show_edge=True, header_style="bold")
    for name, kind in zip(columns, result.types, strict=True):
        if kind.startswith(numeric):
            table.add_column(_escape(name), justify="right", overflow="fold")
        else:
            table.add_column(_escape(name), justify="left", overflow="fold")
    for row, shown in zip(result.rows, cells, strict=True):
        table.add_row(*("[dim]null[/]" if v is None else _escape(c) for v, c in zip(row, shown, strict=True)))
    return table


def _table_width(columns: list[str], cells: list[list[str]]) -> int:
    """Characters a bordered table of these cells takes on one line (rich: ``| x |`` per column)."""
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def _records(columns: list[str], cells: list[list[str]], rows: list[tuple[Any, ...]]) -> Any:
    """One block per record: ``-[ RECORD n ]-`` then the column names beside their values."""
    from rich.table import Table

    table = Table(show_header=False, show_edge=False, box=None, padding=(0, 1), pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for number, (row, shown) in enumerate(zip(rows, cells, strict=True), start=1):
        if number > 1:
            table.add_row("", "")
        table.add_row(f"-[ RECORD {number} ]-", "")
        for name, value, cell in zip(columns, row, shown, strict=True):
            table.add_row(_escape(name), "[dim]null[/]" if value is None else _escape(cell))
    return table


def _escape(value: str) -> str:
    from rich.markup import escape

    return escape(value)


def statements(lines: Iterable[str]) -> Iterator[str]:
    r"""Queries from prompt input: each ends with ``;`` at a line end, a blank line, or EOF.

    A line that is only ``.quit`` / ``.exit`` / ``\\q`` ends the input.
    """
    buffer: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.strip() in QUIT and not buffer:
            return
        if not line.strip():
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            yield "\n".join(buffer)
            buffer = []
    if buffer:
        yield "\n".join(buffer)


def check_format(fmt: str) -> str:
    """Validate an output format name."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}. Hint: use one of {', '.join(FORMATS)}.")
    return fmt
