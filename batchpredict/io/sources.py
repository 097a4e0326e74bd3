"""Instance sources, one per ``instances_format``.

A source plans its input as splits (picklable units of work: a byte range of a line file, a
Parquet row group, a whole TFRecord file) in the main process; a worker then reads a split in
batches of at most ``batch_size`` records, each already converted by Vertex's instance rules.
Every record read is either an instance in a batch or a failure with its reason: nothing is
dropped silently.
"""

from __future__ import annotations

import base64
import csv
import logging
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import orjson

from batchpredict.errors import CODE_INVALID_ARGUMENT, InstanceError, UserError
from batchpredict.instances import Converted, InstanceConfig, TableConverter, convert_json
from batchpredict.io import fs
from batchpredict.io.base import Batch, Source, Split
from batchpredict.io.tfrecord import TFRecordError, read_records

log = logging.getLogger(__name__)

# Line files larger than this are split into byte ranges read by different workers.
SPLIT_BYTES = 16 * 1024 * 1024
# Bytes read from a line file at a time.
READ_BLOCK_BYTES = 1024 * 1024


def _failure(display: Any, message: str) -> tuple[Any, InstanceError]:
    return display, InstanceError(message, CODE_INVALID_ARGUMENT, record=True)


def _decoded(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


class LineSource(Source):
    """A text format with one record per line, splittable by byte ranges."""

    def splits(self) -> list[Split]:
        """Byte ranges of at most SPLIT_BYTES (after the header, if any) of each file."""
        out = []
        for uri in self.uris:
            size = fs.file_size(uri)
            start = self._data_start(uri)
            if size <= start:
                out.append(Split(uri, start, size, 0))
                continue
            for lo in range(start, size, SPLIT_BYTES):
                hi = min(lo + SPLIT_BYTES, size)
                out.append(Split(uri, lo, hi, hi - lo))
        return out

    def _data_start(self, uri: str) -> int:
        return 0

    def _line_blocks(self, split: Split) -> Iterator[tuple[list[bytes], int]]:
        """Yields (non-blank lines, bytes consumed) for the lines starting in the split."""
        with fs.open_file(split.uri, "rb") as f:
            pos = split.start
            if split.start > 0:
                f.seek(split.start - 1)
                skipped = f.readline()  # a line starting before the split belongs to the last
                pos = split.start - 1 + len(skipped)
            end = split.end if split.end >= 0 else None
            carry = b""
            while end is None or pos < end:
                want = READ_BLOCK_BYTES if end is None else min(READ_BLOCK_BYTES, end - pos)
                block = f.read(want)
                if not block:
                    break
                pos += len(block)
                lines = (carry + block).split(b"\n")
                carry = lines.pop()
                yield [ln for ln in lines if ln.strip()], len(block)
            if carry:  # the last line started inside the split: finish it
                rest = f.readline()
                line = carry + rest
                yield ([line] if line.strip() else []), 0

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Groups the split's lines into batches and converts them."""
        pending: list[bytes] = []
        work = 0
        for lines, consumed in self._line_blocks(split):
            work += consumed
            pending.extend(lines)
            while len(pending) >= batch_size:
                chunk, pending = pending[:batch_size], pending[batch_size:]
                yield Batch(self.convert_lines(chunk), work)
                work = 0
        if pending or work:
            yield Batch(self.convert_lines(pending), work)

    @abstractmethod
    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Parses and converts raw lines."""


class JsonlSource(LineSource):
    """``jsonl``: each line's JSON value is an instance."""

    format = "jsonl"

    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Parses each line with orjson; a malformed line is a failure."""
        loads = orjson.loads
        failures = []
        try:
            values = [loads(ln) for ln in lines]
        except orjson.JSONDecodeError:
            values = []
            for ln in lines:
                try:
                    values.append(loads(ln))
                except orjson.JSONDecodeError as err:
                    failures.append(_failure(_decoded(ln.rstrip(b"\r")), f"Invalid JSON: {err}"))
        out = convert_json(values, self.cfg)
        out.failures[:0] = failures
        return out


class CsvSource(LineSource):
    """``csv``: a header row, then rows; quoted cells are strings, unquoted cells floats."""

    format = "csv"
    object_instances = False
    instances_are = "arrays of the row's values"

    def __init__(self, uris: list[str], cfg: InstanceConfig) -> None:
        """Reads nothing yet; headers are read per file when needed."""
        super().__init__(uris, cfg)
        self._headers: dict[str, tuple[list[str], int]] = {}
        self._converters: dict[str, TableConverter] = {}

    def _header(self, uri: str) -> tuple[list[str], int]:
        if uri not in self._headers:
            with fs.open_file(uri, "rb") as f:
                first = f.readline()
            if not first.strip():
                raise UserError(
                    f"CSV input {uri!r} has no header row; Vertex's csv format needs one."
                )
            columns = next(csv.reader([_decoded(first).rstrip("\r\n")]))
            if _looks_like_data(_decoded(first).rstrip("\r\n")):
                log.warning(
                    "The first row of CSV input %s looks like data, not a header: %s. Vertex's "
                    "csv format reads the first row of each file as the column names, so this "
                    "row is not predicted. Add a header row (the column names) to the file.",
                    uri,
                    ",".join(columns)[:200],
                )
            self._headers[uri] = (columns, len(first))
        return self._headers[uri]

    def _data_start(self, uri: str) -> int:
        return self._header(uri)[1]

    def _converter(self, uri: str) -> TableConverter:
        if uri not in self._converters:
            columns, _ = self._header(uri)
            self._converters[uri] = TableConverter(columns, self.cfg, source=uri)
        return self._converters[uri]

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """As LineSource, with the file's converter selected first."""
        self._current = self._converter(split.uri)
        yield from super().batches(split, batch_size)

    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Parses rows with Vertex's typing, checking each row's arity against the header."""
        conv = self._current
        width = len(conv.columns)
        rows: list[list[Any]] = []
        failures = []
        for ln in lines:
            text = _decoded(ln).rstrip("\r")
            try:
                row = next(csv.reader([text], quoting=csv.QUOTE_NONNUMERIC))
            except ValueError:  # "could not convert string to float: '<cell>'": no values
                failures.append(
                    _failure(
                        text,
                        "Invalid CSV row: an unquoted value is not a number; unquoted values "
                        'are numbers, strings are written in double quotes ("...").',
                    )
                )
                continue
            except csv.Error as err:
                failures.append(_failure(text, f"Invalid CSV row: {err}"))
                continue
            if len(row) != width:
                failures.append(
                    _failure(text, f"CSV row has {len(row)} values; the header has {width}.")
                )
                continue
            if "" in row:
                empty = _unquoted_empty_column(text, conv.columns)
                if empty is not None:
                    failures.append(
                        _failure(
                            text,
                            f"CSV row has an empty unquoted value in column {empty!r}; unquoted "
                            'values are numbers: write a number, or "" for an empty string.',
                        )
                    )
                    continue
            rows.append(row)
        out = conv.convert(rows)
        out.failures[:0] = failures
        return out


def _looks_like_data(first_row: str) -> bool:
    """True when every cell of a CSV header row is an unquoted number: a data row, not names."""
    try:
        cells = next(csv.reader([first_row], quoting=csv.QUOTE_NONNUMERIC))
    except (ValueError, csv.Error):
        return False  # a cell is not a number: names
    return bool(cells) and all(isinstance(c, float) for c in cells)


def _unquoted_empty_column(text: str, columns: list[str]) -> str | None:
    """The column of an empty unquoted cell in ``text``, if any (``""`` is a quoted one)."""
    raw = next(csv.reader([text], quoting=csv.QUOTE_NONE))
    if len(raw) != len(columns):  # commas inside quoted cells: no unquoted empties to find
        return None
    return next((c for c, cell in zip(columns, raw) if cell == ""), None)


class FileListSource(LineSource):
    """``file-list``: each line is a file URI; the instance is ``{"b64": <file content>}``."""

    format = "file-list"
    named_fields = False
    object_instances = False
    instances_are = "b64 blobs"

    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Reads each listed file; the output's instance is the URI."""
        out = Converted()
        for ln in lines:
            uri = _decoded(ln).strip()
            try:
                with fs.open_file(uri, "rb") as f:
                    content = f.read()
            except (OSError, ValueError) as err:
                out.failures.append(_failure(uri, f"Cannot read {uri!r}: {err}"))
                continue
            out.instances.append({"b64": base64.b64encode(content).decode("ascii")})
            out.displays.append(uri)
        return out


class TFRecordSource(Source):
    """``tf-record``: each record is ``{"b64": <record bytes>}``.

    Files are read whole (TFRecord has no sync markers to split on).
    """

    format = "tf-record"
    named_fields = False
    object_instances = False
    instances_are = "b64 blobs"
    gzip = False

    def splits(self) -> list[Split]:
        """One split per file."""
        return [Split(uri, weight=fs.file_size(uri)) for uri in self.uris]

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Reads records; a corrupt record ends the file with one failure naming it."""
        out = Converted()
        with fs.open_file(split.uri, "rb", compression="gzip" if self.gzip else None) as f:
            records = read_records(f, split.uri)
            while True:
                try:
                    data = next(records)
                except StopIteration:
                    break
                except (TFRecordError, OSError, EOFError) as err:
                    out.failures.append(_failure(split.uri, f"Corrupt TFRecord input: {err}"))
                    break
                instance = {"b64": base64.b64encode(data).decode("ascii")}
                out.instances.append(instance)
                out.displays.append(instance)
                if len(out.instances) >= batch_size:
                    yield Batch(out, 0)
                    out = Converted()
        yield Batch(out, split.weight)


class TFRecordGzipSource(TFRecordSource):
    """``tf-record-gzip``: gzip-compressed TFRecord files."""

    format = "tf-record-gzip"
    gzip = True


class ParquetSource(Source):
    """``parquet`` (not a Vertex format; asked for by users): rows as tables convert them."""

    format = "parquet"
    vertex = False

    def __init__(self, uris: list[str], cfg: InstanceConfig) -> None:
        """Keeps the files; schemas are read when planning."""
        super().__init__(uris, cfg)
        self._converters: dict[str, TableConverter] = {}

    def splits(self) -> list[Split]:
        """One split per row group."""
        import pyarrow.parquet as pq

        out = []
        for uri in self.uris:
            with fs.open_file(uri, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            for i in range(meta.num_row_groups):
                out.append(Split(uri, i, -1, meta.row_group(i).num_rows))
            if meta.num_row_groups == 0:
                out.append(Split(uri, 0, 0, 0))
        return out

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Reads one row group in batches."""
        import pyarrow.parquet as pq

        from batchpredict.io.arrow_rows import batch_rows

        if split.end == 0:
            return
        with fs.open_file(split.uri, "rb") as f:
            pf = pq.ParquetFile(f)
            conv = self._converters.get(split.uri)
            if conv is None:
                conv = TableConverter(pf.schema_arrow.names, self.cfg, source=split.uri)
                self._converters[split.uri] = conv
            for rb in pf.iter_batches(batch_size=batch_size, row_groups=[split.start]):
                yield Batch(conv.convert(batch_rows(rb)), rb.num_rows)


def read_all(source: Source, batch_size: int = 1024) -> Converted:
    """Reads every split of ``source`` into one Converted (tests and small inputs)."""
    out = Converted()
    for split in source.splits():
        for batch in source.batches(split, batch_size):
            out.instances += batch.converted.instances
            out.displays += batch.converted.displays
            out.failures += batch.converted.failures
    return out


__all__ = [
    "Batch",
    "CsvSource",
    "FileListSource",
    "JsonlSource",
    "ParquetSource",
    "Source",
    "Split",
    "TFRecordGzipSource",
    "TFRecordSource",
    "read_all",
]
