"""One frozen, typed Settings object: environment variables, CLI flags and Airflow all fill it.

Nothing here reads the environment at import time; :meth:`Settings.from_env` does it on
demand. The PostgreSQL URI may hold a password: :func:`redact_uri` is the only form that
may reach a log line, an exception message or the run ledger.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastclv.errors import ConfigError

#: Plain SQL identifiers only: we quote them anyway, but refuse anything surprising.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: libpq URI query parameters that may carry a secret.
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})

ENV_PREFIX = "FASTCLV_"
#: The staging root when none is given (``--staging``, ``FASTCLV_STAGING``): one default for
#: every command.
DEFAULT_STAGING = "staging"


def yesterday_utc() -> date:
    """The default as-of date: yesterday in UTC (contract section 3)."""
    return datetime.now(UTC).date() - timedelta(days=1)


@dataclass(frozen=True)
class UriParts:
    """A libpq URI cut as libpq reads it, forgiving of unencoded ``#``, ``?`` and ``/``."""

    scheme: str
    #: ``user`` or ``user:password`` (None when the URI names no user).
    userinfo: str | None
    #: ``host[:port][,host2...]`` (may be empty: a local socket).
    hosts: str
    #: The path after the hosts (None when the URI has none).
    database: str | None
    query: str


def split_uri(uri: str) -> UriParts | None:
    """Cut ``scheme://[userinfo@]hosts[/database][?query]``; None when ``uri`` is no URI.

    The user part ends at the *last* ``@``, so a password holding ``#``, ``?`` or ``/`` (which
    a URI parser would take for a fragment, query or path) never leaks into the host part.

    >>> split_uri("postgresql://app:Le#k?@db:5432/crm?sslmode=require").userinfo
    'app:Le#k?'
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return None
    userinfo, at, rest = rest.rpartition("@")
    cut = re.fullmatch(r"([^/?]*)(?:/([^?]*))?(?:\?(.*))?", rest, re.DOTALL)
    assert cut is not None  # every string matches
    hosts, database, query = cut.group(1), cut.group(2), cut.group(3) or ""
    return UriParts(scheme, userinfo if at else None, hosts, database, query)


#: ``password = value`` in a libpq keyword/value string (quoted or not) or a URI query.
_CONNINFO_SECRET = re.compile(
    r"\b(" + "|".join(sorted(_SECRET_PARAMS)) + r")(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)"
)


def redact_uri(uri: str | None) -> str:
    """Return ``uri`` with any password replaced by ``***`` (safe to log).

    Takes libpq URIs and keyword/value strings alike.

    >>> redact_uri("postgresql://app:s3cret@db:5432/crm?sslmode=require")
    'postgresql://app:***@db:5432/crm?sslmode=require'
    >>> redact_uri("postgresql://app:Leak#6x@host/db")
    'postgresql://app:***@host/db'
    >>> redact_uri("host=db user=app password='a b'")
    'host=db user=app password=***'
    """
    if not uri:
        return ""
    parts = split_uri(uri)
    if parts is None:
        return _CONNINFO_SECRET.sub(r"\1\2***", uri)
    user = ""
    if parts.userinfo is not None:
        name, colon, _password = parts.userinfo.partition(":")
        user = f"{name}:***@" if colon else f"{name}@"
    rest = parts.hosts + (f"/{parts.database}" if parts.database is not None else "")
    query = _CONNINFO_SECRET.sub(r"\1\2***", parts.query)
    return f"{parts.scheme}://{user}{rest}" + (f"?{query}" if query else "")


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise a ConfigError."""
    if not IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a plain SQL identifier. "
            "Hint: use letters, digits and underscores, starting with a letter or underscore."
        )
    return name


