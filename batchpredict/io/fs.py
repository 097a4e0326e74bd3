"""One filesystem layer for every path the engine touches: local paths, ``gs://`` and ``/gcs/``.

Everything goes through fsspec, so a new scheme needs no change in the engine.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from batchpredict.errors import UserError, first_line

if TYPE_CHECKING:  # fsspec is imported on first use: importing this module stays cheap
    import fsspec

GLOB_CHARS = "*?["
# Vertex AI Pipelines mounts Cloud Storage at /gcs/<bucket>/... (Cloud Storage FUSE).
GCS_FUSE_PREFIX = "/gcs/"
GCS_SCHEME = "gs://"
GCS_SCHEMES = (GCS_SCHEME, "gcs://")
# Set to ``host:port`` (or a URL) to use a Cloud Storage emulator instead of Google's endpoint;
# gcsfs and google-cloud-storage both honour it.
STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# Cloud Storage's endpoint, checked once per process before the first gs:// call, so that a
# machine without credentials or network fails in seconds with one line instead of retrying.
GCS_HOST = "storage.googleapis.com"
GCS_PORT = 443
CONNECT_TIMEOUT_SECONDS = 5.0
# Set to 1 to read public buckets without credentials: no Application Default Credentials check,
# gcsfs's anonymous access (fsspec's own FSSPEC_GCS_TOKEN=anon does the same).
ANONYMOUS_ENV = "BATCHPREDICT_GCS_ANONYMOUS"
# Client libraries that log each retry with a traceback; their warnings still show.
QUIET_LOGGERS = ("gcsfs", "google.auth", "google.cloud", "urllib3", "aiohttp")
# A remote file handed to pyarrow is copied into Arrow's memory in pieces of this size.
ARROW_COPY_CHUNK_BYTES = 8 << 20

_gcs_checked = False


def normalize_uri(uri: str) -> str:
    """Maps a ``/gcs/bucket/...`` FUSE path to ``gs://bucket/...`` when no FUSE mount exists."""
    return uri if os.path.isdir(GCS_FUSE_PREFIX) else gcs_uri(uri)


