"""Atomic local writes: write to a temporary name next to the target, then rename it into place.

Every file fastclv writes locally (staged Parquet, work files, reports, downloads, generated
data) goes through :func:`atomic_write`, so a reader sees the old file or the new one, never
half of one, and a failed or interrupted write leaves the target as it was.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["TEMPORARY_GLOB", "atomic_write", "temporary"]

#: A glob that matches every name :func:`temporary` makes (to sweep what a crash left behind).
TEMPORARY_GLOB = ".*.tmp-*"


def temporary(path: Path) -> Path:
    """A unique temporary name next to ``path`` (hidden, never mistaken for a finished file)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it to ``path`` on success.

    When the block raises (``KeyboardInterrupt`` included), the temporary file is removed and
    ``path`` is left as it was. The rename is atomic because both names share one folder.

    Example::

        with atomic_write(run_dir / "summary.json") as tmp:
            tmp.write_text("{}")
    """
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
