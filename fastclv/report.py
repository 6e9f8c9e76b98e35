r"""The run report: one self-contained HTML file per run, ``S/D/report.html``.

It answers "what does today's result look like?" and "can we trust these predictions?" for
people who would rather look than read: the headline figures, rejects by file and reason with
sample rows, the CLV distribution, deciles and top customers, p_alive over frequency and
recency, the model's fit, the holdout backtest's calibration plot, and (when the run loads into
PostgreSQL) the history of earlier dates from the run ledger.

Self-contained: inline CSS and inline SVG plots (matplotlib, text kept as text, so the file
stays small), no script, no font, no network request; a Content-Security-Policy forbids any
all the same. Every value from the data is HTML-escaped, with control characters shown as
``\xNN``, so ids or raw rows holding markup or escape codes are shown as text.

Built from the staged files only (summary.json, customer_ltv.parquet, rejects.parquet,
holdout.parquet), so ``fastclv report`` rebuilds it for any staged run.
"""

from __future__ import annotations

import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from fastclv import files
from fastclv.errors import printable

log = logging.getLogger(__name__)

REPORT = "report.html"
#: Sample raw rows shown per (file, reason).
SAMPLES = 3
#: Customers in the top table.
TOP = 20
#: The p_alive matrix's axes: frequency 0..FREQ_MAX (the last bin holds the rest), recency in bins.
FREQ_MAX = 30
RECENCY_BINS = 30


@dataclass(frozen=True)
class HistoryRow:
    """One earlier date from the run ledger (its latest successful run)."""

    as_of: date
    customers: int
    total_clv: float | None
    reject_rate: float


# ---------------------------------------------------------------------------- figures


