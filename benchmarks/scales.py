"""Benchmark scales, the data of each (generated once, cached), and the run's knobs.

Environment variables (all optional):

* ``BENCH_SCALE``: S, M (default), L, L2 or XL.
* ``BENCH_ROUNDS``: measured rounds per contender (default 3 at S/M, 1 at L and above).
* ``BENCH_TIMEOUT``: seconds one contender run may take before it is killed (default per scale).
* ``BENCH_CONTENDERS``: comma-separated contender names to run (default per scale: all at
  S/M/L, fastclv only at L2, everything but the pandas baseline at XL).
* ``BENCH_MIN_AVAILABLE_GIB``: kill a contender when the machine's available memory drops
  below this (default 1).
* ``BENCH_QUOTED``: 1 runs the scale on a fully quoted export of the same data (``fastclv
  generate --quote-all``: every field, header included, in double quotes; the same expected.json),
  cached under ``benchmarks/.cache/<scale>-quoted/``, recorded as ``<scale>-quoted``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
CACHE = BENCH_DIR / ".cache"
RESULTS = BENCH_DIR / "results"
AS_OF = date(2025, 12, 31)
SEED = 42

#: Every contender, in run order. Names are stable: RESULTS.md and the JSON use them.
ALL_CONTENDERS: tuple[str, ...] = (
    "fastclv",
    "fastclv_extract",
    "fastclv_transform",
    "fastclv_verify",
    "fastclv_load",
    "duckdb",
    "duckdb_read_csv",
    "polars_scan_csv",
    "pandas_execute_values",
    "pandas_copy_expert",
    "load_adbc",
    "load_psql_copy",
    "load_psycopg3_copy",
)


@dataclass(frozen=True)
class Scale:
    """One data size."""

    name: str
    customers: int
    #: Injected rows of every reject reason (``fastclv generate --dirty-rows``).
    dirty_rows: int
    rounds: int
    timeout_s: float
    contenders: tuple[str, ...] = ALL_CONTENDERS
    #: Not part of the default set of scales (bigger than the usual machine can hold).
    opt_in: bool = False


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("S", 10_000, dirty_rows=20, rounds=3, timeout_s=600),
        Scale("M", 100_000, dirty_rows=100, rounds=3, timeout_s=1800),
        Scale("L", 1_000_000, dirty_rows=1000, rounds=1, timeout_s=3 * 3600),
        # 2x L: the memory check (does fastclv's peak RSS grow with the input?).
        Scale(
            "L2",
            2_000_000,
            dirty_rows=2000,
            rounds=1,
            timeout_s=3 * 3600,
            contenders=("fastclv",),
            opt_in=True,
        ),
        Scale(
            "XL",
            10_000_000,
            dirty_rows=10_000,
            rounds=1,
            timeout_s=6 * 3600,
            contenders=tuple(c for c in ALL_CONTENDERS if not c.startswith("pandas")),
            opt_in=True,
        ),
    )
}


@dataclass(frozen=True)
class Config:
    """The knobs of one benchmark session."""

    scale: Scale
    rounds: int
    timeout_s: float
    contenders: tuple[str, ...]
    min_available: int
    #: The fully quoted export of the scale's data (``BENCH_QUOTED=1``).
    quoted: bool = False

    @property
    def label(self) -> str:
        """``<scale>`` or ``<scale>-quoted``: names the cache folder and the results files."""
        return self.scale.name + ("-quoted" if self.quoted else "")

    @property
    def cache(self) -> Path:
        """``benchmarks/.cache/<label>/``: inputs (kept) and per-session work files."""
        return CACHE / self.label

    @property
    def input_dir(self) -> Path:
        return self.cache / "input"

    @property
    def work(self) -> Path:
        return self.cache / "work"


def config_from_env() -> Config:
    """The session's Config from the BENCH_* environment variables."""
    name = os.environ.get("BENCH_SCALE", "M").strip().upper() or "M"
    if name not in SCALES:
        raise SystemExit(f"BENCH_SCALE={name!r}: pick one of {', '.join(SCALES)}")
    scale = SCALES[name]
    rounds = int(os.environ.get("BENCH_ROUNDS") or scale.rounds)
    timeout = float(os.environ.get("BENCH_TIMEOUT") or scale.timeout_s)
    chosen = os.environ.get("BENCH_CONTENDERS", "").strip()
    if chosen:
        contenders = tuple(c.strip() for c in chosen.split(",") if c.strip())
        unknown = sorted(set(contenders) - set(ALL_CONTENDERS))
        if unknown:
            raise SystemExit(f"BENCH_CONTENDERS: unknown {unknown}; known: {', '.join(ALL_CONTENDERS)}")
    else:
        contenders = scale.contenders
    min_available = int(float(os.environ.get("BENCH_MIN_AVAILABLE_GIB") or 1) * 2**30)
    quoted = os.environ.get("BENCH_QUOTED", "").strip().lower() not in ("", "0", "no", "false")
    return Config(scale, max(1, rounds), timeout, contenders, min_available, quoted)


def _is_quoted(input_dir: Path) -> bool:
    """Whether the cached customers.csv is the fully quoted export (its header is quoted)."""
    with (input_dir / "customers.csv").open("rb") as f:
        return f.read(64).removeprefix(b"\xef\xbb\xbf").startswith(b'"')


def ensure_input(config: Config) -> dict[str, object]:
    """Generate the scale's CSVs unless cached; return their expected.json.

    ``expected.json`` is written last by ``fastclv generate`` (atomically), so its presence,
    with the same parameters, marks a complete data set.
    """
    expected_path = config.input_dir / "expected.json"
    want = {"customers": config.scale.customers, "seed": SEED, "dirty_rows": config.scale.dirty_rows}
    if expected_path.exists():
        expected = json.loads(expected_path.read_text())
        same = (
            all(expected.get(k) == v for k, v in want.items()) and expected.get("as_of") == AS_OF.isoformat()
        )
        if same and _is_quoted(config.input_dir) == config.quoted:
            return dict(expected)
    shutil.rmtree(config.input_dir, ignore_errors=True)
    config.input_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"\ngenerating scale {config.label} ({config.scale.customers:,} customers) ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fastclv.cli",
            "generate",
            "--customers",
            str(config.scale.customers),
            "--seed",
            str(SEED),
            "--dirty-rows",
            str(config.scale.dirty_rows),
            "--as-of",
            AS_OF.isoformat(),
            "--out",
            str(config.input_dir),
            *(["--quote-all"] if config.quoted else []),
        ],
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(expected_path.read_text()))
