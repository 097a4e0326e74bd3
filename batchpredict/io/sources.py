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
import re
from abc import abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from batchpredict.errors import CODE_INVALID_ARGUMENT, InstanceError, UserError, error_cause
from batchpredict.instances import Converted, InstanceConfig, TableConverter, convert_json
from batchpredict.io import fs, parquet_footer
from batchpredict.io.base import Batch, Source, Split, listed
from batchpredict.io.numeric_lines import numeric_rows
from batchpredict.io.tfrecord import TFRecordError, read_records

log = logging.getLogger(__name__)

# Line files larger than this are split into byte ranges read by different workers.
SPLIT_BYTES = 16 * 1024 * 1024
# Bytes read from a line file at a time.
READ_BLOCK_BYTES = 1024 * 1024


UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


def _check_not_gzip(head: bytes, uri: str) -> None:
    if head.startswith(GZIP_MAGIC):
        raise UserError(
            f"Input {uri!r} is gzip-compressed, but its instances_format reads plain text. "
            "Decompress it (gunzip), or for TFRecord use instances_format='tf-record-gzip'."
        )


def _failure(display: Any, message: str, cause: str | None = None) -> tuple[Any, InstanceError]:
    return display, InstanceError(message, CODE_INVALID_ARGUMENT, record=True, cause=cause)


# orjson's position in a line ("... at line 1 column 7", ": line 1 column 7 (char 6)"): the
# errors file keeps it (with the line's source), errors_stats counts the message without it.
_JSON_POSITION = re.compile(r":? (?:at )?line \d+ column \d+(?: \(char \d+\))?")


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

    def _line_blocks(
        self, split: Split
    ) -> Iterator[tuple[list[bytes], int, int, list[int] | None]]:
        """Yields the lines starting in the split, block by block.

        Each block: (non-blank lines, bytes consumed, lines read including blank ones, the
        positions of the blank ones or None when there are none).
        """
        with fs.open_file(split.uri, "rb") as f:
            pos = split.start
            if split.start == 0:
                head = f.read(len(UTF8_BOM))
                _check_not_gzip(head, split.uri)
                pos = len(head) if head == UTF8_BOM else 0  # Excel and Windows tools write one
                f.seek(pos)
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
                raw = (carry + block).split(b"\n")
                carry = raw.pop()
                lines = [ln for ln in raw if ln and not ln.isspace()]  # no copy, as strip()
                blanks = None
                if len(lines) != len(raw):
                    blanks = [i for i, ln in enumerate(raw) if not ln or ln.isspace()]
                yield lines, len(block), len(raw), blanks
            if carry:  # the last line started inside the split: finish it
                rest = f.readline()
                line = carry + rest.removesuffix(b"\n")  # as the split's other lines
                yield ([line] if line.strip() else []), 0, 1, (None if line.strip() else [0])

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Groups the split's lines into batches and converts them.

        Each batch can locate its records (file and line), for the error records of failures.
        """
        pending: list[bytes] = []
        work = 0
        lines_map = _LineMap(lambda: self._first_line(split))
        for lines, consumed, raw_count, blanks in self._line_blocks(split):
            work += consumed
            lines_map.add(len(lines), raw_count, blanks)
            pending.extend(lines)
            while len(pending) >= batch_size:
                chunk, pending = pending[:batch_size], pending[batch_size:]
                yield self._batch(chunk, work, split.uri, lines_map)
                work = 0
        if pending or work:
            yield self._batch(pending, work, split.uri, lines_map)

    def _batch(self, chunk: list[bytes], work: int, uri: str, lines_map: _LineMap) -> Batch:
        start = lines_map.take(len(chunk))

        def locate(index: int) -> dict[str, Any]:
            return {"uri": uri, "line": lines_map.line(start + index)}

        converted = self.convert_lines(chunk)
        for (_, err), index in zip(converted.failures, converted.failure_index):
            err.source = locate(index)
        return Batch(converted, work, locate)

    def _first_line(self, split: Split) -> int:
        """The 1-based line number of the first line starting in ``split`` (read only on need)."""
        if split.start == 0:
            return 1
        count, pos = 0, 0
        with fs.open_file(split.uri, "rb") as f:
            while pos < split.start - 1:
                block = f.read(min(READ_BLOCK_BYTES, split.start - 1 - pos))
                if not block:
                    break
                count += block.count(b"\n")
                pos += len(block)
            skipped = f.readline()  # the line the split's start falls in belongs to the last
            count += skipped.count(b"\n")
        return count + 1

    @abstractmethod
    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Parses and converts raw lines."""


