"""The vocabulary the pipeline steps pass to each other: one definition, imported by every task.

Dataset, Train, Prepare, Collect and Evaluate hand each other tables and metadata. What those mean
is decided here, not in whichever step first needed it:

- problem types (``classification``, ``regression``), the check that refuses any other, and the
  rule that infers one from a target column;
- the key: a missing key column is the row position (Prepare adds it to the instances, Collect to
  the ground truth), and keys are compared in one text form (``3``, ``3.0`` and ``"3"`` agree);
- the columns Collect writes and Evaluate reads: ``predicted`` and one ``score_<label>`` per class.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from batchpredict.errors import UserError

CLASSIFICATION = "classification"
REGRESSION = "regression"
PROBLEM_TYPES = (CLASSIFICATION, REGRESSION)
# A target with at most this many distinct integer values is taken as class labels.
MAX_CLASSES_FOR_INT_TARGET = 50

PREDICTED_COLUMN = "predicted"
SCORE_PREFIX = "score_"


def check_problem_type(problem_type: str, allow_empty: bool = False) -> str:
    """Returns ``problem_type`` if it is one of PROBLEM_TYPES (or empty, when allowed).

    Raises:
        UserError: any other value, naming it and the choices.
    """
    if (allow_empty and not problem_type) or problem_type in PROBLEM_TYPES:
        return problem_type
    raise UserError(
        f"Unknown problem_type={problem_type!r}; expected one of {list(PROBLEM_TYPES)}"
        + (" or '' (inferred)." if allow_empty else ".")
    )


def infer_problem_type(values: pa.ChunkedArray | pa.Array) -> str:
    """``classification`` for string, boolean or few-valued integer targets, else ``regression``."""
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        return CLASSIFICATION
    if pa.types.is_integer(t):
        distinct = len(values.unique())
        return CLASSIFICATION if distinct <= MAX_CLASSES_FOR_INT_TARGET else REGRESSION
    return REGRESSION


def normalize_key(key: Any) -> str:
    """The join form of a key (and of a class label): ``3``, ``3.0`` and ``"3"`` become ``"3"``."""
    if isinstance(key, bool):
        return str(key)
    if isinstance(key, float) and math.isfinite(key) and key.is_integer():
        return str(int(key))
    return str(key)


def ensure_key_column(table: pa.Table, key_column: str) -> pa.Table:
    """Returns ``table`` with ``key_column``; a missing one is the row position (int64)."""
    if not key_column or key_column in table.column_names:
        return table
    return table.append_column(key_column, pa.array(range(table.num_rows), pa.int64()))


def score_column(label: Any) -> str:
    """The column holding the score of class ``label``: ``score_<label>``."""
    return SCORE_PREFIX + normalize_key(label)


def score_label(column: str) -> str:
    """The class label text of a ``score_<label>`` column."""
    return column[len(SCORE_PREFIX) :]


def is_score_column(column: str) -> bool:
    """True for a ``score_<label>`` column."""
    return column.startswith(SCORE_PREFIX)
