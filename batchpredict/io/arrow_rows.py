"""Arrow record batches to JSON-ready rows, with Vertex's BigQuery type conversion.

Used for Parquet input and for BigQuery (the Storage Read API returns Arrow). Types, as Vertex
converts BigQuery rows: STRING/DATE/TIME/DATETIME/TIMESTAMP -> string
(``"2019-01-01 23:59:59.999999+00:00"``, ``"2018-12-31"``, ``"23:59:59.999999"``,
``"2019-01-01T00:00:00"``), INTEGER -> int, FLOAT/NUMERIC -> float, BOOL -> bool,
RECORD -> object, REPEATED -> array. Bytes become base64 strings.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from batchpredict.io.encoding import EncodedRows, dumps_many


def json_value(value: Any) -> Any:
    """One Arrow-produced Python value as Vertex sends it to a model."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:  # TIMESTAMP
            return str(value.astimezone(dt.timezone.utc))  # 2019-01-01 23:59:59.999999+00:00
        return value.isoformat()  # DATETIME: 2019-01-01T00:00:00
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return str(value)  # 23:59:59.999999
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)


_PLAIN = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string)


def _column_values(column: pa.Array) -> list[Any]:
    values = column.to_pylist()
    if any(check(column.type) for check in _PLAIN) or pa.types.is_large_string(column.type):
        return values
    return [json_value(v) for v in values]


def batch_rows(batch: pa.RecordBatch) -> list[list[Any]]:
    """The rows of ``batch`` as lists of JSON-ready values, in column order."""
    columns = [_column_values(c) for c in batch.columns]
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(batch.num_rows)]


# Arrow column types the columnar path reads as numbers: what ``to_pylist`` gives as Python ints
# (every width that fits int64) or floats. uint64 (may not fit int64), float16, bool, decimal and
# the rest go row by row.
_INTEGERS = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())
_FLOATS = (pa.float32(), pa.float64())


def _numeric_kind(column: Any) -> str:
    """``"i"`` or ``"f"`` for a column the columnar path takes (no nulls), else ``""``."""
    if column.null_count:
        return ""
    if column.type in _INTEGERS:
        return "i"
    return "f" if column.type in _FLOATS else ""


def _array(columns: list[Any], kinds: list[str]) -> Any:
    """The columns as one 2-D array, as ``np.asarray`` makes it of their Python rows.

    All integers -> int64; any float -> float64 (float32 values widen exactly, ints convert as
    Python's int -> float does: both round to nearest).
    """
    import numpy as np

    dtype = np.float64 if "f" in kinds else np.int64
    target = pa.float64() if "f" in kinds else pa.int64()
    if all(isinstance(c, pa.Array) and c.type == target for c in columns):
        # Arrow copies the columns into one row-major buffer at once; filling the array column
        # by column writes it with a stride, several times slower for a batch of 65,536 rows.
        batch = pa.RecordBatch.from_arrays(columns, names=[str(j) for j in range(len(columns))])
        return batch.to_tensor(row_major=True).to_numpy()
    out = np.empty((len(columns[0]), len(columns)), dtype)
    for j, column in enumerate(columns):
        out[:, j] = column.to_numpy(zero_copy_only=False)
    return out


def _rows(columns: list[Any]) -> list[list[Any]]:
    """Rows of plain columns as Python lists (what ``batch_rows`` makes of them)."""
    return [list(row) for row in zip(*(c.to_pylist() for c in columns))]


