"""A throwaway local PostgreSQL cluster for trying fastclv and for the test suite.

The cluster lives in one folder (``data_dir``) and is driven by the server binaries already
installed on the machine (``initdb``, ``pg_ctl``). It is meant to be thrown away:

* it listens on ``127.0.0.1`` only (no Unix socket), on a free port chosen at first start
  and stored in ``<data_dir>/fastclv.conf`` so restarts reuse it;
* authentication is ``trust`` for the ``postgres`` role: anyone who can open a TCP
  connection on this machine can log in, so never keep real data here;
* durability is traded for speed (``fsync = off``, ``synchronous_commit = off``): a power
  cut can corrupt the cluster.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` system user (``runuser -u postgres --``) and the data folder is chowned to it.

>>> pg = start_local_postgres(Path("/var/tmp/fastclv-pg"))  # doctest: +SKIP
>>> pg.uri  # doctest: +SKIP
'postgresql://postgres@127.0.0.1:54321/fastclv'
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fastclv.errors import ConfigError, TerminalError
from fastclv.files import atomic_write

logger = logging.getLogger("fastclv.localpg")

#: The database created in every local cluster.
DATABASE = "fastclv"
#: The superuser role created by initdb (trust authentication).
SUPERUSER = "postgres"
#: The system user that owns and runs the cluster when we are root.
SYSTEM_USER = "postgres"
#: Our settings file inside the data folder (included from postgresql.conf).
CONF_NAME = "fastclv.conf"
LOG_NAME = "postgresql.log"
_START_TIMEOUT_S = 60
_INSTALL_HINT = (
    "Hint: install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql), or point fastclv at an existing server with FASTCLV_PG_URI."
)


class LocalPostgresError(TerminalError):
    """A PostgreSQL server command (initdb, pg_ctl) failed for the local cluster."""


@dataclass(frozen=True)
class LocalPostgres:
    """A running local cluster: where it lives and how to connect to it."""

    data_dir: Path
    port: int
    #: libpq URI of the ``fastclv`` database (no password: trust authentication).
    uri: str
    #: The server log (read it when the server misbehaves).
    log_file: Path

    def stop_command(self) -> str:
        """A shell command that stops this cluster, ready to paste into a terminal."""
        pg_ctl = _pg_ctl_for_display()
        args = [pg_ctl, "stop", "-D", str(self.data_dir), "-m", "fast"]
        if _is_root():
            args = ["runuser", "-u", SYSTEM_USER, "--", *args]
        return shlex.join(args)


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian install.

    Raises:
        ConfigError: when no PostgreSQL server binaries are installed.
    """
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl) so
        # the folder also holds postgres and the other server binaries of the same version.
        for folder in (Path(on_path).resolve().parent, Path(on_path).parent):
            if _has_server_bins(folder):
                return folder
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_server_bins(p)]
    if candidates:
        return max(candidates, key=_version_key)
    raise ConfigError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under "
        f"/usr/lib/postgresql/*/bin. {_INSTALL_HINT}"
    )


