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
from typing import Any

import pyarrow as pa


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
