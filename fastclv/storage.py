"""Locations: local folders or object-storage prefixes (s3://, gs://, az://, file://).

Object storage goes through obstore (the Python face of ``object_store``, the Rust client
Polars uses for its own reads), so one set of storage options, with ``object_store``'s key
names (``aws_endpoint_url``, ``aws_region``, ``google_service_account``,
``azure_storage_account_name``, ...), configures everything:

* Polars reads the staged Parquet with its own ``object_store`` client, given the same options;
* obstore streams the input CSVs to the native scanner, fetches the byte ranges of rejected
  records, moves whole files (publishing and fetching staged files, JSON, listings), and hands
  DuckDB and the loader the staged Parquet (DuckDB through obstore's fsspec adapter).

Both read the standard environment variables themselves (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...); explicit options win.
The only translation here: an option may be given without its store's prefix (``region``,
``endpoint_url``), and HTTP client options (``allow_http``, ``timeout``, ...; also as
``aws_allow_http``) are handed to the client rather than to the store. Error messages name the
location, never a secret (:func:`storage_error`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore.exceptions

from fastclv import files
from fastclv.errors import ConfigError, FastclvError, InputError, TerminalError, TransientError, printable
from fastclv.secrets import STORE_VARIABLE_PREFIXES, redact

log = logging.getLogger(__name__)

#: obstore's errors that are no OSError (a missing object is a FileNotFoundError, a denied one
#: a PermissionError); :func:`describe` classifies both kinds.
StoreError = obstore.exceptions.BaseError

S3_SCHEMES = ("s3://", "s3a://")
GCS_SCHEMES = ("gs://", "gcs://")
AZURE_SCHEMES = ("az://", "abfs://", "abfss://", "azure://")
REMOTE_SCHEMES = S3_SCHEMES + GCS_SCHEMES + AZURE_SCHEMES

#: The prefix of each store's option keys (and, upper-cased, of its environment variables).
_PREFIX = {"s3": "aws_", "gcs": "google_", "azure": "azure_"}
#: object_store's HTTP client options (obstore's ClientConfig): given apart from the store's.
_CLIENT_OPTIONS = frozenset(
    {
        "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
        "http1_only", "http2_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle", "http2_max_frame_size", "pool_idle_timeout",
        "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes",
        "timeout", "user_agent",
    }
)  # fmt: skip
#: Bytes obstore fetches per request when streaming an object (the scanner reads 8 MiB steps).
_READ_BUFFER = 16 * 1024 * 1024


# --------------------------------------------------------------------------- locations


def is_remote(location: str) -> bool:
    """True for an object-storage URI."""
    return location.startswith(REMOTE_SCHEMES)


def local_path(location: str) -> Path:
    """The local path of a plain path or ``file://`` URI."""
    return Path(location.removeprefix("file://"))


def join(location: str, *names: str) -> str:
    """Append path segments to a folder or a URI prefix."""
    if is_remote(location):
        return "/".join([location.rstrip("/"), *names])
    return str(local_path(location).joinpath(*names))


def basename(location: str) -> str:
    """The last segment of a folder or URI (``s3://b/staging/2025-12-31`` -> ``2025-12-31``)."""
    return location.rstrip("/").rsplit("/", 1)[-1] if is_remote(location) else local_path(location).name


def store_of(location: str) -> str:
    """``s3``, ``gcs``, ``azure`` or ``local``."""
    if location.startswith(S3_SCHEMES):
        return "s3"
    if location.startswith(GCS_SCHEMES):
        return "gcs"
    if location.startswith(AZURE_SCHEMES):
        return "azure"
    return "local"


def bucket_of(location: str) -> str:
    """The bucket (or container) of a URI: ``s3://b/k`` -> ``b``, ``abfss://c@acct.dfs...`` -> ``c``."""
    return urlsplit(location).netloc.split("@", 1)[0]


