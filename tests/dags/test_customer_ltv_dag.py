"""The customer_ltv DAG under a real Airflow (dag.test) against the test PostgreSQL.

Logical dates follow the cron trigger timetable: the run due at D+1 00:05 UTC covers D.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
SAMPLE = ROOT / "data" / "sample"
EXPECTED = json.loads((SAMPLE / "expected.json").read_text())
DUE_DEC_31 = datetime(2025, 12, 31, 0, 5, tzinfo=UTC)  # covers 2025-12-30
DUE_JAN_01 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)  # covers 2025-12-31
STAGES = ["begin", "extract", "transform", "verify", "load"]
SHARD_TASKS = ["plan", "scan", "stitch", "customer_jobs", "route_jobs", "lookup_jobs", "resolve_customers",
               "route", "lookup", "resolve_orders", "resolve_items"]  # fmt: skip
SHARD_TRANSFORM_TASKS = ["parts", "history", "fit", "score"]
SHARD_VERIFY_TASKS = ["verify_part"]
#: load_prepare runs in every run (it prepares nothing unsharded); load_part maps over its jobs.
SHARD_LOAD_TASKS = ["load_prepare", "load_part"]
#: The order edges of the DAG (the data edges from begin, stitch... come on top).
EDGES = [
    ("begin", "plan"), ("plan", "scan"), ("scan", "stitch"), ("stitch", "customer_jobs"),
    ("customer_jobs", "resolve_customers"), ("stitch", "route_jobs"), ("route_jobs", "route"),
    ("stitch", "lookup_jobs"), ("lookup_jobs", "lookup"), ("route", "lookup"),
    ("resolve_customers", "lookup"), ("lookup", "resolve_orders"), ("resolve_customers", "resolve_orders"),
    ("resolve_orders", "resolve_items"),
    ("resolve_items", "extract"), ("resolve_items", "parts"), ("parts", "history"), ("history", "fit"),
    ("fit", "score"), ("score", "transform"), ("extract", "transform"), ("transform", "verify_part"),
    ("parts", "verify_part"), ("verify_part", "verify"), ("transform", "verify"), ("verify", "load_prepare"),
    ("load_prepare", "load_part"), ("load_part", "load"), ("load", "finish"), ("finish", "report"),
]  # fmt: skip
PASSWORD = "Sup3r-Secret-Pw"  # the test server trusts 127.0.0.1, so any password works

pytestmark = [
    # Airflow's in-process execution API (dag.test) uses starlette's TestClient with httpx;
    # starlette deprecates that pairing. Airflow's choice, not ours.
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]


# -- fixtures -------------------------------------------------------------------------------


class Webhook:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                messages.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A running local webhook, its URL the password of the Airflow connection fastclv_alert_webhook."""
    with Webhook() as hook:
        conn = json.dumps({"conn_type": "http", "password": hook.url})
        monkeypatch.setenv("AIRFLOW_CONN_FASTCLV_ALERT_WEBHOOK", conn)
        monkeypatch.delenv("FASTCLV_ALERT_WEBHOOK", raising=False)
        yield hook


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def dag(dagbag: Any) -> Iterator[Any]:
    """The parsed DAG with retries off (as the tests run it); restored afterwards."""
    dag = dagbag.get_dag("customer_ltv")
    saved = {t.task_id: (t.retries, t.retry_delay, t.retry_exponential_backoff) for t in dag.tasks}
    for t in dag.tasks:
        t.retries = 0
    yield dag
    for t in dag.tasks:
        t.retries, t.retry_delay, t.retry_exponential_backoff = saved[t.task_id]


