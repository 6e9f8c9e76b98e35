"""Run metrics: one JSON log line per run and, when configured, StatsD gauges and timers.

:func:`emit` is called by :func:`fastclv.pipeline.finish`, so the CLI and every Airflow run
report the same figures. It never raises: a metrics problem is logged and the run goes on.

The log line (logger ``fastclv.metrics``, level INFO) is one JSON object::

    {"event": "fastclv_run", "run_id": ..., "as_of": "2025-12-31", "status": "succeeded",
     "files": {"orders": {"read": 9, "valid": 7, "rejected": 2, "duplicates_dropped": 0,
                          "after_as_of": 1, "reject_rate": 0.222222,
                          "rejected_by_reason": {"bad_timestamp": 1, ...}}, ...},
     "output_rows": 5, "seconds": {"extract": 0.41, ...}, "clv_total": 1234.56, ...}

StatsD names (each under the prefix, default ``fastclv``; gauges unless noted)::

    rows.read.<file>  rows.valid.<file>  rows.rejected.<file>  rows.duplicates_dropped.<file>
    rows.after_as_of.<file>  reject_rate.<file>  rejects.<file>.<reason>
    stage.<stage>.seconds    (and a timer stage.<stage>.duration in ms)
    output.rows  clv.total  load.rows  run.failed (0 or 1)  run.succeeded (0 or 1)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("fastclv.metrics")
#: The JSON log line's ``event`` value.
EVENT = "fastclv_run"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _name(part: object) -> str:
    """A metric-name segment: no dots, colons, pipes or spaces (they mean something in StatsD)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(part))


def _short(file_key: str) -> str:
    return _name(file_key.removesuffix(".csv"))


def record(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The structured figures of a run (the JSON log line), from ``RunSummary.as_dict()``."""
    files: dict[str, Any] = {}
    for key, counts in (summary.get("files") or {}).items():
        if not isinstance(counts, Mapping):
            continue
        read = _number(counts.get("read")) or 0.0
        rejected = _number(counts.get("rejected")) or 0.0
        files[_short(key)] = {
            "read": counts.get("read"),
            "valid": counts.get("valid"),
            "rejected": counts.get("rejected"),
            "duplicates_dropped": counts.get("duplicates_dropped"),
            "after_as_of": counts.get("after_as_of"),
            "reject_rate": round(rejected / read, 6) if read else 0.0,
            "rejected_by_reason": dict(counts.get("rejected_by_reason") or {}),
        }
    load = summary.get("load") or {}
    return {
        "event": EVENT,
        "run_id": summary.get("run_id"),
        "as_of": summary.get("as_of"),
        "status": summary.get("status"),
        "error_type": summary.get("error_type"),
        "transient": summary.get("transient"),
        "files": files,
        "output_rows": summary.get("output_rows"),
        "loaded_rows": load.get("rows") if isinstance(load, Mapping) else None,
        "clv_total": summary.get("clv_total"),
        "seconds": dict(summary.get("timings") or {}),
    }


def gauges(figures: Mapping[str, Any]) -> dict[str, float]:
    """Flat StatsD gauge names (without prefix) -> values, from :func:`record`'s figures."""
    out: dict[str, float] = {}
    for file, counts in figures["files"].items():
        for what in ("read", "valid", "rejected", "duplicates_dropped", "after_as_of"):
            value = _number(counts[what])
            if value is not None:
                out[f"rows.{what}.{file}"] = value
        out[f"reject_rate.{file}"] = float(counts["reject_rate"])
        for reason, n in counts["rejected_by_reason"].items():
            value = _number(n)
            if value is not None:
                out[f"rejects.{file}.{_name(reason)}"] = value
    for stage, seconds in figures["seconds"].items():
        value = _number(seconds)
        if value is not None:
            out[f"stage.{_name(stage)}.seconds"] = value
    for name, key in (
        ("output.rows", "output_rows"),
        ("clv.total", "clv_total"),
        ("load.rows", "loaded_rows"),
    ):
        value = _number(figures[key])
        if value is not None:
            out[name] = value
    failed = figures["status"] != "succeeded"
    out["run.failed"] = 1.0 if failed else 0.0
    out["run.succeeded"] = 0.0 if failed else 1.0
    return out


def emit(summary: Mapping[str, Any], *, statsd_host: str | None = None, prefix: str = "fastclv") -> None:
    """Log the run's figures as one JSON line and send them to StatsD when configured.

    Never raises: this runs at the very end of a run, whose outcome it must not change.
    """
    try:
        figures = record(summary)
        log.info("%s", json.dumps(figures, sort_keys=True, default=str))
    except Exception:  # metrics never fail the run
        log.warning("could not build the run's metrics", exc_info=True)
        return
    if statsd_host:
        try:
            send_statsd(figures, statsd_host, prefix)
        except Exception as exc:  # noqa: BLE001 - metrics never fail the run
            log.warning(
                "could not send metrics to StatsD at %s: %s: %s", statsd_host, type(exc).__name__, exc
            )


def send_statsd(figures: Mapping[str, Any], address: str, prefix: str) -> int:
    """Send the gauges (and stage timers) in as few UDP packets as fit; returns the metric count."""
    import statsd  # type: ignore[import-untyped]  # no type information shipped

    from fastclv.config import parse_statsd_address

    host, port = parse_statsd_address(address)
    client = statsd.StatsClient(host, port, prefix=prefix or None)
    values = gauges(figures)
    try:
        with client.pipeline() as batch:
            for name, value in values.items():
                batch.gauge(name, value)
            for stage, seconds in figures["seconds"].items():
                duration = _number(seconds)
                if duration is not None:
                    batch.timing(f"stage.{_name(stage)}.duration", duration * 1000.0)
    finally:
        client.close()
    log.debug("sent %d metrics to StatsD at %s:%d", len(values), host, port)
    return len(values)
