"""The row counts of a Parquet file's row groups, read from its footer without pyarrow.

The main process plans Parquet input as one split per row group. Asking pyarrow for them would
load pyarrow and NumPy there, and with them threads (OpenBLAS's pool, jemalloc's background
thread); the engine forks workers only from a single-threaded process and spawns them otherwise,
which costs every worker a fresh interpreter and its imports (about a second per job on two
cores, bench/columnar_bench.py), and needs the caller's script to guard its entry point with
``if __name__ == "__main__":``. The footer is small: the Thrift compact encoding of
``FileMetaData`` (parquet.thrift), of which this reads ``row_groups[*].num_rows`` and skips the
rest. Anything it does not understand (an encrypted footer, a damaged file) raises
``FooterError``, and the caller asks pyarrow, whose error names the problem.
"""

from __future__ import annotations

import os
from typing import Any

MAGIC = b"PAR1"
# Thrift compact protocol type codes.
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
# parquet.thrift: FileMetaData.row_groups is field 4; RowGroup.num_rows is field 3.
_ROW_GROUPS, _NUM_ROWS = 4, 3
# Nesting deeper than this is not a Parquet footer (its structs nest a few levels).
_MAX_DEPTH = 32


class FooterError(ValueError):
    """The footer is not one this reader understands."""


def row_group_rows(f: Any) -> list[int]:
    """The number of rows of each row group of the Parquet file open (binary, seekable) as ``f``."""
    size = f.seek(0, os.SEEK_END)
    if size < 12:
        raise FooterError("too small for a Parquet file")
    f.seek(size - 8)
    tail = f.read(8)
    if len(tail) != 8 or tail[4:] != MAGIC:
        raise FooterError("no PAR1 footer")
    length = int.from_bytes(tail[:4], "little")
    if length <= 0 or length > size - 12:
        raise FooterError("footer length out of range")
    f.seek(size - 8 - length)
    data = f.read(length)
    if len(data) != length:
        raise FooterError("short read")
    try:
        return _Compact(data).file_row_groups()
    except (IndexError, RecursionError) as err:
        raise FooterError(f"malformed footer: {err}") from err


class _Compact:
    """A reader of Thrift's compact protocol over ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def file_row_groups(self) -> list[int]:
        groups: list[int] | None = None
        for field, kind in self.fields():
            if field == _ROW_GROUPS and kind == _LIST:
                size, element = self.collection_header()
                if element != _STRUCT:
                    raise FooterError("row_groups is not a list of structs")
                groups = [self.row_group_rows() for _ in range(size)]
            else:
                self.skip(kind, 0)
        if groups is None or self.pos != len(self.data):
            raise FooterError("no row_groups, or bytes after FileMetaData")
        return groups

    def row_group_rows(self) -> int:
        rows = None
        for field, kind in self.fields():
            if field == _NUM_ROWS and kind == _I64:
                rows = self.zigzag()
            else:
                self.skip(kind, 1)
        if rows is None or rows < 0:
            raise FooterError("a row group without num_rows")
        return rows

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise FooterError("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def fields(self):  # noqa: ANN201 - yields (field id, type) until the struct's STOP
        last = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            kind, delta = header & 0x0F, header >> 4
            last = last + delta if delta else self.zigzag()
            yield last, kind

    def collection_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        return size, header & 0x0F

    def advance(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.data):
            raise FooterError("truncated footer")

    def skip(self, kind: int, depth: int, in_collection: bool = False) -> None:
        if depth > _MAX_DEPTH:
            raise FooterError("nested too deep")
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            if in_collection:  # a collection's booleans take a byte each; a field's, none
                self.advance(1)
        elif kind == _BYTE:
            self.advance(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.advance(8)
        elif kind == _BINARY:
            self.advance(self.varint())
        elif kind in (_LIST, _SET):
            size, element = self.collection_header()
            for _ in range(size):
                self.skip(element, depth + 1, True)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1, True)
                    self.skip(types & 0x0F, depth + 1, True)
        elif kind == _STRUCT:
            for _, field_kind in self.fields():
                self.skip(field_kind, depth + 1)
        else:
            raise FooterError(f"unknown Thrift type {kind}")
