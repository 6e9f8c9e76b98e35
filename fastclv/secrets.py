"""Secrets never reach a log line, an exception message, the run summary or the ledger.

:func:`redact` is the one redaction function: every message or value that may hold a
secret goes through it before it is shown or stored. It hides

* the password of any URI in the text (``scheme://user:password@host``, cut the way libpq cuts
  it, so a password holding ``#``, ``?``, ``/`` or ``@`` is hidden whole) and any secret
  keyword (``password=``, ``sslpassword=``, ``passfile=``, ``sslkey=``) of a libpq URI query
  or keyword/value string, quoted or not;
* and, anywhere in the text, the known secrets of the run: the PostgreSQL password as typed,
  percent-encoded, unquoted or escaped, and the values of secret storage options, given
  explicitly or through the standard variables (``AWS_SECRET_ACCESS_KEY``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote

if TYPE_CHECKING:
    from fastclv.config import Settings

#: What a hidden secret becomes.
MASK = "***"
#: libpq URI query parameters (and keywords) that may carry a secret.
SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})
#: A storage option (or variable) whose name contains one of these words may hold a secret.
_SECRET_WORDS = ("secret", "key", "token", "password", "sas", "credential", "signature")
#: The standard variables of the object stores (object_store and obstore read them).
STORE_VARIABLE_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
#: Storage secrets shorter than this are not searched for (they would hide common words).
_MIN_STORAGE_SECRET = 4


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
_KEYWORD_SECRET = re.compile(
    r"\b(" + "|".join(sorted(SECRET_PARAMS)) + r")(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)"
)
#: A URI inside a longer text: up to the next white space or quote.
_URI_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


def redact(
    text: str | None,
    settings: Settings | None = None,
    *,
    pg_uri: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> str:
    """``text`` with every secret hidden (safe to log, raise or store).

    The known secrets are those of ``settings`` (its ``pg_uri`` and ``storage_options``), or
    of ``pg_uri`` and ``storage_options`` given alone; the standard storage variables are
    always searched.

    >>> redact("postgresql://app:s3cret@db:5432/crm?sslmode=require")
    'postgresql://app:***@db:5432/crm?sslmode=require'
    >>> redact("postgresql://app:Leak#6x@host/db")
    'postgresql://app:***@host/db'
    >>> redact("host=db user=app password='a b'")
    'host=db user=app password=***'
    >>> redact("login failed for s3cr3t", pg_uri="host=db password=s3cr3t")
    'login failed for ***'
    """
    if not text:
        return ""
    if settings is not None:
        pg_uri = pg_uri or settings.pg_uri
        storage_options = settings.storage_options if storage_options is None else storage_options
    if pg_uri and pg_uri != text:  # the whole URI first, as one piece
        text = text.replace(pg_uri, redact(pg_uri))
    if split_uri(text) is not None:  # the text is one URI: cut it whole (a password may hold spaces)
        shown = _mask_uri(text)
    else:
        shown = _KEYWORD_SECRET.sub(rf"\1\2{MASK}", _URI_IN_TEXT.sub(lambda m: _mask_uri(m[0]), text))
    # Longest first, and after the masking above: a secret made of '*' would survive "***".
    for secret in sorted({*_pg_secrets(pg_uri), *storage_secrets(storage_options)}, key=len, reverse=True):
        shown = shown.replace(secret, "<hidden>" if secret in MASK else MASK)
    return shown


def _mask_uri(uri: str) -> str:
    parts = split_uri(uri)
    assert parts is not None
    user = ""
    if parts.userinfo is not None:
        name, colon, _password = parts.userinfo.partition(":")
        user = f"{name}:{MASK}@" if colon else f"{name}@"
    rest = parts.hosts + (f"/{parts.database}" if parts.database is not None else "")
    query = _KEYWORD_SECRET.sub(rf"\1\2{MASK}", parts.query)
    return f"{parts.scheme}://{user}{rest}" + (f"?{query}" if query else "")


def _pg_secrets(pg_uri: str | None) -> set[str]:
    """Every form in which the password (or a secret parameter) of ``pg_uri`` could be echoed.

    Generous on purpose: hiding a harmless substring costs nothing, a leak does.
    """
    if not pg_uri:
        return set()
    found: list[str] = []
    parts = split_uri(pg_uri)
    if parts is not None:
        if parts.userinfo and ":" in parts.userinfo:  # up to the last '@', as libpq reads it
            found.append(parts.userinfo.partition(":")[2])
        found += [v for k, v in parse_qsl(parts.query) if k in ("password", "sslpassword")]
    # The same again by patterns, in case a client cut the text differently: the userinfo up
    # to the first '@', ?password=... in a URI, password=... in a keyword/value string.
    found += re.findall(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:([^@]*)@", pg_uri)
    found += re.findall(r"[?&]s?s?l?password=([^&#]*)", pg_uri)
    found += re.findall(r"(?:^|\s)(?:ssl)?password\s*=\s*'((?:[^'\\]|\\.)*)'", pg_uri)
    found += re.findall(r"(?:^|\s)(?:ssl)?password\s*=\s*([^'\s]\S*)", pg_uri)
    found += [unquote(s) for s in found] + [re.sub(r"\\(.)", r"\1", s) for s in found]
    found += [quote(s, safe="") for s in found]  # as it sits in a URI built from it
    return {s for s in found if s}


def is_secret_key(key: str) -> bool:
    """Whether a storage option or variable named ``key`` may hold a secret.

    >>> is_secret_key("aws_secret_access_key"), is_secret_key("aws_access_key_id")
    (True, False)
    """
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(("_id", "_name"))


def storage_secrets(
    storage_options: Mapping[str, str] | None, env: Mapping[str, str] | None = None
) -> set[str]:
    """Every storage option value (explicit or from the standard variables) that may be a secret."""
    source = os.environ if env is None else env
    found = [str(v) for k, v in (storage_options or {}).items() if is_secret_key(k)]
    found += [
        value
        for name, value in source.items()
        if name.startswith(STORE_VARIABLE_PREFIXES) and is_secret_key(name) and value
    ]
    return {v for v in found if len(v) >= _MIN_STORAGE_SECRET}
