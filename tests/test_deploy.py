"""Deployment files and managed PostgreSQL: what can be checked without a Docker engine.

The Dockerfile is read line by line and docker-compose.yml with PyYAML; every file they copy
or mount must exist, names must agree with what the code reads, and the images' Python must
satisfy requires-python. TLS settings reach libpq: against the throwaway server (no TLS),
``sslmode=require`` fails clearly, naming the host and never the password.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as pg
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from fastclv import db, ddl
from fastclv.config import Settings
from fastclv.errors import LoadError, TransientError

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DAG_FILE = ROOT / "dags" / "customer_ltv.py"


# -- the Dockerfile, read line by line ------------------------------------------------------------


@dataclass
class Stage:
    name: str
    image: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def _dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, ARGs substituted in FROM."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [
        line
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            alias = rest.split()[-1] if " AS " in rest.upper() else str(len(stages))
            stages.append(Stage(alias, image))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _copy_sources(stage: Stage) -> list[str]:
    sources = []
    for keyword, rest in stage.instructions:
        if keyword in ("COPY", "ADD"):
            parts = rest.split()
            if any(p.startswith("--from") for p in parts):
                continue
            sources += [p for p in parts if not p.startswith("--")][:-1]
    return sources


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path.rstrip("/"), p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_dockerfile_copies_only_files_of_the_repo_that_the_context_keeps() -> None:
    _, stages = _dockerfile()
    sources = [src for stage in stages for src in _copy_sources(stage)]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repo"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    # What the package build needs: the project file, the lock, the readme it names, the code.
    assert {"pyproject.toml", "uv.lock", PYPROJECT["project"]["readme"], "fastclv"} <= {
        s.rstrip("/").removeprefix("./") for s in sources
    }


def test_images_install_the_locked_dependencies_and_run_as_non_root() -> None:
    args, stages = _dockerfile()
    by_name = {s.name: s for s in stages}
    builder_runs = " ".join(rest for kw, rest in by_name["builder"].instructions if kw == "RUN")
    assert "uv sync --frozen --no-dev" in builder_runs
    assert "uv export --frozen --no-dev" in builder_runs
    assert args["UV_VERSION"] in (ROOT / ".ci" / "run").read_text()  # the uv that CI uses
    airflow_pin = next(d for d in PYPROJECT["dependency-groups"]["dev"] if d.startswith("apache-airflow=="))
    assert airflow_pin == f"apache-airflow=={args['AIRFLOW_VERSION']}"  # uv.lock was resolved with it
    for name in ("runtime", "airflow"):
        user = by_name[name].last("USER")
        assert user is not None, f"stage {name} runs as root"
        assert user.split(":")[0] not in ("root", "0"), f"stage {name} runs as root"
    assert stages[-1].name == "runtime"  # `docker build .` gives the command line


def test_entrypoint_is_the_fastclv_console_script() -> None:
    _, stages = _dockerfile()
    entrypoint = ast.literal_eval(stages[-1].last("ENTRYPOINT") or "[]")
    assert entrypoint == ["fastclv"]
    target = PYPROJECT["project"]["scripts"]["fastclv"]
    module, _, function = target.partition(":")
    imported = __import__(module, fromlist=[function])
    assert callable(getattr(imported, function))


def test_base_images_python_satisfies_requires_python() -> None:
    _, stages = _dockerfile()
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    versions = []
    for stage in stages:
        found = re.search(r"(?:^python:|-python)(\d+\.\d+)", stage.image)
        assert found, f"stage {stage.name}: cannot tell the Python of {stage.image}"
        versions.append(found.group(1))
        assert requires.contains(found.group(1) + ".0"), (
            f"{stage.image}: Python {found.group(1)} vs {requires}"
        )
    assert len(set(versions)) == 1, "the builder's virtualenv must match the runtime's Python"


# -- docker-compose.yml ---------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _default(value: str) -> str:
    """``${NAME:-default}`` -> default (compose's own substitution with nothing set)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def _code_text() -> str:
    files = [*sorted((ROOT / "fastclv").rglob("*.py")), DAG_FILE]
    return "\n".join(f.read_text() for f in files)


def _dag_constants() -> dict[str, str]:
    tree = ast.parse(DAG_FILE.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def test_compose_services_reference_each_other_consistently() -> None:
    compose = _compose()
    services = compose["services"]
    _, stages = _dockerfile()
    stage_names = {s.name for s in stages}
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"]).is_dir()
            assert build.get("target") in stage_names, f"{name}: no Dockerfile stage {build.get('target')}"
        for config in service.get("configs") or []:
            assert config["source"] in compose.get("configs", {}), f"{name}: unknown config {config}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    # Every URI names a service as its host and a database/user the init script creates.
    initdb = compose["configs"]["initdb"]["content"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key.startswith("AIRFLOW_CONN_") or key in (
                "FASTCLV_PG_URI",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            ):
                uri = urlsplit(_default(value))
                assert uri.hostname in services, f"{name}: {key} points at {uri.hostname}, not a service"
                if uri.scheme.startswith("postgres"):  # not the storage connection (aws://...@minio)
                    assert f"CREATE DATABASE {uri.path.lstrip('/')} OWNER {uri.username}" in initdb, key


def test_compose_mounts_exist_and_long_running_services_have_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repo"
        if "profiles" not in service:  # started by `docker compose up`
            test = service.get("healthcheck", {}).get("test")
            assert test, f"service {name} has no healthcheck"
    airflow = services["airflow"]
    env = airflow["environment"]
    targets = {v.split(":")[1]: v.split(":")[0] for v in airflow["volumes"]}
    assert targets[env["AIRFLOW__CORE__DAGS_FOLDER"]] == "./dags"
    assert (ROOT / "dags" / "customer_ltv.py").is_file()
    assert _default(env["FASTCLV_INPUT"]) in targets  # the sample data, by default
    for name in ("customers.csv", "orders.csv", "order_items.csv"):
        assert (ROOT / targets[_default(env["FASTCLV_INPUT"])] / name).is_file()


def test_compose_environment_names_are_the_ones_the_code_reads() -> None:
    code = _code_text()
    known = set(re.findall(r"\bFASTCLV_[A-Z0-9_]+\b", code))
    known |= {Settings.env_name(f.name) for f in fields(Settings)}  # one variable per field, by its name
    constants = _dag_constants()
    connections = {value for name, value in constants.items() if name.endswith("CONN_ID")}
    seen = set()
    for name, service in _compose()["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("FASTCLV_"):
                assert key in known, f"{name}: {key} is read nowhere in fastclv/ or dags/"
                seen.add(key)
            if key.startswith("AIRFLOW_CONN_"):
                assert key.removeprefix("AIRFLOW_CONN_").lower() in connections, f"{name}: unknown {key}"
    assert {"FASTCLV_INPUT", "FASTCLV_STAGING"} <= seen  # the DAG's two required settings
    assert "AIRFLOW_CONN_FASTCLV_POSTGRES" in _compose()["services"]["airflow"]["environment"]


# -- managed PostgreSQL: TLS settings reach libpq ------------------------------------------------


def _with(uri: str, *, password: str, query: str) -> str:
    scheme, rest = uri.split("://", 1)
    userinfo, host = rest.split("@", 1)
    sep = "&" if "?" in host else "?"
    return f"{scheme}://{userinfo.split(':')[0]}:{password}@{host}{sep}{query}"


def test_sslmode_require_without_tls_fails_clearly_naming_the_host(pg_uri: str, pg_schema: str) -> None:
    password = "tls-test-password-8c1f"  # never used to log in: the TLS check fails first
    uri = _with(pg_uri, password=password, query="sslmode=require")
    host = urlsplit(pg_uri).hostname
    with pytest.raises(LoadError, match="server does not support SSL") as caught:
        ddl.create_tables(uri, schema=pg_schema)
    message = str(caught.value)
    assert not isinstance(caught.value, TransientError)  # a TLS mismatch does not pass by itself
    assert f"at {host}:" in message
    assert "sslmode" in message  # the hint names the settings to check
    assert password not in message


def test_tls_parameters_pass_through_to_libpq(pg_uri: str) -> None:
    # libpq reads sslrootcert/sslcert/sslkey itself: with sslmode=disable they are accepted as is.
    uri = _with(
        pg_uri,
        password="x" * 12,
        query="sslmode=disable&sslrootcert=/no/ca.pem&sslcert=/no/c.pem&sslkey=/no/k",
    )
    connection = pg.connect(uri)
    connection.close()
    tree = ast.parse(DAG_FILE.read_text())
    kept = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LIBPQ_PARAMS"
    )
    names = {n.value for n in ast.walk(kept) if isinstance(n, ast.Constant)}
    assert {"sslmode", "sslrootcert", "sslcert", "sslkey"} <= names  # the DAG's connection keeps them


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        ('could not translate host name "db" to address: Temporary failure in name resolution', True),
        ("SSL connection has been closed unexpectedly", True),
        ('could not translate host name "dbb" to address: Name or service not known', False),
        ('root certificate file "/certs/ca.pem" does not exist', False),
    ],
)
def test_connection_failures_are_transient_only_when_a_retry_can_help(text: str, transient: bool) -> None:
    error = pg.OperationalError(f"IO: [libpq] {text}", status_code=adbc_driver_manager.AdbcStatusCode.IO)
    mapped = db.map_error(error, "connecting to PostgreSQL", "postgresql://app:hunter2-secret@db/crm")
    assert isinstance(mapped, TransientError) is transient
    if "certificate" in text:
        assert "sslrootcert" in str(mapped)