@dataclass(frozen=True)
class Settings:
    """Everything one run needs. Build it with :meth:`from_env` or directly."""

    #: Folder or object-storage prefix (s3://, gs://, az://, file://) holding the three CSVs.
    input: str
    #: Staging root: each run writes under ``<staging>/<as_of>/``.
    staging: str
    #: The run's as-of date D (contract section 3); default yesterday in UTC.
    as_of: date = field(default_factory=yesterday_utc)
    #: CSV delimiter (one character).
    delimiter: str = ","
    #: libpq URI of the target PostgreSQL; None means no load target configured.
    pg_uri: str | None = field(default=None, repr=False)
    #: PostgreSQL schema holding the tables.
    pg_schema: str = "public"
    #: Output table name.
    table: str = "customer_ltv"
    #: Run ledger table name.
    runs_table: str = "customer_ltv_runs"
    #: Seconds the partition swap waits for locks before failing (retryable).
    lock_timeout_s: float = 10.0
    #: Load into PostgreSQL (False: stage only).
    load: bool = True
    #: Run the DuckDB cross-check before loading.
    verify: bool = True
    #: Predictive horizon in months of 30 days.
    horizon_months: int = 12
    #: Profit margin applied to expected spend.
    margin: float = 1.0
    #: Monthly discount rate.
    discount_rate: float = 0.01
    #: L2 penalty on the model parameters (0 = plain maximum likelihood).
    penalizer: float = 0.0
    #: Options for object storage, with object_store's key names (``aws_endpoint_url``,
    #: ``aws_region``, ``azure_storage_account_name``, ...); may hold secrets. In
    #: :meth:`from_env` given ones are merged over FASTCLV_STORAGE_OPTIONS (a JSON object);
    #: both win over the standard variables (AWS_ENDPOINT_URL, ...; see :mod:`fastclv.storage`).
    storage_options: Mapping[str, str] | None = field(default=None, repr=False)
    #: StatsD server ``host[:port]`` (default port 8125) for run metrics; None: log line only.
    statsd_host: str | None = None
    #: Prefix of every StatsD metric name (``fastclv.rows.read.orders``).
    statsd_prefix: str = "fastclv"
    #: Memory DuckDB may use in the cross-check before it spills to the run's work folder
    #: (a DuckDB size such as "1GB"; empty = DuckDB's default, 80% of the machine's memory).
    #: Off by default: the cross-check is not the run's peak (extract and transform are), and
    #: at 1M customers "1GB" costs it a third more time (8 -> 11 s) for 1.6 -> 1.2 GB.
    duckdb_memory_limit: str = ""
    #: Identifier of this run (default: generated by the pipeline).
    run_id: str | None = None

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ConfigError(
                f"delimiter {self.delimiter!r} must be one character other than a quote or a "
                "line break. Hint: pass --delimiter ';' for semicolon files."
            )
        for what, name in (
            ("schema", self.pg_schema),
            ("table", self.table),
            ("runs table", self.runs_table),
        ):
            check_identifier(name, what)
        if self.horizon_months < 1:
            raise ConfigError(f"horizon_months must be >= 1, got {self.horizon_months}.")
        if not 0 <= self.discount_rate < 10:
            raise ConfigError(f"discount_rate must be in [0, 10), got {self.discount_rate}.")
        if self.margin < 0 or self.penalizer < 0:
            raise ConfigError("margin and penalizer must be >= 0.")
        if self.lock_timeout_s <= 0:
            raise ConfigError(f"lock_timeout_s must be > 0, got {self.lock_timeout_s}.")
        if self.pg_uri and split_uri(self.pg_uri) is None and "=" not in self.pg_uri:
            raise ConfigError(
                f"the PostgreSQL URI {redact_uri(self.pg_uri)!r} is neither a libpq URI nor key=value "
                "settings. Hint: write postgresql://USER:PASSWORD@HOST:5432/DATABASE "
                "(or host=HOST port=5432 dbname=DATABASE user=USER)."
            )
        if self.statsd_host:
            parse_statsd_address(self.statsd_host)
        if not _METRIC_PREFIX.match(self.statsd_prefix):
            raise ConfigError(
                f"statsd_prefix {self.statsd_prefix!r} is not a metric name. "
                "Hint: use letters, digits, '_', '-' and '.', e.g. fastclv or prod.fastclv."
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"Settings({shown}, pg_uri={redact_uri(self.pg_uri)!r})"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``FASTCLV_*`` environment variables, then ``overrides`` (non-None win).

        Variables: FASTCLV_INPUT, FASTCLV_STAGING, FASTCLV_AS_OF, FASTCLV_DELIMITER,
        FASTCLV_PG_URI, FASTCLV_PG_SCHEMA, FASTCLV_TABLE, FASTCLV_RUNS_TABLE,
        FASTCLV_LOCK_TIMEOUT_S, FASTCLV_HORIZON_MONTHS, FASTCLV_MARGIN,
        FASTCLV_DISCOUNT_RATE, FASTCLV_PENALIZER, FASTCLV_STORAGE_OPTIONS (a JSON object;
        ``storage_options`` given here are merged over it), FASTCLV_STATSD_HOST,
        FASTCLV_STATSD_PREFIX, FASTCLV_DUCKDB_MEMORY_LIMIT.
        """
        source = os.environ if env is None else env
        converters: dict[str, Any] = {
            "input": str,
            "staging": str,
            "as_of": parse_date,
            "delimiter": str,
            "pg_uri": str,
            "pg_schema": str,
            "table": str,
            "runs_table": str,
            "lock_timeout_s": float,
            "horizon_months": int,
            "margin": float,
            "discount_rate": float,
            "penalizer": float,
            "storage_options": parse_storage_options,
            "statsd_host": str,
            "statsd_prefix": str,
            "duckdb_memory_limit": str,
        }
        values: dict[str, Any] = {}
        for name, convert in converters.items():
            raw = source.get(ENV_PREFIX + name.upper())
            if raw not in (None, ""):
                try:
                    values[name] = convert(raw)
                except (ValueError, ConfigError) as exc:
                    raise ConfigError(
                        f"environment variable {ENV_PREFIX + name.upper()} is invalid: {exc}"
                    ) from None
        given = overrides.get("storage_options")
        if given is not None and values.get("storage_options"):
            overrides = {**overrides, "storage_options": {**values["storage_options"], **given}}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "input" not in values:
            raise ConfigError(f"no input location given. Hint: pass --input or set {ENV_PREFIX}INPUT.")
        values.setdefault("staging", DEFAULT_STAGING)
        return cls(**values)


def parse_date(text: str) -> date:
    """Parse ``YYYY-MM-DD`` strictly, with a clear error."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise ConfigError(f"date {text!r} is not YYYY-MM-DD.")
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"date {text!r} is not a calendar date ({exc}).") from None


