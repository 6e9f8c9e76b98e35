"""The sharded DAG on a real CeleryExecutor: two workers, a worker killed mid-task, object storage.

Everything is real and local (127.0.0.1): Redis from Debian's packages as the broker, the test
PostgreSQL as Airflow's metadata database and Celery's result backend, moto as the S3 server that
holds the input and the staging area, and Airflow's own processes (API server, scheduler, DAG
processor, two Celery workers of one slot each). The run is sharded (3 byte ranges per file);
one worker is killed with SIGKILL while it runs a scan, the scheduler notices the lost task,
retries it on the other worker, and the loaded rows are exactly those of the unsharded run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import psutil
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from psycopg import sql

from fastclv.config import Settings
from fastclv.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
BUCKET = "fastclv-celery"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
AS_OF = "2025-12-31"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Any, timeout: float, logs: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    tail = ""
    if logs is not None:
        tail = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@dataclass
class Deployment:
    """The running Airflow deployment: its environment, processes and databases."""

    env: dict[str, str]
    metadata_uri: str
    target_uri: str
    schema: str
    logs: Path
    s3: Any
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def query(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.metadata_uri) as conn:
            return conn.execute(text, params).fetchall()

    def airflow(self, *args: str) -> str:
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    # A session of its own: a SIGKILL to the group takes the worker and the task it runs.
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def deployment(pg_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server not found: install Debian's redis-server (.ci/run does)")
    home = tmp_path_factory.mktemp("airflow-celery")
    logs = home / "logs-processes"
    logs.mkdir()
    database = f"airflow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    base, _, _ = pg_uri.rpartition("/")
    metadata_uri = f"{base}/{database}"
    redis_port, api_port = _free_port(), _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_server.start()
    try:
        processes.append(
            _start(
                "redis",
                [
                    redis_server,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                dict(os.environ),
                logs,
            )
        )
        host, port = moto_server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        for name in ("customers.csv", "orders.csv", "order_items.csv"):
            s3.upload_file(str(SAMPLE / name), BUCKET, f"in/{name}")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        storage = {"conn_type": "aws", "login": "testing", "password": "testing",
                   "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FASTCLV_", "AWS_"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_uri.replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            # Airflow's async engine: psycopg 3 (already a dependency) instead of asyncpg.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_uri.replace(
                "postgresql://", "postgresql+psycopg://"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_uri,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_FASTCLV_POSTGRES": pg_uri,
            "AIRFLOW_CONN_FASTCLV_STORAGE": json.dumps(storage),
            "FASTCLV_INPUT": f"s3://{BUCKET}/in/",
            "FASTCLV_STAGING": f"s3://{BUCKET}/staging",
            "FASTCLV_PG_SCHEMA": schema,
            "FASTCLV_RETRY_DELAY_S": "2",
            # Two customer buckets: the orders find their customers by the route and lookup tasks.
            "FASTCLV_CUSTOMER_BUCKETS": "2",
            "FASTCLV_START_DATE": "2099-01-01",  # no scheduled run beside the one the test triggers
        }
        deployed = Deployment(env, metadata_uri, pg_uri, schema, logs, s3)
        deployed.airflow("db", "migrate")
        for name, args in {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }.items():
            processes.append(_start(name, [AIRFLOW, *args], env, logs))
        for name in ("w1", "w2"):
            worker = _start(name, [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h",
                                   "--concurrency", "1"], env, logs)  # fmt: skip
            deployed.workers[name] = worker
            processes.append(worker)
        _wait("the DAG to be parsed", lambda: deployed.query(
            "SELECT 1 FROM serialized_dag WHERE dag_id = 'customer_ltv'"), 180, logs)  # fmt: skip
        yield deployed
    finally:
        for process in reversed(processes):
            _stop(process)
        moto_server.stop()
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _unsharded_rows(pg_uri: str, tmp_path: Path) -> list[tuple[Any, ...]]:
    """The rows an unsharded run of the same input loads (in this process, its own schema)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    settings = Settings(input=str(SAMPLE), staging=str(tmp_path), as_of=date.fromisoformat(AS_OF),
                        pg_uri=pg_uri, pg_schema=schema)  # fmt: skip
    run(settings)
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT * FROM {}.customer_ltv ORDER BY customer_id").format(
            sql.Identifier(schema))).fetchall()  # fmt: skip
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return rows


def _kill_the_worker_running(deployed: Deployment, pid: int) -> str:
    """SIGKILL the worker (its whole process group) whose process tree holds ``pid``."""
    for name, worker in deployed.workers.items():
        tree = {worker.pid} | {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
        if pid in tree:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            return name
    pytest.fail(f"no worker runs process {pid}")


def test_a_sharded_run_on_two_celery_workers_survives_a_killed_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    expected = _unsharded_rows(deployment.target_uri, tmp_path)
    run_id = f"celery-{uuid.uuid4().hex[:8]}"
    deployment.airflow("dags", "trigger", "customer_ltv", "--run-id", run_id,
                       "--conf", json.dumps({"shards": 3, "as_of": AS_OF}))  # fmt: skip

    def running_scan() -> Any:
        for name, worker in deployment.workers.items():
            assert worker.poll() is None, (
                f"worker {name} exited: {(deployment.logs / f'{name}.log').read_text()[-3000:]}"
            )
        rows = deployment.query(
            "SELECT map_index, pid FROM task_instance WHERE run_id = %s AND task_id = 'scan' "
            "AND state = 'running' AND pid IS NOT NULL ORDER BY map_index LIMIT 1",
            run_id,
        )
        return rows[0] if rows else None

    map_index, pid = _wait("a scan task to run", running_scan, 240, deployment.logs)
    killed = _kill_the_worker_running(deployment, pid)

    def finished() -> Any:
        rows = deployment.query("SELECT state FROM dag_run WHERE run_id = %s", run_id)
        return rows[0][0] if rows and rows[0][0] in ("success", "failed") else None

    state = _wait("the run to finish", finished, 420, deployment.logs)
    instances = deployment.query(
        "SELECT task_id, map_index, state, try_number, hostname FROM task_instance WHERE run_id = %s", run_id
    )
    assert state == "success", instances
    [(_, _, retried_state, tries, _)] = [i for i in instances if i[0] == "scan" and i[1] == map_index]
    assert (retried_state, tries) == ("success", 2), f"the scan on {killed} was not retried: {instances}"
    assert sorted(i[1] for i in instances if i[0] == "scan") == list(range(9))
    for task_id, count in (("resolve_customers", 2), ("lookup", 2)):
        assert sorted(i[1] for i in instances if i[0] == task_id and i[2] == "success") == list(range(count))
    assert [i for i in instances if i[0] == "route" and i[2] == "success"]
    with psycopg.connect(deployment.target_uri) as conn:
        schema = sql.Identifier(deployment.schema)
        rows = conn.execute(
            sql.SQL("SELECT * FROM {}.customer_ltv ORDER BY customer_id").format(schema)
        ).fetchall()
        ledger = conn.execute(
            sql.SQL("SELECT status, output_rows FROM {}.customer_ltv_runs").format(schema)
        ).fetchall()
    assert rows == expected
    assert ledger == [("succeeded", len(expected))]
    staged = deployment.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"staging/{AS_OF}/").get("Contents", [])
    names = {item["Key"].removeprefix(f"staging/{AS_OF}/") for item in staged}
    assert {"customers.parquet", "orders.parquet", "order_items.parquet", "rejects.parquet"} <= names
    assert not [n for n in names if n.startswith("_shards/") or ".tmp-" in n]  # no work file left
