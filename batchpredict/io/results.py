"""Reading a batch prediction output directory: the other half of writing it (``io/sinks.py``).

Reads the layouts Vertex AI writes, and ours (the same as Vertex's custom-model layout), on any
path the filesystem layer serves (local, ``gs://``, ``/gcs/``), by the names ``layout.py`` defines:

- custom models: ``prediction.results-SSSSS-of-NNNNN`` (JSONL; ``.csv`` and ``.parquet``
  variants), failed instances in ``prediction.errors-SSSSS-of-NNNNN``, the error summary in
  ``prediction.errors_stats-SSSSS-of-NNNNN`` (Python ``repr`` of ``(message, count)`` tuples), and
  locally ``completion_stats.json``;
- AutoML: ``predictions_N.jsonl`` / ``predictions_N.csv`` and ``errors_N.jsonl``.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchpredict import layout
from batchpredict.errors import UserError
from batchpredict.instances import INSTANCE, KEY
from batchpredict.io import fs

CUSTOM = "custom"
AUTOML = "automl"
RESULTS_GLOBS = (layout.shard_glob(layout.RESULTS),)
ERRORS_GLOBS = (layout.shard_glob(layout.ERRORS),)
ERRORS_STATS_GLOBS = (layout.shard_glob(layout.ERRORS_STATS),)
# How many file names an error message lists.
LISTED_NAMES = 20


@dataclass
class PredictionFiles:
    """The files of one batch prediction output directory."""

    directory: str
    layout: str
    results: list[str]
    errors: list[str] = field(default_factory=list)
    errors_stats: list[str] = field(default_factory=list)
    completion_stats: str = ""


@dataclass
class Record:
    """One result or error line: its key or instance, and its prediction or error."""

    key: Any = None
    instance: Any = None
    prediction: Any = None
    error: dict[str, Any] | None = None

    @property
    def key_or_instance(self) -> Any:
        """What identifies the record: its ``key`` (key_field jobs), else its ``instance``."""
        return self.key if self.key is not None else self.instance

    def key_in(self, key_column: str = "") -> Any:
        """The record's key: ``key`` (key_field jobs), else ``key_column`` inside the instance."""
        if self.key is not None:
            return self.key
        if key_column and isinstance(self.instance, dict):
            return self.instance.get(key_column)
        return None


def find_prediction_files(directory: str) -> PredictionFiles:
    """Finds the result, error and stats files of the output in ``directory``.

    ``directory`` is the output directory itself, or a prefix holding exactly one
    ``prediction-*`` directory.

    Raises:
        UserError: the directory does not exist, holds no output, or holds several outputs.
    """
    filesystem, root = fs.filesystem(directory)
    if not filesystem.isdir(root):
        raise UserError(f"Batch prediction output directory {directory!r} does not exist.")
    names = sorted(posixpath.basename(p.rstrip("/")) for p in filesystem.ls(root, detail=False))

    def match(patterns: tuple[str, ...]) -> list[str]:
        return [
            fs.join(directory, n) for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)
        ]

    def completion_stats() -> str:
        name = layout.COMPLETION_STATS_FILE
        return fs.join(directory, name) if name in names else ""

    results = match(RESULTS_GLOBS)
    if results:
        return PredictionFiles(
            directory=directory,
            layout=CUSTOM,
            results=results,
            errors=match(ERRORS_GLOBS),
            errors_stats=match(ERRORS_STATS_GLOBS),
            completion_stats=completion_stats(),
        )
    automl = match(layout.AUTOML_RESULTS_GLOBS)
    if automl:
        return PredictionFiles(
            directory=directory,
            layout=AUTOML,
            results=automl,
            errors=match(layout.AUTOML_ERRORS_GLOBS),
        )
    subdirs = [n for n in names if n.startswith(layout.PREDICTION_DIR_PREFIX)]
    subdirs = [n for n in subdirs if filesystem.isdir(posixpath.join(root, n))]
    if len(subdirs) == 1:
        return find_prediction_files(fs.join(directory, subdirs[0]))
    errors = match(ERRORS_GLOBS + layout.AUTOML_ERRORS_GLOBS)
    errors_stats = match(ERRORS_STATS_GLOBS)
    if errors or errors_stats:  # every instance failed: no results file, only errors
        return PredictionFiles(
            directory=directory,
            layout=CUSTOM if errors_stats else AUTOML,
            results=[],
            errors=errors,
            errors_stats=errors_stats,
            completion_stats=completion_stats(),
        )
    if len(subdirs) > 1:
        raise UserError(
            f"{directory!r} holds several batch prediction outputs {subdirs}; give one of them."
        )
    raise UserError(
        f"No batch prediction output in {directory!r}: expected prediction.results-* "
        f"(custom models) or predictions_*.jsonl / .csv (AutoML); found {names[:LISTED_NAMES]}."
    )


