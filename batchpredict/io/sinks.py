"""Result destinations: Vertex's output directory layout, written atomically.

A Destination lives in the main process: it picks the output directory, hands each worker a
ShardWriter for its shard, and at the end writes the summaries and publishes the directory in one
step (written under a temporary name, renamed when complete), so nothing that looks complete
exists before it is.
"""

from __future__ import annotations

import contextlib
import csv
import json
import uuid
from abc import abstractmethod
from typing import Any

from batchpredict import layout
from batchpredict.errors import InstanceError, UserError, first_line
from batchpredict.instances import INSTANCE, KEY, display_label
from batchpredict.io import fs
from batchpredict.io.base import Destination, OutputPlan, ShardWriter
from batchpredict.io.encoding import dumps, dumps_many

# Written and deleted under the temporary prefix before work starts, to check write access.
REMOTE_PROBE_FILE = ".write-probe"


class DirectoryDestination(Destination):
    """``gcs_destination_output_uri_prefix``: a directory on any fsspec filesystem."""

    def __init__(
        self, prefix: str, dir_name: str, writer: type[ShardWriter], key_mode: bool
    ) -> None:
        """Plans ``<prefix>/<dir_name>``, written by ``writer``; created by ``prepare``."""
        self.prefix = fs.gcs_uri(prefix).rstrip("/")
        self.dir_name = dir_name
        self.writer = writer
        self.predictions_format = writer.format
        self.key_mode = key_mode
        self.tmp_uri = fs.join(self.prefix, f".{dir_name}.incomplete-{uuid.uuid4().hex[:8]}")

    @classmethod
    def for_output(cls, plan: OutputPlan) -> DirectoryDestination:
        """``<uri>/<directory_name>``, or ``<uri>/prediction-<model>-<timestamp>``."""
        name = plan.directory_name or layout.output_directory_name(
            plan.model_display_name, plan.started
        )
        return cls(plan.uri, name, plan.writer, key_mode=plan.key_mode)

    @property
    def location(self) -> str:
        """``<prefix>/<dir_name>``."""
        return fs.join(self.prefix, self.dir_name)

    @property
    def errors_location(self) -> str:
        """``<prefix>/<dir_name>/prediction.errors-*``."""
        return fs.join(self.location, f"prediction.{layout.ERRORS}-*")

    def prepare(self) -> None:
        """Creates the temporary directory; on an object store, checks the bucket can be written."""
        if fs.is_remote(self.tmp_uri):
            self._check_remote_prefix()
            return
        filesystem, path = fs.filesystem(self.tmp_uri)
        try:
            filesystem.makedirs(path, exist_ok=True)
        except (OSError, ValueError) as err:
            raise UserError(
                f"Cannot create the output directory under {self.prefix!r}: {err}. Check "
                "gcs_destination_output_uri_prefix and its permissions."
            ) from err

    def shard_writer(self, index: int, count: int) -> ShardWriter:
        """A writer for this shard's results and errors files."""
        results = fs.join(
            self.tmp_uri, layout.shard_name(layout.RESULTS, index, count, self.writer.extension)
        )
        errors = fs.join(self.tmp_uri, layout.shard_name(layout.ERRORS, index, count))
        label = display_label(self.key_mode)
        return self.writer(results, errors, label)

    @property
    def marker(self) -> str:
        """The completeness marker, outside the directory (``layout.completion_marker``)."""
        return layout.completion_marker(self.prefix, self.dir_name)

    def commit(self, errors_stats: dict[str, int], completion_stats: dict[str, Any]) -> None:
        """Writes errors_stats and puts the directory in place.

        The directory holds only Vertex's files. A local directory appears at once (a rename); on
        Cloud Storage, where it cannot, the completeness marker beside it (with the completion
        stats) is written last, and its presence says the directory is complete.
        """
        with fs.open_file(fs.join(self.tmp_uri, layout.ERRORS_STATS_FILE), "w") as f:
            f.write(layout.errors_stats_lines(errors_stats))
        if not fs.is_remote(self.tmp_uri):
            self._publish_local()
            return
        self._remove_marker()  # a replaced run's marker must not vouch for the new directory
        self._publish_remote()
        filesystem, marker = fs.filesystem(self.marker)
        filesystem.makedirs(marker.rsplit("/", 1)[0], exist_ok=True)
        with fs.open_file(self.marker, "w") as f:
            f.write(json.dumps({"output_directory": self.location, **completion_stats}, indent=2))
            f.write("\n")

    def _remove_marker(self) -> None:
        filesystem, marker = fs.filesystem(self.marker)
        with contextlib.suppress(FileNotFoundError):
            filesystem.rm(marker)

    def _publish_local(self) -> None:
        filesystem, final = fs.filesystem(self.location)
        _, tmp = fs.filesystem(self.tmp_uri)
        if filesystem.exists(final):  # a fixed output_directory_name: replace the last run's
            old = f"{final}.replaced-{uuid.uuid4().hex[:8]}"
            filesystem.mv(final, old, recursive=True)
            filesystem.mv(tmp, final, recursive=True)
            filesystem.rm(old, recursive=True)
        else:
            filesystem.mv(tmp, final, recursive=True)

    def abort(self) -> None:
        """Deletes the temporary directory."""
        filesystem, tmp = fs.filesystem(self.tmp_uri)
        filesystem.invalidate_cache(tmp)  # workers wrote it: this process's listings are stale
        if filesystem.exists(tmp):
            filesystem.rm(tmp, recursive=True)

    # Object stores (gs://) have no directory rename: a "move" copies object by object, so the
    # output would appear piecemeal. Instead the shards stay under the hidden temporary prefix
    # until the job is done; then they are copied (server side) into the final directory, results
    # after the errors files, and the completeness marker (outside the directory) is written last.

    def _check_remote_prefix(self) -> None:
        """Fails early, naming the URI, when the bucket is missing or cannot be written."""
        fs.check_bucket(self.prefix, "gcs_destination_output_uri_prefix")
        probe = fs.join(self.tmp_uri, REMOTE_PROBE_FILE)
        try:
            with fs.open_file(probe, "wb") as f:
                f.write(b"")
            filesystem, path = fs.filesystem(probe)
            filesystem.rm(path)
        except Exception as err:  # gcsfs: 403 -> OSError("Forbidden: ..."), 401 -> HttpError
            raise UserError(
                f"Cannot write under gcs_destination_output_uri_prefix={self.prefix!r}: "
                f"{first_line(err)}. Check that the credentials may create objects there."
            ) from err

    def _publish_remote(self) -> None:
        filesystem, tmp = fs.filesystem(self.tmp_uri)
        _, final = fs.filesystem(self.location)
        filesystem.invalidate_cache()
        names = sorted(p.rsplit("/", 1)[-1] for p in filesystem.find(tmp))
        if filesystem.exists(final):  # a fixed output_directory_name: replace the last run's
            filesystem.rm(final, recursive=True)
        results_prefix = f"prediction.{layout.RESULTS}-"
        groups = [
            [n for n in names if not n.startswith(results_prefix)],
            [n for n in names if n.startswith(results_prefix)],
        ]
        try:
            for group in groups:
                if group:
                    sources = [f"{tmp}/{n}" for n in group]
                    filesystem.copy(sources, [f"{final}/{n}" for n in group])
        except BaseException:
            with contextlib.suppress(Exception):  # leave nothing that looks like output
                filesystem.rm(final, recursive=True)
            self.abort()
            raise
        filesystem.rm(tmp, recursive=True)
        filesystem.invalidate_cache()


