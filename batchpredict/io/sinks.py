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
import os
import uuid
from abc import abstractmethod
from bisect import bisect_right
from typing import Any

from batchpredict import layout
from batchpredict.errors import InstanceError, UserError, first_line
from batchpredict.instances import INSTANCE, KEY, display_label
from batchpredict.io import fs, publish
from batchpredict.io.base import Destination, OutputPlan, ShardWriter, listed
from batchpredict.io.encoding import UNENCODABLE, dumps, dumps_many, unencodable

# Written and deleted under the temporary prefix before work starts, to check write access.
REMOTE_PROBE_FILE = ".write-probe"
# Each worker process writes part files ``part-NNNNN.results`` / ``part-NNNNN.errors``; at commit
# they are renamed to Vertex's shard names.
PART_PREFIX = "part-"


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
        if dir_name.strip() in ("", ".", "..") or "/" in dir_name or "\x00" in dir_name:
            raise UserError(
                f"output_directory_name {dir_name!r} is not a directory name; give one name "
                "without '/', other than '.' and '..', or leave it empty for "
                "prediction-<model>-<timestamp>."
            )
        self.tmp_uri = fs.join(self.prefix, f".{dir_name}.incomplete-{uuid.uuid4().hex[:8]}")
        self._lock: int | None = None

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
        _, prefix = fs.filesystem(self.prefix)
        try:
            filesystem.makedirs(prefix, exist_ok=True)
            self._lock = publish.acquire(prefix, self.dir_name)
            publish.sweep(prefix, self.dir_name, path)
            filesystem.makedirs(path, exist_ok=True)
        except (OSError, ValueError) as err:
            self._unlock()
            raise UserError(
                f"Cannot create the output directory under {self.prefix!r}: {err}. Check "
                "gcs_destination_output_uri_prefix and its permissions."
            ) from err

    def _unlock(self) -> None:
        if self._lock is not None:
            _, prefix = fs.filesystem(self.prefix)
            publish.release(publish.lock_path(prefix, self.dir_name), self._lock)
            self._lock = None

    def _part_uris(self, index: int) -> tuple[str, str]:
        ext = self.writer.extension
        results = fs.join(self.tmp_uri, f"{PART_PREFIX}{index:05d}.{layout.RESULTS}{ext}")
        return results, fs.join(self.tmp_uri, f"{PART_PREFIX}{index:05d}.{layout.ERRORS}")

    def shard_writer(self, index: int, count: int) -> ShardWriter:
        """A writer for this part's results and errors files."""
        results, errors = self._part_uris(index)
        label = display_label(self.key_mode)
        return self.writer(results, errors, label)

    @property
    def marker(self) -> str:
        """The completeness marker, outside the directory (``layout.completion_marker``)."""
        return layout.completion_marker(self.prefix, self.dir_name)

    def discard_shard(self, index: int) -> None:
        """Deletes the part's files (either may be missing)."""
        for uri in self._part_uris(index):
            filesystem, path = fs.filesystem(uri)
            with contextlib.suppress(OSError):
                filesystem.rm(path)

    def _shard_names(self, names: list[str]) -> dict[str, str]:
        """Part file name -> Vertex shard name (``prediction.results-SSSSS-of-NNNNN``)."""
        out: dict[str, str] = {}
        for kind in (layout.RESULTS, layout.ERRORS):
            parts = sorted(
                n
                for n in names
                if n.startswith(PART_PREFIX) and n[len(PART_PREFIX) :].split(".")[1] == kind
            )
            for i, name in enumerate(parts):
                ext = self.writer.extension if kind == layout.RESULTS else ""
                out[name] = layout.shard_name(kind, i, len(parts), ext)
        return out

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
        _, final = fs.filesystem(self.location)
        _, tmp = fs.filesystem(self.tmp_uri)
        try:
            for part, shard in self._shard_names(os.listdir(tmp)).items():
                os.rename(os.path.join(tmp, part), os.path.join(tmp, shard))
            publish.publish(tmp, final)  # atomic, also over a previous set (see publish)
        finally:
            self._unlock()

    def abort(self) -> None:
        """Deletes the temporary directory."""
        filesystem, tmp = fs.filesystem(self.tmp_uri)
        try:
            filesystem.invalidate_cache(tmp)  # workers wrote it: this process's listings are stale
            if filesystem.exists(tmp):
                filesystem.rm(tmp, recursive=True)
        finally:
            self._unlock()

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
        found = sorted(p.rsplit("/", 1)[-1] for p in filesystem.find(tmp))
        renamed = self._shard_names(found)
        names = sorted(renamed.get(n, n) for n in found)
        source_of = {renamed.get(n, n): n for n in found}
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
                    sources = [f"{tmp}/{source_of[n]}" for n in group]
                    filesystem.copy(sources, [f"{final}/{n}" for n in group])
        except BaseException:
            with contextlib.suppress(Exception):  # leave nothing that looks like output
                filesystem.rm(final, recursive=True)
            self.abort()
            raise
        filesystem.rm(tmp, recursive=True)
        filesystem.invalidate_cache()


