"""JSON Lines whose every line is a flat array of numbers: one array, and the output text at once.

On the general path each batch's lines become lists of Python numbers (orjson), NumPy copies them
into the model's array, and the writer encodes the lists again, value by value where orjson and
``json.dumps`` could differ. For the common shape of batch prediction input (``[0.52, 1.0, ...]``
per line) this module parses the whole batch straight into one array (simdjson, no Python object
per value), formats it back at once (orjson), and compares that text with the lines. Only what
the comparison proves takes this path:

- the array holds exactly the values and types orjson gives for each line (all floats, or all
  integers), so handlers that take lists get ``array.tolist()`` unchanged: orjson writes each
  float's shortest round-trip digits, so equal text means equal values, whichever parser read it;
- each row's output text is exactly ``json.dumps`` of its values, as on the general path: the
  line itself when it was written that way, else orjson's text with json.dumps's separators, and
  json.dumps's own text for the few rows where the two write numbers differently (exponents:
  values below 1e-4 or from 1e16).

Anything else (objects, strings, booleans, integers beside floats, rows of different lengths,
text that is not its values' canonical form, such as ``1.50``) is refused (None): the caller
reads the batch on the general path.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from batchpredict.io.encoding import EncodedRows, dumps_bytes, unsafe_values

try:  # a declared dependency; without it (no wheel for the platform) every batch goes general
    import simdjson
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    simdjson = None

# Below this many lines a batch stays on the general path: too little to gain.
MIN_LINES = 256

_local = threading.local()  # a simdjson parser holds one document at a time: one per thread


def _parse(joined: bytes, rows: int) -> Any:
    """``joined`` (a JSON array of ``rows`` flat arrays) as a 2-D array, or None.

    simdjson flattens the nested arrays into one buffer of doubles (a ``.`` or exponent in the
    text) or of int64 (none): no Python object per value. Anything that is not numbers, or a
    number out of range, raises inside simdjson and is refused here.
    """
    import numpy as np

    if simdjson is None:
        return None
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    floats = b"." in joined or b"e" in joined or b"E" in joined
    try:
        doc = parser.parse(joined)
        try:  # the document must be gone before the parser is used again
            flat = np.frombuffer(
                doc.as_buffer(of_type="d" if floats else "i"), np.float64 if floats else np.int64
            )
        finally:
            del doc
    except (TypeError, ValueError, RuntimeError):  # not numbers, out of range, not JSON
        return None
    if not len(flat) or len(flat) % rows:
        return None
    return flat.reshape(rows, -1)


def numeric_rows(lines: list[bytes]) -> tuple[Any, EncodedRows] | None:
    """The batch as one int64 or float64 array and its rows' output text, or None.

    Args:
        lines: the batch's lines, as read (without their newlines).
    """
    if len(lines) < MIN_LINES or lines[0][:1] != b"[" or lines[0][1:2] in (b"[", b"]", b"{"):
        return None
    import numpy as np

    spaced_input = b", " in lines[0]  # json.dumps's separators, or compact (orjson, JSON.stringify)
    joined = b"[" + (b", " if spaced_input else b",").join(lines) + b"]"
    array = _parse(joined, len(lines))
    if array is None:
        return None
    formatted = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)  # [[1.5,2.0],[3.5,4.0]]
    if (formatted.replace(b",", b", ") if spaced_input else formatted) != joined:
        return None  # some line is not its values' canonical text ("1.50", "1", "1e-05")
    # Each line is its values' text: with json.dumps's separators it is the output text.
    text = list(lines) if spaced_input else [line.replace(b",", b", ") for line in lines]
    if array.dtype == np.float64:
        # Below 1e-4 json.dumps writes an exponent ("1e-05") and orjson does not ("0.00001")
        # or writes another ("1e-6" for "1e-06"); from 1e16 both use exponents, which orjson
        # has written differently ("1e16"). Those rows take json.dumps's own text. Any other
        # exponent in orjson's text (counted: orjson writes one below 1e-5 and from 1e16) sends
        # the batch through the marker scan. JSON holds no NaN or Infinity.
        magnitude = np.abs(array)
        nonzero = array != 0
        big = magnitude >= 1e16
        redo = set(np.flatnonzero((((magnitude < 1e-4) & nonzero) | big).any(axis=1)).tolist())
        exponents = np.count_nonzero(((magnitude < 1e-5) & nonzero) | big)
        if _count(formatted, b"e") != exponents:
            redo |= unsafe_values(formatted)
        for i in redo:
            text[i] = dumps_bytes(array[i].tolist())
    return array, EncodedRows(array, text)


def _count(data: bytes, byte: bytes) -> int:
    """``data.count(byte)`` for a rare byte: memchr-fast finds instead of a byte-by-byte loop."""
    found, pos = 0, data.find(byte)
    while pos != -1:
        found += 1
        pos = data.find(byte, pos + 1)
    return found


__all__ = ["MIN_LINES", "numeric_rows"]
