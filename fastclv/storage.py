"""Locations: local folders or object-storage prefixes (s3://, gs://, az://, file://)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

REMOTE_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "azure://")


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


def polars_options(storage_options: Mapping[str, str] | None, location: str) -> dict[str, str] | None:
    """Storage options for Polars (None for local files, so Polars uses its defaults)."""
    if not is_remote(location) or not storage_options:
        return None
    return dict(storage_options)
