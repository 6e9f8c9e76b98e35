"""One frozen, typed Settings object: CLI flags, ``FASTCLV_*`` variables and Airflow all fill it.

Every setting is a field of :class:`Settings`, documented once (its ``doc``); its variable is
``FASTCLV_`` + the field's name in capitals, read and converted by :meth:`Settings.from_env`
according to the field's type. Nothing here reads the environment at import time.

Two fields hold secrets (``pg_uri``, ``storage_options``): they are left out of the repr and of
:meth:`Settings.public` (what a scheduler passes between tasks), and
:func:`fastclv.secrets.redact` hides them in any text.

Why not pydantic-settings: measured here, importing it and declaring one settings class costs
about 0.5 s at every start of the command line (whose own imports take 0.2 s), plus five
runtime packages; what is needed (a variable per field, typed conversion, secrets kept out of
sight) takes a few lines on a dataclass.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args, get_origin, get_type_hints

from fastclv.errors import ConfigError
from fastclv.secrets import redact, split_uri

#: Plain SQL identifiers only: we quote them anyway, but refuse anything surprising.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

ENV_PREFIX = "FASTCLV_"
#: The staging root when none is given (``--staging``, ``FASTCLV_STAGING``): one default for
#: every command.
DEFAULT_STAGING = "staging"


def yesterday_utc() -> date:
    """The default as-of date: yesterday in UTC (contract section 3)."""
    return datetime.now(UTC).date() - timedelta(days=1)


def as_of_for_run(
    *,
    logical_date: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime,
    override: str | None = None,
) -> date:
    """The as-of date D of a scheduled run: the last whole UTC day before the end of its data.

    The end of a run's data is its data interval's end, else its logical date, else (a manual
    run without a logical date) the time it was queued for. With a cron trigger timetable the
    interval is the instant the run was due, so the run due at 2026-01-01 00:05 UTC covers
    2025-12-31 (contract section 3). ``override`` (an explicit date) wins.

    >>> as_of_for_run(logical_date=None, data_interval_end=None,
    ...               run_after=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    datetime.date(2025, 12, 31)
    """
    if override:
        return parse_date(override)
    end = data_interval_end or logical_date or run_after
    return end.astimezone(UTC).date() - timedelta(days=1)


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise a ConfigError."""
    if not IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a plain SQL identifier. "
            "Hint: use letters, digits and underscores, starting with a letter or underscore."
        )
    return name


def _doc(text: str, *, secret: bool = False) -> dict[str, Any]:
    """A field's metadata: its one documentation and whether it holds a secret."""
    return {"doc": text, "secret": secret}