def _error_record(label: str, display: Any, err: InstanceError) -> str:
    """``{"key"|"instance": ..., "error": {code, message}, "source": {uri, ...}}``.

    A record whose key could not be read is labelled ``instance`` (it holds the input record);
    ``source`` says where the input record is, where the source can tell (``{uri, line}``,
    ``{uri, row}``, ``{uri, record}``, ``{uri, stream, row}``). A record that cannot
    be encoded (nested too deep, not JSON) is shown shortened, as text.
    """
    label = INSTANCE if err.record else label
    record = {label: display, "error": {"code": err.code, "message": str(err)}}
    if err.source:
        record["source"] = err.source
    try:
        return dumps(record)
    except UNENCODABLE as why:
        record[label] = unencodable(display, why)
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
        n = len(displays)
        parts: list[bytes] = [self._head, b"", b', "prediction": ', b"", b"}\n"] * n
        parts[1::5] = dumps_many(displays)
        parts[3::5] = dumps_many(predictions)
        self._results.write(b"".join(parts))

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
    comes from the first row; object instances with fields it lacks widen it (earlier rows get
    empty cells), so no field is dropped. Failed instances go to a JSONL errors shard, as with
    JSONL results. Subclasses write the rows in one file format.
    """

    def __init__(self, results_uri: str, errors_uri: str, label: str) -> None:
        """Opens the results file when the first rows arrive (or at close, empty)."""
        self.label = label
        self.results_uri = results_uri
        self._errors = _LazyErrors(errors_uri)
        self._header: list[str] | None = None
        self._rows = 0
        self._layouts: list[tuple[int, list[str]]] = []  # (first row, header) of each widening

    @property
    def header(self) -> list[str]:
        """The results' column names (set by the first rows, widened by later ones)."""
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

    def _widen(self, displays: list[Any]) -> None:
        """Adds the fields of object instances the header lacks, before ``prediction``."""
        if self.label == "key":
            return
        known = set(self.header)
        extra = [k for d in displays if isinstance(d, dict) for k in d if k not in known]
        if extra:
            self._header = self.header[:-1] + list(dict.fromkeys(extra)) + ["prediction"]
            self._layouts.append((self._rows, list(self.header)))

    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """Appends rows; the header comes from the first row, widened by later objects."""
        if not len(displays):
            return
        if self._write_columns(displays, predictions, columns):
            self._rows += len(displays)
            return
        displays, predictions = listed(displays), listed(predictions)
        if self._header is None:
            self._header = self._columns_for(displays[0], columns) + ["prediction"]
            self._layouts.append((0, list(self._header)))
            self._start()
        header = self._header
        try:
            self._widen(displays)
            rows = [self._row(d, p) for d, p in zip(displays, predictions)]
        except BaseException:  # a record that cannot be written: nothing of this call is
            if self._header != header:
                self._header = header
                self._layouts.pop()
            raise
        self._write_rows(rows)
        self._rows += len(rows)

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

    def _write_columns(self, displays: Any, predictions: Any, columns: list[str] | None) -> bool:
        """Writes a batch column by column when the format can; False: write it by rows."""
        return False

    @abstractmethod
    def _start(self) -> None:
        """Opens the results file, once the header is known."""

    @abstractmethod
    def _write_rows(self, rows: list[list[Any]]) -> None:
        """Appends rows (cells in header order)."""

    @abstractmethod
    def _finish(self) -> None:
        """Completes and closes the results file."""

    def _replace_results(self, tmp: str) -> None:
        filesystem, path = fs.filesystem(tmp)
        filesystem.mv(path, fs.filesystem(self.results_uri)[1])


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
        if len(self._layouts) > 1:
            self._rewrite_widened()

    def _rewrite_widened(self) -> None:
        """Rewrites the file under the widest header, row by row (bounded memory)."""
        final = self.header
        starts = [start for start, _ in self._layouts]
        tmp = self.results_uri + ".widened"
        with (
            fs.open_file(self.results_uri, "r", newline="") as src,
            fs.open_file(tmp, "w", newline="") as dst,
        ):
            reader, writer = csv.reader(src), csv.writer(dst)
            next(reader)  # the first header
            writer.writerow(final)
            for n, row in enumerate(reader):
                cells = dict(zip(self._layouts[bisect_right(starts, n) - 1][1], row))
                writer.writerow([cells.get(c, "") for c in final])
        self._replace_results(tmp)