class JsonlSource(LineSource):
    """``jsonl``: each line's JSON value is an instance."""

    format = "jsonl"

    def convert_lines(self, lines: list[bytes]) -> Converted:
        """Parses each line with orjson; a malformed line is a failure.

        A batch of flat arrays of numbers becomes one array, with its output text made at once
        (io/numeric_lines.py).
        """
        if self.cfg.passthrough:
            rows = numeric_rows(lines)
            if rows is not None:
                return Converted(instances=rows[0], displays=rows[1])
        loads = orjson.loads
        failures, failed_at = [], []
        try:
            values = [loads(ln) for ln in lines]
        except orjson.JSONDecodeError:
            values = []
            for i, ln in enumerate(lines):
                try:
                    values.append(loads(ln))
                except orjson.JSONDecodeError as err:
                    message = f"Invalid JSON: {err}"
                    cause = _JSON_POSITION.sub("", message)
                    failures.append(_failure(_decoded(ln.rstrip(b"\r")), message, cause))
                    failed_at.append(i)
        out = convert_json(values, self.cfg)
        if failed_at or out.failure_index:  # positions among the lines, not the parsed values
            parsed = [i for i in range(len(lines)) if i not in set(failed_at)]
            out.failure_index = failed_at + [parsed[v] for v in out.failure_index]
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
            _check_not_gzip(first, uri)
            if not first.removeprefix(UTF8_BOM).strip():
                raise UserError(
                    f"CSV input {uri!r} has no header row; Vertex's csv format needs one."
                )
            text = _decoded(first.removeprefix(UTF8_BOM)).rstrip("\r\n")
            columns = next(csv.reader([text]))
            if _looks_like_data(text):
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
        kept: list[int] = []  # positions of the rows that parsed (the others failed, in order)
        for i, ln in enumerate(lines):
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
            kept.append(i)
        out = conv.convert(rows)
        out.failures[:0] = failures
        if failures:
            parsed = set(kept)
            out.failure_index = [i for i in range(len(lines)) if i not in parsed]
        return out


class _LineMap:
    """Where each non-blank line of a split is: its line number in the file, found on demand.

    Blocks of lines arrive in order; ``add`` records one (its non-blank lines, all its lines, the
    positions of the blank ones), ``take`` hands out the next records' positions, and ``line``
    turns a position into a 1-based line number. Nothing is computed until a failure asks.
    """

    def __init__(self, first_line: Callable[[], int]) -> None:
        self._first_line = first_line
        self._first: int | None = None
        self._starts: list[int] = []  # position of each block's first non-blank line
        self._blocks: list[tuple[int, list[int] | None]] = []  # (lines before it, blanks)
        self._records = 0  # non-blank lines added
        self._lines = 0  # lines added, blank ones included
        self._taken = 0

    def add(self, records: int, lines: int, blanks: list[int] | None) -> None:
        if records:
            self._starts.append(self._records)
            self._blocks.append((self._lines, blanks))
        self._records += records
        self._lines += lines

    def take(self, count: int) -> int:
        start, self._taken = self._taken, self._taken + count
        return start

    def line(self, position: int) -> int:
        if self._first is None:
            self._first = self._first_line()
        block = bisect_right(self._starts, position) - 1
        before, blanks = self._blocks[block]
        offset = position - self._starts[block]
        for blank in blanks or ():  # the offset-th non-blank line: step over blank ones
            if blank <= offset:
                offset += 1
        return self._first + before + offset


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
        for i, ln in enumerate(lines):
            uri = _decoded(ln).strip()
            try:
                with fs.open_file(uri, "rb") as f:
                    content = f.read()
            except (OSError, ValueError) as err:
                message = f"Cannot read {uri!r}: {err}"
                out.failures.append(_failure(uri, message, error_cause(message)))
                out.failure_index.append(i)
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
        """Reads records; a corrupt record ends the file with one failure naming it.

        Failures are located by the file and the record's 0-based index in it.
        """
        out = Converted()
        start = 0  # index in the file of the batch's first record
        with fs.open_file(split.uri, "rb", compression="gzip" if self.gzip else None) as f:
            records = read_records(f, split.uri)
            while True:
                try:
                    data = next(records)
                except StopIteration:
                    break
                except (TFRecordError, OSError, EOFError) as err:
                    message = f"Corrupt TFRecord input: {err}"
                    failure = _failure(split.uri, message, error_cause(message))
                    failure[1].source = _record_at(split.uri, start + len(out.instances))
                    out.failure_index.append(len(out.instances))
                    out.failures.append(failure)
                    break
                instance = {"b64": base64.b64encode(data).decode("ascii")}
                out.instances.append(instance)
                out.displays.append(instance)
                if len(out.instances) >= batch_size:
                    yield Batch(out, 0, _locator(split.uri, start, "record"))
                    start += len(out.instances)
                    out = Converted()
        yield Batch(out, split.weight, _locator(split.uri, start, "record"))