#: A StatsD metric prefix: dotted words.
_METRIC_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
STATSD_DEFAULT_PORT = 8125


def parse_statsd_address(text: str) -> tuple[str, int]:
    """``host[:port]`` -> (host, port); the port defaults to 8125.

    >>> parse_statsd_address("statsd.internal:9125")
    ('statsd.internal', 9125)
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or "]" in port:  # no port (or an IPv6 address without one)
        host, port = text.strip(), ""
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"StatsD address {text!r} has no host. Hint: use host or host:port.")
    if not port:
        return host, STATSD_DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"StatsD address {text!r} has an invalid port. Hint: use host or host:port.")
    return host, int(port)


def parse_storage_options(text: str | Mapping[str, Any]) -> dict[str, str]:
    """Storage options from a JSON object (FASTCLV_STORAGE_OPTIONS) or a mapping: str -> str.

    >>> parse_storage_options('{"aws_region": "eu-west-1", "aws_allow_http": true}')
    {'aws_region': 'eu-west-1', 'aws_allow_http': 'true'}
    """
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError(
                'storage options are not valid JSON. Hint: use an object, e.g. {"aws_region": "eu-west-1"}.'
            ) from None  # the text may hold a secret: not quoted
    else:
        data = text
    if not isinstance(data, Mapping):
        raise ConfigError('storage options must be a JSON object, e.g. {"aws_region": "eu-west-1"}.')
    options: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping | list) or value is None:
            raise ConfigError(f"storage option {key!r} must be a string, number or boolean.")
        options[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return options


def parse_option_pairs(pairs: list[str] | None) -> dict[str, str] | None:
    """``KEY=VALUE`` strings (the CLI's repeatable --storage-option) -> a dict (None if none)."""
    if not pairs:
        return None
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(  # the text is not quoted: it may hold a secret
                "a --storage-option is not KEY=VALUE. Hint: e.g. --storage-option aws_region=eu-west-1."
            )
        options[key.strip()] = value
    return options


def storage_options_from_env(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """FASTCLV_STORAGE_OPTIONS as a dict (None when unset)."""
    raw = (os.environ if env is None else env).get(ENV_PREFIX + "STORAGE_OPTIONS")
    if not raw:
        return None
    try:
        return parse_storage_options(raw)
    except ConfigError as exc:
        raise ConfigError(f"environment variable {ENV_PREFIX}STORAGE_OPTIONS is invalid: {exc}") from None
