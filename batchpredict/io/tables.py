"""Reading and writing the tables that flow between the pipeline components.

Tables are Arrow tables. Dataset artifacts are single Parquet files; a directory holds one or more
Parquet (or CSV) files. Reading goes through the filesystem layer (``io/fs.py``): local paths,
``gs://`` and ``/gcs/`` alike. Writing is to local artifact paths (KFP's ``path``; on Vertex AI
Pipelines a ``/gcs/`` FUSE path), atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchpredict.errors import UserError
from batchpredict.io import fs

PARQUET_MAGIC = b"PAR1"
# The mode open() asks for when it creates a file, before the umask applies.
NEW_FILE_MODE = 0o666
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")
# Rows converted to Python at a time when writing JSONL.
JSONL_BATCH_ROWS = 65536


def read_table(path: str) -> pa.Table:
    """Reads a Parquet or CSV file, or every such file in a directory, as one table.

    Args:
        path: a file (format sniffed from its content: Parquet magic, else CSV) or a directory.

    Returns:
        The table; a directory's files are concatenated in name order.
    """
    filesystem, fs_path = fs.filesystem(path)
    if not filesystem.exists(fs_path):
        raise UserError(f"No table at {path!r}: the path does not exist.")
    if filesystem.isdir(fs_path):
        files = sorted(
            p
            for p in filesystem.ls(fs_path, detail=False)
            if p.endswith(TABLE_SUFFIXES) and not os.path.basename(p).startswith((".", "_"))
        )
        parquet = [p for p in files if not p.endswith(".csv")]
        chosen = parquet or files
        if not chosen:
            raise UserError(
                f"No .parquet or .csv file in directory {path!r}; give a table file or a "
                "directory that holds some."
            )
        tables = [_read_file(fs.full_uri(filesystem, p)) for p in chosen]
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return _read_file(fs.full_uri(filesystem, fs_path))


def _read_file(uri: str) -> pa.Table:
    with fs.arrow_file(uri) as f:  # not a Python file object: see fs.arrow_file
        head = f.read(4)
        f.seek(0)
        if head == PARQUET_MAGIC:
            return pq.read_table(f)
        return pacsv.read_csv(f)


def write_parquet(table: pa.Table, path: str) -> None:
    """Writes ``table`` to ``path`` atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_csv(table: pa.Table, path: str) -> None:
    """Writes ``table`` as CSV with a header; strings quoted, numbers bare."""
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp)


def write_jsonl(table: pa.Table, path: str) -> None:
    """Writes one JSON object per row (column name to value), atomically."""
    opts = orjson.OPT_SERIALIZE_NUMPY
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for batch in table.to_batches(max_chunksize=JSONL_BATCH_ROWS):
            for row in batch.to_pylist():
                f.write(orjson.dumps(row, option=opts))
                f.write(b"\n")


def write_json(obj: Any, path: str) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(text: str, path: str) -> None:
    """Writes ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``, renamed to ``path`` when the block succeeds."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; the file gets the mode a plain open() would give (0644 under the
        # usual umask), so shared pipeline roots and other uids (DockerRunner) can read it.
        os.chmod(tmp, NEW_FILE_MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def table_schema(table: pa.Table) -> dict[str, str]:
    """Column name to Arrow type name, in column order."""
    return {f.name: str(f.type) for f in table.schema}


def column_values(table: pa.Table, name: str) -> list[Any]:
    """The Python values of one column."""
    return table.column(name).to_pylist()