@dataclass(frozen=True)
class Settings:
    """Everything one run needs. Build it with :meth:`from_env` or directly."""

    input: str = field(
        metadata=_doc("Folder or object-storage prefix (s3://, gs://, az://, file://) holding the CSVs.")
    )
    staging: str = field(
        metadata=_doc("Staging root: each run writes in its as-of date's folder (YYYY-MM-DD) in it.")
    )
    as_of: date = field(
        default_factory=yesterday_utc,
        metadata=_doc("The run's as-of date D, YYYY-MM-DD (default: yesterday, UTC; in Airflow: the run's)."),
    )
    delimiter: str = field(default=",", metadata=_doc("CSV delimiter (one character)."))
    pg_uri: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "libpq URI (or key=value string) of the target PostgreSQL; none: no load target "
            "(in Airflow: the connection fastclv_postgres).",
            secret=True,
        ),
    )
    pg_schema: str = field(default="public", metadata=_doc("PostgreSQL schema holding the tables."))
    table: str = field(default="customer_ltv", metadata=_doc("Output table name."))
    runs_table: str = field(default="customer_ltv_runs", metadata=_doc("Run ledger table name."))
    lock_timeout_s: float = field(
        default=10.0, metadata=_doc("Seconds the partition swap waits for locks before failing (retryable).")
    )
    load: bool = field(default=True, metadata=_doc("Load into PostgreSQL (false: stage only)."))
    verify: bool = field(default=True, metadata=_doc("Run the DuckDB cross-check before loading."))
    horizon_months: int = field(default=12, metadata=_doc("Predictive horizon in months of 30 days."))
    margin: float = field(default=1.0, metadata=_doc("Profit margin applied to expected spend."))
    discount_rate: float = field(default=0.01, metadata=_doc("Monthly discount rate."))
    penalizer: float = field(
        default=0.0, metadata=_doc("L2 penalty on the model parameters (0: plain maximum likelihood).")
    )
    holdout_days: int = field(
        default=90,
        metadata=_doc(
            "Days of the holdout backtest: the model is fitted again on the orders up to D minus this "
            "and compared with what the customers did after (0: off)."
        ),
    )
    bucket_mib: int = field(
        default=128,
        metadata=_doc(
            "Input MiB per key-hash bucket: orders and items are resolved, and their purchase days "
            "made, one bucket at a time, so a smaller value holds less memory (0: one bucket; at L "
            "the extract is then about a quarter faster and holds 2.6 GiB instead of 1)."
        ),
    )
    customer_buckets: int = field(
        default=0,
        metadata=_doc(
            "Key-hash buckets of the customers, a power of two (0: about a quarter of bucket_mib "
            "of customers.csv each). With several, each order bucket finds its customers by a "
            "lookup exchange with the customer buckets instead of reading every customer."
        ),
    )
    shards: int = field(
        default=1,
        metadata=_doc(
            "Shards of the sharded plan (1: not sharded). N: each input file is cut into N byte "
            "ranges and the customers into N parts; `fastclv run` runs the extract's and the "
            "transform's tasks in N worker processes, the Airflow DAG maps them over its workers, "
            "and the load copies with up to N connections. The output is the same."
        ),
    )
    reject_rate_threshold: float = field(
        default=0.05,
        metadata=_doc("Warn (log, and an alert in Airflow) when a file's rejected/read is above this."),
    )
    storage_options: Mapping[str, str] | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Object-storage options with object_store's key names (aws_endpoint_url, aws_region, "
            "azure_storage_account_name, ...), a JSON object; given ones are merged over "
            "FASTCLV_STORAGE_OPTIONS, and both win over the standard variables (AWS_ENDPOINT_URL, ...).",
            secret=True,
        ),
    )
    statsd_host: str | None = field(
        default=None, metadata=_doc("StatsD host[:port] (default port 8125) for run metrics; none: log only.")
    )
    statsd_prefix: str = field(
        default="fastclv", metadata=_doc("Prefix of every StatsD metric name (fastclv.rows.read.orders).")
    )
    # 900MB by default: with the extract by bucket and the history by part, the whole check was
    # the run's peak, and it grew with the input (1.73 GiB at 1M customers). At 1M customers
    # 1GB costs it 8 -> 11 s for 1.73 -> 1.17 GiB; 900MB costs no more time there and holds
    # 1.10 GiB alone. At 10M customers the process holds about 0.45 GiB beside DuckDB's
    # limit (its untracked memory and ours): 1GB peaked at 1.52 GiB in a whole run, 900MB
    # keeps it under 1.5 (its joins spill a little more: +14% on the check). 900MB runs out of
    # memory there unless the check drops its tables as it goes (benchmarks/ANALYSIS.md).
    duckdb_memory_limit: str = field(
        default="900MB",
        metadata=_doc(
            "Memory DuckDB may use in the cross-check before it spills to the run's work folder "
            "(a DuckDB size such as 900MB or 2GB; empty: DuckDB's default, 80% of the memory)."
        ),
    )
    run_id: str | None = field(default=None, metadata=_doc("Identifier of this run (default: generated)."))

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or not self.delimiter.isascii() or self.delimiter in '"\r\n':
            raise ConfigError(
                f"delimiter {self.delimiter!r} must be one ASCII character other than a quote or a "
                "line break. Hint: pass --delimiter ';' for semicolon files."
            )
        for what, name in (
            ("schema", self.pg_schema),
            ("table", self.table),
            ("runs table", self.runs_table),
        ):
            check_identifier(name, what)
        for ok, problem in (
            (self.horizon_months >= 1, f"horizon_months must be >= 1, got {self.horizon_months}."),
            (0 <= self.discount_rate < 10, f"discount_rate must be in [0, 10), got {self.discount_rate}."),
            (self.margin >= 0 and self.penalizer >= 0, "margin and penalizer must be >= 0."),
            (self.lock_timeout_s > 0, f"lock_timeout_s must be > 0, got {self.lock_timeout_s}."),
            (self.holdout_days >= 0, f"holdout_days must be >= 0 (0: no backtest), got {self.holdout_days}."),
            (
                self.as_of < date.max,
                f"as_of {self.as_of} is the last calendar date: a run as of D counts what happened "
                "before D+1 00:00 UTC, which does not exist. Hint: use a date up to 9999-12-30.",
            ),
            (
                self.holdout_days <= (self.as_of - date.min).days,
                f"holdout_days {self.holdout_days} reaches back before 0001-01-01 from as_of "
                f"{self.as_of}. Hint: a smaller --holdout-days, or 0 to turn the backtest off.",
            ),
            (self.bucket_mib >= 0, f"bucket_mib must be >= 0 (0: one bucket), got {self.bucket_mib}."),
            (
                0 <= self.customer_buckets <= 1024
                and not self.customer_buckets & (self.customer_buckets - 1),
                "customer_buckets must be 0 (by size) or a power of two up to 1024, "
                f"got {self.customer_buckets}.",
            ),
            (
                1 <= self.shards <= 1024,
                f"shards must be between 1 and 1024 (1: not sharded), got {self.shards}.",
            ),
            (
                0 <= self.reject_rate_threshold <= 1,
                f"reject_rate_threshold must be in [0, 1], got {self.reject_rate_threshold}.",
            ),
        ):
            if not ok:
                raise ConfigError(problem)
        if self.pg_uri and split_uri(self.pg_uri) is None and "=" not in self.pg_uri:
            raise ConfigError(
                f"the PostgreSQL URI {redact(self.pg_uri)!r} is neither a libpq URI nor key=value "
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
        return f"Settings({shown}, pg_uri={redact(self.pg_uri)!r})"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @staticmethod
    def doc(name: str) -> str:
        """The documentation of the field ``name`` (the one place it is written)."""
        return str(_FIELDS[name].metadata["doc"])

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable of the field ``name``: ``FASTCLV_`` + NAME."""
        return ENV_PREFIX + name.upper()

    @staticmethod
    def secret_fields() -> frozenset[str]:
        """The fields that may hold secrets (never logged, never passed between tasks)."""
        return frozenset(name for name, f in _FIELDS.items() if f.metadata["secret"])

    def public(self) -> dict[str, Any]:
        """Every field but the secret ones, JSON-ready (what a scheduler passes between tasks).

        >>> Settings(input="in", staging="s", as_of=date(2025, 12, 31), pg_uri="x=y").public()["as_of"]
        '2025-12-31'
        """
        secret = self.secret_fields()
        values = {name: getattr(self, name) for name in _FIELDS if name not in secret}
        return {name: v.isoformat() if isinstance(v, date) else v for name, v in values.items()}

    @classmethod
    def from_public(cls, data: Mapping[str, Any], **secrets: Any) -> Settings:
        """Settings again from :meth:`public`'s dict, plus the secret fields given here."""
        values = {**data, **secrets}
        if isinstance(values.get("as_of"), str):
            values["as_of"] = parse_date(values["as_of"])
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the ``FASTCLV_*`` variables, then ``overrides`` (the non-None ones win).

        Every field has its variable, ``FASTCLV_`` + its name in capitals (FASTCLV_INPUT,
        FASTCLV_PG_URI, FASTCLV_HORIZON_MONTHS, ...), converted by the field's type: numbers,
        ``YYYY-MM-DD`` dates, booleans (true/false, 1/0, yes/no, on/off) and, for
        FASTCLV_STORAGE_OPTIONS, a JSON object (``storage_options`` given here are merged over it).
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in _FIELDS:
            variable = cls.env_name(name)
            raw = source.get(variable)
            if raw not in (None, ""):
                try:
                    values[name] = _parser(name)(raw)
                except (ValueError, ConfigError) as exc:
                    raise ConfigError(f"environment variable {variable} is invalid: {exc}") from None
        given = overrides.get("storage_options")
        if given is not None and values.get("storage_options"):
            overrides = {**overrides, "storage_options": {**values["storage_options"], **given}}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "input" not in values:
            raise ConfigError(f"no input location given. Hint: pass --input or set {ENV_PREFIX}INPUT.")
        values.setdefault("staging", DEFAULT_STAGING)
        return cls(**values)


#: The fields of Settings by name.
_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(Settings)}


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off, any case) -> bool."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{text!r} is not a boolean. Hint: use true or false.")


@functools.cache
def _parser(name: str) -> Callable[[str], Any]:
    """How the variable of the field ``name`` is read, from the field's type."""
    hint = get_type_hints(Settings)[name]
    kinds = [a for a in get_args(hint) if a is not type(None)] or [hint]  # X | None -> X
    kind = get_origin(kinds[0]) or kinds[0]
    parsers: dict[Any, Callable[[str], Any]] = {
        str: str,
        int: int,
        float: float,
        bool: parse_bool,
        date: parse_date,
        Mapping: parse_storage_options,
    }
    return parsers[kind]


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
