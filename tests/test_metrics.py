"""Run metrics: the JSON log line and the StatsD packets a run sends (a real UDP socket)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from fastclv import metrics, pipeline
from fastclv.config import Settings
from fastclv.errors import ConfigError, InputError

AS_OF = date(2025, 12, 31)
SAMPLE = Path(__file__).parent.parent / "data" / "sample"


@pytest.fixture
def statsd_socket() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for a StatsD server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


def _received(sock: socket.socket) -> dict[str, str]:
    """Every ``name:value|type`` line received so far -> {name: "value|type"}."""
    lines: dict[str, str] = {}
    while True:
        try:
            packet = sock.recv(65536).decode()
        except TimeoutError:
            return lines
        for line in packet.splitlines():
            name, _, value = line.partition(":")
            lines[name] = value


def _metrics_line(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    records = [r for r in caplog.records if r.name == "fastclv.metrics" and r.levelno == logging.INFO]
    assert len(records) == 1
    data: dict[str, object] = json.loads(records[0].getMessage())
    return data


def test_a_run_sends_its_figures_to_statsd_and_logs_one_json_line(
    statsd_socket: socket.socket,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = statsd_socket.getsockname()
    monkeypatch.setenv("FASTCLV_STATSD_HOST", f"{host}:{port}")
    monkeypatch.setenv("FASTCLV_STATSD_PREFIX", "fastclv")
    caplog.set_level(logging.INFO, logger="fastclv.metrics")
    settings = Settings.from_env(input=str(SAMPLE), staging=str(tmp_path), as_of=AS_OF, load=False)
    summary = pipeline.run(settings)
    expected = json.loads((SAMPLE / "expected.json").read_text())

    got = _received(statsd_socket)
    orders = expected["files"]["orders"]
    assert got["fastclv.rows.read.orders"] == f"{float(orders['read'])}|g"
    assert got["fastclv.rows.valid.orders"] == f"{float(orders['valid'])}|g"
    assert (
        got["fastclv.rejects.orders.bad_timestamp"]
        == f"{float(orders['rejected_by_reason']['bad_timestamp'])}|g"
    )
    assert got["fastclv.output.rows"] == f"{float(expected['output_rows'])}|g"
    assert got["fastclv.run.failed"] == "0.0|g"
    assert got["fastclv.clv.total"] == f"{summary.clv_total}|g"
    assert got["fastclv.stage.extract.seconds"].endswith("|g")
    assert got["fastclv.stage.extract.duration"].endswith("|ms")
    for name in ("customers", "orders", "order_items"):
        assert f"fastclv.reject_rate.{name}" in got

    line = _metrics_line(caplog)
    assert line["event"] == "fastclv_run"
    assert line["status"] == "succeeded"
    assert line["output_rows"] == expected["output_rows"]
    assert line["clv_total"] == summary.clv_total
    files = line["files"]
    assert isinstance(files, dict)
    assert files["orders"]["rejected_by_reason"] == orders["rejected_by_reason"]
    assert set(line["seconds"]) >= {"extract", "transform", "model", "verify", "total"}  # type: ignore[arg-type]


def test_a_failed_run_reports_failure(
    statsd_socket: socket.socket, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    host, port = statsd_socket.getsockname()
    caplog.set_level(logging.INFO, logger="fastclv.metrics")
    settings = Settings(
        input=str(tmp_path / "nothing"), staging=str(tmp_path / "s"), as_of=AS_OF, load=False,
        statsd_host=f"{host}:{port}", statsd_prefix="prod.fastclv",
    )  # fmt: skip
    with pytest.raises(InputError):
        pipeline.run(settings)
    got = _received(statsd_socket)
    assert got["prod.fastclv.run.failed"] == "1.0|g"
    assert "prod.fastclv.output.rows" not in got
    line = _metrics_line(caplog)
    assert (line["status"], line["error_type"]) == ("failed", "InputError")


def test_metrics_never_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastclv.metrics")
    metrics.emit({"status": "succeeded", "files": {"x": "not a mapping"}}, statsd_host="256.256.256.256:8125")
    assert any("could not send metrics to StatsD" in r.getMessage() for r in caplog.records)
    metrics.emit({"files": 7})  # garbage in: a warning, no exception
    assert any("could not build" in r.getMessage() for r in caplog.records)


def test_statsd_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="invalid port"):
        Settings(input="i", staging="s", statsd_host="statsd:http")
    with pytest.raises(ConfigError, match="not a metric name"):
        Settings(input="i", staging="s", statsd_prefix="fast clv")
