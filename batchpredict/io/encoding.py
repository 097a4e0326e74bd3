"""JSON text exactly as Python's ``json.dumps`` writes it, as Vertex writes its output lines.

The one JSON default function lives here too: numpy scalars and arrays become lists or numbers,
bytes become text.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_default(value: Any) -> Any:
    """The JSON form of a value ``json`` cannot encode: numpy values and bytes.

    Raises:
        TypeError: any other type, as ``json.dumps`` raises it.
    """
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_default_or_text(value: Any) -> Any:
    """As :func:`json_default`, with ``str(value)`` for any other type (BigQuery staging)."""
    try:
        return json_default(value)
    except TypeError:
        return str(value)


# Python json.dumps formatting (default separators), as Vertex writes its result lines.
_encode = json.JSONEncoder(default=json_default).encode


# orjson output differs from json.dumps only where these bytes appear: strings (keys, values;
# separators inside them must not change), exponents and true/false ("e"), values below 1e-4 that
# orjson writes as 0.0000x and Python as x e-05, and NaN/Infinity (orjson: null).
_ORJSON_UNSAFE = (b'"', b"e", b"0.0000", b"null")


def dumps(value: Any) -> str:
    """JSON text exactly as Python's ``json.dumps`` writes it."""
    return _encode(value)


# What encoding one record can raise (not JSON, nested too deep, a huge int): that record fails,
# never the job.
UNENCODABLE = (TypeError, ValueError, RecursionError, OverflowError)


def unencodable(value: Any, why: BaseException) -> str:
    """A short text standing for a value that cannot be written as JSON."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 4, 200, 200
    return f"<not JSON-encodable ({type(why).__name__}): {short.repr(value)}>"


def dumps_bytes(value: Any) -> bytes:
    """``json.dumps(value)`` as UTF-8 bytes, 5-10x faster for numbers and lists of numbers.

    orjson formats numbers with the same shortest round-trip digits as Python's repr; where its
    text could differ from json.dumps (see _ORJSON_UNSAFE) the standard encoder is used instead.
    """
    try:
        out = orjson.dumps(value)
    except TypeError:
        return _encode(value).encode()
    for marker in _ORJSON_UNSAFE:
        if marker in out:
            return _encode(value).encode()
    return out.replace(b",", b", ")


_NUMBER_UNSAFE = (b"e", b"0.0000", b"null")


def _positions(data: bytes, markers: tuple[bytes, ...]) -> list[int]:
    """Start offsets of every occurrence of each marker (bytes.find: memchr-fast)."""
    found = []
    for marker in markers:
        pos = data.find(marker)
        while pos != -1:
            found.append(pos)
            pos = data.find(marker, pos + 1)
    return found


class EncodedRows:
    """The rows of a 2-D array with each row's ``json.dumps`` text, as a bulk reader made them.

    Stands for a batch's displays: ``dumps_many`` returns the text without encoding again;
    indexing gives a row of the array, ``tolist()`` its rows as lists.
    """

    def __init__(self, array: Any, text: list[bytes]) -> None:
        """``text[i]`` must be exactly ``json.dumps(array[i].tolist())``."""
        self.array = array
        self.text = text

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, index: int) -> Any:
        return self.array[index]

    def tolist(self) -> list[Any]:
        """The rows as lists of numbers."""
        return self.array.tolist()

    def encoded(self) -> list[bytes]:
        """Each row's ``json.dumps`` text."""
        return self.text


def _exact_in_orjson(array: Any) -> bool:
    """True when orjson writes ``array``'s numbers as ``json.dumps(array.tolist())`` would.

    Integers of any width, and float64 (Python's float) with the _NUMBER_UNSAFE checks; not
    float32/float16, which orjson writes with their own shortest digits (0.1 where ``tolist()``
    gives 0.10000000149011612).
    """
    kind = array.dtype.kind
    return kind in "iu" or (kind == "f" and array.dtype.itemsize == 8)


def dumps_many(values: Any) -> list[bytes]:
    """``[dumps_bytes(v) for v in values]``, with one orjson call for flat batches.

    A batch of numbers, or of flat lists of numbers (the common instance and prediction shapes),
    is encoded at once and split into values; the few values whose text could differ from
    json.dumps (found by scanning the batch once per marker) are re-encoded alone. ``values``
    may be a NumPy array (numbers, or rows of numbers): it is encoded without a Python object
    per value. Anything else goes value by value.
    """
    if not len(values):
        return []
    if isinstance(values, EncodedRows):
        return values.encoded()
    if hasattr(values, "dtype"):  # a NumPy array
        if values.ndim > 2 or not _exact_in_orjson(values):
            return dumps_many(values.tolist())
        out = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        try:
            out = orjson.dumps(values)
        except TypeError:
            return [dumps_bytes(v) for v in values]
        if b'"' in out or b"{" in out:
            return [dumps_bytes(v) for v in values]
    brackets = out.count(b"[")
    if brackets == 1:  # numbers
        parts = out[1:-1].split(b",")
    elif brackets == len(values) + 1 and out.startswith(b"[["):  # flat lists of numbers
        # "[[1,2],[3,4]]" -> "[1, 2]\n[3, 4]": rows never hold a newline or a bracket.
        parts = out[1:-1].replace(b"],", b"]\n").replace(b",", b", ").split(b"\n")
    else:
        return [dumps_bytes(v) for v in values]
    for i in unsafe_values(out):
        parts[i] = _encode(values[i]).encode()
    return parts


def unsafe_values(out: bytes) -> set[int]:
    """Indexes of the values of a flat orjson batch whose text could differ from json.dumps."""
    unsafe = sorted(_positions(out, _NUMBER_UNSAFE))
    # Value i of the batch starts after the i-th separator: a "," (numbers) or a "]," (rows).
    # Counting them up to each unsafe position, in one pass over the text, gives its value.
    sep = b"]," if out.startswith(b"[[") else b","
    found, index, start = set(), 0, 0
    for pos in unsafe:
        index += out.count(sep, start, pos)
        start = pos
        found.add(index)
    return found


__all__ = [
    "EncodedRows",
    "dumps",
    "dumps_bytes",
    "dumps_many",
    "json_default",
    "json_default_or_text",
    "unsafe_values",
]
