"""Reading a job's results back: one reader for an output directory or a BigQuery table.

``read_predictions(location)`` takes what a job reports (``JobResult.gcs_output_directory``, or
``bq://project.dataset.table`` of its predictions table), ours or Vertex AI's, local or
``gs://``, JSONL, CSV or Parquet; ``JobResult.predictions()`` is the same for a finished job::

    reader = result.predictions()
    for key_or_instance, prediction in reader:
        ...
    failed = list(reader.errors())          # Records: key or instance, and error {code, message}
    table = reader.to_arrow()               # or reader.to_pandas()

``iter_outputs()`` returns what aiplatform's ``BatchPredictionJob.iter_outputs()`` does, so code
can move between the two: the output files (objects with ``name`` and ``download_as_bytes()``,
like ``google.cloud.storage.Blob``) or, for BigQuery, the predictions table's rows.

The directory layout is read by ``io/results.py``, the module Collect predictions reads it with.
"""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchpredict.errors import UserError, first_line
from batchpredict.instances import INSTANCE, KEY
from batchpredict.io import bigquery, fs, results
from batchpredict.io.results import Record

# aiplatform's BatchPredictionJob.iter_outputs default.
BQ_MAX_RESULTS = 100
PREDICTION = "prediction"
ERRORS_COLUMN = "errors"


def read_predictions(location: str, *, errors_table: str = "", project: str = "") -> Reader:
    """A reader of one job's output.

    Args:
        location: the output directory (or a prefix holding one ``prediction-*`` directory), or
            ``bq://project.dataset.table``: the predictions table.
        errors_table: BigQuery: the errors table, when not the one named after the predictions
            table (``errors``, ``errors_<timestamp>_<NNN>``, ``<table>_errors``).
        project: BigQuery: the project that runs (and pays for) the reads; defaults to the table's.

    Raises:
        UserError: no output at ``location``.
    """
    if location.startswith(("bq://", "bigquery://")):
        return BigQueryReader(location, errors_table=errors_table, project=project)
    return DirectoryReader(location)


@dataclass
class Output:
    """One job's output read into memory."""

    location: str
    layout: str
    results: list[Record]
    errors: list[Record]
    errors_stats: list[tuple[str, int]]
    completion_stats: dict[str, Any] | None = None


class Reader(ABC):
    """One job's predictions and failed instances."""

    location: str

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """``(key or instance, prediction)`` for each successful instance."""
        return ((r.key_or_instance, r.prediction) for r in self.records())

    @abstractmethod
    def records(self) -> Iterator[Record]:
        """The successful instances as records: ``key`` or ``instance``, and ``prediction``."""

    @abstractmethod
    def errors(self) -> Iterator[Record]:
        """The failed instances as records: ``key`` or ``instance``, and ``error``."""

    def errors_stats(self) -> list[tuple[str, int]]:
        """``(message, count)`` for each distinct error, most frequent first."""
        counts = Counter((r.error or {}).get("message", "") for r in self.errors())
        return counts.most_common()

    @abstractmethod
    def to_arrow(self) -> Any:
        """The predictions as a ``pyarrow.Table``: the key or instance column(s), ``prediction``."""

    @abstractmethod
    def errors_to_arrow(self) -> Any:
        """The failed instances as a ``pyarrow.Table``."""

    def to_pandas(self) -> Any:
        """The predictions as a ``pandas.DataFrame`` (needs pandas)."""
        _require_pandas()
        return self.to_arrow().to_pandas()

    def errors_to_pandas(self) -> Any:
        """The failed instances as a ``pandas.DataFrame`` (needs pandas)."""
        _require_pandas()
        return self.errors_to_arrow().to_pandas()

    @abstractmethod
    def iter_outputs(self, bq_max_results: int = BQ_MAX_RESULTS) -> Any:
        """As aiplatform's ``BatchPredictionJob.iter_outputs()``: output files, or table rows."""