def split_options(
    location: str, storage_options: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The explicit options for ``location``'s store, as (store config, HTTP client options).

    Keys are lower-cased and given their store's prefix when they have none; client options
    lose it (object_store spells them ``allow_http``, ``timeout``, ...).

    >>> split_options("s3://b/k", {"Region": "eu-west-1", "aws_allow_http": "true"})
    ({'aws_region': 'eu-west-1'}, {'allow_http': 'true'})
    """
    prefix = _PREFIX.get(store_of(location))
    if prefix is None:
        return {}, {}
    config: dict[str, str] = {}
    client: dict[str, str] = {}
    for key, value in (storage_options or {}).items():
        name = key.lower()
        bare = name.removeprefix(prefix)
        if bare in _CLIENT_OPTIONS:
            client[bare] = str(value)
        elif name.startswith(tuple(_PREFIX.values())):
            if name.startswith(prefix):  # another store's options are for another location
                config[name] = str(value)
        else:
            config[prefix + name] = str(value)
    return config, client


def store(location: str, storage_options: Mapping[str, str] | None) -> tuple[Any, str]:
    """The obstore store of a URI's bucket, and the object's path in it.

    Stores are reused per bucket, options and environment (each keeps its connection pool).
    """
    parts = urlsplit(location)
    root = f"{parts.scheme}://{parts.netloc}"
    config, client = split_options(location, storage_options)
    variables = os.environ.items()
    environment = tuple(sorted((k, v) for k, v in variables if k.startswith(STORE_VARIABLE_PREFIXES)))
    try:
        found = _store(root, tuple(sorted(config.items())), tuple(sorted(client.items())), environment)
    except BaseException as exc:  # obstore panics (PanicException) on some unknown keys
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        raise ConfigError(
            f"cannot use the storage options for {redact(location)} "
            f"({redact(first, storage_options=storage_options)}). "
            "Hint: use object_store's option names (aws_endpoint_url, aws_region, "
            "google_service_account, azure_storage_account_name, ...)."
        ) from None
    return found, parts.path.lstrip("/")


@lru_cache(maxsize=32)
def _store(
    root: str,
    config: tuple[tuple[str, str], ...],
    client: tuple[tuple[str, str], ...],
    environment: tuple[tuple[str, str], ...],  # noqa: ARG001 - part of the cache key only
) -> Any:
    """One obstore store (``environment`` is only part of the cache key: obstore reads it)."""
    from obstore.store import from_url

    # Typed per store in obstore's stubs; these are checked by object_store when the store is built.
    options: dict[str, Any] = {"config": dict(config) or None, "client_options": dict(client) or None}
    return from_url(root, **options)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """What went wrong with one object-storage call, in words safe to show."""

    #: not_found, no_bucket, denied, unreachable or other.
    kind: str
    detail: str


_DENIED = re.compile(
    r"access.?denied|forbidden|\b403\b|invalidaccesskeyid|invalid_access_key_id|signaturedoesnotmatch|"
    r"signature_does_not_match|lacked the necessary privileges|unauthori[sz]ed|\b401\b|"
    r"expiredtoken|invalidtoken|authenticationfailed|permission",
    re.IGNORECASE,
)
_NO_BUCKET = re.compile(
    r"nosuchbucket|no_such_bucket|bucket does not exist|containernotfound|container_not_found",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(
    r"nosuchkey|no_such_key|not.?found|\b404\b|does not exist|blobnotfound", re.IGNORECASE
)
_UNREACHABLE = re.compile(
    r"connection refused|network_connection|could not resolve|dns error|timed? ?out|connection reset|"
    r"tcp connect|error sending request|broken pipe|unreachable|no route to host|service ?unavailable|"
    r"\b50[0234]\b|slow ?down|internalerror|internal_failure",
    re.IGNORECASE,
)


def describe(exc: BaseException, storage_options: Mapping[str, str] | None = None) -> Problem:
    """Classify an object-storage error (obstore, Polars or pyarrow) and say it in one short line."""
    text = str(exc)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    message = re.search(r"<Message>([^<]+)</Message>", text)
    if code:
        detail = code.group(1) + (f": {message.group(1)}" if message else "")
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = lines[0] if lines else type(exc).__name__
        detail = re.sub(r"<\?xml.*", "", detail)
        detail = re.sub(r"\s*\(path: [^)]*\)", "", detail).strip()  # Polars' own, not always the object's
        if len(lines) > 1 and any("refused" in line.lower() for line in lines[1:]):
            detail += " (connection refused)"
    detail = redact(detail[:400], storage_options=storage_options).rstrip(" .:")
    if _NO_BUCKET.search(text):
        kind = "no_bucket"
    elif isinstance(exc, PermissionError) or _DENIED.search(text):
        kind = "denied"
    elif isinstance(exc, FileNotFoundError):
        kind = "not_found"
    elif isinstance(exc, ConnectionError | TimeoutError) or _UNREACHABLE.search(text):
        kind = "unreachable"
    elif _NOT_FOUND.search(text):
        kind = "not_found"
    else:
        kind = "other"
    return Problem(kind, detail)


_CREDENTIALS_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the GCS/Azure equivalents, "
    "--storage-option, FASTCLV_STORAGE_OPTIONS, or the Airflow connection fastclv_storage) and that "
    "they may read and write this location."
)


def storage_error(
    exc: BaseException,
    location: str,
    doing: str,
    storage_options: Mapping[str, str] | None,
    *,
    missing: type[TerminalError] = InputError,
    missing_hint: str = "check the location.",
) -> FastclvError:
    """A fastclv error for a failed object-storage call on ``location`` (no secret in it).

    Missing object -> ``missing`` (InputError by default); absent bucket or denied access ->
    ConfigError; an unreachable store or any other failure -> TransientError (retry).
    """
    if isinstance(exc, FastclvError):
        return exc
    shown = printable(redact(location) if "@" in location else location)
    problem = describe(exc, storage_options)
    if problem.kind == "no_bucket":
        return ConfigError(
            f"{doing} {shown}: the bucket or container '{bucket_of(location)}' does not exist "
            f"({problem.detail}). Hint: check the bucket name, and the endpoint and region "
            "(AWS_ENDPOINT_URL, AWS_REGION)."
        )
    if problem.kind == "denied":
        return ConfigError(f"{doing} {shown}: access denied ({problem.detail}). Hint: {_CREDENTIALS_HINT}")
    if problem.kind == "not_found":
        return missing(f"{doing} {shown}: not found ({problem.detail}). Hint: {missing_hint}")
    if problem.kind == "unreachable":
        return TransientError(
            f"{doing} {shown}: the object store cannot be reached ({problem.detail}). "
            "Hint: check the endpoint (AWS_ENDPOINT_URL or the storage options) and the network; "
            "the run is safe to retry."
        )
    return TransientError(
        f"{doing} {shown} failed ({problem.detail}). Hint: retry; if it persists, check the location "
        "and the storage options."
    )


def input_error(
    file_name: str, source: str, exc: BaseException, storage_options: Mapping[str, str] | None
) -> FastclvError:
    """A clear error for an input object that cannot be read: what, where (no secret), a hint.

    A missing object, an absent bucket or refused credentials are InputErrors (terminal: the
    input location or its credentials are wrong); an unreachable store is a TransientError.
    """
    if isinstance(exc, FastclvError):
        return exc
    shown = printable(redact(source) if "@" in source else source)
    problem = describe(exc, storage_options)
    if problem.kind == "unreachable":
        return TransientError(
            f"{file_name}: cannot reach the object store for {shown} ({problem.detail}). "
            "Hint: check the endpoint (AWS_ENDPOINT_URL or the storage options) and the network; "
            "the run is safe to retry."
        )
    if problem.kind == "no_bucket":
        what = f"the bucket '{bucket_of(source)}' of {shown} does not exist"
        hint = "check the bucket name in the input location, and the endpoint and region."
    elif problem.kind == "denied":
        what = f"access to {shown} was denied"
        hint = _CREDENTIALS_HINT
    elif problem.kind == "not_found":
        what = f"file not found at {shown}"
        hint = "the input location must hold customers.csv, orders.csv and order_items.csv."
    else:
        what = f"cannot read {shown}"
        hint = "check the location and the credentials."
    return InputError(f"{file_name}: {what} ({problem.detail}). Hint: {hint}")


def _bucket_missing(location: str, storage_options: Mapping[str, str] | None) -> BaseException | None:
    """The error that says the bucket of ``location`` is absent, or None when it exists.

    A missing object and a missing bucket both come back as "not found"; a listing tells them
    apart (S3 answers NoSuchBucket).
    """
    import obstore

    found, _ = store(location, storage_options)
    try:
        next(iter(obstore.list(found, chunk_size=1)), None)
    except Exception as exc:  # noqa: BLE001 - classified by describe()
        return exc if describe(exc).kind == "no_bucket" else None
    return None


# --------------------------------------------------------------------------- reading


class Reader:
    """An object opened for reading: ``read(n) -> bytes`` streams it, ``read_at`` takes a range.

    Also a seekable binary file (``seek``, ``tell``, ``size``) for pyarrow's Parquet reader.
    """

    def __init__(self, handle: Any, found: Any, path: str) -> None:
        self._handle = handle
        self._store = found
        self._path = path
        self._closed = False

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all the rest when negative)."""
        return bytes(self._handle.read(None if size is None or size < 0 else size))

    def read_at(self, starts: Sequence[int], lengths: Sequence[int]) -> list[bytes]:
        """The bytes at each (start, length): one coalesced set of range requests."""
        import obstore

        if not starts:
            return []
        ends = [start + length for start, length in zip(starts, lengths, strict=True)]
        return [
            bytes(part)
            for part in obstore.get_ranges(self._store, self._path, starts=list(starts), ends=ends)
        ]

    # The rest is what pyarrow asks of a Python file object.

    def seek(self, offset: int, whence: int = 0) -> int:  # noqa: D102
        return int(self._handle.seek(offset, whence))

    def tell(self) -> int:  # noqa: D102
        return int(self._handle.tell())

    def seekable(self) -> bool:  # noqa: D102
        return True

    def readable(self) -> bool:  # noqa: D102
        return True

    @property
    def closed(self) -> bool:  # noqa: D102
        return self._closed

    @property
    def size(self) -> int:  # noqa: D102
        return int(self._handle.size)

    def close(self) -> None:  # noqa: D102
        if not self._closed:
            self._handle.close()
            self._closed = True

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_reader(location: str, storage_options: Mapping[str, str] | None) -> Reader:
    """Open an object for reading; a missing bucket is told from a missing object.

    Raises the store's own error (classify it with :func:`describe`, :func:`storage_error` or
    :func:`input_error`), or a ConfigError for unusable storage options.
    """
    import obstore

    found, path = store(location, storage_options)
    try:
        handle = obstore.open_reader(found, path, buffer_size=_READ_BUFFER)
    except FileNotFoundError:
        missing = _bucket_missing(location, storage_options)
        if missing is not None:
            raise missing from None
        raise
    return Reader(handle, found, path)


# --------------------------------------------------------------------------- whole objects


def exists(location: str, storage_options: Mapping[str, str] | None) -> bool:
    """Whether a file or object exists."""
    if not is_remote(location):
        return local_path(location).is_file()
    import obstore

    found, path = store(location, storage_options)
    try:
        obstore.head(found, path)
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "checking", storage_options) from None
    return True


