"""``generate()``: the three CSV files and expected.json, written chunk by chunk, all or nothing."""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import polars as pl

from fastclv.contract import CUSTOMERS, INPUT_FILES, ORDER_ITEMS, ORDERS
from fastclv.files import atomic_write
from fastclv.testing.clean import clean_chunk
from fastclv.testing.common import (
    AFTER_AS_OF_DAYS,
    DIRTY_STREAM,
    FILE_NAMES,
    HISTORY_DAYS,
    PLAN_STREAM,
    Context,
    Ids,
    IntArray,
    new_counts,
)
from fastclv.testing.dirty import KINDS, Dirty, interleave
from fastclv.testing.expected import EXPECTED_FILE_NAME, expected_summary

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["GenerateResult", "generate"]


@dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` wrote: paths (keyed by file short name), data rows per file, wall time."""

    out_dir: Path
    files: dict[str, Path]
    expected_path: Path
    rows: dict[str, int]
    seconds: float


def _day_table(start: int, end: int) -> pl.Series:
    return pl.Series(np.arange(start, end + 1, dtype=np.int64)).cast(pl.Date).dt.to_string("%Y-%m-%d")


#: One field of a well-formed record and the comma after it (or the end): a quoted field (padding
#: around the quotes allowed, as the contract allows it) or an unquoted one without quotes.
_FIELD = re.compile(r'[ \t]*"((?:[^"]|"")*)"[ \t]*(?=,|$)|([^,"]*)(?=,|$)')


def _quote_line(line: str) -> str:
    """Every field of ``line`` in double quotes, the same values; a line with broken quoting as it is.

    A record whose quoting is broken (text after a closing quote, a quote inside an unquoted field)
    has no quoted form that keeps it the same broken record, so it stays as it was (still a
    ``malformed_row``). A record with the wrong number of fields keeps its number of fields.
    """
    fields: list[str] = []
    pos = 0
    while True:
        match = _FIELD.match(line, pos)
        if match is None:
            return line
        quoted, bare = match.groups()
        value = quoted.replace('""', '"') if quoted is not None else bare
        fields.append('"' + value.replace('"', '""') + '"')
        if match.end() == len(line):
            return ",".join(fields)
        pos = match.end() + 1  # past the comma


def quote_all(lines: pl.Series) -> pl.Series:
    """Every field of every line in double quotes (``--quote-all``), values unchanged.

    Lines without a quote are quoted by one vectorised replace; the few that hold quotes already
    (about 3 in 100) are re-quoted field by field in Python.
    """
    out = ('"' + lines.str.replace_all(",", '","', literal=True) + '"').rename(lines.name)
    rows = np.flatnonzero(lines.str.contains('"', literal=True).to_numpy())
    if len(rows):
        requoted = [_quote_line(line) for line in lines.gather(rows).to_list()]
        out = out.scatter(rows, pl.Series(requoted, dtype=pl.String))
    return out


class _Writer:
    """The three CSV files, each written under a temporary name that ``stack`` renames on success."""

    def __init__(self, stack: ExitStack, out_dir: Path, *, dirty: bool, quoted: bool = False) -> None:
        self.paths = {f.name: out_dir / f.file_name for f in INPUT_FILES}
        # Dirty data also exercises a UTF-8 BOM and CRLF line ends.
        self.terminator = {name: "\r\n" if dirty and name == ORDERS.name else "\n" for name in self.paths}
        self.rows = dict.fromkeys(self.paths, 0)
        self.quoted = quoted
        self.handles: dict[str, BinaryIO] = {}
        for f in INPUT_FILES:
            tmp = stack.enter_context(atomic_write(self.paths[f.name]))
            # Entered after its atomic_write, so the file is closed before it is renamed.
            self.handles[f.name] = handle = stack.enter_context(tmp.open("wb"))
            bom = b"\xef\xbb\xbf" if dirty and f.name == CUSTOMERS.name else b""
            names = [f'"{c}"' if quoted else c for c in f.columns]
            handle.write(bom + (",".join(names) + self.terminator[f.name]).encode())

    def write(self, name: str, lines: pl.Series) -> None:
        """Append lines to a file and flush them (so progress reflects what is on disk)."""
        handle = self.handles[name]
        if self.quoted:
            lines = quote_all(lines)
        lines.to_frame("line").write_csv(
            handle, include_header=False, quote_style="never", line_terminator=self.terminator[name]
        )
        handle.flush()
        self.rows[name] += len(lines)


def _chunk(
    ctx: Context, ids: Ids, plan: list[IntArray], chunk: int, start: int, n: int
) -> tuple[dict[str, pl.Series], dict[str, Counter[str]]]:
    """Generate one chunk: clean lines with this chunk's dirty rows interleaved, and their fates."""
    clean = clean_chunk(ctx, ids, chunk, start, n)
    rng = np.random.default_rng([ctx.seed, chunk, DIRTY_STREAM])
    dirty = Dirty(ctx, ids, rng, clean.customer_ids, clean.order_ids)
    if chunk == 0 and any(len(instances) for instances in plan):
        dirty.edge_cases()
    for kind, chunks in zip(KINDS, plan, strict=True):
        for j in np.flatnonzero(chunks == chunk).tolist():
            kind(dirty, j)
    clean_lines = {
        CUSTOMERS.name: clean.customer_lines,
        ORDERS.name: clean.order_lines,
        ORDER_ITEMS.name: clean.item_lines,
    }
    lines = {name: interleave(clean_lines[name], dirty.lines[name], rng) for name in FILE_NAMES}
    counts = {name: clean.counts[name] + dirty.counts[name] for name in FILE_NAMES}
    return lines, counts


def generate(
    out_dir: Path,
    *,
    customers: int,
    seed: int = 0,
    dirty_rows: int = 0,
    as_of: date = date(2025, 12, 31),
    chunk_customers: int = 50_000,
    quote_all: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GenerateResult:
    """Write customers.csv, orders.csv, order_items.csv and expected.json into ``out_dir``.

    The files are a pure function of all the arguments except ``progress`` (byte-identical on
    re-runs). ``dirty_rows`` = K injects at least K rows of every reject reason of every file,
    plus exact duplicates and valid edge cases; expected.json holds the exact counts.
    ``quote_all`` writes every field, header included, in double quotes (a fully quoted export):
    the same rows and values, so expected.json is byte-identical to the unquoted one; only lines
    with broken quoting (injected ``malformed_row`` rows) stay as they are.
    ``progress`` is called with the number of customers done after each chunk. A failed run
    leaves the previous files of ``out_dir`` as they were; expected.json is renamed into place
    last, so its presence means the CSV files beside it are complete.
    """
    if customers < 1 or seed < 0 or dirty_rows < 0 or chunk_customers < 1:
        raise ValueError(
            f"generate needs customers >= 1, seed >= 0, dirty_rows >= 0 and chunk_customers >= 1, got "
            f"{customers=}, {seed=}, {dirty_rows=}, {chunk_customers=}"
        )
    started = time.perf_counter()
    as_of_day = (as_of - date(1970, 1, 1)).days
    table_start = as_of_day - HISTORY_DAYS - 2
    ctx = Context(
        seed=seed,
        as_of_day=as_of_day,
        customer_width=max(8, len(str(customers + 64 * dirty_rows + 64)) + 1),
        order_width=max(10, len(str(customers)) + 5),
        day_table_start=table_start,
        day_table=_day_table(table_start, as_of_day + AFTER_AS_OF_DAYS + 2),
    )
    ids = Ids(customers)
    n_chunks = -(-customers // chunk_customers)
    plan_rng = np.random.default_rng([seed, 0, PLAN_STREAM])
    plan = [plan_rng.integers(0, n_chunks, dirty_rows) for _ in KINDS]  # the chunk of each injection

    out_dir.mkdir(parents=True, exist_ok=True)
    expected_path = out_dir / EXPECTED_FILE_NAME
    with ExitStack() as stack:  # on exit: the CSV files renamed into place, then expected.json
        expected_tmp = stack.enter_context(atomic_write(expected_path))
        writer = _Writer(stack, out_dir, dirty=dirty_rows > 0, quoted=quote_all)
        fates = new_counts()
        for chunk in range(n_chunks):
            start = chunk * chunk_customers
            n = min(chunk_customers, customers - start)
            lines, counts = _chunk(ctx, ids, plan, chunk, start, n)
            for name in FILE_NAMES:
                writer.write(name, lines[name])
                fates[name].update(counts[name])
            del lines
            if progress is not None:
                progress(start + n)
        if ids.next_order >= 10**ctx.order_width // 2:
            raise AssertionError("order ids overflowed their width")
        expected = expected_summary(
            seed=seed, customers=customers, dirty_rows=dirty_rows, as_of=as_of, fates=fates, rows=writer.rows
        )
        expected_tmp.write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    return GenerateResult(
        out_dir=out_dir,
        files=writer.paths,
        expected_path=expected_path,
        rows=writer.rows,
        seconds=time.perf_counter() - started,
    )
