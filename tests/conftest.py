"""Shared fixtures: a real PostgreSQL for the whole session, a fresh schema per test.

Set ``FASTCLV_TEST_PG_URI`` to run against an existing server; otherwise a throwaway
cluster is started with :mod:`fastclv.localpg` and removed at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fastclv import localpg


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[localpg.LocalPostgres | None]:
    """The throwaway cluster the session started, or None when FASTCLV_TEST_PG_URI is set."""
    if os.environ.get("FASTCLV_TEST_PG_URI"):
        yield None
        return
    # Not pytest's tmp_path: /tmp/pytest-of-root is mode 700, so the postgres system user
    # (which runs the server when we are root) could not reach a data folder inside it.
    root = Path(tempfile.mkdtemp(prefix="fastclv-test-pg-"))
    root.chmod(0o711)  # traversable by postgres; initdb creates and owns root/data
    server = localpg.start_local_postgres(root / "data")
    try:
        yield server
    finally:
        localpg.stop_local_postgres(server.data_dir)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_uri(local_postgres: localpg.LocalPostgres | None) -> str:
    """libpq URI of the test database (superuser: tests create roles and schemas)."""
    return local_postgres.uri if local_postgres else os.environ["FASTCLV_TEST_PG_URI"]


@pytest.fixture
def pg_schema(pg_uri: str) -> Iterator[str]:
    """A schema name unique to this test (not created: the code under test creates it).

    Dropped with CASCADE afterwards, so tests never see each other's tables.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
