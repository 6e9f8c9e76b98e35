"""customer_ltv: the fastclv pipeline as an Airflow 3 DAG, one task per stage.

begin -> extract -> transform -> verify -> load -> finish. Each task calls one
``fastclv.pipeline`` function and passes paths and counts (small JSON) through XCom;
``finish`` always runs, writes ``summary.json`` and the ledger row, and fails the DagRun
when a stage failed.

The as-of date: the run due just after midnight UTC on day D+1 covers D (CONTRACT.md
section 3). The schedule is a ``CronTriggerTimetable`` (the Airflow 3 default for a cron
string): a run's data interval is the instant it was due (its logical date), so a run
covers the last whole UTC day before that instant; see :func:`as_of_for_run`.

Configuration is read when a task runs, never when this file is parsed (except the two
DAG-level switches ``FASTCLV_CATCHUP`` and ``FASTCLV_START_DATE``): DAG params, else the
``FASTCLV_*`` environment variables, else fastclv's defaults. PostgreSQL comes from the
Airflow connection ``fastclv_postgres``; object-storage credentials (input and staging may be
``s3://``, ``gs://`` or ``az://`` URIs) from the optional connection ``fastclv_storage`` (its
login/password and extras become storage options), over FASTCLV_STORAGE_OPTIONS and the
standard AWS_*/GOOGLE_*/AZURE_* variables. Every task reads what it needs from the staging
location, so tasks may run on different workers. Alerts go to the webhook in the Airflow
Variable ``fastclv_alert_webhook`` or ``FASTCLV_ALERT_WEBHOOK``; run metrics go to the task
log (logger ``fastclv.metrics``) and to StatsD when FASTCLV_STATSD_HOST is set.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from airflow.sdk import (
    Connection,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    Variable,
    chain,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from fastclv.config import Settings
    from fastclv.pipeline import RunSummary

log = logging.getLogger(__name__)

DAG_ID = "customer_ltv"
CONN_ID = "fastclv_postgres"
#: Optional connection holding object-storage credentials (e.g. of type ``aws``).
STORAGE_CONN_ID = "fastclv_storage"
WEBHOOK_VARIABLE = "fastclv_alert_webhook"
WEBHOOK_ENV = "FASTCLV_ALERT_WEBHOOK"
WEBHOOK_TIMEOUT_S = 5.0
THRESHOLD_ENV = "FASTCLV_REJECT_RATE_THRESHOLD"
DEFAULT_REJECT_RATE_THRESHOLD = 0.05
#: The stage tasks, in order; ``finish`` follows them.
STAGES = ("begin", "extract", "transform", "verify", "load")
#: Settings fields resolved once by ``begin`` and shared by every task of the run.
_SETTING_FIELDS = (
    "input",
    "staging",
    "delimiter",
    "pg_schema",
    "table",
    "runs_table",
    "lock_timeout_s",
    "horizon_months",
    "margin",
    "discount_rate",
    "penalizer",
    "statsd_host",
    "statsd_prefix",
)
#: libpq connection parameters kept from the connection's extras; the rest (Airflow's own
#: extras such as ``cursor``, ``iam`` or ``aws_conn_id``) is dropped.
LIBPQ_PARAMS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "fallback_application_name",
        "gssencmode",
        "gsslib",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "require_auth",
        "requirepeer",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)


class RunFailed(AirflowFailException):
    """Raised by ``finish`` to fail the DagRun after a stage failed (already alerted)."""


# -- as-of date and settings ---------------------------------------------------------------


def as_of_for_run(
    *,
    logical_date: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime,
    override: str | None = None,
) -> date:
    """The as-of date D of a run: the last whole UTC day before the end of its data.

    The end of a run's data is its data interval's end, else its logical date, else (a
    manual run without a logical date) the time it was queued for. With the cron trigger
    timetable the interval is the instant the run was due, so the run due at 2026-01-01
    00:05 UTC covers 2025-12-31. ``override`` (the ``as_of`` param) wins.

    >>> as_of_for_run(logical_date=None, data_interval_end=None,
    ...               run_after=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    datetime.date(2025, 12, 31)
    """
    if override:
        from fastclv.config import parse_date

        return parse_date(override)
    end = data_interval_end or logical_date or run_after
    return end.astimezone(UTC).date() - timedelta(days=1)


def _as_of(context: Context) -> date:
    dag_run = context["dag_run"]
    return as_of_for_run(
        logical_date=dag_run.logical_date,
        data_interval_end=dag_run.data_interval_end,
        run_after=dag_run.run_after,
        override=context["params"].get("as_of"),
    )


def _resolve_run(context: Context) -> dict[str, Any]:
    """The run's configuration (no secrets): DAG params, else FASTCLV_* variables, else defaults."""
    from fastclv.config import Settings
    from fastclv.errors import ConfigError

    params = context["params"]
    settings = Settings.from_env(
        as_of=_as_of(context),
        input=params.get("input"),
        staging=params.get("staging"),
        pg_schema=params.get("schema"),
        horizon_months=params.get("horizon_months"),
        margin=params.get("margin"),
        discount_rate=params.get("discount_rate"),
    )
    threshold = params.get("reject_rate_threshold")
    if threshold is None:
        raw = os.environ.get(THRESHOLD_ENV, "")
        try:
            threshold = float(raw) if raw else DEFAULT_REJECT_RATE_THRESHOLD
        except ValueError:
            raise ConfigError(f"{THRESHOLD_ENV}={raw!r} is not a number. Hint: use e.g. 0.05.") from None
    if not 0 <= threshold <= 1:
        raise ConfigError(f"reject_rate_threshold must be in [0, 1], got {threshold}.")
    run: dict[str, Any] = {name: getattr(settings, name) for name in _SETTING_FIELDS}
    run.update(as_of=settings.as_of.isoformat(), reject_rate_threshold=float(threshold))
    return run


def _settings(run: Mapping[str, Any], *, with_db: bool = True) -> Settings:
    """The one way a task builds its Settings: the run's config plus the connection's URI."""
    from fastclv.config import Settings, parse_date

    return Settings(
        **{name: run[name] for name in _SETTING_FIELDS if name in run},
        as_of=parse_date(run["as_of"]),
        pg_uri=pg_uri_from_connection() if with_db else None,
        load=with_db,
        run_id=run.get("run_id"),
        storage_options=storage_options_from_connection(),
    )


def storage_options_from_connection(conn_id: str = STORAGE_CONN_ID) -> dict[str, str] | None:
    """FASTCLV_STORAGE_OPTIONS, with the optional storage connection's credentials over it.

    Resolved in every task (never passed through XCom: it may hold secrets). Without the
    connection the standard variables (AWS_*, ...) or the worker's own identity apply.
    """
    from fastclv.config import storage_options_from_env
    from fastclv.storage import options_from_connection

    options = storage_options_from_env() or {}
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return options or None
    extras = conn.extra_dejson
    if conn.host and "endpoint_url" not in extras:  # e.g. aws://key:secret@minio:9000
        scheme = "http" if str(extras.get("aws_allow_http", "")).lower() == "true" else "https"
        port = f":{conn.port}" if conn.port else ""
        extras = {**extras, "endpoint_url": f"{scheme}://{conn.host}{port}"}
    found, ignored = options_from_connection(conn.conn_type, conn.login, conn.password, extras)
    if ignored:
        log.info(
            "connection %s: extras that are not storage options, ignored: %s", conn_id, ", ".join(ignored)
        )
    return {**options, **found} or None


def pg_uri_from_connection(conn_id: str = CONN_ID) -> str:
    """The connection as a libpq URI, keeping only libpq parameters from its extras."""
    from fastclv.errors import ConfigError

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(
            f"Airflow connection {conn_id!r} is not defined. Hint: add it in the UI or set "
            f"AIRFLOW_CONN_{conn_id.upper()}=postgresql://user:password@host:5432/dbname."
        ) from None
    return libpq_uri(
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        database=conn.schema,
        extras=conn.extra_dejson,
    )


def libpq_uri(
    *,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    database: str | None,
    extras: Mapping[str, Any],
) -> str:
    """Build ``postgresql://user:pw@host:port/db?libpq-params`` (components percent-encoded).

    >>> libpq_uri(host="db", port=5432, login="app", password="p@ss", database="crm",
    ...           extras={"sslmode": "require", "cursor": "dictcursor"})
    'postgresql://app:p%40ss@db:5432/crm?sslmode=require'
    """
    userinfo = quote(login or "", safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    netloc = f"{userinfo}@" if userinfo else ""
    if host:  # an IPv6 address goes in brackets; a socket folder is percent-encoded
        netloc += f"[{host}]" if ":" in host and not host.startswith("[") else quote(host, safe="[]:")
    if port:
        netloc += f":{port}"
    kept = {k: _libpq_value(v) for k, v in extras.items() if k in LIBPQ_PARAMS and v is not None}
    dropped = sorted(set(extras) - set(kept))
    if dropped:
        log.info("connection extras that are not libpq parameters, ignored: %s", ", ".join(dropped))
    uri = f"postgresql://{netloc}/{quote(database or '', safe='')}"
    return f"{uri}?{urlencode(kept)}" if kept else uri


def _libpq_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# -- errors, logging and alerts ------------------------------------------------------------


@contextmanager
def _stage_errors(context: Context) -> Iterator[None]:
    """Record a stage's error in XCom (key ``error``), then fail it the right way.

    A transient FastclvError is re-raised (Airflow retries it with backoff); a terminal one
    becomes AirflowFailException (no retry); anything unexpected is re-raised (retried).
    """
    try:
        yield
    except BaseException as exc:
        from fastclv.errors import FastclvError

        info = _describe_error(exc)
        try:
            context["ti"].xcom_push(key="error", value=info)
        except Exception:
            log.warning("could not record the error in XCom", exc_info=True)
        if isinstance(exc, FastclvError) and not exc.transient:
            raise AirflowFailException(info["error"]) from exc
        raise


def _describe_error(exc: BaseException) -> dict[str, Any]:
    """The error as the run summary records it (``pipeline.fail``), password scrubbed."""
    from fastclv import pipeline

    scratch = pipeline.RunSummary(
        run_id="-", as_of=date.min, input="", staging="", started_at=datetime.now(UTC)
    )
    pipeline.fail(scratch, exc)
    error = scratch.error or type(exc).__name__
    secret = _password()
    if secret:
        from urllib.parse import quote

        # Both forms: as typed, and percent-encoded as it sits in the libpq URI.
        error = error.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return {"error": error, "error_type": scratch.error_type, "transient": bool(scratch.transient)}


def _password() -> str | None:
    """The connection's password, to scrub it from messages (never logged)."""
    try:
        return Connection.get(CONN_ID).password or None
    except Exception:  # noqa: BLE001 - no connection, nothing to scrub
        return None


def _webhook_url() -> str | None:
    try:
        url = Variable.get(WEBHOOK_VARIABLE, default=None)
    except Exception:
        log.warning("could not read the Airflow Variable %s", WEBHOOK_VARIABLE, exc_info=True)
        url = None
    return url or os.environ.get(WEBHOOK_ENV) or None


def post_alert(payload: Mapping[str, Any], *, level: int = logging.ERROR) -> bool:
    """Log ``payload`` and POST it as JSON to the alert webhook, if one is set; never raises."""
    try:
        body = json.dumps(payload, default=str)
        log.log(level, "fastclv alert: %s", body)
        url = _webhook_url()
        if not url:
            log.info("no alert webhook configured (Variable %s or %s)", WEBHOOK_VARIABLE, WEBHOOK_ENV)
            return False
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            log.warning("alert webhook must be an http(s) URL, not %s://", parts.scheme)
            return False
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
            url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310
            status = response.status
        # Only the host: a Slack-style webhook URL holds its token in the path.
        log.info("alert posted to %s (HTTP %s)", parts.hostname, status)
        return True
    except Exception as exc:  # noqa: BLE001 - alerting must never fail the task or the callback
        log.warning("could not post the alert: %s: %s", type(exc).__name__, exc)
        return False


def _alert_fields(context: Context, task_id: str) -> dict[str, Any]:
    """dag, task, as_of, run_id (Airflow's) and log_url of the current task."""
    ti = context["ti"]
    run = ti.xcom_pull(task_ids="begin") or {}
    as_of = run.get("as_of")
    if as_of is None:
        try:
            as_of = _as_of(context).isoformat()
        except Exception:  # noqa: BLE001 - an invalid as_of param must not stop the alert
            as_of = None
    return {
        "dag": ti.dag_id,
        "task": task_id,
        "as_of": as_of,
        "run_id": ti.run_id,
        "fastclv_run_id": run.get("run_id"),
        "log_url": ti.log_url,
    }


def alert_on_failure(context: Context) -> None:
    """on_failure_callback: post {dag, task, as_of, run_id, error, log_url} to the webhook."""
    try:
        exc = context.get("exception")
        ti = context["ti"]
        if isinstance(exc, RunFailed):
            log.info("not alerting for %s: the failed stage already sent its alert", ti.task_id)
            return
        recorded = ti.xcom_pull(task_ids=ti.task_id, key="error") or {}
        error = recorded.get("error") or (f"{type(exc).__name__}: {exc}" if exc else "unknown error")
        fields = _alert_fields(context, ti.task_id)
        text = (
            f"fastclv {fields['dag']}: run for as-of {fields['as_of']} failed in task "
            f"{fields['task']}: {error} (log: {fields['log_url']})"
        )
        post_alert({"text": text, "level": "error", **fields, "error": error})
    except Exception:
        log.exception("the failure alert could not be built")


def _check_reject_rates(context: Context, files: Mapping[str, Mapping[str, Any]], threshold: float) -> None:
    """SLA-style check: warn (log + webhook) when a file's rejected/read exceeds ``threshold``."""
    rates = {
        name: round(int(c["rejected"]) / int(c["read"]), 6) for name, c in files.items() if int(c["read"]) > 0
    }
    over = {name: rate for name, rate in rates.items() if rate > threshold}
    if not over:
        return
    shown = ", ".join(f"{name} {rate:.2%}" for name, rate in over.items())
    warning = f"reject rate above {threshold:.2%}: {shown}"
    log.warning("extract: %s (the run continues)", warning)
    fields = _alert_fields(context, "extract")
    text = f"fastclv {fields['dag']}: as-of {fields['as_of']}: {warning} (log: {fields['log_url']})"
    post_alert(
        {
            "text": text,
            "level": "warning",
            **fields,
            "warning": warning,
            "reject_rates": rates,
            "threshold": threshold,
        },
        level=logging.WARNING,
    )


def _describe_files(files: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{name} {c['read']} read, {c['valid']} valid, {c['rejected']} rejected, "
        f"{c['duplicates_dropped']} duplicates, {c['after_as_of']} after as-of"
        for name, c in files.items()
    )


# -- the tasks --------------------------------------------------------------------------------


@task
def begin() -> dict[str, Any]:
    """Resolve the run's configuration, prepare the run folder, record 'running'."""
    from fastclv import pipeline

    context = get_current_context()
    with _stage_errors(context):
        run = _resolve_run(context)
        summary = pipeline.begin(_settings(run))
    run.update(run_id=summary.run_id, started_at=summary.started_at.isoformat())
    log.info(
        "begin: fastclv run %s for as-of %s (Airflow run %s): input %s, staging %s, schema %s",
        summary.run_id,
        run["as_of"],
        context["run_id"],
        summary.input,
        run["staging"],
        run["pg_schema"],
    )
    return run


@task
def extract(run: dict[str, Any]) -> dict[str, Any]:
    """Validate and stage the three CSV files; warn on high reject rates."""
    from fastclv import pipeline

    context = get_current_context()
    with _stage_errors(context):
        t0 = time.perf_counter()
        files = pipeline.extract_stage(_settings(run))
        seconds = round(time.perf_counter() - t0, 3)
    log.info("extract: %s in %.2f s", _describe_files(files), seconds)
    _check_reject_rates(context, files, run["reject_rate_threshold"])
    return {"files": files, "seconds": seconds}


@task
def transform(run: dict[str, Any]) -> dict[str, Any]:
    """Compute customer_ltv (history + predictive model) into the run folder."""
    from fastclv import pipeline

    context = get_current_context()
    with _stage_errors(context):
        t0 = time.perf_counter()
        result = pipeline.transform_stage(_settings(run))
        seconds = round(time.perf_counter() - t0, 3)
    converged = result.model.get("converged")
    log.info(
        "transform: %d customers, model %s in %.2f s (model %.2f s)",
        result.output_rows,
        "converged" if converged else f"not converged ({result.model.get('reason')})",
        seconds,
        result.model_seconds,
    )
    return {
        "output_rows": result.output_rows,
        "model": result.model,
        "model_seconds": result.model_seconds,
        "clv_total": result.clv_total,
        "seconds": seconds,
    }


@task
def verify(run: dict[str, Any], extracted: dict[str, Any], transformed: dict[str, Any]) -> dict[str, Any]:
    """Cross-check the staged output (DuckDB); a mismatch fails the run before loading."""
    from fastclv import pipeline

    context = get_current_context()
    with _stage_errors(context):
        t0 = time.perf_counter()
        result = pipeline.verify_stage(_settings(run), extracted["files"], transformed["model"])
        seconds = round(time.perf_counter() - t0, 3)
    checks = result.get("checks")
    outcome = f"{len(checks)} checks agree" if isinstance(checks, dict) else result.get("status")
    log.info("verify: %s in %.2f s", outcome, seconds)
    return {"verify": result, "seconds": seconds}


@task
def load(run: dict[str, Any]) -> dict[str, Any]:
    """Swap the as-of date's partition of customer_ltv in, atomically."""
    from fastclv import pipeline

    context = get_current_context()
    with _stage_errors(context):
        t0 = time.perf_counter()
        result = pipeline.load_stage(_settings(run))
        seconds = round(time.perf_counter() - t0, 3)
    log.info(
        "load: %s rows into %s partition %s in %.2f s",
        result["rows"],
        result["table"],
        result["partition"],
        seconds,
    )
    return {"load": result, "seconds": seconds}


@task(trigger_rule=TriggerRule.ALL_DONE)
def finish() -> dict[str, Any]:
    """Write summary.json and the ledger row whatever happened; fail if a stage failed."""
    context = get_current_context()
    summary, settings, failed_task = _rebuild_summary(context)
    from fastclv import pipeline

    pipeline.finish(settings, summary)
    if failed_task is None:
        log.info(
            "finish: run %s for %s succeeded: %s rows loaded; total %.2f s",
            summary.run_id,
            summary.as_of,
            summary.output_rows,
            summary.timings["total"],
        )
        return summary.as_dict()
    log.error(
        "finish: run %s for %s failed in task %s: %s; total %.2f s",
        summary.run_id,
        summary.as_of,
        failed_task,
        summary.error,
        summary.timings["total"],
    )
    raise RunFailed(f"the run for as-of {summary.as_of} failed in task {failed_task}: {summary.error}")


def _rebuild_summary(context: Context) -> tuple[RunSummary, Settings, str | None]:
    """The RunSummary from the stages' XComs and states, the Settings, the failed stage."""
    from fastclv import pipeline
    from fastclv.errors import FastclvError
    from fastclv.secrets import redact as redact_uri

    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=list(STAGES))
    state_of = states.get(ti.run_id, {})
    pulled = {name: ti.xcom_pull(task_ids=name) or {} for name in STAGES}
    run = pulled["begin"] or _resolve_run(context)  # begin failed: resolve again
    try:
        settings = _settings(run)
    except FastclvError as exc:  # no connection: still write summary.json
        log.error("the run cannot be recorded in the ledger: %s", exc)
        settings = _settings(run, with_db=False)
    as_of = settings.as_of
    started = run.get("started_at")
    summary = pipeline.RunSummary(
        run_id=run.get("run_id") or pipeline.new_run_id(as_of),
        as_of=as_of,
        input=redact_uri(settings.input),
        staging=settings.staging,
        started_at=datetime.fromisoformat(started) if started else datetime.now(UTC),
        files=pulled["extract"].get("files", {}),
        output_rows=pulled["transform"].get("output_rows"),
        model=pulled["transform"].get("model"),
        verify=pulled["verify"].get("verify"),
        load=pulled["load"].get("load"),
        settings=pipeline.model_settings(settings),
        clv_total=pulled["transform"].get("clv_total"),
    )
    settings = settings.replace(run_id=summary.run_id)
    for name in STAGES[1:]:
        if "seconds" in pulled[name]:
            summary.timings[name] = pulled[name]["seconds"]
    if "model_seconds" in pulled["transform"]:
        summary.timings["model"] = pulled["transform"]["model_seconds"]
    summary.timings["total"] = round((datetime.now(UTC) - summary.started_at).total_seconds(), 3)
    failed_task = next((name for name in STAGES if state_of.get(name) != "success"), None)
    if failed_task is None:
        summary.status = "succeeded"
        return summary, settings, None
    recorded = ti.xcom_pull(task_ids=failed_task, key="error") or {}
    summary.status = "failed"
    summary.error = recorded.get("error") or (
        f"task {failed_task} ended {state_of.get(failed_task) or 'without a state'} and recorded no "
        "error (killed, timed out or out of memory?). Hint: read that task's log."
    )
    summary.error_type = recorded.get("error_type")
    summary.transient = recorded.get("transient")
    return summary, settings, failed_task


# -- the DAG ----------------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _start_date() -> datetime:
    raw = os.environ.get("FASTCLV_START_DATE", "").strip()
    day = date.fromisoformat(raw) if raw else date(2025, 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dag(
    dag_id=DAG_ID,
    description="CSV exports -> validated Parquet -> customer_ltv in PostgreSQL (fastclv)",
    # Due at 00:05 UTC every day; the run due on D+1 covers D (see as_of_for_run).
    schedule=CronTriggerTimetable("5 0 * * *", timezone="UTC"),
    start_date=_start_date(),
    # Parse-time switches: the scheduler needs them before any task runs.
    catchup=_env_flag("FASTCLV_CATCHUP"),
    # Runs of one as-of date share a staging folder: never run two at once.
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": alert_on_failure,
    },
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="As-of date YYYY-MM-DD; empty: the UTC day before the run's logical date.",
        ),
        "input": Param(None, type=["null", "string"], description="CSV folder or URI; empty: FASTCLV_INPUT."),
        "staging": Param(None, type=["null", "string"], description="Staging root; empty: FASTCLV_STAGING."),
        "schema": Param(
            None,
            type=["null", "string"],
            description="PostgreSQL schema; empty: FASTCLV_PG_SCHEMA or public.",
        ),
        "horizon_months": Param(
            None, type=["null", "integer"], minimum=1, description="Empty: FASTCLV_HORIZON_MONTHS or 12."
        ),
        "margin": Param(
            None, type=["null", "number"], minimum=0, description="Empty: FASTCLV_MARGIN or 1.0."
        ),
        "discount_rate": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description="Monthly; empty: FASTCLV_DISCOUNT_RATE or 0.01.",
        ),
        "reject_rate_threshold": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description=f"Warn above this rejected/read per file; empty: {THRESHOLD_ENV} or 0.05.",
        ),
    },
    tags=["fastclv"],
    doc_md=__doc__,
)
def customer_ltv() -> None:
    """The fastclv pipeline for one as-of date."""

    # XComArgs stand for the tasks' return values, resolved when the downstream task runs.
    run: Any = begin()
    extracted: Any = extract(run)
    transformed: Any = transform(run)
    verified = verify(run, extracted, transformed)
    loaded = load(run)
    chain(run, extracted, transformed, verified, loaded, finish())


customer_ltv()