class ColumnRows(EncodedRows):
    """The displays of a columnar batch: its numeric Arrow columns; Python rows only on demand.

    A writer of columns (Parquet) takes ``arrow_columns()`` as they are; everything else sees
    what the row path gives: ``tolist()`` the rows as lists of Python numbers (integers stay
    integers beside floats), indexing a row, and each row's ``json.dumps`` text
    (``EncodedRows``) made from those. ``array``: the rows as one NumPy array when the columns
    are all integers or all floats (its ``tolist()`` is the rows, its text is encoded at once),
    else None. Slicing gives the rows' ColumnRows.
    """

    def __init__(self, columns: list[Any], array: Any = None) -> None:
        """``columns``: Arrow integer or float columns without nulls, of equal length."""
        self.columns = columns
        self.array = array

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            lo, hi, _ = index.indices(len(self))
            hi = max(lo, hi)
            array = None if self.array is None else self.array[lo:hi]
            return ColumnRows([c.slice(lo, hi - lo) for c in self.columns], array)
        if self.array is not None:
            return self.array[index]
        return [c[index].as_py() for c in self.columns]

    def tolist(self) -> list[Any]:
        """The rows as lists of Python numbers, as the row path gives them."""
        return self.array.tolist() if self.array is not None else _rows(self.columns)

    @property
    def text(self) -> list[bytes]:  # type: ignore[override]
        """Each row's ``json.dumps`` text, as the writers encoded the row path's rows."""
        return dumps_many(self.array if self.array is not None else self.tolist())

    def arrow_columns(self) -> list[Any]:
        """The columns as the row path's cells become Arrow arrays: int64 or double."""
        out = []
        for column in self.columns:
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            target = pa.int64() if pa.types.is_integer(column.type) else pa.float64()
            out.append(column if column.type == target else column.cast(target))
        return out


def numeric_converted(batch: Any, conv: Any) -> Any:
    """``conv.convert(batch_rows(batch))`` without a Python object per value, or None.

    The columnar path for array instances (``instance_type`` unset or ``'array'``) whose columns
    are all integers or floats without nulls: the instances are one 2-D NumPy array holding what
    ``np.asarray`` makes of the rows the row path gives, and the displays are the columns
    (``ColumnRows``: that array too when the columns are all integers or all floats, whose
    ``tolist()`` gives the row path's rows exactly; float32 widens to the same float64 either
    way). Keys (``key_field``) are the key column's values; attached excluded columns that are
    not all numeric are shown as the row path shows them. None when a column is not numeric or
    has a null in this batch: the caller converts it row by row.

    ``batch``: an Arrow RecordBatch or Table; ``conv``: the input's ``TableConverter``.
    """
    cfg = conv.cfg
    if cfg.instance_type not in ("", "array") or not batch.num_rows or not conv.keep_index:
        return None
    from batchpredict.instances import Converted

    columns = batch.columns
    kept = [columns[i] for i in conv.keep_index]
    kinds = [_numeric_kind(c) for c in kept]
    if "" in kinds:
        return None
    instances = _array(kept, kinds)
    homogeneous = len(set(kinds)) == 1
    if cfg.keyed:
        displays: Any = _column_values(columns[conv.key_index])
    elif cfg.attach_excluded:  # the whole row is shown, excluded columns included
        all_kinds = [_numeric_kind(c) for c in columns]
        if "" in all_kinds:
            displays = batch_rows(batch)
        elif len(set(all_kinds)) == 1:
            displays = ColumnRows(list(columns), _array(columns, all_kinds))
        else:
            displays = ColumnRows(list(columns))
        return Converted(instances=instances, displays=displays, columns=list(conv.columns))
    else:
        displays = ColumnRows(kept, instances if homogeneous else None)
    return Converted(instances=instances, displays=displays, columns=list(conv.keep_names))


def convert_batch(batch: Any, conv: Any) -> Any:
    """A record batch (or table) converted by ``conv``: columnar when it can be, else by rows."""
    fast = numeric_converted(batch, conv)
    return fast if fast is not None else conv.convert(batch_rows(batch))


def convert_batches(batch: Any, conv: Any, batch_size: int) -> Iterator[tuple[int, Any]]:
    """``batch`` converted ``batch_size`` rows at a time: (rows, Converted) for each slice.

    Each slice's Converted is what ``convert_batch(batch.slice(...), conv)`` gives; when the
    whole batch takes the columnar path it is converted once and the slices are views of its
    arrays (one read and one array for many predict calls). A batch with a null or a
    non-numeric column is converted slice by slice, so slices without one still go columnar.
    """
    n = batch.num_rows
    if not n:
        yield 0, convert_batch(batch, conv)
        return
    fast = numeric_converted(batch, conv)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        if fast is None:
            yield hi - lo, convert_batch(batch.slice(lo, hi - lo), conv)
        else:
            yield hi - lo, _sliced(fast, lo, hi)


def _sliced(converted: Any, lo: int, hi: int) -> Any:
    from batchpredict.instances import Converted

    return Converted(
        instances=converted.instances[lo:hi],
        displays=converted.displays[lo:hi],
        columns=converted.columns,
    )
