"""Settings: every field from its FASTCLV_* variable, documented once, secrets kept out of sight."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest

import fastclv
from fastclv.config import Settings
from fastclv.errors import ConfigError

#: A value other than the default for every field, as its variable holds it, and as Settings does.
NOT_DEFAULT: dict[str, tuple[str, object]] = {
    "input": ("s3://bucket/in/", "s3://bucket/in/"),
    "staging": ("/tmp/elsewhere", "/tmp/elsewhere"),
    "as_of": ("2024-02-29", date(2024, 2, 29)),
    "delimiter": (";", ";"),
    "pg_uri": ("postgresql://app:pw@db/crm", "postgresql://app:pw@db/crm"),
    "pg_schema": ("analytics", "analytics"),
    "table": ("ltv", "ltv"),
    "runs_table": ("ltv_runs", "ltv_runs"),
    "lock_timeout_s": ("2.5", 2.5),
    "load": ("false", False),
    "verify": ("no", False),
    "horizon_months": ("6", 6),
    "margin": ("0.3", 0.3),
    "discount_rate": ("0.02", 0.02),
    "penalizer": ("0.1", 0.1),
    "holdout_days": ("30", 30),
    "reject_rate_threshold": ("0.2", 0.2),
    "bucket_mib": ("64", 64),
    "customer_buckets": ("8", 8),
    "shards": ("4", 4),
    "storage_options": ('{"aws_region": "eu-west-1"}', {"aws_region": "eu-west-1"}),
    "statsd_host": ("statsd:9125", "statsd:9125"),
    "statsd_prefix": ("prod.fastclv", "prod.fastclv"),
    "duckdb_memory_limit": ("512MB", "512MB"),
    "run_id": ("run-7", "run-7"),
}


def test_every_field_is_read_from_its_variable_and_documented() -> None:
    assert set(NOT_DEFAULT) == {f.name for f in fields(Settings)}  # a new field needs a row above
    env = {Settings.env_name(name): raw for name, (raw, _) in NOT_DEFAULT.items()}
    settings = Settings.from_env(env)
    assert {name: getattr(settings, name) for name in NOT_DEFAULT} == {
        name: value for name, (_, value) in NOT_DEFAULT.items()
    }
    for f in fields(Settings):
        assert getattr(settings, f.name) != f.default, f.name
        assert Settings.doc(f.name).endswith("."), f.name


def test_public_settings_hold_no_secret_and_give_the_settings_back() -> None:
    env = {Settings.env_name(name): raw for name, (raw, _) in NOT_DEFAULT.items()}
    settings = Settings.from_env(env)
    public = json.loads(json.dumps(settings.public()))  # as XCom carries it
    assert set(public) == {f.name for f in fields(Settings)} - {"pg_uri", "storage_options"}
    assert "pw" not in json.dumps(public)
    secrets = {"pg_uri": settings.pg_uri, "storage_options": settings.storage_options}
    assert Settings.from_public(public, **secrets) == settings


def test_a_bad_variable_names_itself() -> None:
    with pytest.raises(ConfigError, match="FASTCLV_VERIFY is invalid"):
        Settings.from_env({"FASTCLV_INPUT": "in", "FASTCLV_VERIFY": "maybe"})
    with pytest.raises(ConfigError, match=r"reject_rate_threshold must be in \[0, 1\]"):
        Settings.from_env({"FASTCLV_INPUT": "in", "FASTCLV_REJECT_RATE_THRESHOLD": "1.5"})
    for bad in ("3", "-2", "2048"):
        with pytest.raises(ConfigError, match=f"customer_buckets must be 0 .* got {bad}"):
            Settings.from_env({"FASTCLV_INPUT": "in", "FASTCLV_CUSTOMER_BUCKETS": bad})


def test_the_public_api_imports_from_the_package_without_loading_polars() -> None:
    code = "import sys; from fastclv import Settings, FastclvError, redact; print('polars' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # a DAG file may import it at parse time
    for name in fastclv.__all__:
        assert getattr(fastclv, name) is not None
    from fastclv import FastclvError, RunSummary, run

    assert callable(run)
    assert RunSummary.__module__ == "fastclv.pipeline"
    assert issubclass(FastclvError, Exception)


def test_the_readme_table_lists_every_setting_as_settings_documents_it() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(FASTCLV_\w+)` \|.*\| ([^|]+) \|$", readme, re.MULTILINE)
    assert [name for name, *_ in rows] == [f.name for f in fields(Settings)]
    for name, variable, meaning in rows:
        assert (variable, meaning.strip()) == (Settings.env_name(name), Settings.doc(name))
