"""Locations: local folders or object-storage prefixes (s3://, gs://, az://, file://).

Two engines talk to object storage, configured from the same storage options:

* Polars (its native ``object_store`` client) reads the staged Parquet; it is given the
  explicit options and reads the standard environment variables itself
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
  ``AWS_ALLOW_HTTP``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...).
* ``pyarrow.fs`` streams the input CSVs to the native scanner, moves whole files (publishing
  and fetching staged files, small JSON files, listings) and hands DuckDB Arrow datasets.
  :func:`filesystem` builds it from the same variables and options, translated to pyarrow's
  arguments.

Storage options use the ``object_store`` key names (``aws_endpoint_url``, ``aws_region``,
``google_service_account``, ``azure_storage_account_name``, ...); explicit options win over
the environment. Error messages name the location, never a secret (:func:`storage_error`).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastclv.errors import ConfigError, FastclvError, InputError, TerminalError, TransientError
from fastclv.secrets import redact

log = logging.getLogger(__name__)

S3_SCHEMES = ("s3://", "s3a://")
GCS_SCHEMES = ("gs://", "gcs://")
AZURE_SCHEMES = ("az://", "abfs://", "abfss://", "azure://")
REMOTE_SCHEMES = S3_SCHEMES + GCS_SCHEMES + AZURE_SCHEMES

#: Standard environment variables read for each store (the ones object_store reads too),
#: with the storage-option key each one stands for.
ENV_OPTIONS: dict[str, dict[str, str]] = {
    "s3": {
        "AWS_ENDPOINT_URL": "aws_endpoint_url",
        "AWS_ENDPOINT": "aws_endpoint_url",
        "AWS_ACCESS_KEY_ID": "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
        "AWS_SESSION_TOKEN": "aws_session_token",
        "AWS_DEFAULT_REGION": "aws_region",
        "AWS_REGION": "aws_region",
        "AWS_ALLOW_HTTP": "aws_allow_http",
    },
    "gcs": {
        "GOOGLE_SERVICE_ACCOUNT": "google_service_account",
        "GOOGLE_APPLICATION_CREDENTIALS": "google_application_credentials",
    },
    "azure": {
        "AZURE_STORAGE_ACCOUNT_NAME": "azure_storage_account_name",
        "AZURE_STORAGE_ACCOUNT_KEY": "azure_storage_account_key",
        "AZURE_STORAGE_SAS_TOKEN": "azure_storage_sas_token",
        "AZURE_STORAGE_CLIENT_ID": "azure_storage_client_id",
        "AZURE_STORAGE_CLIENT_SECRET": "azure_storage_client_secret",
        "AZURE_STORAGE_TENANT_ID": "azure_storage_tenant_id",
        "AZURE_STORAGE_ENDPOINT": "azure_storage_endpoint",
        "AZURE_ALLOW_HTTP": "azure_allow_http",
    },
}

#: object_store's aliases -> the one key this module reads (per store).
_ALIASES: dict[str, dict[str, str]] = {
    "s3": {
        "aws_endpoint": "aws_endpoint_url",
        "endpoint_url": "aws_endpoint_url",
        "endpoint": "aws_endpoint_url",
        "access_key_id": "aws_access_key_id",
        "secret_access_key": "aws_secret_access_key",
        "aws_token": "aws_session_token",
        "session_token": "aws_session_token",
        "token": "aws_session_token",
        "region": "aws_region",
        "aws_default_region": "aws_region",
        "default_region": "aws_region",
        "allow_http": "aws_allow_http",
    },
    "gcs": {
        "service_account": "google_service_account",
        "google_service_account_path": "google_service_account",
        "service_account_path": "google_service_account",
    },
    "azure": {
        "account_name": "azure_storage_account_name",
        "azure_account_name": "azure_storage_account_name",
        "account_key": "azure_storage_account_key",
        "access_key": "azure_storage_account_key",
        "azure_storage_access_key": "azure_storage_account_key",
        "sas_token": "azure_storage_sas_token",
        "azure_storage_sas_key": "azure_storage_sas_token",
        "client_id": "azure_storage_client_id",
        "azure_client_id": "azure_storage_client_id",
        "client_secret": "azure_storage_client_secret",
        "azure_client_secret": "azure_storage_client_secret",
        "tenant_id": "azure_storage_tenant_id",
        "azure_tenant_id": "azure_storage_tenant_id",
        "endpoint": "azure_storage_endpoint",
        "azure_endpoint": "azure_storage_endpoint",
        "allow_http": "azure_allow_http",
    },
}


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


def resolved_options(
    location: str, storage_options: Mapping[str, str] | None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The effective options for ``location``: standard environment variables, then explicit ones.

    Keys are normalised to one name per setting (``endpoint_url`` -> ``aws_endpoint_url``).

    >>> resolved_options("s3://b/x", {"region": "eu-west-1"}, env={"AWS_REGION": "us-east-1"})
    {'aws_region': 'eu-west-1'}
    """
    store = store_of(location)
    if store == "local":
        return {}
    source = os.environ if env is None else env
    aliases = _ALIASES[store]
    options: dict[str, str] = {}
    for variable, key in ENV_OPTIONS[store].items():
        value = source.get(variable)
        if value:
            options[key] = value
    for key, value in (storage_options or {}).items():
        name = key.lower()
        options[aliases.get(name, name)] = str(value)
    return options


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- pyarrow.fs


