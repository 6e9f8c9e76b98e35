"""Object storage in and out: the pipeline on a local S3 server (moto), as a deployment runs it.

The server runs in this process (moto's ThreadedMotoServer on 127.0.0.1, a free port); the
standard AWS_* variables point Polars, pyarrow and the CLI's subprocesses at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import moto.settings
import polars as pl
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from polars.testing import assert_frame_equal
from psycopg import sql

from fastclv import load, pipeline, stage, storage, verify
from fastclv.config import Settings, parse_option_pairs, parse_storage_options
from fastclv.errors import ConfigError, FastclvError, InputError, VerificationError
from fastclv.secrets import redact

AS_OF = date(2025, 12, 31)
D = AS_OF.isoformat()
SAMPLE = Path(__file__).parent.parent / "data" / "sample"
CSVS = ("customers.csv", "orders.csv", "order_items.csv")
BUCKET = "fastclv-test"
FASTCLV = [sys.executable, "-m", "fastclv.cli"]
STAGED = {*stage.INPUTS, stage.REJECTS, stage.OUTPUT, stage.SUMMARY, "holdout.parquet"}
#: What a whole run publishes: the staged files and the run's report.
STAGED_BY_RUN = {*STAGED, "report.html"}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (free port) with the sample CSVs under s3://BUCKET/in/."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's dummy credentials
    )
    client.create_bucket(Bucket=BUCKET)
    for name in CSVS:
        client.upload_file(str(SAMPLE / name), BUCKET, f"in/{name}")
    client.upload_file(str(SAMPLE / "customers.csv"), BUCKET, "partial/customers.csv")
    client.upload_file(str(SAMPLE / "orders.csv"), BUCKET, "partial/orders.csv")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The standard variables aimed at the server; a boto3 client to look at the bucket."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "FASTCLV_STORAGE_OPTIONS", "FASTCLV_STAGING"):
        monkeypatch.delenv(name, raising=False)
    # Temporary local folders of remote staging go here, so a test sees what is left behind.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


def _keys(client: Any, prefix: str) -> set[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"].removeprefix(prefix) for item in listed}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FASTCLV, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env or dict(os.environ),
    )


def _table(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_uri) as conn:
        query = sql.SQL("SELECT * FROM {}.customer_ltv ORDER BY as_of, customer_id").format(
            sql.Identifier(schema)
        )
        return conn.execute(query).fetchall()


def _ledger(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_uri) as conn:
        query = sql.SQL("SELECT status, input, error FROM {}.customer_ltv_runs ORDER BY started_at").format(
            sql.Identifier(schema)
        )
        return conn.execute(query).fetchall()


@pytest.fixture
def other_schema(pg_uri: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# -- the pipeline in and out of S3 -------------------------------------------------------------


def test_s3_run_loads_the_same_table_as_a_local_run_and_stays_queryable(
    s3: Any, pg_uri: str, pg_schema: str, other_schema: str, tmp_path: Path
) -> None:
    staging = f"s3://{BUCKET}/staging-{uuid.uuid4().hex[:6]}"
    remote = pipeline.run(
        Settings(input=f"s3://{BUCKET}/in/", staging=staging, as_of=AS_OF, pg_uri=pg_uri, pg_schema=pg_schema)
    )
    local = pipeline.run(
        Settings(
            input=str(SAMPLE),
            staging=str(tmp_path / "local"),
            as_of=AS_OF,
            pg_uri=pg_uri,
            pg_schema=other_schema,
        )
    )
    assert remote.status == local.status == "succeeded"
    assert remote.files == local.files
    assert remote.clv_total == local.clv_total

    # The staged objects, whole, and nothing else (no work files, no temporary names).
    prefix = staging.removeprefix(f"s3://{BUCKET}/") + f"/{D}/"
    assert _keys(s3, prefix) == STAGED_BY_RUN
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + stage.SUMMARY)["Body"].read())
    assert summary["status"] == "succeeded"
    assert summary["staging"] == staging
    assert not list(Path(tempfile.gettempdir()).iterdir())  # the local work folder is gone

    # Same staged output, same table rows.
    local_dir = tmp_path / "local" / D
    for name in (stage.OUTPUT, stage.REJECTS):
        assert_frame_equal(pl.read_parquet(f"{staging}/{D}/{name}"), pl.read_parquet(local_dir / name))
    assert _table(pg_uri, pg_schema) == _table(pg_uri, other_schema)
    assert len(_table(pg_uri, pg_schema)) == remote.output_rows

    # `fastclv sql` and `fastclv verify` straight on the bucket.
    done = _cli("sql", "--staging", staging, "--format", "csv", "SELECT count(*) AS n FROM customer_ltv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["n", str(remote.output_rows)]
    checked = _cli("verify", "--staging", staging)
    assert checked.returncode == 0, checked.stderr
    assert "checks agree" in checked.stdout


def test_each_stage_reads_from_the_staging_bucket_as_separate_workers_do(s3: Any, tmp_path: Path) -> None:
    """The DAG's way: every stage in its own process; here, each with a fresh local folder."""
    staging = f"s3://{BUCKET}/workers"
    settings = Settings(input=f"s3://{BUCKET}/in/", staging=staging, as_of=AS_OF, load=False)
    scratch = Path(tempfile.gettempdir())

    summary = pipeline.begin(settings)
    settings = settings.replace(run_id=summary.run_id)
    summary.files = pipeline.extract_stage(settings)
    assert not list(scratch.iterdir())  # nothing kept locally between stages
    transformed = pipeline.transform_stage(settings)
    summary.model, summary.output_rows = transformed.model, transformed.output_rows
    summary.verify = pipeline.verify_stage(settings, summary.files, summary.model)
    summary.status = "succeeded"
    pipeline.finish(settings, summary)
    assert not list(scratch.iterdir())

    reference = pipeline.run(
        Settings(input=str(SAMPLE), staging=str(tmp_path / "ref"), as_of=AS_OF, load=False)
    )
    assert_frame_equal(
        pl.read_parquet(f"{staging}/{D}/{stage.OUTPUT}"), pl.read_parquet(tmp_path / "ref" / D / stage.OUTPUT)
    )
    assert _keys(s3, f"workers/{D}/") == STAGED
    assert reference.files == summary.files

    # The load can stream the output straight from the bucket, too.
    batches = load._Batches.open(f"{staging}/{D}/{stage.OUTPUT}", AS_OF, "t", {"aws_region": "us-east-1"})
    try:
        assert sum(batch.num_rows for batch in batches.reader()) == summary.output_rows
    finally:
        batches.close()

    # A mismatch found on the bucket: the report is published next to the staged files.
    output = pl.read_parquet(f"{staging}/{D}/{stage.OUTPUT}")
    output.slice(1).write_parquet(f"{staging}/{D}/{stage.OUTPUT}")
    with (
        stage.StagingArea.for_run(staging, AS_OF) as area,
        pytest.raises(VerificationError, match=rf"{staging}/{D}/verify_report\.md"),
    ):
        verify.verify_staged(
            area, AS_OF, summary.files, summary.model, horizon_months=12, margin=1.0, discount_rate=0.01
        )
    assert {"verify_report.md", "verify_report.json"} <= _keys(s3, f"workers/{D}/")
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"workers/{D}/verify_report.json")["Body"].read())
    assert report["run_dir"] == f"{staging}/{D}"


