"""Cloud emulators started by the tests: gcp-storage-emulator and bqemulator, on 127.0.0.1.

Each runs as a subprocess on free ports for the whole session; tests opt in through the
function-scoped ``gcs_env`` / ``bq_env`` fixtures, which point the environment at them (so worker
processes and kfp.local's step subprocesses inherit it) and restore it afterwards.

Import the fixtures into a test module with ``from tests.cloud_fixtures import *``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_SECONDS = 90
BQ_PROJECT = "test-project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status < 500:
                return
        time.sleep(0.2)
    proc.kill()
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"Emulator at {url} did not start (exit {proc.poll()}):\n{tail}")


@contextlib.contextmanager
def _process(args: list[str], url: str, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(url, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[str]:
    """gcp-storage-emulator (in memory); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"]
    log = tmp_path_factory.mktemp("gcs_emulator") / "emulator.log"
    with _process(args, url + "/", log):
        yield url


@dataclass(frozen=True)
class BigQueryEmulator:
    rest: str  # http://127.0.0.1:port
    grpc: str  # 127.0.0.1:port (Storage Read/Write API)
    project: str = BQ_PROJECT


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory) -> Iterator[BigQueryEmulator]:
    """bqemulator (ephemeral): REST and gRPC; DuckDB's spatial extension comes from its wheel."""
    import duckdb_extensions

    duckdb_extensions.import_extension("spatial")  # bqemulator needs it and cannot download it
    rest, grpc_port = free_port(), free_port()
    emulator = BigQueryEmulator(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}")
    args = [str(Path(sys.executable).with_name("bqemulator")), "start", "--ephemeral"]
    args += ["--rest-host", "127.0.0.1", "--rest-port", str(rest)]
    args += ["--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port)]
    args += ["--project", BQ_PROJECT, "--log-level", "warning"]
    log = tmp_path_factory.mktemp("bq_emulator") / "emulator.log"
    with _process(args, f"{emulator.rest}/bigquery/v2/projects/{BQ_PROJECT}/datasets", log):
        yield emulator


@pytest.fixture
def gcs_env(gcs_emulator, monkeypatch) -> str:
    """Points Cloud Storage clients (here, in workers and in kfp.local steps) at the emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return gcs_emulator


@pytest.fixture
def bq_env(bq_emulator, monkeypatch) -> BigQueryEmulator:
    """Points BigQuery clients at the emulator: REST and the Storage Read API (gRPC)."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest)
    monkeypatch.setenv("BIGQUERY_STORAGE_EMULATOR_HOST", bq_emulator.grpc)
    return bq_emulator


@pytest.fixture
def bucket(gcs_env) -> str:
    """A new, empty bucket: ``gs://<name>``."""
    from batchpredict.io import fs

    name = f"test-{uuid.uuid4().hex[:10]}"
    gcs, _ = fs.filesystem(f"gs://{name}")
    gcs.mkdir(name)
    return f"gs://{name}"


@pytest.fixture
def bq(bq_env):
    """A BigQuery client on the emulator."""
    from batchpredict.io.bigquery import bigquery_client

    return bigquery_client(bq_env.project)


def gcs_put(uri: str, data: bytes | str) -> None:
    from batchpredict.io import fs

    with fs.open_file(uri, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def gcs_read(uri: str) -> bytes:
    from batchpredict.io import fs

    with fs.open_file(uri, "rb") as f:
        return f.read()


def gcs_find(prefix: str) -> list[str]:
    """Every object under ``prefix``, as paths relative to it (no cache)."""
    from batchpredict.io import fs

    gcs, path = fs.filesystem(prefix)
    gcs.invalidate_cache()
    return sorted(p[len(path.rstrip("/")) + 1 :] for p in gcs.find(path))


def gcs_put_dir(local_dir: str, uri: str) -> None:
    for name in os.listdir(local_dir):
        with open(os.path.join(local_dir, name), "rb") as f:
            gcs_put(f"{uri}/{name}", f.read())


__all__ = [
    "BQ_PROJECT",
    "BigQueryEmulator",
    "bq",
    "bq_emulator",
    "bq_env",
    "bucket",
    "gcs_emulator",
    "gcs_env",
    "gcs_find",
    "gcs_put",
    "gcs_put_dir",
    "gcs_read",
]