def start_local_postgres(data_dir: Path, *, port: int | None = None) -> LocalPostgres:
    """Start (creating it if needed) the local cluster in ``data_dir`` and return how to reach it.

    Idempotent: an already running cluster is reused. Creates the ``fastclv`` database.

    Args:
        data_dir: the cluster folder; created (and initialised) when missing or empty.
        port: TCP port on 127.0.0.1; default: the stored port, or a free one at first start.
    """
    data_dir = Path(data_dir).absolute()
    bin_dir = find_pg_bin()
    if not (data_dir / "PG_VERSION").exists():
        _init_cluster(bin_dir, data_dir)
    stored = _stored_port(data_dir)
    running = local_postgres_status(data_dir)
    if running is not None:
        if port is not None and port != running.port:
            raise ConfigError(
                f"the local PostgreSQL in {data_dir} is already running on port {running.port}, "
                f"not {port}. Hint: stop it first ({running.stop_command()}) or omit the port."
            )
        logger.info("reusing the local PostgreSQL on port %d (%s)", running.port, data_dir)
        _ensure_database(running.port)
        return running
    if port is None:
        port = stored if stored is not None else _free_port()
    if port != stored:
        _write_conf(data_dir, port)
    log_file = data_dir / LOG_NAME
    _run_pg(
        [
            str(bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(data_dir),
            "-l",
            str(log_file),
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
        ],
        what=f"starting the local PostgreSQL in {data_dir} on port {port}",
        hint=f"read the server log {log_file}; if the port is taken, pass another port.",
        log_file=log_file,
    )
    logger.info("started the local PostgreSQL on 127.0.0.1:%d (%s)", port, data_dir)
    _ensure_database(port)
    return _describe(data_dir, port)


def stop_local_postgres(data_dir: Path) -> None:
    """Stop the local cluster in ``data_dir`` (fast shutdown); a no-op when it is not running."""
    data_dir = Path(data_dir).absolute()
    if local_postgres_status(data_dir) is None:
        return
    _run_pg(
        [str(find_pg_bin() / "pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w"],
        what=f"stopping the local PostgreSQL in {data_dir}",
        hint=f"read the server log {data_dir / LOG_NAME}.",
    )
    logger.info("stopped the local PostgreSQL in %s", data_dir)


def local_postgres_status(data_dir: Path) -> LocalPostgres | None:
    """The running cluster in ``data_dir``, or None when it is not initialised or not running."""
    data_dir = Path(data_dir).absolute()
    if not (data_dir / "PG_VERSION").exists():
        return None
    port = _stored_port(data_dir)
    if port is None:
        return None
    result = subprocess.run(
        _as_owner([str(find_pg_bin() / "pg_ctl"), "status", "-D", str(data_dir)]),
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    # pg_ctl status: 0 running, 3 not running, 4 no accessible data folder.
    if result.returncode != 0:
        return None
    return _describe(data_dir, port)


# -- helpers -------------------------------------------------------------------------------


def _describe(data_dir: Path, port: int) -> LocalPostgres:
    return LocalPostgres(
        data_dir=data_dir,
        port=port,
        uri=f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}",
        log_file=data_dir / LOG_NAME,
    )


def _has_server_bins(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_ctl_for_display() -> str:
    try:
        return str(find_pg_bin() / "pg_ctl")
    except ConfigError:
        return "pg_ctl"


def _as_owner(args: list[str]) -> list[str]:
    """Run ``args`` as the cluster owner: the postgres system user when we are root."""
    return ["runuser", "-u", SYSTEM_USER, "--", *args] if _is_root() else args


def _run_pg(args: list[str], *, what: str, hint: str, log_file: Path | None = None) -> None:
    """Run a server command; a non-zero exit becomes a LocalPostgresError with the output tail."""
    try:
        result = subprocess.run(
            _as_owner(args), capture_output=True, text=True, cwd="/", check=False, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalPostgresError(f"{what} failed: {exc}. Hint: {hint}") from None
    if result.returncode != 0:
        tail = _tail(result.stderr or result.stdout)
        if log_file is not None and log_file.exists():
            tail += "\nserver log:\n" + _tail(log_file.read_text(errors="replace"))
        raise LocalPostgresError(f"{what} failed (exit code {result.returncode}):\n{tail}\nHint: {hint}")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _init_cluster(bin_dir: Path, data_dir: Path) -> None:
    """Run initdb into ``data_dir`` (missing or empty), owned by the cluster user."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(
            f"{data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION). "
            "Hint: pass an empty or missing folder."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if _is_root():
        try:
            owner = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ConfigError(
                f"running as root, but there is no {SYSTEM_USER!r} system user to run the "
                f"server as. {_INSTALL_HINT}"
            ) from None
        os.chown(data_dir, owner.pw_uid, owner.pw_gid)
        _check_traversable(data_dir)
    _run_pg(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: skip the final fsync of every file
        ],
        what=f"initialising a PostgreSQL cluster in {data_dir}",
        hint="check that the folder is writable by the postgres user.",
    )
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# fastclv throwaway settings\ninclude_if_exists = '{CONF_NAME}'\n")


def _check_traversable(data_dir: Path) -> None:
    """Fail early (clear message) when the postgres user cannot reach ``data_dir``."""
    probe = subprocess.run(
        _as_owner(["test", "-w", str(data_dir), "-a", "-x", str(data_dir)]),
        capture_output=True,
        cwd="/",
        check=False,
    )
    if probe.returncode == 0:
        return
    blocked = next(
        (p for p in reversed(data_dir.parents) if not p.stat().st_mode & stat.S_IXOTH),
        data_dir,
    )
    raise ConfigError(
        f"the {SYSTEM_USER} user cannot reach {data_dir}: {blocked} is not traversable by "
        f"other users. Hint: chmod o+x {blocked}, or pick a data folder under /var/tmp."
    )


def _write_conf(data_dir: Path, port: int) -> None:
    """Write the cluster's fastclv settings (whole or not at all: a restart reads them back)."""
    with atomic_write(data_dir / CONF_NAME) as conf:
        conf.write_text(
            "# Written by fastclv.localpg: a throwaway cluster, never for real data.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "unix_socket_directories = ''  # TCP on 127.0.0.1 only\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n"
            "fsync = off  # durability traded for speed\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
        )
        if _is_root():
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(conf, owner.pw_uid, owner.pw_gid)
        conf.chmod(0o600)


def _stored_port(data_dir: Path) -> int | None:
    conf = data_dir / CONF_NAME
    if not conf.exists():
        return None
    ports = re.findall(r"^\s*port\s*=\s*(\d+)", conf.read_text(), flags=re.MULTILINE)
    return int(ports[-1]) if ports else None


def _free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _ensure_database(port: int) -> None:
    """Create the ``fastclv`` database unless it exists (over ADBC, no client binaries needed)."""
    import adbc_driver_postgresql.dbapi as pg

    admin_uri = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
    try:
        with pg.connect(admin_uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = $1", parameters=(DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    except pg.Error as exc:
        if getattr(exc, "sqlstate", None) == "42P04":  # duplicate_database: a concurrent start
            return
        raise LocalPostgresError(
            f"creating the {DATABASE!r} database on 127.0.0.1:{port} failed: {exc}. "
            "Hint: read the server log in the data folder."
        ) from None