def test_unreadable_inputs_fail_clearly_and_load_nothing(
    s3: Any, pg_uri: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def settings(input_uri: str) -> Settings:
        return Settings(
            input=input_uri,
            staging=str(tmp_path / "staging"),
            as_of=AS_OF,
            pg_uri=pg_uri,
            pg_schema=pg_schema,
        )

    pipeline.run(settings(str(SAMPLE)))  # a good load of the date first
    before = _table(pg_uri, pg_schema)

    partial = f"s3://{BUCKET}/partial/"
    with pytest.raises(InputError, match=rf"file not found at {partial}order_items\.csv"):
        pipeline.run(settings(partial))
    with pytest.raises(InputError, match=r"bucket 'no-such-bucket' of s3://no-such-bucket/in/customers\.csv"):
        pipeline.run(settings("s3://no-such-bucket/in/"))

    secret = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now
    with pytest.raises(InputError, match=rf"access to s3://{BUCKET}/in/customers\.csv was denied") as denied:
        pipeline.run(settings(f"s3://{BUCKET}/in/"))
    assert secret not in str(denied.value)
    assert denied.value.exit_code == 2

    # The CLI: exit 2, the URI named, no traceback, no secret.
    done = _cli(
        "run", "--input", f"s3://{BUCKET}/in/", "--staging", str(tmp_path / "cli"), "--as-of", D,
        "--pg-uri", pg_uri, "--schema", pg_schema,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"s3://{BUCKET}/in/customers.csv" in done.stderr
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr + done.stdout

    assert _table(pg_uri, pg_schema) == before
    ledger = _ledger(pg_uri, pg_schema)
    assert [status for status, _, _ in ledger] == ["succeeded", "failed", "failed", "failed", "failed"]
    assert all(secret not in (error or "") for _, _, error in ledger)
    summary = json.loads((tmp_path / "staging" / D / stage.SUMMARY).read_text())
    assert summary["status"] == "failed"
    assert "was denied" in summary["error"]


def test_staging_location_problems_fail_before_anything_runs(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Settings(input=str(SAMPLE), staging="s3://no-such-staging-bucket/s", as_of=AS_OF, load=False)
    with pytest.raises(
        ConfigError, match=r"staging to s3://no-such-staging-bucket/s/2025-12-31.*does not exist"
    ):
        pipeline.run(base)

    secret = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(ConfigError, match="access denied") as denied:
        pipeline.run(
            base.replace(staging=f"s3://{BUCKET}/denied", storage_options={"aws_secret_access_key": secret})
        )
    assert secret not in str(denied.value)
    assert f"s3://{BUCKET}/denied/{D}" in str(denied.value)


def test_explicit_storage_options_win_over_the_environment(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint from FASTCLV_STORAGE_OPTIONS / --storage-option, not from AWS_ENDPOINT_URL."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("FASTCLV_STORAGE_OPTIONS", json.dumps({"aws_endpoint_url": endpoint}))
    settings = Settings.from_env(input=f"s3://{BUCKET}/in/", staging=f"s3://{BUCKET}/explicit", as_of=AS_OF)
    assert settings.storage_options == {"aws_endpoint_url": endpoint}
    with stage.StagingArea.for_run(settings.staging, AS_OF, settings.storage_options) as area:
        area.write_json("probe.json", {"ok": True})
        assert area.exists("probe.json")
        assert area.read_json("probe.json") == {"ok": True}
        area.remove("probe.json")
        assert not area.exists("probe.json")


# -- options, credentials and messages ---------------------------------------------------------


def test_storage_options_merge_environment_json_and_cli_pairs() -> None:
    env = {"FASTCLV_INPUT": "in", "FASTCLV_STAGING": "st", "FASTCLV_STORAGE_OPTIONS": '{"a": "1", "b": true}'}
    merged = Settings.from_env(env, storage_options=parse_option_pairs(["b=2", "c=x=y"]))
    assert merged.storage_options == {"a": "1", "b": "2", "c": "x=y"}
    assert "storage_options" not in repr(merged)  # it may hold secrets
    with pytest.raises(ConfigError, match="FASTCLV_STORAGE_OPTIONS is invalid") as bad:
        Settings.from_env({**env, "FASTCLV_STORAGE_OPTIONS": '{"aws_secret_access_key": s3cr3t}'})
    assert "s3cr3t" not in str(bad.value)
    with pytest.raises(ConfigError, match="KEY=VALUE") as pair:
        parse_option_pairs(["aws_secret_access_key:s3cr3t"])
    assert "s3cr3t" not in str(pair.value)
    assert parse_storage_options({"aws_allow_http": True, "n": 3}) == {"aws_allow_http": "true", "n": "3"}


def test_options_are_handed_to_object_store_by_its_own_names() -> None:
    """Keys without their store's prefix get it; HTTP client options go to the client."""
    config, client = storage.split_options(
        "s3://b/p",
        {"Region": "eu-west-1", "aws_secret_access_key": "s", "aws_allow_http": "true", "timeout": "30s"},
    )
    assert config == {"aws_region": "eu-west-1", "aws_secret_access_key": "s"}
    assert client == {"allow_http": "true", "timeout": "30s"}
    # Another store's options are for another location (one set of options may serve several).
    assert storage.split_options("gs://b/p", {"aws_region": "x", "google_service_account": "/k.json"}) == (
        {"google_service_account": "/k.json"},
        {},
    )
    assert storage.split_options("/local/folder", {"a": "b"}) == ({}, {})


@pytest.mark.parametrize(
    "spelling",
    [
        {"aws_endpoint_url": "{endpoint}", "aws_allow_http": "true"},
        {"endpoint_url": "{endpoint}", "allow_http": "true"},
    ],
)
def test_a_whole_run_stages_remotely_with_the_options_alone(
    s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spelling: dict[str, str]
) -> None:
    """Scan, Polars, DuckDB's cross-check and the JSON files all take the explicit options."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    options = {key: value.format(endpoint=endpoint) for key, value in spelling.items()}
    staging = f"s3://{BUCKET}/options-{uuid.uuid4().hex[:8]}"
    settings = Settings(input=f"s3://{BUCKET}/in/", staging=staging, as_of=AS_OF, load=False)
    summary = pipeline.run(settings.replace(storage_options=options))
    assert summary.status == "succeeded"
    assert _keys(s3, staging.removeprefix(f"s3://{BUCKET}/") + "/") >= {f"{D}/{name}" for name in STAGED}


def test_an_option_object_store_does_not_know_is_a_config_error(s3: Any) -> None:
    with pytest.raises(ConfigError, match="object_store's option names") as bad:
        storage.exists(f"s3://{BUCKET}/in/customers.csv", {"no_such_option": "s3cr3t-value"})
    assert "s3cr3t-value" not in str(bad.value)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FileNotFoundError("<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"), "not_found"),
        (FileNotFoundError("<Error><Code>NoSuchBucket</Code></Error>"), "no_bucket"),
        (PermissionError("403 Forbidden <Code>SignatureDoesNotMatch</Code>"), "denied"),
        (OSError("AWS Error ACCESS_DENIED during HeadObject operation"), "denied"),
        (ConnectionRefusedError("tcp connect error: Connection refused"), "unreachable"),
        (OSError("AWS Error NETWORK_CONNECTION during PutObject"), "unreachable"),
        (OSError("Path does not exist 'b/k'"), "not_found"),
    ],
)
def test_storage_errors_are_classified(error: BaseException, kind: str) -> None:
    assert storage.describe(error).kind == kind


def test_storage_error_messages_never_show_a_secret() -> None:
    secret = "very-secret-value"
    options = {"aws_secret_access_key": secret, "aws_region": "eu-west-1"}
    error = storage.storage_error(
        OSError(f"signed with {secret}: ACCESS_DENIED"), "s3://b/k", "reading", options
    )
    assert isinstance(error, FastclvError)
    assert secret not in str(error)
    assert "s3://b/k" in str(error)
    assert redact(f"x {secret} y", storage_options=options) == "x *** y"
