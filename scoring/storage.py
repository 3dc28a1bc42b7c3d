"""Object storage: the options of pyarrow's file systems, one file system per store, and
checks that a store can be used before any work starts.

A location is a local path, a ``file://`` URI, or an object-store URI: ``s3://bucket/key``
(pyarrow's ``S3FileSystem``), ``gs://bucket/key`` (``GcsFileSystem``), or any other scheme
pyarrow's ``FileSystem.from_uri`` knows (without options).

Credentials and the endpoint are taken as the AWS tools take them: the SDK's chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and
``~/.aws/credentials``/``~/.aws/config``, web identity, instance roles), the endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` and the region from ``AWS_REGION`` or
``AWS_DEFAULT_REGION``. ``--storage-option KEY=VALUE`` sets what the file system takes
(``endpoint_override``, ``region``, ``scheme``, ...) and wins over the environment. The
environment is read where the file system is built: options resolved on the driver travel
to the Ray workers with the job; credentials from the environment are each node's own.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import UsageError
from models.imageio import storage_failure

#: Option name -> type, per scheme: what ``pyarrow.fs.S3FileSystem`` takes from text.
S3_OPTIONS: dict[str, type] = {
    "access_key": str,
    "secret_key": str,
    "session_token": str,
    "anonymous": bool,
    "role_arn": str,
    "session_name": str,
    "external_id": str,
    "load_frequency": int,
    "region": str,
    "request_timeout": float,
    "connect_timeout": float,
    "scheme": str,
    "endpoint_override": str,
    "background_writes": bool,
    "proxy_options": str,
    "allow_delayed_open": bool,
    "allow_bucket_creation": bool,
    "allow_bucket_deletion": bool,
    "check_directory_existence_before_creation": bool,
    "force_virtual_addressing": bool,
    "tls_ca_file_path": str,
}
#: ... and what ``pyarrow.fs.GcsFileSystem`` takes.
GCS_OPTIONS: dict[str, type] = {
    "anonymous": bool,
    "access_token": str,
    "target_service_account": str,
    "default_bucket_location": str,
    "scheme": str,
    "endpoint_override": str,
    "project_id": str,
    "retry_time_limit": float,
}
_BY_SCHEME = {"s3": S3_OPTIONS, "gs": GCS_OPTIONS, "gcs": GCS_OPTIONS}
#: Never printed or logged.
SECRET_OPTIONS = frozenset({"secret_key", "session_token", "access_token"})
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def is_uri(location: str) -> bool:
    """An object-store (or other non-local) URI; ``file://`` is local."""
    return "://" in location and not location.startswith("file://")


def split_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")``."""
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme.lower(), bucket, key


def store_of(location: str) -> str:
    """Which store a location is in: ``local``, or ``scheme://bucket``."""
    if not is_uri(location):
        return "local"
    scheme, bucket, _ = split_uri(location)
    return f"{scheme}://{bucket}"


def normalise_uri(uri: str) -> str:
    """``s3://bucket//a/./b/`` -> ``s3://bucket/a/b``."""
    scheme, bucket, key = split_uri(uri)
    key = posixpath.normpath("/" + key).lstrip("/") if key else ""
    return f"{scheme}://{bucket}" + (f"/{key}" if key else "")