class ParquetShardWriter(TableShardWriter):
    """``parquet`` results (not a Vertex format): the schema is inferred from the rows.

    Rows whose schema differs (a widened header, a column whose values change type, such as keys
    that are ints and then strings) go to a new segment file; at close the segments are merged
    into one file under a widened schema (ints and floats to float, other mixes to text).
    """

    format = "parquet"
    extension = ".parquet"
    vertex = False

    def _start(self) -> None:
        self._file = fs.arrow_output(self.results_uri)  # native: see fs.arrow_file
        self._parquet: Any = None
        self._segments: list[str] = []

    def _write_rows(self, rows: list[list[Any]]) -> None:
        self._write_table(_arrow_table(self.header, rows))

    def _write_columns(self, displays: Any, predictions: Any, columns: list[str] | None) -> bool:
        """The columnar path: NumPy displays, Arrow columns, or keys, and plain predictions.

        Arrow columns come as ``arrow_rows.ColumnRows``. The batch becomes Arrow columns without
        a Python row per result.
        The table is the one the row path builds from the same batch (same names, types and
        values: integers as int64, floats as double, text as string); anything else (objects,
        nested values, a width that differs from the header) returns False for the row path.
        """
        import pyarrow as pa

        keyed = self.label == KEY
        arrow = None if keyed else getattr(displays, "arrow_columns", None)  # arrow_rows
        array = hasattr(displays, "dtype")
        if arrow is None and (
            not (keyed or array) or (array and displays.ndim != (1 if keyed else 2))
        ):
            return False
        if self._header is None:
            if arrow is not None:
                first: Any = [None] * len(displays.columns)
            else:
                first = displays[0].tolist() if array else displays[0]
            if not keyed and not isinstance(first, list):
                return False
            header = self._columns_for(first, columns) + ["prediction"]
        else:
            header = self.header
        if arrow is not None:
            if len(displays.columns) != len(header) - 1:
                return False
            shown = arrow()
        elif keyed or displays.ndim == 1:
            shown = [_plain_column(displays)]
        elif displays.shape[1] == len(header) - 1:
            shown = [_plain_column(displays[:, j]) for j in range(displays.shape[1])]
        else:
            return False
        predicted = _plain_column(predictions)
        if predicted is None or None in shown:
            return False
        if self._header is None:
            self._header = header
            self._layouts.append((0, list(header)))
            self._start()
        self._write_table(pa.Table.from_arrays([*shown, predicted], names=self.header))
        return True

    def _write_table(self, table: Any) -> None:
        """Appends ``table``; rows are buffered into row groups of about ROW_GROUP_ROWS."""
        if self._parquet is not None and table.schema != self._parquet.schema:
            try:
                table = table.cast(self._parquet.schema)
            except Exception:  # noqa: BLE001 - another schema: a new segment, merged at close
                self._flush()
                self._parquet.close()
                self._file.close()
                self._segments.append(f"{self.results_uri}.segment-{len(self._segments) + 1}")
                self._file = fs.arrow_output(self._segments[-1])
                self._parquet = None
        if self._parquet is None:
            self._parquet = _parquet_writer(self._file, table.schema)
            self._pending: list[Any] = []
            self._pending_rows = self._pending_bytes = 0
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Writes the buffered rows as one row group."""
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.concat_tables(self._pending), row_group_size=2**31 - 1)
            self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def _finish(self) -> None:
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
        else:  # no rows: an empty table whose columns are the header, as text
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([(c, pa.string()) for c in self.header])
            pq.write_table(schema.empty_table(), self._file)
        self._file.close()
        if self._segments:
            self._merge_segments()

    def _merge_segments(self) -> None:
        """One file under a widened schema, a row group at a time (bounded memory)."""
        import pyarrow.parquet as pq

        files = [self.results_uri, *self._segments]
        schemas = []
        for uri in files:  # native Arrow files, not Python ones: see fs.arrow_file
            with fs.arrow_input(uri) as f:
                schemas.append(pq.ParquetFile(f).schema_arrow)
        schema = _widened_schema(schemas)
        tmp = self.results_uri + ".widened"
        with fs.arrow_output(tmp) as out, _parquet_writer(out, schema) as writer:
            for uri in files:
                with fs.arrow_input(uri) as f:
                    pf = pq.ParquetFile(f)
                    for i in range(pf.num_row_groups):
                        writer.write_table(_conform(pf.read_row_group(i), schema))
        self._replace_results(tmp)
        for uri in self._segments:
            filesystem, path = fs.filesystem(uri)
            filesystem.rm(path)


# Parquet results are written in row groups of about this many rows (or bytes, for wide rows):
# fewer, larger row groups than one per batch are cheaper to write and to read.
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 * 2**20


def _parquet_writer(file: Any, schema: Any) -> Any:
    """A ParquetWriter for results: dictionary encoding for all but floating-point columns.

    Model features and scores rarely repeat; trying a dictionary for them cost more than the rest
    of the write and made the file larger (bench/columnar_bench.py). Labels, keys and text keep it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(file, schema, use_dictionary=dictionary)


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
    import datetime as dt
    import decimal

    if value is None or isinstance(value, (str, int, float, bool, decimal.Decimal)):
        return value
    if isinstance(value, (dt.date, dt.time, dt.timedelta)):  # table inputs' own types
        return value
    if isinstance(value, (dict, list, tuple)):
        return dumps(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _cell(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _arrow_table(header: list[str], rows: list[list[Any]]) -> Any:
    """A table of ``rows``; a column whose values mix types becomes text."""
    import pyarrow as pa

    arrays = []
    for i in range(len(header)):
        values = [r[i] for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array([None if v is None else _text(v) for v in values], pa.string()))
    return pa.Table.from_arrays(arrays, names=header)


def _plain_column(values: Any) -> Any:
    """``values`` as the Arrow array the row path makes of them, when that is a plain one.

    A NumPy array of numbers, booleans or text; or a list whose values Arrow reads as int64,
    double, bool, string or nulls (the row path's cells are those very values). None for
    anything else (nested values, objects, other types): the row path decides.
    """
    import numpy as np
    import pyarrow as pa

    if hasattr(values, "dtype"):
        kind, size = values.dtype.kind, values.dtype.itemsize
        if values.ndim != 1:
            return None
        if kind == "f":  # tolist() gives Python floats: double
            return pa.array(values.astype(np.float64, copy=False))
        if kind == "i" or (kind == "u" and size < 8):  # Python ints: int64
            return pa.array(values.astype(np.int64, copy=False))
        if kind in "bU":
            return pa.array(values)
        return None
    if not len(values) or isinstance(values[0], (list, tuple, dict)):
        return None
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return None
    return array if array.type in _plain_types() else None


def _plain_types() -> tuple[Any, ...]:
    import pyarrow as pa

    return (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


def _widened_schema(schemas: list[Any]) -> Any:
    """Every column of ``schemas`` (``prediction`` last); conflicting types widened."""
    import pyarrow as pa

    types: dict[str, Any] = {}
    for schema in schemas:
        for f in schema:
            old = types.get(f.name)
            if old is None or pa.types.is_null(old):
                types[f.name] = f.type
            elif pa.types.is_null(f.type) or old == f.type:
                continue
            elif _numeric(old) and _numeric(f.type):
                types[f.name] = pa.float64()
            else:
                types[f.name] = pa.string()
    names = [n for n in types if n != "prediction"] + ["prediction"] * ("prediction" in types)
    return pa.schema([(n, types[n]) for n in names])


def _numeric(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s columns (missing ones null), cast (to text where needed)."""
    import pyarrow as pa

    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type == f.type:
            columns.append(col)
        elif pa.types.is_string(f.type) and not pa.types.is_null(col.type):
            values = col.to_pylist()
            columns.append(pa.array([None if v is None else _text(v) for v in values], f.type))
        else:
            columns.append(col.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


__all__ = [
    "CsvShardWriter",
    "DirectoryDestination",
    "JsonlShardWriter",
    "ParquetShardWriter",
    "TableShardWriter",
]
