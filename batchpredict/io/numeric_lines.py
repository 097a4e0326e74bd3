"""JSON Lines whose every line is a flat array of numbers: one array, and the output text at once.

On the general path each batch's lines become lists of Python numbers (orjson), NumPy copies them
into the model's array, and the writer encodes the lists again, value by value where orjson and
``json.dumps`` could differ. For the common shape of batch prediction input (``[0.52, 1.0, ...]``
per line) this module builds the array once and formats it back at once (orjson), then compares
that text with the lines. Only what the comparison proves takes this path:

- the array holds exactly the values and types orjson gave for each line (all floats, or all
  integers), so handlers that take lists get ``array.tolist()`` unchanged;
- each row's output text is exactly ``json.dumps`` of its values, as on the general path: the
  line itself when it was written that way, else orjson's text with json.dumps's separators, and
  json.dumps's own text for the few rows where the two write numbers differently (exponents,
  values below 1e-4).

Anything else (objects, strings, booleans, integers beside floats, rows of different lengths,
text that is not its values' canonical form, such as ``1.50``) stays on the general path.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchpredict.io.encoding import EncodedRows, dumps_bytes, unsafe_values

# Below this many lines a batch stays on the general path: too little to gain.
MIN_LINES = 256


def numeric_rows(lines: list[bytes], values: list[Any]) -> tuple[Any, EncodedRows] | None:
    """The batch as one int64 or float64 array and its rows' output text, or None.

    Args:
        lines: the batch's lines, as read.
        values: ``orjson.loads`` of each line.
    """
    if len(lines) < MIN_LINES or not isinstance(values[0], list) or not values[0]:
        return None
    import numpy as np

    try:
        array = np.array(values)
    except (ValueError, TypeError, OverflowError):  # rows of different lengths, nesting
        return None
    if array.ndim != 2 or array.dtype not in (np.float64, np.int64):
        return None
    formatted = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)  # [[1.5,2.0],[3.5,4.0]]
    spaced = formatted.replace(b",", b", ")  # json.dumps's separators
    if spaced == b"[" + b", ".join(lines) + b"]":  # the lines were written by json.dumps
        text = list(lines)
        bracketed = True
    elif formatted == b"[" + b",".join(lines) + b"]":  # compact (orjson, JSON.stringify)
        text = spaced[2:-2].split(b"], [")  # each row without its brackets
        bracketed = False
    else:  # some line is not its values' canonical text ("1.50", "1", "1e-05", spaces)
        return None
    # Where orjson and json.dumps write a number differently; JSON has no NaN or Infinity.
    redo = set(np.flatnonzero(((np.abs(array) < 1e-4) & (array != 0)).any(axis=1)).tolist())
    if array.dtype == np.float64 and b"e" in formatted:
        redo |= unsafe_values(formatted)
    for i in redo:
        row = dumps_bytes(values[i])
        text[i] = row if bracketed else row[1:-1]
    return array, EncodedRows(array, text, bracketed)


__all__ = ["MIN_LINES", "numeric_rows"]