@dataclass(frozen=True)
class StorageOptions:
    """Checked ``--storage-option`` values (``items``: sorted ``(key, typed value)``)."""

    items: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(
        cls, value: StorageOptions | Mapping[str, Any] | Iterable[str] | None
    ) -> StorageOptions:
        """From ``KEY=VALUE`` texts (the command line), a mapping (a TOML table, Python) or
        None; UsageError naming the option for an unknown key or a value of the wrong type."""
        if value is None:
            return cls()
        if isinstance(value, StorageOptions):
            return value
        pairs: list[tuple[str, Any]] = []
        if isinstance(value, Mapping):
            pairs = [(str(k), v) for k, v in value.items()]
        else:
            for text in [value] if isinstance(value, str) else value:
                key, sep, raw = str(text).partition("=")
                if not sep or not key.strip():
                    raise UsageError(
                        f"--storage-option {text!r}: write KEY=VALUE, e.g. "
                        "--storage-option endpoint_override=http://127.0.0.1:9000"
                    )
                pairs.append((key.strip(), raw.strip()))
        checked = dict(_typed(k, v) for k, v in pairs)
        return cls(tuple(sorted(checked.items())))

    def for_scheme(self, scheme: str) -> dict[str, Any]:
        """The options the file system of ``scheme`` takes (``region`` goes to S3 only)."""
        known = _BY_SCHEME.get(scheme, {})
        return {k: v for k, v in self.items if k in known}

    def shown(self) -> dict[str, Any]:
        """For messages and summaries: secrets masked."""
        return {k: ("***" if k in SECRET_OPTIONS else v) for k, v in self.items}

    def __bool__(self) -> bool:
        return bool(self.items)


def _typed(key: str, value: Any) -> tuple[str, Any]:
    kinds = {t for table in _BY_SCHEME.values() for k, t in table.items() if k == key}
    if not kinds:
        known = sorted({k for table in _BY_SCHEME.values() for k in table})
        raise UsageError(f"unknown --storage-option {key!r}; known: {', '.join(known)}")
    kind = kinds.pop()
    text = str(value).strip()
    if kind is bool:
        if isinstance(value, bool):
            return key, value
        if text.lower() in _TRUE | _FALSE:
            return key, text.lower() in _TRUE
        raise UsageError(f"--storage-option {key} must be true or false, got {value!r}")
    if kind in (int, float):
        try:
            number = kind(text) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number < 0:
            raise UsageError(f"--storage-option {key} must be a number, 0 or more, got {value!r}")
        return key, number
    if not text:
        raise UsageError(f"--storage-option {key} is empty: give a value or leave it out")
    return key, text


_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def filesystem_for(location: str, storage: StorageOptions | None = None) -> tuple[Any, str]:
    """``(pyarrow file system, path inside it)`` for a location. File systems are built once
    per process and store (building one reads credentials; a scorer actor asks per image)."""
    from pyarrow import fs as pafs

    storage = storage or StorageOptions()
    if not is_uri(location):
        local = _file_uri_to_path(location) if location.startswith("file://") else location
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    scheme, bucket, key = split_uri(location)
    if not bucket:
        raise UsageError(f"{location}: name a bucket, e.g. {scheme}://BUCKET/KEY")
    path = f"{bucket}/{key}" if key else bucket
    cache_key = (scheme, storage.items, _env_key())
    with _CACHE_LOCK:
        cached = _CACHE.get(cache_key)
    if cached is None:
        cached = _build(scheme, location, storage)
        with _CACHE_LOCK:
            _CACHE[cache_key] = cached
    return cached, path


def resolver(storage: StorageOptions | None) -> Any:
    """``uri -> (file system, path)`` for :func:`models.imageio.read_image_bytes`."""
    return lambda uri: filesystem_for(uri, storage)


#: What a file system built now takes from the environment: a change builds another one.
_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def _env_key() -> int:
    return hash(tuple(os.environ.get(n) for n in _ENV))


def _build(scheme: str, location: str, storage: StorageOptions) -> Any:
    from pyarrow import fs as pafs

    try:
        if scheme == "s3":
            return pafs.S3FileSystem(**s3_arguments(storage))
        if scheme in ("gs", "gcs"):
            kwargs = storage.for_scheme("gs")
            if "retry_time_limit" in kwargs:
                from datetime import timedelta

                kwargs["retry_time_limit"] = timedelta(seconds=kwargs["retry_time_limit"])
            return pafs.GcsFileSystem(**kwargs)
        return pafs.FileSystem.from_uri(location)[0]
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot open {location}: {' '.join(str(exc).split())}") from None