class TFRecordGzipSource(TFRecordSource):
    """``tf-record-gzip``: gzip-compressed TFRecord files."""

    format = "tf-record-gzip"
    gzip = True


class ParquetSource(Source):
    """``parquet`` (not a Vertex format; asked for by users): rows as tables convert them.

    Batches of numeric columns without nulls take the columnar path (``arrow_rows``): the model
    gets one 2-D array built from the columns, with no Python object per value.
    """

    format = "parquet"
    vertex = False
    columnar = True

    def __init__(self, uris: list[str], cfg: InstanceConfig) -> None:
        """Keeps the files; schemas are read when planning."""
        super().__init__(uris, cfg)
        self._converters: dict[str, TableConverter] = {}

    def splits(self) -> list[Split]:
        """One split per row group (see ``_row_group_rows``)."""
        out = []
        for uri in self.uris:
            rows = _row_group_rows(uri)
            for i, n in enumerate(rows):
                out.append(Split(uri, i, -1, n))
            if not rows:
                out.append(Split(uri, 0, 0, 0))
        return out

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Reads one row group in chunks of whole batches (``_chunk_rows``), yields batches.

        Decoding a chunk of many batches at once, on this thread (no Arrow thread pool: the
        other workers have the other cores), costs a third of decoding batch by batch.
        """
        import pyarrow.parquet as pq

        from batchpredict.io.arrow_rows import convert_batches

        if split.end == 0:
            return
        with fs.arrow_input(split.uri) as f:  # not a Python file object: see fs.arrow_file
            pf = pq.ParquetFile(f)
            conv = self._converters.get(split.uri)
            if conv is None:
                conv = TableConverter(pf.schema_arrow.names, self.cfg, source=split.uri)
                self._converters[split.uri] = conv
            meta = pf.metadata
            start = sum(meta.row_group(i).num_rows for i in range(split.start))
            chunk = _chunk_rows(meta.row_group(split.start), batch_size)
            for rb in pf.iter_batches(
                batch_size=chunk, row_groups=[split.start], use_threads=False
            ):
                for rows, converted in convert_batches(rb, conv, batch_size):
                    yield Batch(converted, rows, _locator(split.uri, start))
                    start += rows


def _row_group_rows(uri: str) -> list[int]:
    """The rows of each row group of ``uri``, read from the footer without loading pyarrow.

    So the main process stays single-threaded and can fork its workers (io/parquet_footer.py).
    A footer that reader does not understand is read by pyarrow, whose error names the problem.
    """
    with fs.open_file(uri, "rb") as f:
        try:
            return parquet_footer.row_group_rows(f)
        except parquet_footer.FooterError:
            pass
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.arrow_input(uri) as f:  # not a Python file object: see fs.arrow_file
            meta = pq.ParquetFile(f).metadata
    except pa.ArrowException as err:
        raise UserError(
            f"Input {uri!r} cannot be read as Parquet ({err}). Check that instances_format "
            "matches the files in gcs_source_uris."
        ) from err
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


# Parquet is decoded in chunks of whole batches of up to this many rows, and about this many
# bytes (uncompressed) for wide rows.
CHUNK_ROWS = 16_384
CHUNK_BYTES = 8 * 2**20


def _chunk_rows(row_group: Any, batch_size: int) -> int:
    """Rows decoded at once from ``row_group``: a multiple of ``batch_size`` (at least one)."""
    row_bytes = max(1, row_group.total_byte_size // max(1, row_group.num_rows))
    rows = min(CHUNK_ROWS, CHUNK_BYTES // row_bytes)
    return max(1, rows // batch_size) * batch_size


def _record_at(uri: str, index: int) -> dict[str, Any]:
    return {"uri": uri, "record": index}


def _locator(uri: str, start: int, unit: str = "row") -> Callable[[int], dict[str, Any]]:
    """Locates a batch's records whose first is ``start`` (0-based) in ``uri``.

    ``unit``: ``row`` (a table's row, as ``pyarrow.parquet.read_table(uri).slice(row, 1)`` reads
    it) or ``record`` (a TFRecord file's record).
    """

    def locate(index: int) -> dict[str, Any]:
        return {"uri": uri, unit: start + index}

    return locate


def read_all(source: Source, batch_size: int = 1024) -> Converted:
    """Reads every split of ``source`` into one Converted (tests and small inputs)."""
    out = Converted()
    for split in source.splits():
        for batch in source.batches(split, batch_size):
            out.instances += listed(batch.converted.instances)
            out.displays += listed(batch.converted.displays)
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