def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``."""
    with fs.open_file(uri, "rb") as f:
        return f.read()


def is_table_file(uri: str) -> bool:
    """True for a CSV or Parquet results file (JSONL files have no extension, or ``.jsonl``)."""
    return uri.endswith((".csv", ".parquet"))


def iter_records(uri: str) -> Iterator[Record]:
    """Reads one results or errors file (JSONL, CSV or Parquet) as records, in file order.

    Raises:
        UserError: a line that is not a JSON object, naming the file and line.
    """
    if is_table_file(uri):
        yield from _table_records(uri)
        return
    with fs.open_file(uri, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield _json_record(uri, n, line)


def read_records(uri: str) -> list[Record]:
    """All records of one results or errors file."""
    return list(iter_records(uri))


def _json_record(uri: str, n: int, line: bytes) -> Record:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:  # NaN / Infinity, as json.dumps (and so the predict step) writes them
            obj = json.loads(line)
        except ValueError:
            raise UserError(f"{uri}:{n} is not a JSON line ({e}): {line[:200]!r}") from e
    if not isinstance(obj, dict):
        raise UserError(f"{uri}:{n} is not a JSON object: {line[:200]!r}")
    error = obj.get("error", obj.get("errors"))
    return Record(
        key=obj.get(KEY),
        instance=obj.get(INSTANCE),
        prediction=obj.get("prediction"),
        error=error if isinstance(error, dict) else None,
    )


def read_table_file(uri: str) -> Any:
    """A CSV or Parquet results file as an Arrow table."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with fs.arrow_file(uri) as f:  # not a Python file object: see arrow_file
        return pq.read_table(f) if uri.endswith(".parquet") else pacsv.read_csv(f)


def _table_records(uri: str) -> Iterator[Record]:
    table = read_table_file(uri)
    names = table.column_names
    prediction_column = "prediction" if "prediction" in names else None
    error_columns = [c for c in ("error", "errors") if c in names]
    instance_columns = [c for c in names if c not in (KEY, "prediction", INSTANCE, *error_columns)]
    cols = {c: table.column(c).to_pylist() for c in names}
    for i in range(table.num_rows):
        prediction = cols[prediction_column][i] if prediction_column else None
        if isinstance(prediction, str) and prediction[:1] in "[{":
            with contextlib.suppress(ValueError):
                prediction = json.loads(prediction)
        if INSTANCE in cols:
            instance = cols[INSTANCE][i]
        else:
            instance = {c: cols[c][i] for c in instance_columns} or None
        error = cols[error_columns[0]][i] if error_columns else None
        if isinstance(error, str):
            try:
                error = json.loads(error)
            except ValueError:
                error = {"message": error}
        yield Record(
            key=cols[KEY][i] if KEY in cols else None,
            instance=instance,
            prediction=prediction,
            error=error if isinstance(error, dict) else None,
        )


def read_errors_stats(uri: str) -> list[tuple[str, int]]:
    """Parses ``prediction.errors_stats-*``: one ``('message', count)`` tuple per line."""
    stats = []
    for line in read_bytes(uri).decode("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            message, count = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError) as e:
            raise UserError(f"{uri}: not a (message, count) tuple: {line[:200]!r}") from e
        stats.append((str(message), int(count)))
    return stats


def read_completion_stats(uri: str) -> dict[str, Any]:
    """``completion_stats.json`` (written by the local backend)."""
    return json.loads(read_bytes(uri))


__all__ = [
    "AUTOML",
    "CUSTOM",
    "PredictionFiles",
    "Record",
    "find_prediction_files",
    "iter_records",
    "read_completion_stats",
    "read_errors_stats",
    "read_records",
]