def _require_pandas() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError as err:
        raise UserError(
            "to_pandas() needs pandas, which is not installed: `pip install pandas`, or use "
            "to_arrow()."
        ) from err


class OutputFile:
    """One file of an output directory, as much of a ``google.cloud.storage.Blob`` as readers use.

    ``name``, ``download_as_bytes()``, ``download_as_text()`` and ``open()``.
    """

    def __init__(self, uri: str, name: str) -> None:
        """``uri``: the file; ``name``: as a Blob names it (the path within the bucket)."""
        self.uri = uri
        self.name = name

    def download_as_bytes(self) -> bytes:
        """The file's content."""
        return results.read_bytes(self.uri)

    def download_as_text(self, encoding: str = "utf-8") -> str:
        """The file's content as text."""
        return self.download_as_bytes().decode(encoding)

    def open(self, mode: str = "r") -> Any:
        """A file object (text for ``"r"``, bytes for ``"rb"``)."""
        return fs.open_file(self.uri, mode)

    def __repr__(self) -> str:
        return f"OutputFile({self.uri!r})"


class DirectoryReader(Reader):
    """An output directory: ours or Vertex AI's (custom-model or AutoML layout)."""

    def __init__(self, directory: str) -> None:
        """Finds the output's files now (fails early, naming the directory)."""
        self.files = results.find_prediction_files(directory)
        self.location = self.files.directory

    def records(self) -> Iterator[Record]:
        """Streams the results files in name order."""
        for uri in self.files.results:
            yield from results.iter_records(uri)

    def errors(self) -> Iterator[Record]:
        """Streams the errors files in name order."""
        for uri in self.files.errors:
            yield from results.iter_records(uri)

    def completion_stats(self) -> dict[str, Any] | None:
        """``completion_stats.json`` where the directory has one (older local output)."""
        if not self.files.completion_stats:
            return None
        return results.read_completion_stats(self.files.completion_stats)

    def load(self) -> Output:
        """Everything the directory holds, read into memory (Collect predictions reads this)."""
        return Output(
            location=self.location,
            layout=self.files.layout,
            results=list(self.records()),
            errors=list(self.errors()),
            errors_stats=self.errors_stats(),
            completion_stats=self.completion_stats(),
        )

    def errors_stats(self) -> list[tuple[str, int]]:
        """The ``prediction.errors_stats-*`` files; else counted from the errors."""
        if self.files.errors_stats:
            stats = [s for uri in self.files.errors_stats for s in results.read_errors_stats(uri)]
            return sorted(stats, key=lambda s: -s[1])
        return super().errors_stats()

    def to_arrow(self) -> Any:
        """CSV and Parquet results as written; JSONL as ``key`` or ``instance``, ``prediction``."""
        import pyarrow as pa

        if self.files.results and all(results.is_table_file(u) for u in self.files.results):
            tables = [results.read_table_file(u) for u in self.files.results]
            return pa.concat_tables(tables, promote_options="permissive")
        rows = [
            {KEY: r.key, PREDICTION: r.prediction}
            if r.key is not None
            else {INSTANCE: r.instance, PREDICTION: r.prediction}
            for r in self.records()
        ]
        return _table(rows, [KEY if rows and KEY in rows[0] else INSTANCE, PREDICTION])

    def errors_to_arrow(self) -> Any:
        """``key``/``instance``, ``code``, ``message`` per failed instance."""
        rows = []
        for r in self.errors():
            label, value = (KEY, r.key) if r.key is not None else (INSTANCE, r.instance)
            error = r.error or {}
            rows.append({label: value, "code": error.get("code"), "message": error.get("message")})
        return _table(rows, [KEY if rows and KEY in rows[0] else INSTANCE, "code", "message"])

    def iter_outputs(self, bq_max_results: int = BQ_MAX_RESULTS) -> Iterator[OutputFile]:
        """Every file of the output directory, as aiplatform lists the job's blobs."""
        filesystem, root = fs.filesystem(self.location)
        filesystem.invalidate_cache(root)
        for path in sorted(filesystem.find(root)):
            yield OutputFile(fs.full_uri(filesystem, path), _blob_name(filesystem, path))


