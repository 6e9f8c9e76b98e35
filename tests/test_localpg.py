"""fastclv.localpg: a throwaway cluster of its own (not the session's), started for real."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fastclv import localpg
from fastclv.errors import ConfigError, FastclvError


@pytest.fixture(scope="module")
def cluster_dir() -> Iterator[Path]:
    """A fresh folder for this module's cluster, reachable by the postgres user."""
    root = Path(tempfile.mkdtemp(prefix="fastclv-localpg-"))
    root.chmod(0o711)
    yield root / "data"
    localpg.stop_local_postgres(root / "data")
    shutil.rmtree(root, ignore_errors=True)


def test_find_pg_bin_has_server_binaries() -> None:
    bin_dir = localpg.find_pg_bin()
    assert (bin_dir / "initdb").exists()
    assert (bin_dir / "pg_ctl").exists()


def test_start_reuse_status_stop_restart(cluster_dir: Path) -> None:
    assert localpg.local_postgres_status(cluster_dir) is None  # not even initialised

    server = localpg.start_local_postgres(cluster_dir)
    assert server.uri == f"postgresql://postgres@127.0.0.1:{server.port}/fastclv"
    assert server.log_file.exists()
    with psycopg.connect(server.uri) as conn:
        row = conn.execute("SELECT current_database(), inet_server_addr()::text").fetchone()
    assert row == ("fastclv", "127.0.0.1/32")

    # Idempotent: a running cluster is reused, not restarted.
    with psycopg.connect(server.uri) as conn:
        assert localpg.start_local_postgres(cluster_dir) == server
        assert conn.execute("SELECT 1").fetchone() == (1,)  # same server, connection alive
    assert localpg.local_postgres_status(cluster_dir) == server

    localpg.stop_local_postgres(cluster_dir)
    assert localpg.local_postgres_status(cluster_dir) is None
    localpg.stop_local_postgres(cluster_dir)  # stopping a stopped cluster is a no-op

    # A restart keeps the stored port, so URIs handed out earlier keep working.
    assert localpg.start_local_postgres(cluster_dir) == server


def test_stop_command_is_a_pasteable_shell_command(cluster_dir: Path) -> None:
    server = localpg.start_local_postgres(cluster_dir)
    command = server.stop_command()
    assert command.startswith("runuser -u postgres -- ")  # the suite runs as root
    assert f"pg_ctl stop -D {cluster_dir} -m fast" in command

    subprocess.run(command, shell=True, check=True, capture_output=True)
    assert localpg.local_postgres_status(cluster_dir) is None


def test_other_port_while_running_is_refused(cluster_dir: Path) -> None:
    server = localpg.start_local_postgres(cluster_dir)
    with pytest.raises(ConfigError, match=f"already running on port {server.port}"):
        localpg.start_local_postgres(cluster_dir, port=server.port + 1)


def test_busy_port_fails_with_the_server_log_tail(cluster_dir: Path) -> None:
    localpg.stop_local_postgres(cluster_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FastclvError) as caught:
            localpg.start_local_postgres(cluster_dir, port=port)
    message = str(caught.value)
    assert "could not bind" in message or "Address already in use" in message
    assert message.rstrip().endswith("if the port is taken, pass another port.")
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    # Another port works (and is stored for the next restarts).
    free = localpg.start_local_postgres(cluster_dir, port=localpg._free_port())
    assert localpg.start_local_postgres(cluster_dir).port == free.port


def test_non_empty_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a cluster")
    with pytest.raises(ConfigError, match="not empty and holds no PostgreSQL cluster"):
        localpg.start_local_postgres(tmp_path)