@pytest.fixture
def env(pg_uri: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Connection (with a password, to prove it never leaks), input, staging, schema."""
    monkeypatch.setenv("AIRFLOW_CONN_FASTCLV_POSTGRES", _with_password(pg_uri, PASSWORD))
    monkeypatch.setenv("FASTCLV_INPUT", str(SAMPLE))
    monkeypatch.setenv("FASTCLV_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("FASTCLV_PG_SCHEMA", pg_schema)
    monkeypatch.delenv("FASTCLV_REJECT_RATE_THRESHOLD", raising=False)
    return tmp_path / "staging"


def _with_password(uri: str, password: str) -> str:
    scheme, rest = uri.split("://", 1)
    userinfo, host = rest.split("@", 1)
    return f"{scheme}://{userinfo.split(':')[0]}:{password}@{host}"


def _run(dag: Any, logical_date: datetime, **params: Any) -> Any:
    """dag.test() with every param given: in one process, dag.test() keeps the previous run's
    conf values in the DAG's shared Param objects (a fresh task process would not)."""
    return dag.test(logical_date=logical_date, run_conf=dict.fromkeys(dag.params) | params)


def _dag_module(dag: Any) -> Any:
    """The DAG file's module, as the DagBag loaded it (under a name of its own)."""
    return sys.modules[dag.get_task("begin").python_callable.__module__]


def _states(dag_run: Any) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}


def _rows(pg_uri: str, schema: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_uri) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()


def _row_versions(pg_uri: str, schema: str, as_of: str) -> set[str]:
    """The transactions that wrote the rows of one date (a reload writes them anew)."""
    return {xmin for (xmin,) in _rows(pg_uri, schema, "SELECT DISTINCT xmin::text FROM {s}.customer_ltv "
                                      "WHERE as_of = %s", as_of)}  # fmt: skip


