"""Write benchmarks/RESULTS.md and one chart per scale from the recorded benchmark sessions.

Reads every ``benchmarks/results/<scale>.json`` (written by a ``make bench`` session; a later
session of the same scale replaces it, other scales are kept), ``<scale>-quoted.json`` (the fully
quoted export of the same data, ``make bench-quoted``) and, when present, the raw
pytest-benchmark JSON ``benchmarks/results/raw_<label>.json`` for the wall-time statistics.
Run::

    python -m benchmarks.report
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.contenders.idiomatic import NOT_CHECKED
from benchmarks.scales import BENCH_DIR, RESULTS, SCALES

RESULTS_MD = BENCH_DIR / "RESULTS.md"
GIB = 2**30
#: The targets (for the 2-core machine, one run): e2e vs DuckDB and pandas, memory, load speed.
TARGET_VS_DUCKDB = 0.25
TARGET_VS_PANDAS = 0.05
TARGET_RSS_BYTES = int(1.5 * GIB)
#: Peak RSS at 2x L is at most this many times the peak at L (memory does not grow with the input).
TARGET_RSS_GROWTH = 1.15
#: The cross-check's share of the run (summary.json timings: verify / total).
TARGET_VERIFY_SHARE = 0.25
#: A fully quoted export of the same data takes at most this many times the unquoted time.
TARGET_QUOTED = 1.5
QUOTED = "-quoted"


def load_sessions() -> dict[str, dict[str, Any]]:
    """Recorded sessions by label (``S``, ``S-quoted``, ...), in scale order, with wall stats merged in."""
    sessions = {}
    for name in (label for scale in SCALES for label in (scale, scale + QUOTED)):
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        raw_path = RESULTS / f"raw_{name}.json"
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {"benchmarks": []}
        walls = {
            b.get("extra_info", {}).get("contender", b["name"]): b["stats"] for b in raw.get("benchmarks", [])
        }
        for contender, rec in data["contenders"].items():
            rec["name"] = contender
            stats = walls.get(contender)
            if rec["status"] == "ok" and stats:
                rec["wall"] = {
                    "median": stats["median"],
                    "min": stats["min"],
                    "max": stats["max"],
                    "source": "pytest-benchmark",
                }
            elif rec["status"] == "ok":
                rounds = [r["wall_s"] for r in rec["rounds"]]
                rec["wall"] = {
                    "median": statistics.median(rounds),
                    "min": min(rounds),
                    "max": max(rounds),
                    "source": "records",
                }
        sessions[name] = data
    return sessions


# -- formatting --------------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def _gib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 2**20:.0f} MiB"


def _rate(rows: int, seconds: float | None) -> str:
    if not seconds:
        return "-"
    r = rows / seconds
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.3f}x" if a / b < 0.1 else f"{a / b:.2f}x"


def _wall(rec: dict[str, Any] | None) -> float | None:
    if not rec or rec.get("status") != "ok":
        return None
    return float(rec["wall"]["median"])


def _median(rec: dict[str, Any] | None, key: str) -> float | None:
    if not rec or rec.get("status") != "ok":
        return None
    return float(rec["medians"][key])


def _inprocess_s(rec: dict[str, Any] | None) -> float | None:
    """Median in-process seconds (no interpreter start or imports), if the contender reports them."""
    values = (rec or {}).get("extra", {}).get("inprocess") or []
    if not rec or rec.get("status") != "ok" or not values:
        return None
    return float(statistics.median(values))


def _inprocess(rec: dict[str, Any] | None) -> str:
    return _s(_inprocess_s(rec))


def _status(rec: dict[str, Any]) -> str:
    status = rec["status"]
    if status == "ok":
        return f"ok (measured {rec['measured'][:16]})" if rec.get("measured") else "ok"
    reason = rec.get("reason", "").splitlines()[0] if rec.get("reason") else ""
    return f"**{status}**" + (f": {reason[:160]}" if reason else "")


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# -- sections --------------------------------------------------------------------------------------


def targets_section(sessions: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Stated for this 2-core machine, measured in one `make bench` run per scale (the L rows "
        "are filled in by `BENCH_SCALE=L make bench` on a quiet machine; 2x L by `BENCH_SCALE=L2`).",
        "",
    ]
    rows = []
    pending = "pending: run `BENCH_SCALE={} make bench`"
    large = sessions.get("L")
    c = large["contenders"] if large else {}
    fast = _wall(c.get("fastclv"))
    duck = _wall(c.get("duckdb"))
    pandas = [w for w in (_wall(c.get("pandas_execute_values")), _wall(c.get("pandas_copy_expert"))) if w]
    best_pandas = min(pandas) if pandas else None

    def verdict(value: float | None, limit: float, *, at_most: bool = True) -> str:
        if value is None:
            return pending.format("L") if not large else "not measured (a contender failed)"
        ok = value <= limit if at_most else value >= limit
        return "met" if ok else "**not met**"

    idiomatic = _wall(c.get("duckdb_read_csv"))
    rows.append(
        [
            "fastclv end to end at L <= 0.25x the idiomatic DuckDB contender's wall (`read_csv`)",
            f"{_ratio(fast, idiomatic)} ({_s(fast)} s vs {_s(idiomatic)} s)" if fast and idiomatic else "-",
            verdict(fast / idiomatic if fast and idiomatic else None, TARGET_VS_DUCKDB),
        ]
    )
    rows.append(
        [
            "fastclv end to end at L <= 0.25x the DuckDB SQL contender's wall (contract-exact)",
            f"{_ratio(fast, duck)} ({_s(fast)} s vs {_s(duck)} s)" if fast and duck else "-",
            verdict(fast / duck if fast and duck else None, TARGET_VS_DUCKDB),
        ]
    )
    rows.append(
        [
            "fastclv end to end at L <= 0.05x the pandas baseline's wall (its faster variant)",
            f"{_ratio(fast, best_pandas)} ({_s(fast)} s vs {_s(best_pandas)} s)"
            if fast and best_pandas
            else "-",
            verdict(fast / best_pandas if fast and best_pandas else None, TARGET_VS_PANDAS),
        ]
    )
    peaks = {
        scale: _median(sessions[scale]["contenders"].get("fastclv"), "peak_rss_bytes")
        if scale in sessions
        else None
        for scale in ("L", "L2")
    }
    rows.append(
        [
            f"fastclv peak RSS <= {TARGET_RSS_BYTES / GIB:.1f} GiB at L",
            _gib(peaks["L"]),
            ("met" if peaks["L"] <= TARGET_RSS_BYTES else "**not met**")
            if peaks["L"]
            else pending.format("L"),
        ]
    )
    growth = peaks["L2"] / peaks["L"] if peaks["L"] and peaks["L2"] else None
    rows.append(
        [
            f"fastclv peak RSS at 2x L (L2) <= {TARGET_RSS_GROWTH}x the peak at L",
            f"{growth:.2f}x ({_gib(peaks['L2'])} vs {_gib(peaks['L'])})" if growth else "-",
            ("met" if growth <= TARGET_RSS_GROWTH else "**not met**") if growth else pending.format("L2"),
        ]
    )
    timings = (c.get("fastclv") or {}).get("extra", {}).get("summary_timings") or []
    shares = [t["verify"] / t["total"] for t in timings if t.get("total") and "verify" in t]
    share = statistics.median(shares) if shares else None
    rows.append(
        [
            f"the cross-check costs <= {TARGET_VERIFY_SHARE:.0%} of the run at L "
            "(verify / total in summary.json)",
            f"{share:.0%}" if share is not None else "-",
            verdict(share, TARGET_VERIFY_SHARE),
        ]
    )
    adbc = c.get("load_adbc")
    psql = c.get("load_psql_copy")
    out_rows = large["output_rows"] if large else 0
    a_wall, p_wall = _wall(adbc), _wall(psql)
    a_rate = out_rows / a_wall if a_wall else None
    p_rate = out_rows / p_wall if p_wall else None
    inside = _inprocess_s(adbc)
    rows.append(
        [
            "load rows/s (ADBC, `fastclv.load.load_partition`) >= `psql \\copy` at L",
            f"process wall: {_rate(out_rows, _wall(adbc))} vs {_rate(out_rows, _wall(psql))} rows/s; "
            f"the load call alone (no interpreter start or imports): "
            f"{_rate(out_rows, inside)} rows/s"
            if large and a_rate and p_rate
            else "-",
            verdict(a_rate / p_rate if a_rate and p_rate else None, 1.0, at_most=False)
            + (" by process wall" if a_rate and p_rate else ""),
        ]
    )
    quoted = sessions.get("L" + QUOTED)
    q_ratio = _quoted_ratio(large, quoted, "fastclv")
    rows.append(
        [
            f"fastclv end to end on a fully quoted export at L <= {TARGET_QUOTED}x the same data unquoted",
            f"{q_ratio:.2f}x" if q_ratio else "-",
            ("met" if q_ratio <= TARGET_QUOTED else "**not met**")
            if q_ratio
            else "pending: run `BENCH_SCALE=L make bench-quoted`",
        ]
    )
    lines += _table(rows, ["target", "measured", "verdict"])
    lines += ["", *ratio_lines(sessions), *quoted_lines(sessions), *memory_lines(sessions), ""]
    lines += not_checked_lines()
    return lines


def _quoted_ratio(plain: dict[str, Any] | None, quoted: dict[str, Any] | None, name: str) -> float | None:
    """Wall of ``name`` on the quoted export / on the same data unquoted, if both were measured."""
    if not plain or not quoted:
        return None
    a, b = _wall(plain["contenders"].get(name)), _wall(quoted["contenders"].get(name))
    return b / a if a and b else None


def quoted_lines(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """Every scale measured both ways: each contender's wall, quoted against unquoted."""
    rows = []
    for name, quoted in sessions.items():
        plain = sessions.get(name.removesuffix(QUOTED)) if name.endswith(QUOTED) else None
        if plain is None:
            continue
        for contender, rec in quoted["contenders"].items():
            ratio = _quoted_ratio(plain, quoted, contender)
            if ratio is None or rec["table"] not in ("e2e", "stage"):
                continue
            verdict = ""
            if contender == "fastclv":
                verdict = "met" if ratio <= TARGET_QUOTED else "**not met**"
            wall_plain = _wall(plain["contenders"][contender])
            rows.append(
                [
                    name.removesuffix(QUOTED),
                    rec["label"],
                    _s(wall_plain),
                    _s(_wall(rec)),
                    f"{ratio:.2f}x",
                    _ratio(_inprocess_s(rec), _inprocess_s(plain["contenders"][contender])),
                    verdict,
                ]
            )
    if not rows:
        return []
    sizes = []
    for name, quoted in sessions.items():
        plain = sessions.get(name.removesuffix(QUOTED)) if name.endswith(QUOTED) else None
        if plain is not None:
            sizes.append(
                f"{name.removesuffix(QUOTED)} {quoted['input_bytes'] / 1e6:,.0f} MB quoted against "
                f"{plain['input_bytes'] / 1e6:,.0f} MB"
            )
    return [
        f"A fully quoted export (`fastclv generate --quote-all`: every field, header included, in double "
        f"quotes; the same rows, values and expected.json) against the same data unquoted; the target for "
        f"fastclv end to end is <= {TARGET_QUOTED}x. CSV sizes: {'; '.join(sizes)}. Wall medians, each "
        "session measured separately (`make bench-quoted`), so load on the machine can differ between them:",
        "",
        *_table(
            rows,
            [
                "scale",
                "contender",
                "unquoted wall (s)",
                "quoted wall (s)",
                "quoted / unquoted (wall)",
                "same, in-process",
                "target (wall)",
            ],
        ),
        "",
    ]