def fs_path(location: str) -> str:
    """The pyarrow.fs path of a URI: ``bucket/key`` (Azure: ``container/path``)."""
    parts = urlsplit(location)
    netloc = parts.netloc
    if store_of(location) == "azure" and "@" in netloc:
        netloc = netloc.split("@", 1)[0]  # abfs://container@account.dfs.core.windows.net/path
    return (netloc + parts.path).rstrip("/")


def pyarrow_arguments(location: str, options: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The pyarrow FileSystem class name and constructor arguments for resolved options.

    >>> pyarrow_arguments("s3://b/x", {"aws_endpoint_url": "http://127.0.0.1:9000"})
    ('S3FileSystem', {'endpoint_override': 'http://127.0.0.1:9000'})
    """
    store = store_of(location)
    if store == "s3":
        return "S3FileSystem", _s3_arguments(options)
    if store == "gcs":
        # pyarrow's GCS client finds its credentials itself (GOOGLE_APPLICATION_CREDENTIALS,
        # the metadata server); an explicit service-account file must be given that way.
        return "GcsFileSystem", {"anonymous": True} if _truthy(options.get("google_skip_signature")) else {}
    if store == "azure":
        return "AzureFileSystem", _azure_arguments(location, options)
    raise ConfigError(f"{location} is not an object-storage URI.")


def _picked(options: Mapping[str, str], names: Mapping[str, str]) -> dict[str, Any]:
    """``{argument: options[key]}`` for the options that are set."""
    return {argument: options[key] for key, argument in names.items() if options.get(key)}


def _s3_arguments(options: Mapping[str, str]) -> dict[str, Any]:
    kwargs = _picked(
        options,
        {
            "aws_access_key_id": "access_key",
            "aws_secret_access_key": "secret_key",
            "aws_session_token": "session_token",
            "aws_region": "region",
        },
    )
    endpoint = options.get("aws_endpoint_url")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if "://" not in endpoint:
            kwargs["scheme"] = "http" if _truthy(options.get("aws_allow_http")) else "https"
    if _truthy(options.get("aws_skip_signature")):
        kwargs["anonymous"] = True
    return kwargs


def _azure_arguments(location: str, options: Mapping[str, str]) -> dict[str, Any]:
    account = options.get("azure_storage_account_name") or _azure_account(location)
    if not account:
        raise ConfigError(
            f"no Azure storage account for {location}. Hint: set AZURE_STORAGE_ACCOUNT_NAME or "
            "the storage option azure_storage_account_name."
        )
    kwargs = {
        "account_name": account,
        **_picked(
            options,
            {
                "azure_storage_account_key": "account_key",
                "azure_storage_sas_token": "sas_token",
                "azure_storage_client_id": "client_id",
                "azure_storage_client_secret": "client_secret",
                "azure_storage_tenant_id": "tenant_id",
            },
        ),
    }
    endpoint = options.get("azure_storage_endpoint")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        kwargs["blob_storage_authority"] = parts.netloc
        kwargs["blob_storage_scheme"] = parts.scheme or (
            "http" if _truthy(options.get("azure_allow_http")) else "https"
        )
    return kwargs


def _azure_account(location: str) -> str | None:
    netloc = urlsplit(location).netloc
    if "@" in netloc:
        return netloc.split("@", 1)[1].split(".", 1)[0] or None
    return None


def filesystem(location: str, storage_options: Mapping[str, str] | None) -> tuple[Any, str]:
    """A pyarrow FileSystem for a URI (or the local one) and the path inside it."""
    from pyarrow import fs

    if not is_remote(location):
        return fs.LocalFileSystem(), str(local_path(location).resolve())
    name, kwargs = pyarrow_arguments(location, resolved_options(location, storage_options))
    try:
        return getattr(fs, name)(**kwargs), fs_path(location)
    except (OSError, ValueError, TypeError) as exc:
        raise storage_error(exc, location, "connecting to the object store for", storage_options) from None


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
    """Classify an object-storage error (Polars or pyarrow) and say it in one short line."""
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
    shown = redact(location) if "@" in location else location
    problem = describe(exc, storage_options)
    if problem.kind == "no_bucket":
        bucket = fs_path(location).split("/", 1)[0]
        return ConfigError(
            f"{doing} {shown}: the bucket or container '{bucket}' does not exist ({problem.detail}). "
            "Hint: check the bucket name, and the endpoint and region (AWS_ENDPOINT_URL, AWS_REGION)."
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
    shown = redact(source) if "@" in source else source
    problem = describe(exc, storage_options)
    if problem.kind == "unreachable":
        return TransientError(
            f"{file_name}: cannot reach the object store for {shown} ({problem.detail}). "
            "Hint: check the endpoint (AWS_ENDPOINT_URL or the storage options) and the network; "
            "the run is safe to retry."
        )
    if problem.kind == "no_bucket":
        bucket = fs_path(source).split("/", 1)[0]
        what = f"the bucket '{bucket}' of {shown} does not exist"
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


# --------------------------------------------------------------------------- whole objects


def exists(location: str, storage_options: Mapping[str, str] | None) -> bool:
    """Whether a file or object exists."""
    if not is_remote(location):
        return local_path(location).is_file()
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    try:
        return bool(filesystem_.get_file_info(path).type == fs.FileType.File)
    except OSError as exc:
        raise storage_error(exc, location, "checking", storage_options) from None


def check_bucket(location: str, storage_options: Mapping[str, str] | None, doing: str) -> None:
    """Fail early and clearly when the bucket of ``location`` is absent or not accessible."""
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    bucket = path.split("/", 1)[0]
    try:
        info = filesystem_.get_file_info(bucket)
    except OSError as exc:
        raise storage_error(exc, location, doing, storage_options) from None
    if info.type == fs.FileType.NotFound:
        raise storage_error(
            FileNotFoundError(f"NoSuchBucket: bucket {bucket} does not exist"),
            location,
            doing,
            storage_options,
        )


def upload(source: Path, location: str, storage_options: Mapping[str, str] | None) -> None:
    """Copy a local file to an object, whole: readers see the old object or the new one.

    A single PUT or a multipart upload becomes visible only when complete, so no reader
    ever sees half a file. The copy runs in one native call (no Python code mid-upload
    that could leave a partial upload to be completed), and its size is checked after.
    """
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    try:
        fs.copy_files(
            str(source.resolve()),
            path,
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=filesystem_,
        )
        size = filesystem_.get_file_info(path).size
    except OSError as exc:
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
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        fs.copy_files(
            path, str(tmp), source_filesystem=filesystem_, destination_filesystem=fs.LocalFileSystem()
        )
        os.replace(tmp, target)
    except OSError as exc:
        raise storage_error(exc, location, "fetching", storage_options, missing_hint=missing_hint) from None
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(location: str, storage_options: Mapping[str, str] | None, *, missing_hint: str) -> bytes:
    """The whole content of a file or object."""
    if not is_remote(location):
        return local_path(location).read_bytes()
    filesystem_, path = filesystem(location, storage_options)
    try:
        with filesystem_.open_input_stream(path) as stream:
            return bytes(stream.read())
    except OSError as exc:
        raise storage_error(exc, location, "reading", storage_options, missing_hint=missing_hint) from None


def delete(location: str, storage_options: Mapping[str, str] | None) -> None:
    """Remove an object if it exists."""
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    try:
        if filesystem_.get_file_info(path).type != fs.FileType.NotFound:
            filesystem_.delete_file(path)
    except OSError as exc:
        raise storage_error(exc, location, "removing", storage_options) from None


def list_folders(location: str, storage_options: Mapping[str, str] | None) -> list[str] | None:
    """Names of the direct sub-folders (common prefixes) of ``location``; None if it has none."""
    from pyarrow import fs

    filesystem_, path = filesystem(location, storage_options)
    try:
        infos = filesystem_.get_file_info(fs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise storage_error(exc, location, "listing", storage_options) from None
    if not infos:
        return None
    return sorted(info.base_name for info in infos if info.type == fs.FileType.Directory)


def arrow_dataset(location: str, storage_options: Mapping[str, str] | None) -> Any:
    """A pyarrow Parquet dataset over one object (for DuckDB: streamed, columns pushed down)."""
    import pyarrow.dataset as ds

    filesystem_, path = filesystem(location, storage_options)
    try:
        return ds.dataset(path, filesystem=filesystem_, format="parquet")
    except OSError as exc:
        raise storage_error(exc, location, "opening", storage_options) from None