def _table(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    return _rows(pg_uri, schema, "SELECT * FROM {s}.customer_ltv ORDER BY as_of, customer_id")


def _load_tables(pg_uri: str, schema: str) -> list[str]:
    """The tables of the schema besides the output table and the ledger: its partitions, and
    any staging table or log a load left."""
    found = _rows(pg_uri, schema, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", schema)
    return [name for (name,) in found if name not in ("customer_ltv", "customer_ltv_runs")]


def _ledger(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    return _rows(
        pg_uri,
        schema,
        "SELECT as_of, status, output_rows, counts, error, run_id FROM {s}.customer_ltv_runs "
        "ORDER BY started_at",
    )


# -- the DAG's shape ------------------------------------------------------------------------


def test_dagbag_imports_the_dag_with_its_shape(dagbag: Any) -> None:
    from airflow.sdk import CronTriggerTimetable

    assert dagbag.import_errors == {}
    dag = dagbag.get_dag("customer_ltv")
    tasks = [
        STAGES[0],
        *SHARD_TASKS,
        *SHARD_TRANSFORM_TASKS,
        *SHARD_VERIFY_TASKS,
        *SHARD_LOAD_TASKS,
        *STAGES[1:],
    ]
    tasks += ["finish", "report"]
    order = [t.task_id for t in dag.topological_sort()]
    assert sorted(order) == sorted(tasks)
    for upstream, downstream in EDGES:
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
        assert order.index(upstream) < order.index(downstream)
    # The part tasks read only what the resolves made: they run beside the extract's staging.
    assert "parts" not in dag.get_task("extract").downstream_task_ids
    assert dag.get_task("finish").trigger_rule == "all_done"
    # One customer bucket: no route or lookup (skipped), and the order buckets still run.
    assert dag.get_task("resolve_orders").trigger_rule == "none_failed_min_one_success"
    # Nothing is loaded before the cross-check passed: load_prepare waits for verify only.
    assert dag.get_task("load_prepare").upstream_task_ids == {"begin", "verify"}
    assert dag.get_task("load").trigger_rule == "none_failed"  # load_part maps over nothing unsharded
    # The report runs whatever happened, and as a teardown its outcome never decides the run's.
    assert dag.get_task("report").is_teardown
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "5 0 * * *"
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.params) == {
        "as_of", "input", "staging", "schema", "horizon_months", "margin", "discount_rate",
        "reject_rate_threshold", "holdout_days", "shards",
    }  # fmt: skip
    assert all(dag.params[name] is None for name in dag.params)  # defaults come from the env
    alert = _dag_module(dag).alert_on_failure
    for t in dag.tasks:
        assert t.retries == 3
        assert t.retry_exponential_backoff == 2.0
        callbacks = t.on_failure_callback  # a mapped task keeps it as given, not as a list
        assert (callbacks if isinstance(callbacks, list) else [callbacks]) == [alert]


def test_dag_is_ruff_clean_including_the_airflow_rules() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    for args in (["check", "dags/", "--select", "AIR"], ["check", "dags/"]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_as_of_of_scheduled_and_backfilled_runs(dagbag: Any) -> None:
    """The schedule's runs, and a backfill's, each cover the UTC day before they are due."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.get_dag("customer_ltv")
    as_of_for_run = _dag_module(dag).as_of_for_run
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    # What `airflow backfill create --from-date 2025-12-31 --to-date 2026-01-02` iterates.
    infos = list(
        serialized.iter_dagrun_infos_between(
            datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
        )
    )
    covered = [
        as_of_for_run(
            logical_date=info.logical_date, data_interval_end=info.data_interval.end, run_after=info.run_after
        )
        for info in infos
    ]
    assert [info.logical_date for info in infos] == [DUE_DEC_31, DUE_JAN_01]
    assert covered == [date(2025, 12, 30), date(2025, 12, 31)]
    # A manual run without a logical date covers yesterday; the as_of param wins.
    now = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    assert as_of_for_run(logical_date=None, data_interval_end=None, run_after=now) == date(2026, 2, 28)
    assert as_of_for_run(
        logical_date=now, data_interval_end=now, run_after=now, override="2025-06-30"
    ) == date(2025, 6, 30)


# -- end to end -----------------------------------------------------------------------------


def test_two_days_and_a_rerun_load_each_days_partition(
    dag: Any,
    env: Path,
    pg_uri: str,
    pg_schema: str,
    webhook: Webhook,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = _run(dag, DUE_DEC_31)
    assert first.state == "success", _states(first)
    dec_30 = _rows(pg_uri, pg_schema, "SELECT * FROM {s}.customer_ltv WHERE as_of = '2025-12-30' ORDER BY 2")
    written_before = _row_versions(pg_uri, pg_schema, "2025-12-30")

    # The second day, with a low reject-rate threshold: a warning, and the run goes on.
    second = _run(dag, DUE_JAN_01, reject_rate_threshold=0.01)
    assert second.state == "success", _states(second)
    rerun = _run(dag, DUE_DEC_31)
    assert rerun.state == "success", _states(rerun)

    partitions = _rows(
        pg_uri, pg_schema, "SELECT as_of, count(*) FROM {s}.customer_ltv GROUP BY 1 ORDER BY 1"
    )
    assert partitions == [(date(2025, 12, 30), 1009), (date(2025, 12, 31), 1009)]
    assert (
        _rows(pg_uri, pg_schema, "SELECT * FROM {s}.customer_ltv WHERE as_of = '2025-12-30' ORDER BY 2")
        == dec_30
    )
    # Replaced: the rows of the date were written again (in place, in one transaction: issue 14
    # item 7; this checked a new partition's oid while a reload swapped partitions).
    assert not _row_versions(pg_uri, pg_schema, "2025-12-30") & written_before

    ledger = _ledger(pg_uri, pg_schema)
    assert [(r[0], r[1], r[2], r[4]) for r in ledger] == [
        (date(2025, 12, 30), "succeeded", 1009, None),
        (date(2025, 12, 31), "succeeded", 1009, None),
        (date(2025, 12, 30), "succeeded", 1009, None),
    ]
    assert len({r[5] for r in ledger}) == 3  # a rerun is a run of its own
    counts_dec_31 = {name: {k: c[k] for k in EXPECTED["files"][name]} for name, c in ledger[1][3].items()}
    assert counts_dec_31 == EXPECTED["files"]  # the sample's as-of is 2025-12-31
    assert ledger[0][3]["orders"]["after_as_of"] > EXPECTED["files"]["orders"]["after_as_of"]

    for day in ("2025-12-30", "2025-12-31"):
        summary = json.loads((env / day / "summary.json").read_text())
        assert (summary["as_of"], summary["status"], summary["output_rows"]) == (day, "succeeded", 1009)
        assert not (env / day / "_work").exists()

    [warning] = webhook.messages  # customers: 16 of 1028 rejected (1.6%) > 1%
    assert warning["level"] == "warning"
    assert (warning["dag"], warning["task"], warning["as_of"]) == ("customer_ltv", "extract", "2025-12-31")
    assert set(warning["reject_rates"]) == {"customers", "orders", "order_items"}
    assert "customers 1.56%" in warning["text"]

    out = capfd.readouterr()
    logged = out.out + out.err + caplog.text
    assert PASSWORD not in logged
    assert "SECRET-TOKEN" not in logged  # the webhook's path is never logged
    assert "extract: customers 1028 read, 1009 valid, 16 rejected" in caplog.text


def test_a_sharded_run_maps_its_tasks_and_loads_exactly_the_unsharded_rows(
    dag: Any, env: Path, pg_uri: str, pg_schema: str, webhook: Webhook
) -> None:
    whole = _run(dag, DUE_DEC_31)
    assert whole.state == "success", _states(whole)
    skipped = {ti.task_id for ti in whole.get_task_instances() if ti.state == "skipped"}
    # not sharded: the plan maps over nothing, and so does the load's part task
    assert skipped == {*SHARD_TASKS, *SHARD_TRANSFORM_TASKS, *SHARD_VERIFY_TASKS, "load_part"} - {"plan"}
    assert _load_tables(pg_uri, pg_schema) == ["customer_ltv_p20251230"]  # no staging table or log left
    rows, ledger = _table(pg_uri, pg_schema), _ledger(pg_uri, pg_schema)

    sharded = _run(dag, DUE_DEC_31, shards=3)
    assert sharded.state == "success", _states(sharded)
    instances = sharded.get_task_instances()
    # One customer bucket (the sample is small): the orders read the staged customers, no lookup.
    exchange = {"route", "lookup"}
    assert {ti.state for ti in instances if ti.task_id not in exchange} == {"success"}
    assert {ti.task_id: ti.state for ti in instances if ti.task_id in exchange} == dict.fromkeys(
        exchange, "skipped"
    )
    mapped = {
        name: sorted(ti.map_index for ti in instances if ti.task_id == name)
        for name in SHARD_TASKS + SHARD_TRANSFORM_TASKS + SHARD_VERIFY_TASKS + SHARD_LOAD_TASKS
    }
    assert mapped["scan"] == list(range(9))  # 3 byte ranges of each of the 3 files
    assert (
        mapped["resolve_orders"] == mapped["resolve_items"] == mapped["resolve_customers"] == [0]
    )  # one bucket
    assert mapped["history"] == mapped["score"] == [0, 1, 2]  # 3 customer parts
    assert mapped["fit"] == [-1]  # one fit, on the merged histograms
    assert mapped["verify_part"] == [0, 1, 2]  # the cross-check by customer part, then one verdict
    assert mapped["load_part"] == [0, 1, 2]  # 3 COPYs into the run's staging table, then one swap
    summary = json.loads((env / "2025-12-30" / "summary.json").read_text())
    assert summary["verify"]["parts"] == 3
    assert len(summary["verify"]["part_seconds"]) == 3
    assert summary["load"]["parts"] == 3
    assert summary["load"]["rows"] == len(rows)
    assert summary["load"]["replaced_rows"] == len(rows)  # the date was loaded by the run above
    assert _table(pg_uri, pg_schema) == rows
    assert _load_tables(pg_uri, pg_schema) == ["customer_ltv_p20251230"]
    [*_, again] = _ledger(pg_uri, pg_schema)
    assert again[1:4] == ledger[0][1:4]  # status, output rows and counts of the unsharded run
    assert not (env / "2025-12-30" / "_shards").exists()
    assert not (env / "2025-12-30" / "_parts").exists()


def test_missing_column_fails_fast_leaves_table_and_alerts(
    dag: Any, env: Path, pg_uri: str, pg_schema: str, tmp_path: Path, webhook: Webhook
) -> None:
    from fastclv import pipeline
    from fastclv.config import Settings

    pipeline.run(Settings(input=str(SAMPLE), staging=str(tmp_path / "cli"), as_of=date(2025, 12, 31),
                          pg_uri=pg_uri, pg_schema=pg_schema))  # fmt: skip
    before = _table(pg_uri, pg_schema)
    bad = tmp_path / "bad"
    shutil.copytree(SAMPLE, bad)
    header, rest = (bad / "customers.csv").read_text(encoding="utf-8-sig").split("\n", 1)
    (bad / "customers.csv").write_text(header.replace("signup_date", "signup_day") + "\n" + rest)
    for t in dag.tasks:  # retries on: a terminal error must not use them
        t.retries, t.retry_delay, t.retry_exponential_backoff = 3, timedelta(seconds=1), 0

    dag_run = _run(dag, DUE_JAN_01, input=str(bad))

    assert dag_run.state == "failed"
    states = _states(dag_run)
    assert states["begin"] == ("success", 1)
    assert states["extract"] == ("failed", 1)  # no retry
    assert {states[t][0] for t in ("transform", "verify", "load")} == {"upstream_failed"}
    assert states["finish"][0] == "failed"
    assert _table(pg_uri, pg_schema) == before
    *_, (as_of, status, output_rows, _counts, error, _run_id) = _ledger(pg_uri, pg_schema)
    assert (as_of, status, output_rows) == (date(2025, 12, 31), "failed", None)
    assert "customers.csv" in error
    assert "signup_date" in error
    assert json.loads((env / "2025-12-31" / "summary.json").read_text())["error"] == error
    [alert] = webhook.messages  # from extract; finish does not alert twice
    assert {"text", "dag", "task", "as_of", "run_id", "error", "log_url"} <= set(alert)
    assert (alert["dag"], alert["task"], alert["as_of"], alert["error"]) == (
        "customer_ltv", "extract", "2025-12-31", error
    )  # fmt: skip
    assert alert["run_id"] == dag_run.run_id
    assert (
        f"/dags/customer_ltv/runs/{dag_run.run_id.replace(':', '%3A').replace('+', '%2B')}"
        in alert["log_url"]
    )


def test_unreachable_database_is_retried_then_fails(
    dag: Any, env: Path, pg_uri: str, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FASTCLV_POSTGRES", "postgresql://nobody@127.0.0.1:9/nowhere?connect_timeout=2"
    )
    dag.get_task("begin").retries = 1
    dag.get_task("begin").retry_delay = timedelta(seconds=1)

    dag_run = _run(dag, DUE_JAN_01)

    assert dag_run.state == "failed"
    states = _states(dag_run)
    assert states["begin"] == ("failed", 2)  # transient: retried once, as configured
    assert states["finish"][0] == "failed"
    summary = json.loads((env / "2025-12-31" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["transient"] is True
    assert "connection refused" in summary["error"].lower()
    [alert] = webhook.messages  # only for the final failure, not the retry
    assert alert["task"] == "begin"


def test_an_alert_goes_to_the_webhook_of_its_connection_and_its_url_is_never_logged(
    dag: Any,
    env: Path,
    tmp_path: Path,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FASTCLV_INPUT", str(tmp_path / "nowhere"))

    dag_run = _run(dag, DUE_JAN_01)

    assert dag_run.state == "failed"
    assert _states(dag_run)["extract"] == ("failed", 1)  # a missing input is terminal
    [alert] = webhook.messages  # the notifier of the failed task, POSTed to the connection's URL
    assert (alert["level"], alert["task"], alert["as_of"]) == ("error", "extract", "2025-12-31")
    assert "customers.csv" in alert["error"]
    out = capfd.readouterr()
    logged = out.out + out.err + caplog.text
    assert "alert posted to 127.0.0.1" in caplog.text  # the host only
    assert webhook.url not in logged
    assert "SECRET-TOKEN" not in logged


# -- settings: every field reaches every task ------------------------------------------------------


@pytest.fixture
def statsd() -> Iterator[socket.socket]:
    """A local UDP socket that receives StatsD packets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        yield udp


def _received(udp: socket.socket) -> str:
    packets = []
    with contextlib.suppress(BlockingIOError):
        while True:
            packets.append(udp.recv(65536).decode())
    return "\n".join(packets)


def _semicolon_input(folder: Path) -> Path:
    """Generated, clean input rewritten with ';' as the delimiter (and its expected counts)."""
    from fastclv.testing import generate

    generate(folder / "comma", customers=60, seed=5, dirty_rows=0, as_of=date(2025, 12, 31))
    out = folder / "semicolon"
    out.mkdir()
    for name in ("customers.csv", "orders.csv", "order_items.csv"):
        with (folder / "comma" / name).open(newline="", encoding="utf-8-sig") as src:
            rows = list(csv.reader(src))
        with (out / name).open("w", newline="", encoding="utf-8") as dst:
            csv.writer(dst, delimiter=";").writerows(rows)
    return out


def test_every_setting_reaches_every_task_and_duckdb_memory_limit_is_no_longer_ignored(
    dag: Any, env: Path, pg_uri: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, statsd: socket.socket,
) -> None:  # fmt: skip
    """Regression: the DAG forwarded a hand list of settings that forgot duckdb_memory_limit, so
    FASTCLV_DUCKDB_MEMORY_LIMIT was silently ignored under Airflow. Every field of Settings is now
    set by a DAG param or its FASTCLV_* variable, and each task runs with all of them."""
    from fastclv.config import Settings

    semicolon = _semicolon_input(tmp_path)
    # A value other than the default for every field that is not a DAG param, a secret or the run's date.
    variables = {
        "input": str(semicolon), "delimiter": ";", "table": "ltv_elsewhere",
        "runs_table": "ltv_elsewhere_runs", "lock_timeout_s": "7.5", "load": "on", "verify": "yes",
        "penalizer": "0.001", "statsd_host": "{}:{}".format(*statsd.getsockname()),
        "statsd_prefix": "dagtest.fastclv", "duckdb_memory_limit": "256MB", "bucket_mib": "0",
        "customer_buckets": "2", "run_id": "dag-test-run", "storage_options": '{"aws_region": "eu-west-1"}',
    }  # fmt: skip
    params = {"horizon_months": 6, "margin": 0.5, "discount_rate": 0.02, "reject_rate_threshold": 0.5,
              "holdout_days": 30, "shards": 2}  # fmt: skip
    by_param = {"as_of", "staging", "pg_schema", "pg_uri", *params}  # the fixture sets staging, schema
    assert {f.name for f in fields(Settings)} == set(variables) | by_param  # a new field needs a value here
    for name, value in variables.items():
        monkeypatch.setenv(Settings.env_name(name), value)

    dag_run = _run(dag, DUE_JAN_01, **params)

    assert dag_run.state == "success", _states(dag_run)
    # Two customer buckets: the order bucket found its customers through route and lookup.
    done = [(ti.task_id, ti.map_index) for ti in dag_run.get_task_instances() if ti.state == "success"]
    assert sorted(i for t, i in done if t in ("resolve_customers", "lookup")) == [0, 0, 1, 1]
    assert [i for t, i in done if t == "route"] == [0]
    expected = {
        **{name: Settings.from_env({"FASTCLV_INPUT": "x", Settings.env_name(name): v}).public()[name]
           for name, v in variables.items() if name != "storage_options"},
        **params, "as_of": date(2025, 12, 31), "staging": str(env), "pg_schema": pg_schema,
    }  # fmt: skip
    for stage in STAGES:
        [line] = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{stage} with Settings(")
        ]
        for name, value in expected.items():
            assert f"{name}={value!r}" in line, (stage, name)
        assert "storage_options" not in line  # a secret: never logged
    generated = json.loads((tmp_path / "comma" / "expected.json").read_text())
    [(rows,)] = _rows(pg_uri, pg_schema, "SELECT count(*) FROM {s}.ltv_elsewhere")
    assert rows == generated["output_rows"]
    assert _rows(pg_uri, pg_schema, "SELECT run_id, status FROM {s}.ltv_elsewhere_runs") == [
        ("dag-test-run", "succeeded")
    ]
    summary = json.loads((env / "2025-12-31" / "summary.json").read_text())
    assert summary["settings"] == {
        "horizon_months": 6, "margin": 0.5, "discount_rate": 0.02, "penalizer": 0.001, "delimiter": ";",
    }  # fmt: skip
    assert summary["holdout"]["holdout_days"] == 30  # the param reached the transform's backtest
    report = env / "2025-12-31" / "report.html"  # the report task wrote it, with the ledger's history
    assert summary["report"] == str(report)
    assert "Earlier dates (from the run ledger)" in report.read_text()
    assert "dagtest.fastclv.run.succeeded:1" in _received(statsd)


def test_a_duckdb_memory_limit_that_duckdb_refuses_fails_the_cross_check(
    dag: Any, env: Path, pg_uri: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FASTCLV_DUCKDB_MEMORY_LIMIT reaches DuckDB under Airflow (it used to be dropped)."""
    monkeypatch.setenv("FASTCLV_DUCKDB_MEMORY_LIMIT", "lots")

    dag_run = _run(dag, DUE_JAN_01)

    assert dag_run.state == "failed"
    states = _states(dag_run)
    assert states["verify"] == ("failed", 1)  # terminal: the setting is wrong
    assert states["load"][0] == "upstream_failed"
    summary = json.loads((env / "2025-12-31" / "summary.json").read_text())
    assert "Memory must have a number" in summary["error"]
    [(as_of, status, *_)] = _ledger(pg_uri, pg_schema)
    assert (as_of, status) == (date(2025, 12, 31), "failed")


def test_airflow_style_connections_become_storage_options(dagbag: Any) -> None:
    from airflow.sdk import Connection

    module = _dag_module(dagbag.get_dag("customer_ltv"))

    def options_from_connection(
        conn_type: str, login: str | None, password: str | None, extras: dict[str, Any]
    ) -> tuple[dict[str, str], list[str]]:
        conn = Connection(
            conn_id="s", conn_type=conn_type, login=login, password=password, extra=json.dumps(extras)
        )
        result: tuple[dict[str, str], list[str]] = module.storage_options_from_connection(conn)
        return result

    aws, ignored = options_from_connection(
        "aws",
        "AKID",
        "s3cret",
        {
            "region_name": "eu-west-1",
            "endpoint_url": "http://minio:9000",
            "config_kwargs": {},
            "verify": False,
        },
    )
    assert aws == {
        "aws_access_key_id": "AKID",
        "aws_secret_access_key": "s3cret",
        "aws_region": "eu-west-1",
        "aws_endpoint_url": "http://minio:9000",
        "aws_allow_http": "true",
    }
    assert ignored == ["config_kwargs", "verify"]
    azure, _ = options_from_connection("wasb", "acct", "key==", {"azure_storage_use_emulator": True})
    assert azure == {
        "azure_storage_account_name": "acct",
        "azure_storage_account_key": "key==",
        "azure_storage_use_emulator": "true",
    }
    gcs, _ = options_from_connection("google_cloud_platform", None, None, {"key_path": "/keys/sa.json"})
    assert gcs == {"google_service_account": "/keys/sa.json"}


def test_the_postgres_connection_becomes_a_libpq_uri_keeping_only_libpq_extras(dagbag: Any) -> None:
    from airflow.sdk import Connection

    module = _dag_module(dagbag.get_dag("customer_ltv"))
    extras = {
        "sslmode": "verify-full",
        "sslrootcert": "/certs/ca.pem",
        "keepalives": True,
        "cursor": "dictcursor",
    }
    conn = Connection(conn_id="pg", conn_type="postgres", host="db.example", port=5432, login="app",
                      password="p@ss/#?", schema="crm", extra=json.dumps(extras))  # fmt: skip
    assert module.pg_uri_from_connection(conn) == (
        "postgresql://app:p%40ss%2F%23%3F@db.example:5432/crm"
        "?sslmode=verify-full&sslrootcert=%2Fcerts%2Fca.pem&keepalives=1"
    )