def _figures(output: Path) -> dict[str, Any]:
    """Everything the report shows about the output table, in one lazy pass per figure."""
    table = pl.scan_parquet(output)
    totals = table.select(
        pl.len().alias("customers"),
        (pl.col("orders_count") > 0).sum().alias("buyers"),
        pl.col("total_revenue").sum().alias("revenue"),
        pl.col("predicted_clv").sum().alias("clv"),
        pl.col("predicted_clv").is_not_null().sum().alias("scored"),
    ).collect()
    scored = table.filter(pl.col("predicted_clv").is_not_null())
    deciles = (
        scored.select(
            pl.col("predicted_clv").cast(pl.Float64).alias("clv"),
            (pl.col("predicted_clv").rank("ordinal", descending=True) - 1).alias("rank"),
            pl.len().alias("n"),
        )
        .with_columns((pl.col("rank") * 10 // pl.col("n") + 1).alias("decile"))
        .group_by("decile")
        .agg(
            pl.len().alias("customers"),
            pl.col("clv").min().alias("lo"),
            pl.col("clv").max().alias("hi"),
            pl.col("clv").sum().alias("sum"),
        )
        .sort("decile")
        .collect()
    )
    top = (
        scored.sort(["predicted_clv", "customer_id"], descending=[True, False])
        .head(TOP)
        .select(
            "customer_id", "predicted_clv", "p_alive", "expected_purchases", "frequency", "recency_days",
            "t_days", "total_revenue",
        )
        .collect()
    )  # fmt: skip
    clv = scored.select(pl.col("predicted_clv").cast(pl.Float64)).collect().to_series()
    has = table.filter(pl.col("p_alive").is_not_null())
    recency_max = has.select(pl.col("recency_days").max()).collect().item() or 0
    width = max(1, math.ceil((recency_max + 1) / RECENCY_BINS))
    matrix = (
        has.group_by(
            pl.col("frequency").clip(upper_bound=FREQ_MAX).alias("f"),
            (pl.col("recency_days") // width).alias("r"),
        )
        .agg(pl.col("p_alive").mean().alias("p"), pl.len().alias("n"))
        .collect()
    )
    return {
        "totals": totals.row(0, named=True),
        "deciles": deciles,
        "top": top,
        "clv": clv,
        "matrix": matrix,
        "recency_width": width,
    }


def _reject_samples(rejects: Path) -> pl.DataFrame:
    """Up to SAMPLES rejects per (file, reason), first rows first."""
    return (
        pl.scan_parquet(rejects)
        .sort("file", "reason", "row")
        .group_by("file", "reason", maintain_order=True)
        .head(SAMPLES)
        .collect()
    )


# ---------------------------------------------------------------------------- plots


def _svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG (text as text; no date, so a rebuild is byte-stable)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _pyplot() -> Any:
    """Pyplot on the Agg backend, in the report's style."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "fastclv",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _axes(width: float = 6.4, height: float = 3.2) -> tuple[Any, Any]:
    figure, axes = _pyplot().subplots(figsize=(width, height))
    return figure, axes


def _clv_histogram(clv: pl.Series) -> str:
    figure, axes = _axes()
    values = clv.drop_nulls().to_numpy()
    top = float(clv.quantile(0.99) or 0.0)
    shown = values[values <= top] if top > 0 else values
    axes.hist(shown, bins=50, color="#3b6ea5")
    axes.set_xlabel("predicted CLV" + (" (up to the 99th percentile)" if len(shown) < len(values) else ""))
    axes.set_ylabel("customers")
    return _svg(figure)


def _alive_matrix(matrix: pl.DataFrame, width: int) -> str:
    import numpy as np

    figure, axes = _axes(6.4, 4.0)
    grid = np.full((FREQ_MAX + 1, RECENCY_BINS + 1), np.nan)
    for f, r, p, _n in matrix.iter_rows():
        grid[int(f), min(int(r), RECENCY_BINS)] = p
    image = axes.imshow(
        grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
    )
    axes.grid(False)
    axes.set_xlabel(f"recency (days from first to last purchase; bins of {width} days)")
    axes.set_ylabel(f"frequency (repeat purchase days; {FREQ_MAX} = {FREQ_MAX}+)")
    ticks = axes.get_xticks()
    axes.set_xticks(ticks[(ticks >= 0) & (ticks <= RECENCY_BINS)])
    axes.set_xticklabels([f"{int(t * width)}" for t in axes.get_xticks()])
    figure.colorbar(image, ax=axes, label="mean p_alive")
    return _svg(figure)


def _calibration_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    figure, axes = _axes()
    labels = [str(row["frequency_cal"]) for row in rows]
    axes.plot(labels, [row["mean_actual"] for row in rows], marker="o", label="actual", color="#3b6ea5")
    axes.plot(
        labels,
        [row["mean_predicted"] for row in rows],
        marker="s",
        label="predicted (BG/NBD)",
        color="#d1495b",
    )
    axes.set_xlabel("purchases in the calibration period (frequency_cal)")
    axes.set_ylabel("mean purchases in the holdout")
    axes.legend(frameon=False)
    return _svg(figure)


def _history_plot(history: Sequence[HistoryRow]) -> str:
    figure, (left, middle, right) = _pyplot().subplots(1, 3, figsize=(10.0, 2.8))
    days = [row.as_of for row in history]
    left.plot(days, [row.customers for row in history], marker=".", color="#3b6ea5")
    left.set_title("customers")
    middle.plot(days, [row.total_clv or 0.0 for row in history], marker=".", color="#2e8540")
    middle.set_title("total predicted CLV")
    right.plot(days, [100 * row.reject_rate for row in history], marker=".", color="#d1495b")
    right.set_title("rejected rows (%)")
    for axes in (left, middle, right):
        axes.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    return _svg(figure)


# ---------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    r"""A value as safe HTML text: escaped, control characters as ``\xNN``."""
    if value is None:
        return '<span class="null">null</span>'
    return html.escape(printable(str(value)), quote=True)


def _money(value: object) -> str:
    return "" if value is None else f"{float(value):,.2f}"  # type: ignore[arg-type]


def _num(value: object, digits: int = 0) -> str:
    if value is None:
        return ""
    number = float(value)  # type: ignore[arg-type]
    return f"{number:,.{digits}f}" if digits else f"{int(number):,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """An HTML table; cells are given already escaped."""
    right = list(numeric) + [False] * (len(header) - len(numeric))
    head = "".join(f'<th class="{"n" if r else ""}">{_e(h)}</th>' for h, r in zip(header, right, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if r else ""}">{c}</td>' for c, r in zip(row, right, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:0;
background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
.sub{color:#5b6b7c}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin:16px 0}
.card{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:10px 12px}
.card b{display:block;font-size:19px}
.card span{color:#5b6b7c;font-size:12px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
vertical-align:middle}
.succeeded{background:#2e8540}
.failed{background:#c0392b}
.running{background:#8a6d3b}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d8dee6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,.raw{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;word-break:break-all}
.null{color:#8a97a6}
.note{color:#5b6b7c;font-size:13px}
svg{max-width:100%;height:auto;background:#fff}
.plot{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:8px;margin:8px 0}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render(
    summary: Mapping[str, Any],
    output: Path | None,
    rejects: Path | None,
    history: Sequence[HistoryRow] = (),
) -> str:
    """The report's HTML for one run (the staged files that exist; summary.json always)."""
    status = str(summary.get("status") or "unknown")
    files_ = summary.get("files") or {}
    read = sum(int(f.get("read", 0)) for f in files_.values())
    valid = sum(int(f.get("valid", 0)) for f in files_.values())
    rejected = sum(int(f.get("rejected", 0)) for f in files_.values())
    took = _duration(summary.get("started_at"), summary.get("finished_at"))
    figures = _figures(output) if output is not None and output.exists() else None
    totals = figures["totals"] if figures else {}
    model = summary.get("model") or {}
    holdout_info = summary.get("holdout") or {}
    parts: list[str] = []
    parts.append(
        f"<h1>Customer lifetime value as of {_e(summary.get('as_of'))} "
        f'<span class="status {_e(status)}">{_e(status)}</span></h1>'
        f'<div class="sub">run {_e(summary.get("run_id"))} · input {_e(summary.get("input"))}'
        + (f" · {_e(took)}" if took else "")
        + "</div>"
    )
    cards = [
        ("customers", _num(totals.get("customers", summary.get("output_rows")))),
        ("total predicted CLV", _money(totals.get("clv", summary.get("clv_total")))),
        ("revenue to date", _money(totals.get("revenue"))),
        ("rows read", _num(read)),
        ("rows valid", _num(valid)),
        ("rows rejected", f"{_num(rejected)} ({100 * rejected / read:.2f} %)" if read else _num(rejected)),
        ("model", "converged" if model.get("converged") else "not fitted"),
    ]
    if holdout_info.get("status") == "ran":
        cards.append(("holdout MAE per customer", _num(holdout_info.get("mean_absolute_error"), 3)))
    parts.append(
        '<div class="cards">'
        + "".join(f"<div class='card'><b>{value}</b><span>{_e(name)}</span></div>" for name, value in cards)
        + "</div>"
    )
    if summary.get("error"):
        parts.append(f"<h2>Error</h2><p class='raw'>{_e(summary.get('error'))}</p>")
    parts.append(_rejects_section(files_, rejects))
    if figures:
        parts.append(_clv_section(figures))
    parts.append(_model_section(model))
    parts.append(_holdout_section(holdout_info))
    if history:
        parts.append(_history_section(history))
    parts.append(
        f"<p class='note'>Written by fastclv from the staged files of this run"
        f" ({_e(summary.get('staging'))}); rebuild with <code>fastclv report</code>.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>fastclv · {_e(summary.get('as_of'))} · {_e(status)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def _duration(started: object, finished: object) -> str | None:
    try:
        seconds = (
            datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))
        ).total_seconds()
    except (TypeError, ValueError):
        return None
    return f"took {seconds:,.1f} s"


def _rejects_section(files_: Mapping[str, Mapping[str, Any]], rejects: Path | None) -> str:
    rows = []
    for name, counts in files_.items():
        by_reason = counts.get("rejected_by_reason") or {}
        for reason, count in sorted(by_reason.items(), key=lambda item: (-int(item[1]), item[0])):
            rows.append([_e(counts.get("file", name)), _e(reason), _num(count)])
    if not rows:
        return "<h2>Rejects</h2><p>No row was rejected.</p>"
    out = [
        "<h2>Rejects by file and reason</h2>",
        _table(["file", "reason", "rows"], rows, [False, False, True]),
    ]
    if rejects is not None and rejects.exists():
        samples = _reject_samples(rejects)
        sample_rows = [
            [_e(f), _e(reason), _num(row), _e(column), f"<span class='raw'>{_e(raw)}</span>"]
            for f, row, reason, column, raw in samples.select(
                "file", "row", "reason", "column", "raw"
            ).iter_rows()
        ]
        out.append(
            f"<p class='note'>Up to {SAMPLES} sample rows per reason "
            "(row numbers count data rows from 1):</p>"
        )
        out.append(_table(["file", "reason", "row", "column", "raw text"], sample_rows, [False, False, True]))
    return "".join(out)


def _clv_section(figures: Mapping[str, Any]) -> str:
    totals = figures["totals"]
    out = ["<h2>Predicted CLV</h2>"]
    if not totals.get("scored"):
        return out[0] + "<p>No customer has a prediction (the model was not fitted).</p>"
    clv_total = float(totals.get("clv") or 0.0)
    out.append(
        f"<p class='note'>{_num(totals.get('scored'))} of {_num(totals.get('customers'))} customers have a "
        "prediction (customers without a counted order have none).</p>"
    )
    out.append(f"<div class='plot'>{_clv_histogram(figures['clv'])}</div>")
    decile_rows = [
        [
            _num(d),
            _num(n),
            _money(lo),
            _money(hi),
            _money(total),
            f"{100 * total / clv_total:.1f} %" if clv_total else "",
        ]
        for d, n, lo, hi, total in figures["deciles"].iter_rows()
    ]
    out.append("<h2>Deciles (1 = the most valuable tenth)</h2>")
    out.append(_table(["decile", "customers", "min", "max", "sum", "share"], decile_rows, [True] * 6))
    top_rows = [
        [_e(cid), _money(clv), _num(alive, 3), _num(exp, 2), _num(f), _num(r), _num(t), _money(rev)]
        for cid, clv, alive, exp, f, r, t, rev in figures["top"].iter_rows()
    ]
    out.append(f"<h2>Top {TOP} customers</h2>")
    out.append(
        _table(
            ["customer_id", "predicted_clv", "p_alive", "expected purchases", "frequency", "recency_days",
             "t_days", "total_revenue"],
            top_rows,
            [False] + [True] * 7,
        )
    )  # fmt: skip
    out.append("<h2>p_alive by frequency and recency</h2>")
    out.append(
        "<p class='note'>Mean probability that a customer is still active, for each frequency and recency. "
        "Frequent buyers who have not bought for a long time (high frequency, low recency) are the ones "
        "the model believes lost.</p>"
    )
    out.append(f"<div class='plot'>{_alive_matrix(figures['matrix'], figures['recency_width'])}</div>")
    return "".join(out)


def _model_section(model: Mapping[str, Any]) -> str:
    rows = []
    for name, label in (("bgnbd", "BG/NBD"), ("gamma_gamma", "Gamma-Gamma")):
        fit = model.get(name) or {}
        if not fit:
            continue
        params = fit.get("params") or {}
        rows.append(
            [
                _e(label),
                "yes" if fit.get("converged") else "no",
                _e(", ".join(f"{k} = {v:.6g}" for k, v in params.items()) or "none"),
                _num(fit.get("log_likelihood"), 3),
                _num(fit.get("iterations")),
                _num(fit.get("n_customers")),
                _e(fit.get("reason") or ""),
            ]
        )
    if not rows:
        return "<h2>Model</h2><p>No model was fitted.</p>"
    return "<h2>Model</h2>" + _table(
        ["model", "converged", "parameters", "log-likelihood", "iterations", "customers", "reason"],
        rows,
        [False, False, False, True, True, True, False],
    )


def _holdout_section(info: Mapping[str, Any]) -> str:
    title = "<h2>Holdout backtest</h2>"
    status = info.get("status")
    if status != "ran":
        reason = info.get("reason") or "the run has no holdout figures"
        return title + f"<p>Not run: {_e(reason)}.</p>"
    calibration = info.get("calibration") or []
    out = [
        title,
        f"<p class='note'>BG/NBD fitted again on the orders up to {_e(info.get('calibration_end'))}, "
        f"then asked how many purchase days each of those customers has in the next "
        f"{_num(info.get('holdout_days'))} days; compared with what they did.</p>",
        _table(
            ["customers", "actual purchases", "predicted purchases", "mean absolute error per customer"],
            [[_num(info.get("customers")), _num(info.get("actual_total")),
              _num(info.get("predicted_total"), 1), _num(info.get("mean_absolute_error"), 4)]],
            [True] * 4,
        ),
    ]  # fmt: skip
    if calibration:
        out.append(f"<div class='plot'>{_calibration_plot(calibration)}</div>")
        out.append(
            _table(
                ["frequency_cal", "customers", "mean actual", "mean predicted"],
                [
                    [
                        _e(r["frequency_cal"]),
                        _num(r["customers"]),
                        _num(r["mean_actual"], 3),
                        _num(r["mean_predicted"], 3),
                    ]
                    for r in calibration
                ],
                [False, True, True, True],
            )
        )
    return "".join(out)


def _history_section(history: Sequence[HistoryRow]) -> str:
    rows = [
        [_e(row.as_of), _num(row.customers), _money(row.total_clv), f"{100 * row.reject_rate:.2f} %"]
        for row in history
    ]
    out = ["<h2>Earlier dates (from the run ledger)</h2>"]
    if len(history) > 1:
        out.append(f"<div class='plot'>{_history_plot(history)}</div>")
    out.append(
        _table(
            ["as_of", "customers", "total predicted CLV", "rejected rows"], rows, [False, True, True, True]
        )
    )
    return "".join(out)


# ---------------------------------------------------------------------------- writing


def write(run_dir: Path, summary: Mapping[str, Any], history: Sequence[HistoryRow] = ()) -> Path:
    """Write ``run_dir/report.html`` from the run's staged files (atomically) and return its path."""
    from fastclv import stage

    def staged(name: str) -> Path | None:
        path = run_dir / name
        return path if path.exists() else None

    text = render(summary, staged(stage.OUTPUT), staged(stage.REJECTS), history)
    target = run_dir / REPORT
    with files.atomic_write(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("report: %s (%d KB)", target, len(text.encode()) // 1024)
    return target
