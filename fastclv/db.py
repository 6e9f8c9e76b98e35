"""PostgreSQL connections and their errors: connect, close, and turn driver errors into fastclv errors.

Every database call of the load (:mod:`fastclv.load`), the run ledger (:mod:`fastclv.ledger`) and
the DDL (:mod:`fastclv.ddl`) goes through here, so that a failure is always a
:class:`~fastclv.errors.TransientError` (retry: connection trouble, lock timeout, deadlock) or a
:class:`~fastclv.errors.LoadError`, says what failed where with a hint, and never holds a password.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import adbc_driver_postgresql.dbapi as pg

from fastclv.errors import FastclvError, LoadError, TransientError
from fastclv.secrets import redact, split_uri

logger = logging.getLogger("fastclv.db")

#: SQLSTATEs worth a retry: lock timeout, serialization failure, deadlock, shutdowns,
#: too many connections. Class 08 (connection exceptions) is transient as a whole.
_TRANSIENT_SQLSTATES = frozenset({"55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300"})
#: libpq reports connection failures without a SQLSTATE: recognise them by their text.
_TRANSIENT_TEXT = (
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "no connection to the server",
    "connection timed out",
    "timeout expired",
    "connection reset",
    "broken pipe",
    "too many clients",
    "remaining connection slots",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "could not receive data from server",
    "could not send data to server",
    # A managed server failing over or a network blip: DNS and TLS sessions drop too.
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "ssl connection has been closed unexpectedly",
    "ssl syscall error",
)
#: libpq TLS messages (not transient: the TLS settings or the server's TLS setup are wrong).
_TLS_TEXT = ("ssl", "certificate", "tls")


def quote(name: str) -> str:
    """Quote an identifier that :func:`~fastclv.config.check_identifier` accepted (it holds no quotes)."""
    return f'"{name}"'


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``, both quoted by :func:`quote`."""
    return f"{quote(schema)}.{quote(name)}"


def connect(pg_uri: str, where: str) -> pg.Connection:
    """Open an ADBC connection (autocommit off); failures become fastclv errors, scrubbed.

    TLS settings in the URI (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ...) go
    to libpq as they are.
    """
    try:
        return pg.connect(pg_uri)
    except pg.Error as exc:
        server = _server(pg_uri)
        at = f" at {server}" if server else ""
        failure = map_error(exc, f"connecting to PostgreSQL{at} for {where}", pg_uri)
    # Raised outside the except block so the driver error (which may echo the URI) is not
    # even kept as __context__.
    raise failure


def close(conn: pg.Connection) -> None:
    """Close ``conn``; a failure to close is only logged (the session is gone either way)."""
    try:
        conn.close()
    except pg.Error:
        logger.debug("closing the PostgreSQL connection failed", exc_info=False)


def guard(pg_uri: str, where: str, doing: str, action: Any) -> Any:
    """Run ``action()``, turning driver errors into scrubbed fastclv errors."""
    try:
        return action()
    except pg.Error as exc:
        failure = map_error(exc, f"{doing} {where}", pg_uri)
    raise failure


def map_error(exc: pg.Error, context: str, pg_uri: str, hint: str | None = None) -> FastclvError:
    """A TransientError or LoadError saying what failed where, without any password."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    text = driver_text(exc)
    lowered = text.lower()
    transient = (
        sqlstate in _TRANSIENT_SQLSTATES
        or sqlstate.startswith("08")
        or any(marker in lowered for marker in _TRANSIENT_TEXT)
    )
    if hint is None:
        hint = _hint(sqlstate, lowered, transient)
    stop = "" if text.endswith(("?", "!")) else "."
    message = redact(f"{context} failed: {text}{stop} Hint: {hint}", pg_uri=pg_uri)
    return TransientError(message) if transient else LoadError(message)


def driver_text(exc: pg.Error) -> str:
    """The useful part of an ADBC error: no echoed query, on one line."""
    text = str(exc.args[0]) if exc.args else str(exc)
    text = text.split("\n\nQuery was:", 1)[0]
    text = re.sub(r"\s*\n\s*", "; ", text.strip())
    text = re.sub(r"[;\s]*\.\s*SQLSTATE", ". SQLSTATE", text).rstrip(".; ")
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate and sqlstate not in text:
        text += f" (SQLSTATE {sqlstate})"
    return text


_HINTS = {
    "55P03": "another session holds a conflicting lock (a long query or another load); retry later "
    "or raise lock_timeout_s.",
    "40001": "a concurrent transaction conflicted; retrying the run is safe.",
    "40P01": "a concurrent transaction conflicted; retrying the run is safe.",
    "28P01": "check the user name and password in the PostgreSQL URI (FASTCLV_PG_URI).",
    "28000": "check the user name and password in the PostgreSQL URI (FASTCLV_PG_URI).",
    "42501": "grant the loading role CREATE on the schema (or on the database, for a new schema) "
    "and ownership of the tables.",
    "3D000": "check the database name in the PostgreSQL URI (FASTCLV_PG_URI).",
}


def _server(pg_uri: str) -> str:
    """``host:port/database`` of a libpq URI or key=value string, without user or password."""
    parts = split_uri(pg_uri)
    if parts is not None:
        params = dict(parse_qsl(parts.query))
        host = parts.hosts or params.get("host", "")
        database = parts.database or params.get("dbname", "")
    else:
        params = dict(re.findall(r"(\w+)\s*=\s*'?([^'\s]*)'?", pg_uri))
        host = params.get("host", "") + (f":{params['port']}" if params.get("port") else "")
        database = params.get("dbname", "")
    if not host:
        return ""
    return unquote(host) + (f"/{unquote(database)}" if database else "")


_TLS_HINT = (
    "check the TLS settings in the PostgreSQL URI or connection (sslmode, sslrootcert, sslcert, "
    "sslkey): the server must offer TLS for sslmode=require and above, and the certificate files "
    "must exist and be readable."
)


def _hint(sqlstate: str, lowered: str, transient: bool) -> str:
    if sqlstate in _HINTS:
        return _HINTS[sqlstate]
    rules = (
        (
            transient,
            "check that PostgreSQL is running and reachable, then retry (the run is safe to repeat).",
        ),
        ("authentication" in lowered or "password" in lowered, _HINTS["28P01"]),
        (any(marker in lowered for marker in _TLS_TEXT), _TLS_HINT),
        (
            "could not translate host name" in lowered,
            "check the host name in the PostgreSQL URI (FASTCLV_PG_URI).",
        ),
        (
            "does not exist" in lowered,
            "check the database, schema and role names in the PostgreSQL URI (FASTCLV_PG_URI).",
        ),
    )
    return next(
        (hint for matched, hint in rules if matched),
        "read the PostgreSQL message above; the target table was left unchanged.",
    )