def check_bucket(location: str, storage_options: Mapping[str, str] | None, doing: str) -> None:
    """Fail early and clearly when the bucket of ``location`` is absent or not accessible."""
    import obstore

    found, path = store(location, storage_options)
    try:
        next(iter(obstore.list(found, prefix=path, chunk_size=1)), None)
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, doing, storage_options) from None


def upload(source: Path, location: str, storage_options: Mapping[str, str] | None) -> None:
    """Copy a local file to an object, whole: readers see the old object or the new one.

    A single PUT or a multipart upload becomes visible only when complete, so no reader ever
    sees half a file; a failed multipart upload is aborted by obstore. The size is checked after.
    """
    import obstore

    found, path = store(location, storage_options)
    try:
        obstore.put(found, path, source)
        size = obstore.head(found, path)["size"]
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "publishing", storage_options) from None
    if size != source.stat().st_size:
        raise TransientError(
            f"publishing {location}: the object has {size} bytes, the local file "
            f"{source.stat().st_size}. Hint: retry the stage."
        )


def download(
    location: str, target: Path, storage_options: Mapping[str, str] | None, *, missing_hint: str
) -> None:
    """Copy an object to a local file (atomically: a temporary name, then a rename)."""
    import obstore

    found, path = store(location, storage_options)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with files.atomic_write(target) as tmp, tmp.open("wb") as out:
            for chunk in obstore.get(found, path).stream(min_chunk_size=_READ_BUFFER):
                out.write(chunk)
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "fetching", storage_options, missing_hint=missing_hint) from None