def s3_arguments(storage: StorageOptions) -> dict[str, Any]:
    """``S3FileSystem`` keyword arguments: the options, then endpoint and region from the
    environment as the AWS CLI reads them."""
    kwargs = storage.for_scheme("s3")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if "endpoint_override" not in kwargs and endpoint:
        kwargs["endpoint_override"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if "region" not in kwargs and region:
        kwargs["region"] = region
    return kwargs


def check_reachable(location: str, storage: StorageOptions | None, what: str) -> None:
    """UsageError when the store of ``location`` cannot be used at all (endpoint unreachable,
    credentials refused); a missing bucket or object, or one denied, passes (that is a row's
    business). Lists a prefix no one uses: an error to a listing names its cause, where
    one to a HEAD request is a bare HTTP status."""
    from pyarrow import fs as pafs

    if not is_uri(location):
        return
    filesystem, path = filesystem_for(location, storage)
    probe = path.split("/", 1)[0] + "/.genderscore-probe"
    try:
        filesystem.get_file_info(pafs.FileSelector(probe, allow_not_found=True))
    except OSError as exc:
        if storage_failure(exc) in ("unreachable", "credentials", "timeout"):
            raise UsageError(unusable_store(location, storage, what, exc)) from None


def check_stores(stores: Mapping[str, str], storage: StorageOptions | None) -> None:
    """:func:`check_reachable` for one image path in each object store a manifest names."""
    for example in stores.values():
        check_reachable(example, storage, "the images in")


def unusable_store(location: str, storage: StorageOptions | None, what: str, exc: Any) -> str:
    """One line: what could not be reached, the store's settings, how to fix them."""
    text = " ".join(str(exc).split())
    scheme = split_uri(location)[0] if is_uri(location) else "file"
    settings = ""
    if scheme == "s3":
        args = s3_arguments(storage or StorageOptions())
        shown = {k: v for k, v in args.items() if k in ("endpoint_override", "region", "scheme")}
        settings = f" (endpoint {shown.get('endpoint_override', 'AWS')}"
        settings += f", region {shown['region']})" if "region" in shown else ")"
    return (
        f"cannot use {what} {location}{settings}: {text}; check --storage-option "
        "endpoint_override/region/scheme and the credentials (AWS_* variables, ~/.aws)"
    )


def _file_uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path)


#: Objects a scorer actor fetches at once per batch, and the seconds one may take (``--read-timeout``).
DEFAULT_READ_CONCURRENCY = 16
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class RemoteReads:
    """How a scorer actor reads object-store images: options, concurrency, deadline."""

    storage: StorageOptions = StorageOptions()
    concurrency: int = DEFAULT_READ_CONCURRENCY
    timeout: float = DEFAULT_READ_TIMEOUT

    def fetch(self, uris: list[str], max_bytes: int | None = None) -> list[Any]:
        """Each object's bytes, or the ImageError (``timeout`` past the deadline) it is;
        StorageUnreachable when the store itself fails (the run fails)."""
        from models.imageio import (
            MAX_FILE_BYTES,
            ErrorCode,
            ImageError,
            StorageUnreachable,
            read_image_bytes,
        )
        from scoring.internal.fetch import FetchTimeout, fetch_all

        resolve = resolver(self.storage)
        limit = max_bytes or MAX_FILE_BYTES
        for uri in {store_of(u): u for u in uris}.values():
            try:  # build each store's file system (SDK start, credentials) outside the deadline
                resolve(uri)
            except (OSError, ValueError):
                pass  # the fetch says it for its row
        results = fetch_all(
            uris,
            lambda uri: read_image_bytes(uri, max_bytes=limit, resolve=resolve),
            concurrency=self.concurrency,
            timeout=self.timeout,
        )
        for value in results:
            if isinstance(value, StorageUnreachable):
                raise value
        return [
            ImageError(ErrorCode.TIMEOUT, f"no answer for {uri} within {self.timeout:g} s")
            if isinstance(value, FetchTimeout)
            else value
            for uri, value in zip(uris, results, strict=True)
        ]