def _error_record(label: str, display: Any, err: InstanceError) -> str:
    """``{"key"|"instance": ..., "error": {code, message}, "source": {uri, line}}``.

    A record whose key could not be read is labelled ``instance`` (it holds the input record);
    ``source`` (the input file and line) where the source format has lines.
    """
    label = INSTANCE if err.record else label
    record = {label: display, "error": {"code": err.code, "message": str(err)}}
    if err.source:
        record["source"] = err.source
    return dumps(record)


class JsonlShardWriter(ShardWriter):
    """Vertex's JSONL results: ``{"instance"|"key": ..., "prediction": ...}`` per line."""

    format = "jsonl"

    def __init__(self, results_uri: str, errors_uri: str, label: str) -> None:
        """Opens the results file (it exists even when empty, as Vertex's shards do)."""
        self.label = label
        self._head = b'{"' + label.encode() + b'": '
        self._results = fs.open_file(results_uri, "wb")
        self._errors = _LazyErrors(errors_uri)

    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """One line per result; identical to ``json.dumps({label: d, "prediction": p})``."""
        head, mid = self._head, b', "prediction": '
        self._results.write(
            b"".join(
                head + d + mid + p + b"}\n"
                for d, p in zip(dumps_many(displays), dumps_many(predictions))
            )
        )

    def write_errors(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """One line per failed instance."""
        self._errors.write("".join(_error_record(self.label, d, e) + "\n" for d, e in failures))

    def close(self) -> None:
        """Closes both files."""
        self._results.close()
        self._errors.close()


class TableShardWriter(ShardWriter):
    """Results as a table: the key (or one column per instance value), then ``prediction``.

    Nested values (lists, objects) are written as JSON text; scalars as themselves. The header
    comes from the first row; failed instances go to a JSONL errors shard, as with JSONL results.
    Subclasses write the rows in one file format.
    """

    def __init__(self, results_uri: str, errors_uri: str, label: str) -> None:
        """Opens the results file when the first rows arrive (or at close, empty)."""
        self.label = label
        self.results_uri = results_uri
        self._errors = _LazyErrors(errors_uri)
        self._header: list[str] | None = None

    @property
    def header(self) -> list[str]:
        """The results' column names (set by the first rows, or at close)."""
        assert self._header is not None
        return self._header

    def _columns_for(self, display: Any, columns: list[str] | None) -> list[str]:
        if self.label == KEY:
            return [KEY]
        if isinstance(display, dict):
            return list(display)
        if isinstance(display, list):
            if columns and len(columns) == len(display):
                return list(columns)
            return [f"instance_{i}" for i in range(len(display))]
        return [INSTANCE]

    def _row(self, display: Any, prediction: Any) -> list[Any]:
        if self.label == KEY or not isinstance(display, (dict, list)):
            values = [display]
        elif isinstance(display, dict):
            values = [display.get(c) for c in self.header[:-1]]
        else:
            width = len(self.header) - 1
            values = list(display[:width]) + [None] * (width - len(display))
        return [_cell(v) for v in values] + [_cell(prediction)]

    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """Appends rows; the header comes from the first row."""
        if not displays:
            return
        if self._header is None:
            self._header = self._columns_for(displays[0], columns) + ["prediction"]
            self._start()
        self._write_rows([self._row(d, p) for d, p in zip(displays, predictions)])

    def write_errors(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Failed instances go to the JSONL errors shard, whatever the results format."""
        self._errors.write("".join(_error_record(self.label, d, e) + "\n" for d, e in failures))

    def close(self) -> None:
        """Closes the files; an empty shard still gets its header (CSV) or schema (Parquet)."""
        if self._header is None:
            self._header = [self.label, "prediction"]
            self._start()
        self._finish()
        self._errors.close()

    @abstractmethod
    def _start(self) -> None:
        """Opens the results file, once the header is known."""

    @abstractmethod
    def _write_rows(self, rows: list[list[Any]]) -> None:
        """Appends rows (cells in header order)."""

    @abstractmethod
    def _finish(self) -> None:
        """Completes and closes the results file."""


class CsvShardWriter(TableShardWriter):
    """``csv`` results: a header row, then one row per result."""

    format = "csv"
    extension = ".csv"

    def _start(self) -> None:
        self._file = fs.open_file(self.results_uri, "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.header)

    def _write_rows(self, rows: list[list[Any]]) -> None:
        self._csv.writerows(rows)

    def _finish(self) -> None:
        self._file.close()


class ParquetShardWriter(TableShardWriter):
    """``parquet`` results (not a Vertex format): the schema is inferred from the first rows."""

    format = "parquet"
    extension = ".parquet"
    vertex = False

    def _start(self) -> None:
        self._file = fs.open_file(self.results_uri, "wb")
        self._parquet: Any = None

    def _write_rows(self, rows: list[list[Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [dict(zip(self.header, r)) for r in rows]
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._file, pa.Table.from_pylist(records).schema)
        self._parquet.write_table(pa.Table.from_pylist(records, schema=self._parquet.schema))

    def _finish(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        else:  # no rows: an empty table whose columns are the header, as text
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([(c, pa.string()) for c in self.header])
            pq.write_table(schema.empty_table(), self._file)
        self._file.close()


class _LazyErrors:
    """A shard's errors file, created by the first failed instance: none on a clean run."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._file: Any = None

    def write(self, text: str) -> None:
        if not text:
            return
        if self._file is None:
            self._file = fs.open_file(self.uri, "w")
        self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dumps(value)
    return value


__all__ = [
    "CsvShardWriter",
    "DirectoryDestination",
    "JsonlShardWriter",
    "ParquetShardWriter",
    "TableShardWriter",
]
