"""Dataset: load a tabular data set and split it into train and test, deterministically.

Sources are the small data sets bundled with scikit-learn (no download at run time) or a user's
CSV / Parquet file or directory. The split is seeded, and stratified on a classification target, so
the same inputs give the same rows in each split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.io.tables import read_table, table_schema, write_parquet
from batchpredict.tasks.contract import CLASSIFICATION, REGRESSION, infer_problem_type

DEFAULT_TARGET = "target"
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 42


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set bundled with scikit-learn."""

    loader: Callable[..., Any]
    problem_type: str


def _builtins() -> dict[str, BuiltinDataset]:
    from sklearn import datasets

    return {
        "breast_cancer": BuiltinDataset(datasets.load_breast_cancer, CLASSIFICATION),
        "iris": BuiltinDataset(datasets.load_iris, CLASSIFICATION),
        "wine": BuiltinDataset(datasets.load_wine, CLASSIFICATION),
        "diabetes": BuiltinDataset(datasets.load_diabetes, REGRESSION),
    }


BUILTIN_NAMES = ("breast_cancer", "iris", "wine", "diabetes")
SKLEARN_PREFIX = "sklearn:"


@dataclass
class LoadedTable:
    """A loaded source: the table and what is known about it."""

    table: pa.Table
    target_column: str
    problem_type: str = ""
    label_names: dict[str, str] = field(default_factory=dict)


def column_name(name: str) -> str:
    """A feature name made safe for JSON keys, CSV headers and BigQuery columns."""
    return re.sub(r"[^0-9a-zA-Z_]+", "_", name.strip()).strip("_").lower()


def load_source(source: str, target_column: str = "") -> LoadedTable:
    """Loads a bundled data set (``breast_cancer``, ``sklearn:diabetes``...) or a table file.

    Args:
        source: a bundled data set's name, optionally prefixed ``sklearn:``, or the path / URI of
            a CSV or Parquet file, or of a directory of them.
        target_column: the label column; bundled data sets call it ``target``.

    Returns:
        The table, its target column and, for bundled data sets, the problem type and the
        label names.
    """
    name = source[len(SKLEARN_PREFIX) :] if source.startswith(SKLEARN_PREFIX) else source
    if name in BUILTIN_NAMES:
        return _load_builtin(name, target_column or DEFAULT_TARGET)
    if source.startswith(SKLEARN_PREFIX):
        raise UserError(
            f"Unknown bundled data set {source!r}; expected one of "
            + ", ".join(repr(n) for n in BUILTIN_NAMES)
            + "."
        )
    table = read_table(source)
    if target_column and target_column not in table.column_names:
        raise UserError(
            f"target_column={target_column!r} is not a column of {source!r}; its columns are "
            f"{table.column_names}."
        )
    return LoadedTable(table=table, target_column=target_column)


def _load_builtin(name: str, target_column: str) -> LoadedTable:
    spec = _builtins()[name]
    bunch = spec.loader()
    names = [column_name(n) for n in bunch.feature_names]
    if target_column in names:
        raise UserError(
            f"target_column={target_column!r} clashes with a feature of {name!r}; choose another."
        )
    columns: dict[str, Any] = {
        n: pa.array(bunch.data[:, i], pa.float64()) for i, n in enumerate(names)
    }
    if spec.problem_type == CLASSIFICATION:
        columns[target_column] = pa.array(bunch.target.astype(np.int64))
        label_names = {str(i): str(n) for i, n in enumerate(bunch.target_names)}
    else:
        columns[target_column] = pa.array(bunch.target.astype(np.float64))
        label_names = {}
    return LoadedTable(
        table=pa.table(columns),
        target_column=target_column,
        problem_type=spec.problem_type,
        label_names=label_names,
    )


def split_indices(
    n_rows: int,
    test_fraction: float,
    seed: int,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test row indices, each sorted (rows keep their source order).

    Args:
        n_rows: rows in the table.
        test_fraction: the share of rows in the test split, within (0, 1).
        seed: the random seed.
        stratify: labels to stratify on, or None.

    Returns:
        ``(train_indices, test_indices)``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be within (0, 1); got {test_fraction}.")
    n_test = int(round(n_rows * test_fraction))
    if n_test < 1 or n_test >= n_rows:
        raise UserError(
            f"test_fraction={test_fraction} leaves {n_test} test and {n_rows - n_test} train rows "
            f"of {n_rows}; both splits need at least one row."
        )
    train, test = train_test_split(
        np.arange(n_rows), test_size=n_test, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(train), np.sort(test)


def _can_stratify(labels: np.ndarray, n_test: int) -> bool:
    _, counts = np.unique(labels, return_counts=True)
    return bool(counts.min() >= 2 and len(counts) <= n_test and len(counts) <= len(labels) - n_test)


@dataclass
class SplitResult:
    """The two splits and the metadata of each."""

    train: pa.Table
    test: pa.Table
    train_metadata: dict[str, Any]
    test_metadata: dict[str, Any]


def make_splits(
    source: str,
    target_column: str = "",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    stratify: bool = True,
) -> SplitResult:
    """Loads ``source`` and splits it; see ``load_source`` and ``split_indices``.

    Classification targets are stratified when ``stratify`` is set and every class has two rows
    or more; the metadata says whether it was.
    """
    loaded = load_source(source, target_column)
    table = loaded.table
    target = loaded.target_column
    problem_type = loaded.problem_type
    if target and not problem_type:
        problem_type = infer_problem_type(table.column(target))
    labels = None
    n_test = int(round(table.num_rows * test_fraction))
    if stratify and target and problem_type == CLASSIFICATION:
        candidate = np.asarray(table.column(target).to_pylist(), dtype=object).astype(str)
        if _can_stratify(candidate, n_test):
            labels = candidate
    train_idx, test_idx = split_indices(table.num_rows, test_fraction, seed, labels)
    train, test = table.take(pa.array(train_idx)), table.take(pa.array(test_idx))
    common = {
        "source": source,
        "format": "parquet",
        "target_column": target,
        "problem_type": problem_type,
        "seed": seed,
        "test_fraction": test_fraction,
        "stratified": labels is not None,
        "columns": table.column_names,
        "schema": table_schema(table),
    }
    if loaded.label_names:
        common["label_names"] = loaded.label_names
    return SplitResult(
        train=train,
        test=test,
        train_metadata={**common, "split": "train", "rows": train.num_rows},
        test_metadata={**common, "split": "test", "rows": test.num_rows},
    )


def run_dataset(
    *,
    train_data: ArtifactLike,
    test_data: ArtifactLike,
    source: str,
    target_column: str = "",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    stratify: bool = True,
) -> SplitResult:
    """The Dataset component: writes both splits as Parquet and fills their metadata."""
    result = make_splits(source, target_column, test_fraction, seed, stratify)
    write_parquet(result.train, train_data.path)
    write_parquet(result.test, test_data.path)
    train_data.metadata.update(result.train_metadata)
    test_data.metadata.update(result.test_metadata)
    return result
