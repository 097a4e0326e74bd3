"""One filesystem layer for every path the engine touches: local paths, ``gs://`` and ``/gcs/``.

Everything goes through fsspec, so a new scheme needs no change in the engine.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec

from batchpredict.errors import UserError

GLOB_CHARS = "*?["
# Vertex AI Pipelines mounts Cloud Storage at /gcs/<bucket>/... (Cloud Storage FUSE).
GCS_FUSE_PREFIX = "/gcs/"


def normalize_uri(uri: str) -> str:
    """Maps a ``/gcs/bucket/...`` FUSE path to ``gs://bucket/...`` when no FUSE mount exists."""
    if uri.startswith(GCS_FUSE_PREFIX) and not os.path.isdir(GCS_FUSE_PREFIX):
        return "gs://" + uri[len(GCS_FUSE_PREFIX) :]
    return uri


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(normalize_uri(uri))
    return fs, path


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user would write for ``path`` on ``fs`` (``gs://...`` or a local path)."""
    return fs.unstrip_protocol(path) if _is_remote(fs) else path


def _is_remote(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol not in ("file", "local")


def expand_uris(uris: list[str]) -> list[str]:
    """Expands wildcards in ``uris``; each entry must match at least one file.

    Raises:
        UserError: naming the URI that matched nothing.
    """
    files: list[str] = []
    for uri in uris:
        fs, path = filesystem(uri)
        if any(c in path for c in GLOB_CHARS):
            matches = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        else:
            matches = [path] if fs.exists(path) and not fs.isdir(path) else []
        if not matches:
            raise UserError(
                f"No input file matches {uri!r}. Check the path and wildcard in gcs_source_uris."
            )
        files.extend(full_uri(fs, p) for p in matches)
    return files


def open_file(uri: str, mode: str = "rb", **kwargs: Any):
    """Opens ``uri`` for reading or writing through fsspec."""
    fs, path = filesystem(uri)
    return fs.open(path, mode, **kwargs)


def file_size(uri: str) -> int:
    """The size of ``uri`` in bytes."""
    fs, path = filesystem(uri)
    return int(fs.size(path))


def join(base: str, *parts: str) -> str:
    """Joins URI parts with '/' (``gs://`` safe)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