def not_checked_lines() -> list[str]:
    """What the idiomatic contenders do not check (from benchmarks/contenders/idiomatic.py)."""
    from benchmarks.conftest import CONTENDERS

    out = [
        "## Idiomatic contenders: what they do not check",
        "",
        "`duckdb_read_csv` and `polars_scan_csv` are what a DuckDB or a Polars user writes: the library's",
        "own CSV reader and casts, then the contract's other checks (duplicates, foreign keys, statuses,",
        "ranges, discount <= amount) and the same historical columns, loaded the same way. They are not",
        "contract-exact on dirty data, so their rounds do not have to match fastclv's: the loaded rows and",
        "the counts are compared with fastclv's and the differences are listed as notes under each scale's",
        "checks (a round fails only on a crash or an empty load). What each does not check:",
        "",
    ]
    for name, items in NOT_CHECKED.items():
        out.append(f"- {CONTENDERS[name][0]} (`{name}`):")
        out += [f"  - {item}" for item in items]
    return [*out, ""]


def ratio_lines(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """The targets' ratios at every measured scale (for orientation; the targets are for L)."""
    rows = []
    for name, s in sessions.items():
        c = s["contenders"]
        fast = _wall(c.get("fastclv"))
        duck = _wall(c.get("duckdb"))
        pandas = [w for w in (_wall(c.get("pandas_execute_values")), _wall(c.get("pandas_copy_expert"))) if w]
        adbc, psql = _wall(c.get("load_adbc")), _wall(c.get("load_psql_copy"))
        rows.append(
            [
                name,
                _ratio(fast, duck),
                _ratio(fast, _wall(c.get("duckdb_read_csv"))),
                _ratio(fast, _wall(c.get("polars_scan_csv"))),
                _ratio(fast, min(pandas)) if pandas else "-",
                _gib(_median(c.get("fastclv"), "peak_rss_bytes")),
                _ratio(psql, adbc),
                _ratio(psql, _inprocess_s(c.get("load_adbc"))),
            ]
        )
    if not rows:
        return []
    return [
        "The same measures at every scale measured so far (wall ratios; fixed start-up costs weigh more",
        "on the small scales):",
        "",
        *_table(
            rows,
            [
                "scale",
                "fastclv / DuckDB",
                "fastclv / DuckDB read_csv (idiomatic)",
                "fastclv / Polars scan_csv (idiomatic)",
                "fastclv / pandas (faster variant)",
                "fastclv peak RSS",
                "ADBC load rows/s / psql's",
                "same, ADBC's load call alone",
            ],
        ),
        "",
    ]


def memory_lines(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """Does fastclv's peak RSS grow with the input? One row per measured scale."""
    rows = []
    for name, s in sessions.items():
        rec = s["contenders"].get("fastclv")
        rss = _median(rec, "peak_rss_bytes")
        if rss is None:
            continue
        rows.append(
            [
                name,
                f"{s['customers']:,}",
                f"{s['input_rows']:,}",
                f"{s['input_bytes'] / 1e6:,.0f} MB",
                _gib(rss),
            ]
        )
    if not rows:
        return []
    out = ["Peak RSS of `fastclv run` (whole process tree, median of rounds) by input size:", ""]
    out += _table(rows, ["scale", "customers", "input rows", "CSV size", "peak RSS"])
    if "L" in sessions and "L2" in sessions:
        a = _median(sessions["L"]["contenders"].get("fastclv"), "peak_rss_bytes")
        b = _median(sessions["L2"]["contenders"].get("fastclv"), "peak_rss_bytes")
        if a and b:
            out += ["", f"2x the input (L -> L2) changes fastclv's peak RSS by {b / a:.2f}x."]
    return out


def scale_section(name: str, s: dict[str, Any]) -> list[str]:
    c = s["contenders"]
    m = s["machine"]
    v = s["versions"]
    files = ", ".join(f"{k} {n:,}" for k, n in s["input_files"].items())
    variant = ", every field quoted (`fastclv generate --quote-all`)" if s.get("quoted") else ""
    lines = [
        f"## Scale {name}: {s['customers']:,} customers{variant}",
        "",
        f"Input: {s['input_rows']:,} data rows ({files}), "
        f"{s['input_bytes'] / 1e6:,.0f} MB of CSV, `--dirty-rows {s['dirty_rows']}`; output: "
        f"{s['output_rows']:,} customer_ltv rows as of {s['as_of']}.",
        f"Run {s['started']} to {s['finished']}, {s['rounds']} round(s) per contender, medians shown; "
        f"load average at start {s['loadavg_start'][0]:.1f}, at end {s['loadavg_end'][0]:.1f}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / GIB:.0f} GiB RAM, {m['os']}. "
        f"Versions: Python {v.get('python')}, polars {v.get('polars')}, duckdb {v.get('duckdb')}, "
        f"pandas {v.get('pandas')}, pyarrow {v.get('pyarrow')}, adbc-driver-postgresql "
        f"{v.get('adbc-driver-postgresql')}, psycopg {v.get('psycopg')}, "
        f"psycopg2 {v.get('psycopg2-binary')}, PostgreSQL {v.get('postgresql')}; "
        f"fastclv at {v.get('fastclv', 'unknown')}.",
        "",
    ]
    if s.get("reference_problems"):
        lines += ["**fastclv's reference run disagrees with the generator's expected.json:**", ""]
        lines += [f"- {p}" for p in s["reference_problems"]] + [""]

    fast = _wall(c.get("fastclv"))
    rows = []
    for rec in c.values():
        if rec["table"] not in ("e2e", "stage") or rec["status"] == "skipped":
            continue
        wall = _wall(rec)
        rows.append(
            [
                rec["label"],
                _status(rec),
                _s(wall),
                _inprocess(rec),
                _s(_median(rec, "cpu_s")),
                _gib(_median(rec, "peak_rss_bytes")),
                _rate(rec["rows"], wall) if wall else "-",
                _ratio(wall, fast),
            ]
        )
    lines += ["### End to end, and fastclv stage by stage", ""]
    lines += _table(
        rows,
        [
            "contender",
            "status",
            "wall (s)",
            "in-process (s)",
            "CPU (s)",
            "peak RSS",
            "rows/s",
            "wall / fastclv e2e",
        ],
    )
    lines += [
        "",
        "wall: the contender's process, from spawn to exit (what a scheduler sees). in-process: the work",
        "after interpreter start and imports (fastclv: summary.json `total`; a stage: the stage function",
        "call; contenders: the sum of their own phase timers). CPU: user + sys of the process tree.",
        "rows/s: input data rows (all three files) per second of wall time; for the load stage, output rows.",
        "Each stage runs alone in a fresh process (interpreter start and imports included) on a copy",
        "of a finished run's staging folder, through `fastclv.pipeline`'s stage function.",
        "",
    ]
    lines += inside_lines(c)
    lines += phases_lines(c)
    lines += idiomatic_lines(c)

    psql = _wall(c.get("load_psql_copy"))
    rows = []
    for rec in c.values():
        if rec["table"] != "load" or rec["status"] == "skipped":
            continue
        wall = _wall(rec)
        rows.append(
            [
                rec["label"],
                _status(rec),
                _s(wall),
                _inprocess(rec),
                _s(_median(rec, "cpu_s")),
                _gib(_median(rec, "peak_rss_bytes")),
                _rate(rec["rows"], wall) if wall else "-",
                _ratio(wall, psql),
                _ratio(psql, wall),
            ]
        )
    if not rows:
        lines += checks_lines(c)
        return lines
    lines += ["### Load alone (the same rows: fastclv's staged customer_ltv.parquet)", ""]
    lines += _table(
        rows,
        [
            "contender",
            "status",
            "wall (s)",
            "in-process (s)",
            "CPU (s)",
            "peak RSS",
            "rows/s",
            "wall / psql",
            "rows/s / psql's",
        ],
    )
    lines += [
        "",
        "in-process: the load call alone (ADBC: `load_partition`; psycopg 3: the COPY loop), without",
        "interpreter start and imports; psql is one small C process. CPU and peak RSS are the",
        "client's (the PostgreSQL server is not a child of the harness).",
        "",
        f"![scale {name}](results_{name}.png)",
        "",
    ]
    lines += checks_lines(c)
    return lines


def inside_lines(c: dict[str, Any]) -> list[str]:
    rec = c.get("fastclv")
    timings = (rec or {}).get("extra", {}).get("summary_timings") or []
    if rec is None or rec.get("status") != "ok" or not timings:
        return []
    keys = [k for k in ("extract", "transform", "model", "verify", "load", "total") if k in timings[0]]
    med = {k: statistics.median(t.get(k, 0.0) for t in timings) for k in keys}
    wall = _wall(rec) or 0.0
    parts = ", ".join(f"{k} {med[k]:.2f} s" for k in keys)
    return [
        f"Inside `fastclv run` (its summary.json `timings`, median of rounds): {parts} "
        "(transform includes model). "
        f"Process wall minus `total`: {wall - med.get('total', 0.0):.2f} s of interpreter start, imports, "
        "run-ledger writes and exit.",
        "",
    ]


def phases_lines(c: dict[str, Any]) -> list[str]:
    out = []
    for key in (
        "duckdb",
        "duckdb_read_csv",
        "polars_scan_csv",
        "pandas_execute_values",
        "pandas_copy_expert",
    ):
        rec = c.get(key)
        phases = (rec or {}).get("extra", {}).get("phases") or []
        phases = [p for p in phases if p]
        if not rec or rec.get("status") != "ok" or not phases:
            continue
        med = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
        out.append(f"- {rec['label']}: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    if out:
        return ["Contenders' own phase timings (median of rounds; in-process, after imports):", "", *out, ""]
    return []


def idiomatic_lines(c: dict[str, Any]) -> list[str]:
    """The idiomatic contenders: how fast, and how far from the contract (what fastclv loads)."""
    rows = []
    fast, duck = _wall(c.get("fastclv")), _wall(c.get("duckdb"))
    for name in NOT_CHECKED:
        rec = c.get(name)
        diff = (rec or {}).get("extra", {}).get("differences")
        if not rec or rec.get("status") != "ok" or not diff:
            continue
        wall = _wall(rec)
        rows.append(
            [
                rec["label"].split(" (")[0],
                _s(wall),
                _ratio(fast, wall),
                _ratio(duck, wall),
                f"{diff['customers']:,} ({diff['missing']:,} missing, {diff['extra']:,} extra, "
                f"{diff['differing']:,} other values)",
                f"{len(diff['counts'])} of 3",
            ]
        )
    if not rows:
        return []
    return [
        "Idiomatic contenders (not contract-exact; what they do not check: the section before the scales):",
        "",
        *_table(
            rows,
            [
                "contender",
                "wall (s)",
                "fastclv e2e / it",
                "DuckDB SQL / it",
                "customers that differ from fastclv's",
                "files whose counts differ",
            ],
        ),
        "",
    ]


def checks_lines(c: dict[str, Any]) -> list[str]:
    out = ["Checks (each round, before its time counts):", ""]
    for rec in c.values():
        if rec["status"] == "ok":
            line = f"- {rec['label']}: {rec['check'] or 'ok'}"
        elif rec["status"] == "skipped":
            line = f"- {rec['label']}: skipped ({rec.get('reason', '')})"
        else:
            line = f"- {rec['label']}: **{rec['status']}**: {rec.get('reason', '')[:1500]}"
        out.append(line)
        out += [f"  - note: {n}" for n in rec.get("notes", [])]
    return [*out, ""]


# -- chart -----------------------------------------------------------------------------------------


def chart(name: str, s: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = s["contenders"]
    main = [r for r in c.values() if r["table"] in ("e2e", "stage") and r["status"] == "ok"]
    load = [r for r in c.values() if r["table"] == "load" and r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 0.45 * max(len(main), 4) + 2.2))

    def short(r: dict[str, Any]) -> str:
        return str(r["label"]).replace("`", "").split(" (")[0]

    def bars(ax: Any, recs: list[dict[str, Any]], values: list[float], title: str, fmt: str) -> None:
        labels = [short(r) for r in recs]
        colors = [
            "tab:blue" if r["name"].startswith("fastclv") or r["name"] == "load_adbc" else "tab:gray"
            for r in recs
        ]
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for i, value in enumerate(values):
            ax.text(value, i, " " + fmt.format(value), va="center", fontsize=8)
        ax.margins(x=0.25)

    bars(axes[0], main, [r["wall"]["median"] for r in main], "wall time, median (s)", "{:.1f}")
    bars(axes[1], main, [r["medians"]["peak_rss_bytes"] / GIB for r in main], "peak RSS (GiB)", "{:.2f}")
    axes[1].set_yticklabels([])
    if load:
        bars(
            axes[2],
            load,
            [r["rows"] / r["wall"]["median"] / 1e3 for r in load],
            "load alone: output rows per second (thousands)",
            "{:.0f}",
        )
    else:
        axes[2].axis("off")
    fig.suptitle(
        f"fastclv benchmarks, scale {name} ({s['customers']:,} customers, {s['input_rows']:,} input rows), "
        f"{s['machine']['cores']} cores, {s['started'][:10]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ANALYSIS_MD = BENCH_DIR / "ANALYSIS.md"


def write() -> Path:
    sessions = load_sessions()
    lines = [
        "# fastclv benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks.report`) from `benchmarks/results/<scale>.json` "
        "and the raw pytest-benchmark JSON `benchmarks/results/raw_<scale>.json`; a run of one scale "
        "replaces that scale's section and keeps the others. How the numbers are made: "
        "docs/benchmarks.md. Every contender's result was compared with fastclv's before its time counted.",
        "",
    ]
    if not sessions:
        lines += ["No results yet: run `make bench`.", ""]
    else:
        lines += targets_section(sessions)
        if ANALYSIS_MD.exists():  # the hand-written profile notes survive every regeneration
            lines += [ANALYSIS_MD.read_text().rstrip(), ""]
        for name, s in sessions.items():
            lines += scale_section(name, s)
            chart(name, s, BENCH_DIR / f"results_{name}.png")
    RESULTS_MD.write_text("\n".join(lines).rstrip() + "\n")
    return RESULTS_MD


if __name__ == "__main__":
    print(f"wrote {write()}")
