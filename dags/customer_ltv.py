"""customer_ltv: the fastclv pipeline as an Airflow 3 DAG, one fastclv call per task.

begin -> extract -> transform -> verify -> load -> finish (always: summary.json, the ledger row;
fails the DagRun when a stage failed); the run due at D+1 00:05 UTC covers D. With the shards
param (or FASTCLV_SHARDS) above 1 the extract is the sharded plan, mapped over the workers
(plan -> scan[range] -> stitch -> resolve_customers[customer bucket] and, with several customer
buckets, route[order bucket] -> lookup[customer bucket]; then resolve_orders[bucket] ->
resolve_items[bucket] -> extract, which stages) and so is the transform (parts -> history[part] -> fit
-> score[part] -> transform, which assembles the output), the cross-check (verify_part[part]
-> verify, which concludes) and the load (load_prepare, the run's staging table -> load_part[part],
each COPYing its row groups exactly once -> load, the one swap); with 1 those tasks map over
nothing (skipped) and load_prepare prepares nothing. Settings: DAG
params, else FASTCLV_* variables (one per Settings field), else defaults; resolved by begin,
they travel without secrets, which each task adds from the connections fastclv_postgres,
fastclv_storage (optional) and fastclv_alert_webhook (optional: the URL as its password, masked).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from airflow.sdk import BaseNotifier, Connection, CronTriggerTimetable, Param, TriggerRule, chain, dag, task
from airflow.sdk import get_current_context as current
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

import fastclv  # light: Polars and co. load when a stage runs
from fastclv.config import Settings, as_of_for_run, storage_options_from_env

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

DAG_ID = "customer_ltv"
CONN_ID = "fastclv_postgres"
STORAGE_CONN_ID = "fastclv_storage"
ALERT_CONN_ID = "fastclv_alert_webhook"
STAGES = ("begin", "extract", "transform", "verify", "load")
#: The sharded plan's tasks (skipped when the run is not sharded): the extract's, then the transform's.
SHARD_TASKS = ("plan", "scan", "stitch", "customer_jobs", "route_jobs", "lookup_jobs", "resolve_customers",
               "route", "lookup", "resolve_orders", "resolve_items")  # fmt: skip
SHARD_TRANSFORM_TASKS = ("parts", "history", "fit", "score")
SHARD_VERIFY_TASKS = ("verify_part",)
SHARD_LOAD_TASKS = ("load_prepare", "load_part")
#: The tasks that map over nothing (skipped) when the run is not sharded.
SHARDED = frozenset((*SHARD_TASKS, *SHARD_TRANSFORM_TASKS, *SHARD_VERIFY_TASKS, *SHARD_LOAD_TASKS))
#: Every task of a run before finish, in run order (finish reports the first that failed).
RUN_ORDER = ("begin", *SHARD_TASKS, "extract", *SHARD_TRANSFORM_TASKS, "transform", *SHARD_VERIFY_TASKS,
             "verify", *SHARD_LOAD_TASKS, "load")  # fmt: skip
#: Mapped task instances of one run that run at once (each holds about 1/N of the data).
MAX_PARALLEL_SHARDS = int(os.environ.get("FASTCLV_MAX_PARALLEL_SHARDS") or 16)
#: Seconds before a failed task's first retry (doubling up to 30 minutes).
RETRY_DELAY_S = float(os.environ.get("FASTCLV_RETRY_DELAY_S") or 60)
#: DAG param -> Settings field (type and description from Settings); every field has a FASTCLV_* variable.
PARAMS = {"as_of": "as_of", "input": "input", "staging": "staging", "schema": "pg_schema",
          "horizon_months": "horizon_months", "margin": "margin", "discount_rate": "discount_rate",
          "reject_rate_threshold": "reject_rate_threshold", "holdout_days": "holdout_days",
          "shards": "shards"}  # fmt: skip
#: The extras of the PostgreSQL connection that are libpq parameters (Airflow's own are dropped).
LIBPQ_PARAMS = frozenset({
    "application_name", "channel_binding", "client_encoding", "connect_timeout", "fallback_application_name",
    "gssencmode", "gsslib", "hostaddr", "keepalives", "keepalives_count", "keepalives_idle",
    "keepalives_interval", "krbsrvname", "load_balance_hosts", "options", "passfile", "require_auth",
    "requirepeer", "service", "ssl_max_protocol_version", "ssl_min_protocol_version", "sslcert",
    "sslcertmode", "sslcompression", "sslcrl", "sslcrldir", "sslkey", "sslmode", "sslnegotiation",
    "sslpassword", "sslrootcert", "sslsni", "target_session_attrs", "tcp_user_timeout",
})  # fmt: skip
#: A storage connection's login/password and extras as fastclv names them (aws_* ... pass as they are).
STORAGE_LOGIN = {"aws": ("aws_access_key_id", "aws_secret_access_key"),
                 "wasb": ("azure_storage_account_name", "azure_storage_account_key")}  # fmt: skip
STORAGE_PREFIXES = ("aws_", "google_", "azure_")
STORAGE_EXTRAS = {
    "region_name": "aws_region", "endpoint_url": "aws_endpoint_url", "key_path": "google_service_account",
    "keyfile_dict": "google_service_account_key", "account_name": "azure_storage_account_name",
    "sas_token": "azure_storage_sas_token", "tenant_id": "azure_storage_tenant_id",
    "client_id": "azure_storage_client_id", "client_secret": "azure_storage_client_secret",
}  # fmt: skip


class RunFailed(AirflowFailException):
    """Raised by ``finish`` to fail the DagRun after a stage failed (already alerted)."""


def _connection(conn_id: str) -> Connection | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def pg_uri_from_connection(conn: Connection) -> str:
    """The connection's URI (Airflow's ``get_uri``), with only the extras libpq knows."""
    if conn.extra_dejson.get("iam"):  # an RDS/Redshift IAM token for password, as the provider makes it
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        login, token, port = PostgresHook(postgres_conn_id=conn.conn_id).get_iam_token(conn)
        conn = attrs.evolve(conn, login=login, password=token, port=port)
    extras = conn.extra_dejson.items()
    kept = {k: str(int(v) if isinstance(v, bool) else v) for k, v in extras if k in LIBPQ_PARAMS}
    return attrs.evolve(conn, conn_type="postgresql", extra=json.dumps(kept) if kept else None).get_uri()


def storage_options_from_connection(conn: Connection) -> tuple[dict[str, str], list[str]]:
    """A storage connection as fastclv's storage options, and the extras that are none (ignored).

    The host, if any, is the endpoint (aws://key:secret@minio:9000).
    """
    kind, extras = (conn.conn_type or "").lower().replace("s3", "aws"), dict(conn.extra_dejson)
    names = STORAGE_LOGIN.get("wasb" if kind.startswith(("wasb", "azure", "adls")) else kind, ())
    options = {name: value for name, value in zip(names, (conn.login, conn.password), strict=False) if value}
    if conn.host and "endpoint_url" not in extras:
        scheme = "http" if str(extras.get("aws_allow_http")).lower() == "true" else "https"
        extras["endpoint_url"] = f"{scheme}://{conn.host}" + (f":{conn.port}" if conn.port else "")
    ignored = []
    for key, value in extras.items():
        name = STORAGE_EXTRAS.get(key.removeprefix("extra__google_cloud_platform__"), key.lower())
        if name == "google_service_account_key" and isinstance(value, Mapping):
            options[name] = json.dumps(dict(value))
        elif value is None or isinstance(value, Mapping | list) or not name.startswith(STORAGE_PREFIXES):
            ignored.append(key)
        else:
            options[name] = str(value).lower() if isinstance(value, bool) else str(value)
    if options.get("aws_endpoint_url", "").startswith("http://"):
        options.setdefault("aws_allow_http", "true")
    return options, sorted(ignored)


def _public(context: Context) -> dict[str, Any]:
    """The run's settings without secrets: DAG params, else FASTCLV_* variables, else defaults."""
    given = {field: context["params"].get(name) for name, field in PARAMS.items() if name != "as_of"}
    return Settings.from_env(as_of=_as_of(context), **given).public()


def _settings(public: Mapping[str, Any]) -> Settings:
    """The one way a task builds its Settings: the run's, with the secrets of the connections."""
    options = storage_options_from_env() or {}
    if (conn := _connection(STORAGE_CONN_ID)) is not None:
        options.update(storage_options_from_connection(conn)[0])
    if (pg := _connection(CONN_ID)) is None:
        raise fastclv.ConfigError(
            f"Airflow connection {CONN_ID!r} is not defined. Hint: add it in the UI "
            f"or set AIRFLOW_CONN_{CONN_ID.upper()}=postgresql://USER:PW@HOST:5432/DB."
        )
    return Settings.from_public(public, pg_uri=pg_uri_from_connection(pg), storage_options=options or None)


def _as_of(context: Context) -> date:
    run = context["dag_run"]
    return as_of_for_run(logical_date=run.logical_date, data_interval_end=run.data_interval_end,
                         run_after=run.run_after, override=context["params"].get("as_of"))  # fmt: skip


class WebhookNotifier(BaseNotifier):
    """POST an alert as JSON (Slack reads its ``text``) to the URL that is a connection's password.

    ``what`` None: the failure of the context's task. Only the URL's host is ever logged; without
    the connection the alert is only logged. Never raises.
    """

    def __init__(self, what: str | None = None, level: str = "error", **extra: Any) -> None:
        super().__init__()
        self.what, self.level, self.conn_id, self.extra = what, level, ALERT_CONN_ID, extra

    def notify(self, context: Context) -> None:
        url, ti, exc = "", context["ti"], context.get("exception")
        try:
            if isinstance(exc, RunFailed):  # finish: the failed stage has sent its own alert
                return
            what, extra = self.what, self.extra
            if what is None:
                recorded = ti.xcom_pull(task_ids=ti.task_id, key="error") or {}
                error = recorded.get("error") or (fastclv.redact(repr(exc)) if exc else "unknown error")
                what, extra = f"the run failed in task {ti.task_id}: {error}", {"error": error}
            public = (ti.xcom_pull(task_ids="begin") or {}).get("settings") or {}
            as_of = public.get("as_of")
            with contextlib.suppress(Exception):  # an invalid as_of param must not stop the alert
                as_of = as_of or _as_of(context).isoformat()
            body = json.dumps({"text": f"fastclv {ti.dag_id}: as-of {as_of}: {what} (log: {ti.log_url})",
                               "level": self.level, "dag": ti.dag_id, "task": ti.task_id, "as_of": as_of,
                               "run_id": ti.run_id, "fastclv_run_id": public.get("run_id"),
                               "report": f"{public.get('staging')}/{as_of}/report.html" if public else None,
                               "log_url": ti.log_url, **extra}, default=str)  # fmt: skip
            log.log(logging.ERROR if self.level == "error" else logging.WARNING, "fastclv alert: %s", body)
            url = getattr(_connection(self.conn_id), "password", None) or ""
            if urlsplit(url).scheme not in ("http", "https"):
                log.info("no alert webhook: connection %s holds no http(s) URL as password", self.conn_id)
                return
            headers = {"Content-Type": "application/json"}  # the scheme is http(s), checked above
            request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                log.info("alert posted to %s (HTTP %s)", urlsplit(url).hostname, response.status)
        except Exception as exc:  # noqa: BLE001 - an alert must never fail the task or the callback
            log.warning("could not post the alert: %s", f"{exc!r}".replace(url or "\0", "<url>"))


def _stage(name: str, run: Mapping[str, Any] | None = None, **earlier: Any) -> dict[str, Any]:
    """Run one stage; a failure is recorded in XCom (key ``error``) and, if terminal, not retried."""
    return _call(name, run, lambda settings: fastclv.run_stage(name, settings, earlier))


def _shard(name: str, run: Mapping[str, Any], *args: Any) -> Any:
    """Run one task of the sharded plan (``fastclv.shard.<name>_task``, or the transform's in
    ``fastclv.shard_transform``), as :func:`_stage` does."""
    from fastclv import shard, shard_transform

    module = shard_transform if hasattr(shard_transform, f"{name}_task") else shard
    return _call(name, run, lambda settings: getattr(module, f"{name}_task")(settings, *args))


def _call(name: str, run: Mapping[str, Any] | None, work: Any) -> Any:
    context, settings = current(), None
    try:
        settings = _settings(run["settings"] if run else _public(context))
        log.info("%s with %r", name, settings)  # what the task runs with (no secrets)
        return work(settings)
    except BaseException as exc:
        info = fastclv.describe_error(exc, settings)
        try:
            context["ti"].xcom_push(key="error", value=info)
        except Exception:
            log.warning("could not record the error in XCom", exc_info=True)
        if isinstance(exc, fastclv.FastclvError) and not exc.transient:
            raise AirflowFailException(info["error"]) from exc
        raise


def _first_failure(tasks: list[str], states: Mapping[str, str | None]) -> tuple[str | None, int | None]:
    """The first task (in run order) that did not succeed, and its map index (mapped tasks).

    A mapped task instance's state is under ``<task>_<index>``; the sharded plan's tasks are
    skipped when the run is not sharded, which is no failure.
    """
    for name in tasks:
        mine: dict[int, str | None] = {}
        for key, state in states.items():
            index = key.removeprefix(f"{name}_")
            if key == name or (index != key and index.isdigit()):
                mine[-1 if key == name else int(index)] = state
        for index, state in sorted(mine.items()):
            if state != "success" and not (name in SHARDED and state == "skipped"):
                return name, (index if index >= 0 else None)
        if not mine and name in STAGES:
            return name, None
    return None, None


def _param(field: str) -> Param:
    default = getattr(Settings(input="", staging=""), field)
    kind = {int: "integer", float: "number"}.get(type(default), "string")
    empty = "the day the run covers" if field == "as_of" else f"{Settings.env_name(field)}, else the default"
    return Param(None, type=["null", kind], description=f"{Settings.doc(field)} Empty: {empty}.")


alert_on_failure = WebhookNotifier()


# -- the sharded plan's tasks (fastclv.shard), used by the DAG below -------------------------


@task
def plan(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Sharded runs: check the headers, cut each CSV into byte ranges; one scan job per range."""
    planned = _shard("plan", run)
    return [{"plan": planned["plan"], **job} for job in planned["scans"]]


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def scan(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Scan one byte range of one CSV into key-hash buckets (staged work files)."""
    return _shard("scan", run, job["plan"], job)


@task
def stitch(
    run: dict[str, Any], jobs: list[dict[str, Any]], scans: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Check each range's start against the range before (scan again where a record crossed).

    Returns one resolve job per key-hash bucket (the plan and the stitched scans in each).
    """
    planned = jobs[0]["plan"]
    stitched = _shard("stitch", run, planned, list(scans))
    buckets = int(planned["buckets"])
    return [{"plan": planned, "scans": stitched, "bucket": k} for k in range(buckets)]


def _customer_buckets(buckets: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    planned, stitched = buckets[0]["plan"], buckets[0]["scans"]
    n = int(planned.get("customer_buckets", 1))
    return n, [{"plan": planned, "scans": stitched, "bucket": j} for j in range(n)]


@task
def customer_jobs(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One resolve job per customer bucket."""
    return _customer_buckets(buckets)[1]


@task
def route_jobs(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The orders' customer lookup: one route job per order bucket (none with one customer
    bucket: the order buckets then read the staged customers)."""
    n, _ = _customer_buckets(buckets)
    return buckets if n > 1 else []


@task
def lookup_jobs(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The orders' customer lookup: one lookup job per customer bucket (none with one)."""
    n, jobs = _customer_buckets(buckets)
    return jobs if n > 1 else []


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def resolve_customers(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One customer bucket: duplicates and conflicts (one bucket: stages customers.parquet)."""
    return _shard("resolve", run, job["plan"], job["scans"], "customers", job["bucket"])


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def route(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One order bucket's customer lookups, sent to the customer buckets of the ids' hashes."""
    return _shard("route", run, job["plan"], job["scans"], job["bucket"])


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def lookup(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One customer bucket's answers to every order bucket's lookups (the customers' rows)."""
    return _shard("lookup", run, job["plan"], job["bucket"])


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
def resolve_orders(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One order bucket: duplicates, conflicts, unknown customers."""
    return _shard("resolve", run, job["plan"], job["scans"], "orders", job["bucket"])


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def resolve_items(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One item bucket: duplicates, conflicts, unknown orders (its orders share the bucket);
    then the bucket's purchase days, cut by customer part (the transform's exchange)."""
    return _shard("resolve", run, job["plan"], job["scans"], "order_items", job["bucket"])


def _sharded_extract(run: Any) -> tuple[Any, Any]:
    """The sharded plan's extract tasks, mapped over byte ranges and buckets: the resolve jobs
    (stitch) and the last task."""
    jobs = plan(run)
    scanned = scan.partial(run=run).expand(job=jobs)
    buckets = stitch(run, jobs, scanned)
    customers = resolve_customers.partial(run=run).expand(job=customer_jobs(buckets))
    routes = route.partial(run=run).expand(job=route_jobs(buckets))
    lookups = lookup.partial(run=run).expand(job=lookup_jobs(buckets))
    orders = resolve_orders.partial(run=run).expand(job=buckets)
    items = resolve_items.partial(run=run).expand(job=buckets)
    chain([customers, routes], lookups, orders, items)
    chain(customers, orders)  # one customer bucket: no lookups (skipped), the staged customers
    return buckets, items


@task
def parts(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sharded runs: one history job per customer part (the plan and the stitched scans in each)."""
    planned, stitched = buckets[0]["plan"], buckets[0]["scans"]
    return [{"plan": planned, "scans": stitched, "part": j} for j in range(int(planned.get("parts", 1)))]


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def history(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One customer part: its purchase days merged, its historical columns, its model histograms."""
    return _shard("history", run, job["plan"], job["scans"], job["part"])


@task
def fit(run: dict[str, Any], jobs: list[dict[str, Any]], histories: list[dict[str, Any]]) -> dict[str, Any]:
    """BG/NBD and Gamma-Gamma on the merged histograms of every part (and the holdout backtest's
    fit on the parts' calibration histograms): the models' summaries."""
    fitted = _shard("fit", run, jobs[0]["plan"], list(histories))
    return {"plan": jobs[0]["plan"], **fitted, "parts": [job["part"] for job in jobs]}


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def score(run: dict[str, Any], fitted: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One customer part's predictions from the fitted model."""
    return _shard("score", run, fitted, job["part"])


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def verify_part(run: dict[str, Any], transformed: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One customer part of the DuckDB cross-check (by DuckDB's hash of customer_id): its figures."""
    from fastclv.pipeline import verify_part_stage

    parts_ = int(job["plan"].get("parts", 1))
    model = transformed.get("model")
    result: dict[str, Any] = _call(
        "verify_part", run, lambda settings: verify_part_stage(settings, model, job["part"], parts_)
    )
    return result


@task
def load_prepare(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Sharded runs: create the run's staging table for the load by part; one job per part
    (none when the run is not sharded or does not load: the load is then one task)."""
    from fastclv.pipeline import load_prepare_stage

    jobs: list[dict[str, Any]] = _call("load_prepare", run, load_prepare_stage)
    return jobs


@task(max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS)
def load_part(run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """COPY one part of the output's row groups into the run's staging table (exactly once)."""
    from fastclv.pipeline import load_part_stage

    done: dict[str, Any] = _call(
        "load_part", run, lambda settings: load_part_stage(settings, job["part"], job["parts"])
    )
    return done


def _sharded_transform(run: Any, buckets: Any, items: Any) -> tuple[Any, Any]:
    """The sharded plan's transform tasks, mapped over customer parts: the part jobs, the last task."""
    jobs = parts(buckets)
    chain(items, jobs)
    histories = history.partial(run=run).expand(job=jobs)
    fitted = fit(run, jobs, histories)
    return jobs, score.partial(run=run, fitted=fitted).expand(job=jobs)


def _sharded_extract_results(ti: Any) -> dict[str, Any] | None:
    """What the sharded extract's tasks returned, for the extract task (None: not sharded)."""
    buckets = ti.xcom_pull(task_ids="stitch")
    if not buckets:
        return None
    customer_buckets = int(buckets[0]["plan"].get("customer_buckets", 1))
    # A list of one index still pulls a list.
    resolved = ti.xcom_pull(task_ids=["resolve_customers"], map_indexes=list(range(customer_buckets)))
    indexes = list(range(len(buckets)))
    for task_id in ("resolve_orders", "resolve_items"):
        resolved += ti.xcom_pull(task_ids=[task_id], map_indexes=indexes)
    return {"plan": buckets[0]["plan"], "scans": buckets[0]["scans"], "resolved": resolved}


def _sharded_transform_results(ti: Any) -> dict[str, Any] | None:
    """What the sharded transform's tasks returned, for the transform task (None: not sharded)."""
    fitted = ti.xcom_pull(task_ids="fit")
    if not fitted:
        return None
    scores = ti.xcom_pull(task_ids=["score"], map_indexes=list(range(len(fitted["parts"]))))
    return {"fitted": fitted, "scores": scores}


def _sharded_load_results(ti: Any) -> list[dict[str, Any]] | None:
    """What the load's part tasks returned, for the load task (None: not loaded by part)."""
    jobs = ti.xcom_pull(task_ids="load_prepare")
    if not jobs:
        return None
    done: list[dict[str, Any]] = ti.xcom_pull(task_ids=["load_part"], map_indexes=list(range(len(jobs))))
    return done


def _sharded_verify_results(ti: Any) -> list[dict[str, Any]] | None:
    """What the cross-check's part tasks returned, for the verify task (None: not sharded)."""
    fitted = ti.xcom_pull(task_ids="fit")
    if not fitted:
        return None
    partials: list[dict[str, Any]] = ti.xcom_pull(
        task_ids=["verify_part"], map_indexes=list(range(len(fitted["parts"])))
    )
    return partials


@dag(
    dag_id=DAG_ID,
    description="CSV exports -> validated Parquet -> customer_ltv in PostgreSQL (fastclv)",
    schedule=CronTriggerTimetable("5 0 * * *", timezone="UTC"),  # the run due at D+1 00:05 UTC covers D
    start_date=datetime.fromisoformat(f"{os.environ.get('FASTCLV_START_DATE') or '2025-01-01'}T00:00+00:00"),
    catchup=os.environ.get("FASTCLV_CATCHUP", "").strip().lower() in {"1", "true", "yes", "on"},
    max_active_runs=1,  # runs of one as-of date share a staging folder: never two at once
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": timedelta(seconds=RETRY_DELAY_S),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": alert_on_failure,
    },
    params={name: _param(field) for name, field in PARAMS.items()},
    tags=["fastclv"],
    doc_md=__doc__,
)
def customer_ltv() -> None:
    """The fastclv pipeline for one as-of date."""

    @task
    def begin() -> dict[str, Any]:
        """Resolve the run's settings, prepare its folder, record it as 'running'."""
        return _stage("begin")

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def extract(run: dict[str, Any]) -> dict[str, Any]:
        """Validate and stage the three CSV files; alert when a file's reject rate is high.

        Sharded: stage what the plan's tasks resolved (pulled from XCom); else the whole extract.
        """
        result = _stage("extract", run, sharded=_sharded_extract_results(current()["ti"]))
        if warning := result.get("warning"):
            threshold = run["settings"]["reject_rate_threshold"]
            WebhookNotifier(warning, "warning", warning=warning, reject_rates=result["reject_rates"],
                            threshold=threshold).notify(current())  # fmt: skip
        return result

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def transform(run: dict[str, Any]) -> dict[str, Any]:
        """Compute customer_ltv (history and predictive model) into the run folder.

        Sharded: assemble what the part tasks scored (pulled from XCom); else the whole transform.
        """
        return _stage("transform", run, sharded=_sharded_transform_results(current()["ti"]))

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def verify(run: dict[str, Any], extracted: dict[str, Any], transformed: dict[str, Any]) -> dict[str, Any]:
        """Cross-check the staged output with DuckDB; a mismatch fails the run before loading.

        Sharded: conclude on what the part tasks compared (pulled from XCom); else the whole check.
        """
        partials = _sharded_verify_results(current()["ti"])
        return _stage("verify", run, extract=extracted, transform=transformed, sharded=partials)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def load(run: dict[str, Any]) -> dict[str, Any]:
        """Swap the as-of date's partition of customer_ltv in, atomically.

        Sharded: swap in what the load_part tasks COPYed (pulled from XCom); else the whole load.
        """
        return _stage("load", run, sharded=_sharded_load_results(current()["ti"]))

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finish() -> dict[str, Any]:
        """Write summary.json and the ledger row whatever happened; fail if a stage failed."""
        context = current()
        ti = context["ti"]
        tasks = list(RUN_ORDER)
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=tasks)[ti.run_id]
        results = {name: ti.xcom_pull(task_ids=name) or {} for name in STAGES}
        public = results["begin"].get("settings") or _public(context)  # begin failed: resolve again
        try:
            settings = _settings(public)
        except fastclv.FastclvError as exc:  # no connection: still write summary.json
            log.error("the run cannot be recorded in the ledger: %s", exc)
            settings = Settings.from_public({**public, "load": False})
        failed, map_index = _first_failure(tasks, states)
        error = failed and ti.xcom_pull(task_ids=failed, key="error", map_indexes=map_index)
        summary = fastclv.finish_stages(settings, results, failed=failed, error=error or None)
        if failed is None:
            return summary.as_dict()
        raise RunFailed(f"the run for as-of {summary.as_of} failed in task {failed}, {summary.error} "
                        f"(report: {summary.report})")  # fmt: skip

    @task
    def report() -> str | None:
        """Write the run's HTML report from its staged files; never fails (the load is done)."""
        public = (current()["ti"].xcom_pull(task_ids="begin") or {}).get("settings") or _public(current())
        try:
            return fastclv.write_report(_settings(public))
        except Exception:
            log.warning("no report for this run", exc_info=True)
            return None

    run: Any = begin()  # XComArgs: the tasks' return values, resolved when the downstream task runs
    buckets, items = _sharded_extract(run)
    jobs, scored = _sharded_transform(run, buckets, items)
    extracted, transformed = extract(run), transform(run)
    compared = verify_part.partial(run=run, transformed=transformed).expand(job=jobs)
    checked = verify(run, extracted, transformed)
    prepared = load_prepare(run)  # after verify: nothing is loaded before the cross-check passed
    chain(items, extracted, transformed, checked, prepared, load_part.partial(run=run).expand(job=prepared),
          load(run), finish(), report().as_teardown())  # fmt: skip
    chain(scored, transformed)
    chain(compared, checked)


customer_ltv()