def read_bytes(location: str, storage_options: Mapping[str, str] | None, *, missing_hint: str) -> bytes:
    """The whole content of a file or object."""
    if not is_remote(location):
        return local_path(location).read_bytes()
    import obstore

    found, path = store(location, storage_options)
    try:
        return bytes(obstore.get(found, path).bytes())
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "reading", storage_options, missing_hint=missing_hint) from None


def delete(location: str, storage_options: Mapping[str, str] | None) -> None:
    """Remove an object if it exists."""
    import obstore

    found, path = store(location, storage_options)
    try:
        obstore.delete(found, path)
    except FileNotFoundError:
        return
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "removing", storage_options) from None


def list_folders(location: str, storage_options: Mapping[str, str] | None) -> list[str] | None:
    """Names of the direct sub-folders (common prefixes) of ``location``; None if it has none."""
    import obstore

    found, path = store(location, storage_options)
    prefix = path.rstrip("/") + "/" if path else None
    try:
        listing = obstore.list_with_delimiter(found, prefix)
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "listing", storage_options) from None
    if not listing["common_prefixes"] and not listing["objects"]:
        return None
    return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in listing["common_prefixes"])


def arrow_dataset(location: str, storage_options: Mapping[str, str] | None) -> Any:
    """A pyarrow Parquet dataset over one object (for DuckDB: streamed, columns pushed down).

    pyarrow reads it through obstore's fsspec adapter, with the same options as everything else.
    """
    import pyarrow.dataset as ds
    from obstore.fsspec import FsspecStore
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    parts = urlsplit(location)
    config, client = split_options(location, storage_options)
    protocol = {"s3": "s3", "gcs": "gs", "azure": "az"}[store_of(location)]
    options: dict[str, Any] = {"config": config or None, "client_options": client or None}
    make: Any = FsspecStore  # typed per protocol literal in its stubs
    adapter = make(protocol, **options)
    try:
        return ds.dataset(
            f"{bucket_of(location)}{parts.path}",
            filesystem=PyFileSystem(FSSpecHandler(adapter)),
            format="parquet",
        )
    except Exception as exc:  # noqa: BLE001 - classified by storage_error()
        raise storage_error(exc, location, "opening", storage_options) from None
