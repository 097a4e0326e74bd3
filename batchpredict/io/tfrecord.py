"""TFRecord files without TensorFlow: each record's length and data CRCs are verified.

Layout of one record: uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


class TFRecordError(ValueError):
    """A corrupt or truncated TFRecord file."""


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32-C of ``data``."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(f: BinaryIO, name: str = "<stream>") -> Iterator[bytes]:
    """Yields each record's bytes, verifying both CRCs.

    Raises:
        TFRecordError: on a CRC mismatch or a truncated record, naming the file and offset.
    """
    offset = 0
    while True:
        header = f.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise TFRecordError(f"{name}: truncated record header at byte {offset}.")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc(header[:8]) != length_crc:
            raise TFRecordError(f"{name}: length CRC mismatch at byte {offset}; corrupt file.")
        data = f.read(length)
        footer = f.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise TFRecordError(f"{name}: truncated record at byte {offset}.")
        if masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise TFRecordError(f"{name}: data CRC mismatch at byte {offset}; corrupt record.")
        offset += _HEADER.size + length + _FOOTER.size
        yield data


def write_record(f: BinaryIO, data: bytes) -> None:
    """Appends one record to ``f``."""
    length = struct.pack("<Q", len(data))
    f.write(length)
    f.write(_FOOTER.pack(masked_crc(length)))
    f.write(data)
    f.write(_FOOTER.pack(masked_crc(data)))