def _blob_name(filesystem: Any, path: str) -> str:
    """A Blob's ``name``: the path within its bucket (for local files, the base name)."""
    if fs.full_uri(filesystem, path) == path:  # local
        return posixpath.basename(path)
    return path.split("/", 1)[1]


def _table(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    """Rows as an Arrow table; a column Arrow cannot type (mixed values) is kept as JSON text."""
    import pyarrow as pa

    names = list(dict.fromkeys([*columns, *(k for r in rows for k in r)]))
    arrays = {}
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values])
    return pa.table(arrays) if rows else pa.table({c: pa.array([], pa.null()) for c in columns})


class BigQueryReader(Reader):
    """A predictions table (and its errors table) written by a job with BigQuery output."""

    def __init__(self, uri: str, errors_table: str = "", project: str = "") -> None:
        """Parses ``bq://project.dataset.table``; checks the table exists."""
        ref = bigquery.parse_uri(uri, "location")
        if not (ref.dataset and ref.table):
            raise UserError(
                f"{uri!r} does not name a predictions table; expected "
                "bq://project.dataset.table (JobResult: bigquery_output_dataset and "
                "bigquery_output_table)."
            )
        self.location = f"{bigquery.BQ_SCHEME}{ref.table_id}"
        self.table_id = ref.table_id
        name = errors_table or bigquery.errors_table_name(ref.table)
        self.errors_table_id = name if "." in name else f"{ref.dataset_id}.{name}"
        self.client = bigquery.bigquery_client(project or ref.project)
        self._table = self._get(self.table_id)
        if self._table is None:
            raise UserError(f"BigQuery table {self.table_id!r} ({uri!r}) does not exist.")

    def _get(self, table_id: str) -> Any:
        from google.api_core import exceptions as api

        try:
            return self.client.get_table(table_id)
        except api.NotFound:
            return None
        except api.GoogleAPICallError as err:
            raise UserError(f"Cannot read BigQuery table {table_id!r}: {first_line(err)}") from err

    def _rows(self, table: Any, column: str) -> Iterator[tuple[dict[str, Any], Any]]:
        for row in self.client.list_rows(table):
            values = dict(row)
            yield values, values.pop(column, None)

    def records(self) -> Iterator[Record]:
        """One record per row: the instance columns, and ``prediction``."""
        for instance, prediction in self._rows(self._table, PREDICTION):
            yield Record(instance=instance, prediction=prediction)

    def errors(self) -> Iterator[Record]:
        """One record per row of the errors table (none when it does not exist)."""
        table = self._get(self.errors_table_id)
        if table is None:
            return
        for instance, error in self._rows(table, ERRORS_COLUMN):
            yield Record(instance=instance, error=dict(error) if error else None)

    def to_arrow(self) -> Any:
        """The predictions table, typed by its schema."""
        return self.client.list_rows(self._table).to_arrow(create_bqstorage_client=False)

    def errors_to_arrow(self) -> Any:
        """The errors table (an empty table when it does not exist)."""
        import pyarrow as pa

        table = self._get(self.errors_table_id)
        if table is None:
            return pa.table({})
        return self.client.list_rows(table).to_arrow(create_bqstorage_client=False)

    def iter_outputs(self, bq_max_results: int = BQ_MAX_RESULTS) -> Any:
        """The predictions table's first rows, as aiplatform returns them (a ``RowIterator``)."""
        return self.client.list_rows(self._table, max_results=bq_max_results)


__all__ = [
    "BigQueryReader",
    "DirectoryReader",
    "Output",
    "OutputFile",
    "Reader",
    "read_predictions",
]
