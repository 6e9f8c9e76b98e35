"""The typed face of the compiled scanner (``fastclv._native``, built from ``native/``).

The rest of the library imports this module, never the extension itself. A scan yields
Arrow record batches of one file, in file order, with the contract's typed columns, the
row number, the first failing reason and column, the raw text of rejected rows, each
record's byte range, and a 64-bit hash of the file's own key (of the order_id for items:
the key-hash bucket of a row; see ``native/core/src/check.rs``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from fastclv import _native

#: Columns every batch carries besides the typed contract columns.
REASON = "_reason"
COLUMN = "_column"
RAW = "_raw"
OFFSET = "_offset"
LENGTH = "_length"
KEY_HASH = "_key_hash"
#: An order's hash of its customer_id (the customer's own KEY_HASH): its customer-hash bucket.
PARENT_HASH = "_parent_hash"

FormatError = _native.FormatError
InternalError = _native.InternalError


@dataclass(frozen=True)
class ByteRange:
    """One byte range of a file: the records that *start* in ``[start, end)``.

    ``end`` None is the end of the file. With ``align`` the scan begins at the first line
    start at or after ``start``, a guess that it is a record start (a quoted field may span
    lines): the caller checks the scan's :attr:`Scan.first_record` against the previous
    range's :attr:`Scan.next_record` and, when they differ, scans the range again from that
    offset with ``align`` False. Row numbers count from 1 in the range.
    """

    start: int
    end: int | None = None
    align: bool = True


#: One step of a scan as the scan thread hands it over: its batches, then rows and bytes so far.
_Step = tuple[list[_native.Batch], int, int]


class Scan:
    """One input file: its header at once, then its batches.

    Args:
        source: a local path, or a binary file object (object storage: streamed, never
            copied whole).
        kind: ``customers``, ``orders`` or ``order_items``.
        delimiter: one ASCII character.
        chunk_bytes, threads: tuning (0 = defaults: 8 MiB chunks, every core).

    Raises:
        FormatError: the file is not UTF-8 CSV text with a header (named cause).
        OSError: the source cannot be read.
    """

    def __init__(
        self, source: str | Any, kind: str, delimiter: str = ",", *, chunk_bytes: int = 0, threads: int = 0
    ) -> None:
        self._scan = _native.Scan(source, kind, delimiter, chunk_bytes, threads)
        #: (rows, bytes) as of the last step handed out, once :meth:`batches` runs: the scan
        #: thread holds the scanner while it parses, so the counters are read there, between steps.
        self._progress: tuple[int, int] | None = None

    @property
    def names(self) -> list[str]:
        """The header's field names, unquoted and trimmed, in file order."""
        return list(self._scan.names)

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read so far."""
        return self._progress[1] if self._progress is not None else int(self._scan.bytes_read)

    @property
    def rows(self) -> int:
        """Data rows numbered so far."""
        return self._progress[0] if self._progress is not None else int(self._scan.rows)

    @property
    def data_start(self) -> int:
        """File offset of the first data byte (the header's length)."""
        return int(self._scan.data_start)

    @property
    def first_record(self) -> int | None:
        """File offset of the first record the scan framed (None: none)."""
        first = self._scan.first_record
        return None if first is None else int(first)

    @property
    def next_record(self) -> int | None:
        """Once the scan is over: where the records after its range begin (or the file's end)."""
        after = self._scan.next_record
        return None if after is None else int(after)

    def batches(
        self, positions: list[int | None], *, prefetch: int = 2, byte_range: ByteRange | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Scan the data rows; ``positions`` gives each contract column's field index.

        The scan runs ``prefetch`` steps ahead on a thread of its own (the scanner releases
        the GIL), so that parsing overlaps whatever the caller does with each batch.
        ``byte_range`` scans one range of the file only (see :class:`ByteRange`).
        """
        for batch in self._steps(positions, 0, prefetch, byte_range):
            yield pa.record_batch(batch)

    def bucketed(
        self,
        positions: list[int | None],
        buckets: int,
        *,
        prefetch: int = 2,
        byte_range: ByteRange | None = None,
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Like :meth:`batches`, each batch split by key hash: ``(bucket, rows)`` pairs.

        The rows that passed the checks go to buckets ``0 .. buckets - 1`` (``buckets`` is a
        power of two) by their key hash, the rejected ones to bucket ``buckets``; the scanner
        routes each row as it checks it, on its threads. Row order is kept inside each bucket.
        """
        for batch in self._steps(positions, buckets, prefetch, byte_range):
            yield batch.bucket or 0, pa.record_batch(batch)

    def _steps(
        self, positions: list[int | None], buckets: int, prefetch: int, byte_range: ByteRange | None
    ) -> Iterator[_native.Batch]:
        """The scanner's batches, scanned ``prefetch`` steps ahead on a thread of its own."""
        if byte_range is None:
            self._scan.start(positions, buckets)
        else:
            self._scan.start(positions, buckets, byte_range.start, byte_range.end, byte_range.align)
        self._progress = (int(self._scan.rows), int(self._scan.bytes_read))
        steps: queue.Queue[_Step | BaseException | None] = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()

        def produce() -> None:
            try:
                for step in self._scan:
                    counted = (step, int(self._scan.rows), int(self._scan.bytes_read))
                    while not stop.is_set():
                        try:
                            steps.put(counted, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                steps.put(None)
            except BaseException as exc:  # noqa: BLE001  (handed to the consumer, raised there)
                steps.put(exc)

        worker = threading.Thread(target=produce, name="fastclv-scan", daemon=True)
        worker.start()
        try:
            while (item := steps.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                batches, rows, done = item
                self._progress = (rows, done)
                yield from batches
        finally:
            stop.set()
            worker.join()
            self._progress = (int(self._scan.rows), int(self._scan.bytes_read))


def empty_batch(kind: str) -> pa.RecordBatch:
    """A batch of no rows with the schema of ``kind``'s batches."""
    return pa.record_batch(_native.empty_batch(kind))


def escape_raw(raw: bytes) -> str:
    """A reject's raw text from its bytes, exactly as the scanner writes it."""
    return str(_native.escape_raw(raw))


def concat_parquet(inputs: list[Path], output: Path, rows_key: str | None = None) -> tuple[int, int]:
    """Write the Parquet files ``inputs`` (one schema), in order, as ``output``; (rows, row groups).

    Their encoded column chunks are copied, not decoded: row groups, encodings, compression,
    statistics and the first file's key-value metadata (the Arrow schema) are kept. With
    ``rows_key``, the inputs' row counts are written under that key of the output's
    key-value metadata, as a JSON list. The caller makes the write atomic.

    Raises:
        OSError: an input cannot be read or the output cannot be written (errno kept).
        ValueError: an input is not Parquet, or not of the first one's schema and metadata.
    """
    rows, groups = _native.concat_parquet([str(p) for p in inputs], str(output), rows_key)
    return int(rows), int(groups)


def version() -> str:
    """The native core's version."""
    return str(_native.version())