def gcs_uri(uri: str) -> str:
    """Maps a ``/gcs/bucket/...`` path to ``gs://bucket/...``, mounted or not.

    For output: a directory rename on a FUSE mount copies object by object, so output written
    there would appear piecemeal; through ``gs://`` it is published as a whole (see sinks).
    """
    if uri.startswith(GCS_FUSE_PREFIX):
        return GCS_SCHEME + uri[len(GCS_FUSE_PREFIX) :]
    return uri


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` and the path within it.

    ``gs://`` uses Application Default Credentials. Under a Cloud Storage emulator
    (``STORAGE_EMULATOR_HOST``) it connects anonymously with gcsfs's core client: no credential
    lookup, and no Storage Control API call to detect the bucket type, which an emulator does not
    serve (gcsfs's default client waits 60 s for it per bucket).
    """
    uri = normalize_uri(uri)
    if uri.startswith(GCS_SCHEMES) and os.environ.get(STORAGE_EMULATOR_ENV):
        from gcsfs.core import GCSFileSystem

        gcs = GCSFileSystem(token="anon")
        return gcs, gcs._strip_protocol(uri)
    if uri.startswith(GCS_SCHEMES):
        check_gcs_access(uri)
        if anonymous_gcs():  # public buckets: gcsfs's core client, no credential lookup
            from gcsfs.core import GCSFileSystem

            options = {k: v for k, v in _fsspec_gcs_options().items() if k != "token"}
            gcs = GCSFileSystem(token="anon", **options)
            return gcs, gcs._strip_protocol(uri)
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def _fsspec_gcs_options() -> dict:
    """The options fsspec is configured with for ``gcs`` (``FSSPEC_GCS_*``, its config files)."""
    import fsspec.config

    return dict(fsspec.config.conf.get("gcs", {}))


def _gcs_endpoint() -> tuple[str, int]:
    """The host and port gcsfs calls: fsspec's ``endpoint_url`` for gcs if set, else Google's."""
    from urllib.parse import urlsplit

    url = _fsspec_gcs_options().get("endpoint_url")
    if not url:
        return GCS_HOST, GCS_PORT
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.hostname or GCS_HOST, parts.port or (80 if parts.scheme == "http" else 443)


def anonymous_gcs() -> bool:
    """True when Cloud Storage is read without credentials (public buckets).

    Asked for with ``BATCHPREDICT_GCS_ANONYMOUS=1``, or with fsspec's own ``token: anon`` for
    ``gcs`` (``FSSPEC_GCS_TOKEN=anon``).
    """
    if os.environ.get(ANONYMOUS_ENV, "0") not in ("", "0"):
        return True
    return _fsspec_gcs_options().get("token") == "anon"


def check_gcs_access(uri: str) -> None:
    """Fails in seconds, in one line, when Cloud Storage cannot work from this machine.

    Checked once per process: Application Default Credentials exist (unless anonymous access was
    asked for, see ``anonymous_gcs``), and Cloud Storage's host answers. Without this, gcsfs
    retries for a minute or more and a missing bucket and an unreachable host look alike ("does
    not exist").

    Raises:
        UserError: no credentials (and how to get them), or the host is unreachable.
    """
    global _gcs_checked
    if _gcs_checked:
        return
    quiet_client_loggers()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        if not anonymous_gcs():
            google.auth.default()
    except DefaultCredentialsError:
        raise UserError(
            f"Cannot read or write {uri!r}: no Application Default Credentials for Cloud "
            "Storage. Run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file (on Vertex AI and GCE "
            f"the attached service account is used); for an emulator set {STORAGE_EMULATOR_ENV}; "
            f"to read a public bucket without credentials set {ANONYMOUS_ENV}=1."
        ) from None
    host, port = _gcs_endpoint()
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as err:
        raise UserError(
            f"Cannot read or write {uri!r}: Cloud Storage ({host}:{port}) is unreachable "
            f"from this machine ({err.strerror or err}). Check the network, proxy or firewall; "
            "this is not a missing bucket or object."
        ) from None
    _gcs_checked = True


def quiet_client_loggers() -> None:
    """Keeps client libraries' retry tracebacks out of the output (errors are reported by us)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user would write for ``path`` on ``fs`` (``gs://...`` or a local path)."""
    return fs.unstrip_protocol(path) if _is_remote(fs) else path


def _is_remote(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol not in ("file", "local")


def expand_uris(uris: list[str]) -> list[str]:
    """Expands wildcards in ``uris``; each entry must match at least one file.

    Raises:
        UserError: naming the URI that matched nothing, or whose bucket is missing or forbidden.
    """
    files: list[str] = []
    for uri in uris:
        fs, path = filesystem(uri)
        try:
            if any(c in path for c in GLOB_CHARS):
                matches = sorted(p for p in fs.glob(path) if not fs.isdir(p))
            else:
                local = not _is_remote(fs)
                there = fs.exists(path) or (local and os.path.lexists(path))
                matches = [path] if there and not fs.isdir(path) else []
            if not _is_remote(fs):
                for p in matches:
                    check_local_input(p, uri)
        except UserError:
            raise
        except Exception as err:  # gcsfs raises OSError, HttpError, ValueError, auth errors
            check_bucket(uri, "gcs_source_uris")
            raise UserError(
                f"Cannot list input {uri!r} (gcs_source_uris): {first_line(err)}"
            ) from err
        if not matches:
            check_bucket(uri, "gcs_source_uris")
            raise UserError(
                f"No input file matches {uri!r}. Check the path and wildcard in gcs_source_uris."
            )
        files.extend(full_uri(fs, p) for p in matches)
    return files


def check_local_input(path: str, uri: str) -> None:
    """Checks that a local input is a readable regular file, before any work starts.

    Raises:
        UserError: naming the path: a symlink loop, a FIFO, socket or device (reading one would
            hang or never end), or a file this process may not read.
    """
    import errno
    import stat

    try:
        st = os.stat(path)
    except OSError as err:
        what = "is a symbolic link loop" if err.errno == errno.ELOOP else f"cannot be read: {err}"
        raise UserError(
            f"Input {path!r} (from gcs_source_uris {uri!r}) {what}. Fix or remove it, or narrow "
            "the wildcard."
        ) from err
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise UserError(
            f"Input {path!r} (from gcs_source_uris {uri!r}) is {kind}, not a regular file; "
            "batch prediction reads files. Copy the data to a file, or narrow the wildcard."
        )
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as err:
        raise UserError(
            f"Input {path!r} (from gcs_source_uris {uri!r}) cannot be read: {err.strerror}. "
            "Check its permissions."
        ) from err


def is_remote(uri: str) -> bool:
    """True for an object store URI (``gs://``, or ``/gcs/`` without a FUSE mount)."""
    return _is_remote(filesystem(uri)[0])


def check_bucket(uri: str, what: str) -> None:
    """Checks that the bucket of a remote ``uri`` exists and can be read; local paths pass.

    Args:
        uri: the URI a user gave.
        what: the input it came from, named in the message (e.g. ``gcs_source_uris``).

    Raises:
        UserError: the bucket does not exist, or access to it is denied.
    """
    fs, path = filesystem(uri)
    if not _is_gcs(fs):
        return
    bucket = path.split("/", 1)[0]
    try:  # one uncached objects.list call: needs only storage.objects.list, as reading does
        fs.call("GET", "b/{}/o", bucket, maxResults=1, json_out=True)
    except FileNotFoundError as err:
        raise UserError(
            f"The bucket of {uri!r} ({what}) does not exist: gs://{bucket}. Check the bucket name."
        ) from err
    except Exception as err:  # gcsfs: 403 -> OSError("Forbidden: ..."), 401 -> HttpError
        raise UserError(
            f"Cannot access the bucket of {uri!r} ({what}): {first_line(err)}. Check that the "
            "credentials (Application Default Credentials) may read and write it."
        ) from err


def _is_gcs(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("gs", "gcs")


def open_file(uri: str, mode: str = "rb", **kwargs: Any):
    """Opens ``uri`` for reading or writing through fsspec."""
    fs, path = filesystem(uri)
    return fs.open(path, mode, **kwargs)


def arrow_file(uri: str) -> Any:
    """``uri`` opened for pyarrow's table readers as a native Arrow file, never a Python one.

    pyarrow reads a Python file object through buffers that hold Python ``bytes``, and its
    Parquet reader tears a finished scan down on a thread-pool thread after ``read_table`` has
    returned. A buffer released there takes the GIL; if the interpreter is exiting by then,
    Python ends that native thread inside a C++ destructor and the process aborts with
    "terminate called without an active exception" (SIGABRT, exit 134) after the step has
    written its outputs (apache/arrow#34314). So a local file is opened by Arrow itself and a
    remote one (``gs://``) is copied into Arrow-allocated memory: nothing Arrow keeps refers to a
    Python object. Use it as a context manager.
    """
    import pyarrow as pa

    filesystem_, path = filesystem(uri)
    if not _is_remote(filesystem_):
        return pa.OSFile(path, "rb")
    sink = pa.BufferOutputStream()
    with filesystem_.open(path, "rb") as f:
        while chunk := f.read(ARROW_COPY_CHUNK_BYTES):
            sink.write(chunk)
    return pa.BufferReader(sink.getvalue())


def arrow_input(uri: str) -> Any:
    """``uri`` opened for pyarrow's Parquet readers that read part of a file (row groups, metadata).

    A local file is a native Arrow file, for the reason given in ``arrow_file``. A remote one
    (``gs://``) stays an fsspec file, read by ranges: copying a whole remote file into memory to
    read one row group or its footer would cost more than it saves. Use it as a context manager.
    """
    import pyarrow as pa

    filesystem_, path = filesystem(uri)
    if not _is_remote(filesystem_):
        return pa.OSFile(path, "rb")
    return filesystem_.open(path, "rb")


def arrow_output(uri: str) -> Any:
    """``uri`` opened for writing by pyarrow: a native Arrow file when local, fsspec's otherwise."""
    import pyarrow as pa

    filesystem_, path = filesystem(uri)
    if not _is_remote(filesystem_):
        return pa.OSFile(path, "wb")
    return filesystem_.open(path, "wb")


# Arrow's memory pool for worker processes, unless the user names one in this variable.
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
WORKER_ARROW_POOL = "jemalloc"


def use_worker_arrow_pool() -> None:
    """Makes jemalloc Arrow's memory pool in this (worker) process, unless the user chose one.

    A worker decodes Parquet and builds arrays chunk after chunk, each a few megabytes freed
    before the next. Arrow's default pool (mimalloc) hands such memory back to the system at
    once, and the next chunk faults it in again as fresh zeroed pages: kernel time that varied
    from 0.1 to 1.2 us a row between runs. jemalloc keeps it for reuse: a 1M-row
    Parquet->Parquet job took 7% less CPU and 5% less time (6 alternating runs; README,
    Columnar benchmark).
    Before pyarrow is imported the choice is Arrow's own variable (no import here: JSON Lines
    jobs never load pyarrow); after, it is set directly. A pyarrow built without jemalloc keeps
    its default.
    """
    import sys

    if ARROW_POOL_ENV in os.environ:
        return
    if "pyarrow" not in sys.modules:
        os.environ[ARROW_POOL_ENV] = WORKER_ARROW_POOL
        return
    import contextlib

    import pyarrow as pa

    with contextlib.suppress(NotImplementedError):  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def file_size(uri: str) -> int:
    """The size of ``uri`` in bytes."""
    fs, path = filesystem(uri)
    return int(fs.size(path))


def join(base: str, *parts: str) -> str:
    """Joins URI parts with '/' (``gs://`` safe)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
