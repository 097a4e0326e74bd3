"""Collect predictions: read a batch prediction output directory into one table.

Reads the layouts Vertex AI writes, and ours (the same as Vertex's custom-model layout):

- custom models: ``prediction.results-SSSSS-of-NNNNN`` (JSONL; ``.csv`` and ``.parquet``
  variants), failed instances in ``prediction.errors-SSSSS-of-NNNNN``, the error summary in
  ``prediction.errors_stats-SSSSS-of-NNNNN`` (Python ``repr`` of ``(message, count)`` tuples), and
  locally ``completion_stats.json``;
- AutoML: ``predictions_N.jsonl`` / ``predictions_N.csv`` and ``errors_N.jsonl``.

Predictions are flattened into columns: ``predicted`` (the label or the value) and, where the model
gives scores, one ``score_<label>`` column per class. Score lists (``predict_proba`` rows),
``{"classes": [...], "scores": [...]}`` dicts (AutoML), ``{"value": ...}`` dicts (AutoML
regression) and a single probability of the positive class (XGBoost ``binary:logistic``) are
understood. Rows are joined by key with the ground truth; the counts of successful, failed and
unpredicted rows are reported, and the step fails when too many rows have no prediction.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import math
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.tasks._io import read_table, write_csv, write_json, write_parquet
from batchpredict.tasks.dataset import CLASSIFICATION, PROBLEM_TYPES, REGRESSION
from batchpredict.tasks.prepare import ensure_key_column

CUSTOM = "custom"
AUTOML = "automl"
RESULTS_PATTERNS = ("prediction.results-*",)
ERRORS_PATTERNS = ("prediction.errors-*",)
ERRORS_STATS_PATTERNS = ("prediction.errors_stats-*",)
AUTOML_RESULTS_PATTERNS = ("predictions_*.jsonl", "predictions_*.csv")
AUTOML_ERRORS_PATTERNS = ("errors_*.jsonl",)
COMPLETION_STATS_FILE = "completion_stats.json"
PREDICTION_DIR_PREFIX = "prediction-"

PREDICTED_COLUMN = "predicted"
SCORE_PREFIX = "score_"
PREDICTIONS_PARQUET = "predictions.parquet"
PREDICTIONS_CSV = "predictions.csv"
ERRORS_CSV = "errors.csv"
SUMMARY_JSON = "summary.json"
DEFAULT_MAX_FAILED_FRACTION = 0.0
# How many unpredicted keys the metadata lists by name.
MAX_LISTED_KEYS = 20
SCORE_KEYS = ("scores", "confidences", "probabilities")
CLASS_KEYS = ("classes", "displayNames", "labels")
VALUE_KEYS = ("value", "predicted_value")
LABEL_KEYS = ("predicted_label", "label", "class")


@dataclass
class PredictionFiles:
    """The files of one batch prediction output directory."""

    directory: str
    layout: str
    results: list[str]
    errors: list[str] = field(default_factory=list)
    errors_stats: list[str] = field(default_factory=list)
    completion_stats: str = ""


@dataclass
class Record:
    """One result or error line: its key or instance, and its prediction or error."""

    key: Any = None
    instance: Any = None
    prediction: Any = None
    error: dict[str, Any] | None = None


@dataclass
class CollectResult:
    """The flattened predictions, the failed instances, and the counts."""

    table: pa.Table
    errors: pa.Table
    metadata: dict[str, Any]


def _fs(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def find_prediction_files(directory: str) -> PredictionFiles:
    """Finds the result, error and stats files of the output in ``directory``.

    ``directory`` is the output directory itself, or a prefix holding exactly one
    ``prediction-*`` directory.
    """
    fs, root = _fs(directory)
    if not fs.isdir(root):
        raise UserError(f"Batch prediction output directory {directory!r} does not exist.")
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))

    def match(patterns: tuple[str, ...]) -> list[str]:
        return [_join(directory, n) for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]

    results = match(RESULTS_PATTERNS)
    if results:
        stats = _join(directory, COMPLETION_STATS_FILE) if COMPLETION_STATS_FILE in names else ""
        return PredictionFiles(
            directory=directory,
            layout=CUSTOM,
            results=results,
            errors=match(ERRORS_PATTERNS),
            errors_stats=match(ERRORS_STATS_PATTERNS),
            completion_stats=stats,
        )
    automl = match(AUTOML_RESULTS_PATTERNS)
    if automl:
        return PredictionFiles(
            directory=directory, layout=AUTOML, results=automl, errors=match(AUTOML_ERRORS_PATTERNS)
        )
    subdirs = [n for n in names if n.startswith(PREDICTION_DIR_PREFIX)]
    subdirs = [n for n in subdirs if fs.isdir(posixpath.join(root, n))]
    if len(subdirs) == 1:
        return find_prediction_files(_join(directory, subdirs[0]))
    if match(ERRORS_STATS_PATTERNS) or match(ERRORS_PATTERNS + AUTOML_ERRORS_PATTERNS):
        # Every instance failed: no results file, only errors.
        return PredictionFiles(
            directory=directory,
            layout=CUSTOM if match(ERRORS_STATS_PATTERNS) else AUTOML,
            results=[],
            errors=match(ERRORS_PATTERNS + AUTOML_ERRORS_PATTERNS),
            errors_stats=match(ERRORS_STATS_PATTERNS),
            completion_stats=_join(directory, COMPLETION_STATS_FILE)
            if COMPLETION_STATS_FILE in names
            else "",
        )
    if len(subdirs) > 1:
        raise UserError(
            f"{directory!r} holds several batch prediction outputs {subdirs}; give one of them."
        )
    raise UserError(
        f"No batch prediction output in {directory!r}: expected prediction.results-* "
        f"(custom models) or predictions_*.jsonl / .csv (AutoML); found {names[:20]}."
    )


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _read_bytes(path: str) -> bytes:
    fs, p = _fs(path)
    with fs.open(p, "rb") as f:
        return f.read()


def _is_csv(path: str) -> bool:
    return path.endswith(".csv")


def _is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


def read_records(path: str) -> list[Record]:
    """Reads one results or errors file (JSONL, CSV or Parquet) into records."""
    if _is_csv(path) or _is_parquet(path):
        return _read_table_records(path)
    records = []
    for n, line in enumerate(_read_bytes(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise UserError(f"{path}:{n} is not a JSON line ({e}): {line[:200]!r}") from e
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n} is not a JSON object: {line[:200]!r}")
        error = obj.get("error", obj.get("errors"))
        records.append(
            Record(
                key=obj.get("key"),
                instance=obj.get("instance"),
                prediction=obj.get("prediction"),
                error=error if isinstance(error, dict) else None,
            )
        )
    return records


def _read_table_records(path: str) -> list[Record]:
    fs, p = _fs(path)
    with fs.open(p, "rb") as f:
        table = pq.read_table(f) if _is_parquet(path) else pacsv.read_csv(f)
    names = table.column_names
    prediction_column = "prediction" if "prediction" in names else None
    error_columns = [c for c in ("error", "errors") if c in names]
    instance_columns = [
        c for c in names if c not in ("key", "prediction", "instance", *error_columns)
    ]
    cols = {c: table.column(c).to_pylist() for c in names}
    records = []
    for i in range(table.num_rows):
        prediction = cols[prediction_column][i] if prediction_column else None
        if isinstance(prediction, str) and prediction[:1] in "[{":
            with contextlib.suppress(ValueError):
                prediction = json.loads(prediction)
        if "instance" in cols:
            instance = cols["instance"][i]
        else:
            instance = {c: cols[c][i] for c in instance_columns} or None
        error = cols[error_columns[0]][i] if error_columns else None
        if isinstance(error, str):
            try:
                error = json.loads(error)
            except ValueError:
                error = {"message": error}
        records.append(
            Record(
                key=cols["key"][i] if "key" in cols else None,
                instance=instance,
                prediction=prediction,
                error=error if isinstance(error, dict) else None,
            )
        )
    return records


def read_errors_stats(path: str) -> list[tuple[str, int]]:
    """Parses ``prediction.errors_stats-*``: one ``('message', count)`` tuple per line."""
    stats = []
    for line in _read_bytes(path).decode("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            message, count = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError) as e:
            raise UserError(f"{path}: not a (message, count) tuple: {line[:200]!r}") from e
        stats.append((str(message), int(count)))
    return stats


def normalize_key(key: Any) -> str:
    """The join form of a key: ``3``, ``3.0`` and ``"3"`` all become ``"3"``."""
    if isinstance(key, bool):
        return str(key)
    if isinstance(key, float) and math.isfinite(key) and key.is_integer():
        return str(int(key))
    return str(key)


def _record_key(record: Record, key_column: str) -> Any:
    if record.key is not None:
        return record.key
    if key_column and isinstance(record.instance, dict):
        return record.instance.get(key_column)
    return None


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((d[k] for k in keys if k in d), None)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _looks_like_binary_probabilities(predictions: list[Any], class_labels: list[Any]) -> bool:
    scalars = [p[0] if isinstance(p, list) and len(p) == 1 else p for p in predictions]
    numbers = [p for p in scalars if _is_number(p)]
    if len(class_labels) != 2 or not numbers or len(numbers) != len(scalars):
        return False
    in_unit = all(0.0 <= p <= 1.0 for p in numbers)
    fractional = any(isinstance(p, float) and not p.is_integer() for p in numbers)
    return in_unit and fractional


@dataclass
class _Flat:
    predicted: Any
    scores: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def flatten_prediction(
    prediction: Any, problem_type: str, class_labels: list[Any], binary_probability: bool = False
) -> _Flat:
    """One prediction as ``predicted`` plus per-class scores (keyed by label text) and extras."""
    if (
        isinstance(prediction, list)
        and len(prediction) == 1
        and not isinstance(prediction[0], (list, dict))
    ):
        prediction = prediction[0]
    if isinstance(prediction, dict):
        scores = _first(prediction, SCORE_KEYS)
        if isinstance(scores, list):
            classes = _first(prediction, CLASS_KEYS) or class_labels or list(range(len(scores)))
            if len(classes) != len(scores):
                raise UserError(
                    f"A prediction has {len(scores)} scores for {len(classes)} classes: "
                    f"{str(prediction)[:200]}"
                )
            best = max(range(len(scores)), key=lambda i: scores[i]) if scores else None
            extra = {
                k: v
                for k, v in prediction.items()
                if k not in SCORE_KEYS + CLASS_KEYS and not isinstance(v, (list, dict))
            }
            return _Flat(
                predicted=classes[best] if best is not None else None,
                scores={normalize_key(c): float(s) for c, s in zip(classes, scores, strict=True)},
                extra=extra,
            )
        value = _first(prediction, VALUE_KEYS + LABEL_KEYS)
        if value is not None:
            extra = {
                k: v
                for k, v in prediction.items()
                if k not in VALUE_KEYS + LABEL_KEYS and not isinstance(v, (list, dict))
            }
            return _Flat(predicted=value, extra=extra)
        raise UserError(
            "Cannot flatten a prediction dict with keys "
            f"{sorted(prediction)}; expected scores/classes, value or a label: "
            f"{str(prediction)[:200]}"
        )
    if isinstance(prediction, list):
        if problem_type == REGRESSION:
            raise UserError(
                f"A regression prediction is a list of {len(prediction)} values; expected one "
                f"value: {str(prediction)[:200]}"
            )
        if not all(_is_number(v) for v in prediction):
            raise UserError(f"Cannot flatten the prediction list {str(prediction)[:200]}.")
        classes = class_labels or list(range(len(prediction)))
        if len(classes) != len(prediction):
            raise UserError(
                f"A prediction has {len(prediction)} scores but the model has {len(classes)} "
                f"classes {classes}."
            )
        best = max(range(len(prediction)), key=lambda i: prediction[i])
        return _Flat(
            predicted=classes[best],
            scores={normalize_key(c): float(s) for c, s in zip(classes, prediction, strict=True)},
        )
    if binary_probability and _is_number(prediction):
        p = float(prediction)
        negative, positive = class_labels
        return _Flat(
            predicted=positive if p >= 0.5 else negative,
            scores={normalize_key(negative): 1.0 - p, normalize_key(positive): p},
        )
    return _Flat(predicted=prediction)


def _coerce(values: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """``values`` as ``arrow_type`` (integral floats and digit strings to ints), or None."""
    try:
        if pa.types.is_integer(arrow_type):
            out = []
            for v in values:
                if v is None:
                    out.append(None)
                elif isinstance(v, str):
                    out.append(int(float(v)) if float(v).is_integer() else _raise())
                elif isinstance(v, float):
                    out.append(int(v) if v.is_integer() else _raise())
                else:
                    out.append(int(v))
            return pa.array(out, arrow_type)
        if pa.types.is_floating(arrow_type):
            return pa.array([None if v is None else float(v) for v in values], arrow_type)
        if pa.types.is_boolean(arrow_type):
            mapping = {"true": True, "false": False, "1": True, "0": False}
            return pa.array(
                [None if v is None else mapping[str(v).lower()] for v in values], arrow_type
            )
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return pa.array([None if v is None else normalize_key(v) for v in values], pa.string())
    except (ValueError, TypeError, KeyError):
        return None
    return None


def _raise() -> Any:
    raise ValueError("not integral")


def collect_predictions(
    predictions_dir: str,
    ground_truth_path: str = "",
    key_column: str = "",
    target_column: str = "",
    problem_type: str = "",
    class_labels: list[Any] | None = None,
    class_names: list[str] | None = None,
) -> CollectResult:
    """Reads a batch prediction output and joins it with the ground truth by key.

    Args:
        predictions_dir: the output directory (or a prefix holding one ``prediction-*``).
        ground_truth_path: the labelled table; empty: no join.
        key_column: the key of the ground truth (generated from row positions, as Prepare does,
            when the table lacks it). Predictions carry it as ``key`` (key_field) or inside
            their ``instance`` object.
        target_column: the ground truth label column, copied into the table.
        problem_type: ``classification`` or ``regression``; empty: inferred.
        class_labels: the model's classes in score order (e.g. scikit-learn ``classes_``).
        class_names: display names of ``class_labels``, for the report.

    Returns:
        The flattened table (sorted in ground-truth order when joined); the failed instances;
        and the counts in ``metadata`` (``failed_fraction``: the larger of the job's failed
        fraction and the fraction of ground-truth rows without a prediction; see
        ``check_failed_fraction``).

    Raises:
        UserError: unreadable output, duplicate or unknown keys.
    """
    if problem_type and problem_type not in PROBLEM_TYPES:
        raise UserError(f"Unknown problem_type={problem_type!r}; expected {list(PROBLEM_TYPES)}.")
    files = find_prediction_files(predictions_dir)
    results = [r for path in files.results for r in read_records(path)]
    error_records = [r for path in files.errors for r in read_records(path)]
    errors_stats = [s for path in files.errors_stats for s in read_errors_stats(path)]

    ground_truth = _read_ground_truth(ground_truth_path, key_column, target_column)
    target_type = (
        ground_truth.column(target_column).type if ground_truth and target_column else None
    )
    class_labels = list(class_labels or [])
    problem_type = problem_type or _infer_problem_type(results, class_labels, target_type)
    predictions = [r.prediction for r in results]
    binary = problem_type == CLASSIFICATION and _looks_like_binary_probabilities(
        predictions, class_labels
    )
    flat = [flatten_prediction(p, problem_type, class_labels, binary) for p in predictions]

    keys = [_record_key(r, key_column) for r in results]
    row_keys = [None if k is None else normalize_key(k) for k in keys]
    _check_unique(row_keys)
    meta: dict[str, Any] = {
        "layout": files.layout,
        "predictions_directory": files.directory,
        "problem_type": problem_type,
        "key_column": key_column,
        "target_column": target_column,
    }
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    order = list(range(len(results)))
    if ground_truth is not None:
        failed_keys = {
            normalize_key(k)
            for k in (_record_key(r, key_column) for r in error_records)
            if k is not None
        }
        order = _join_ground_truth(
            ground_truth, row_keys, key_column, target_column, failed_keys, columns, meta
        )
    elif key_column:
        columns[key_column] = pa.array([keys[i] for i in order])

    predicted_values = [flat[i].predicted for i in order]
    if problem_type == REGRESSION:
        try:
            columns[PREDICTED_COLUMN] = pa.array(
                [None if v is None else float(v) for v in predicted_values], pa.float64()
            )
        except (TypeError, ValueError) as e:
            raise UserError(f"Regression predictions must be numbers: {e}") from e
        label_type = None
    else:
        label_type = _label_columns(
            predicted_values, class_labels, target_type, target_column, columns
        )
    score_labels = _score_columns(flat, order, class_labels, label_type, columns)
    _extra_columns(flat, order, columns)
    table = pa.table(columns)

    labels_out = list(class_labels)
    if class_labels and label_type is not None:
        coerced = _coerce(class_labels, label_type)
        labels_out = coerced.to_pylist() if coerced is not None else labels_out
    labels_out = score_labels or labels_out
    names_out = list(class_names or [])
    if len(names_out) != len(labels_out):
        names_out = [str(c) for c in labels_out]
    successful = len(results)
    failed = len(error_records) or sum(c for _, c in errors_stats)
    total = successful + failed
    job_fraction = failed / total if total else 0.0
    missing_fraction = (
        meta["unpredicted_rows"] / meta["ground_truth_rows"]
        if meta.get("ground_truth_rows")
        else 0.0
    )
    meta.update(
        {
            "rows": table.num_rows,
            "columns": table.column_names,
            "class_labels": labels_out,
            "class_names": names_out,
            "score_columns": [SCORE_PREFIX + normalize_key(c) for c in score_labels],
            "successful_count": successful,
            "failed_count": failed,
            "errors_stats": [list(s) for s in errors_stats],
            "failed_fraction": max(job_fraction, missing_fraction),
        }
    )
    if files.completion_stats:
        meta["reported_completion_stats"] = json.loads(_read_bytes(files.completion_stats))
    return CollectResult(
        table=table, errors=_errors_table(error_records, key_column), metadata=meta
    )


def _read_ground_truth(path: str, key_column: str, target_column: str) -> pa.Table | None:
    if not path:
        return None
    if not key_column:
        raise UserError("Joining predictions with the ground truth needs key_column.")
    table = ensure_key_column(read_table(path), key_column)
    if target_column and target_column not in table.column_names:
        raise UserError(
            f"target_column={target_column!r} is not in the ground truth; its columns are "
            f"{table.column_names}."
        )
    return table


def _check_unique(row_keys: list[str | None]) -> None:
    seen: set[str] = set()
    duplicates: list[str] = []
    for k in row_keys:
        if k is not None and k in seen and k not in duplicates:
            duplicates.append(k)
        if k is not None:
            seen.add(k)
    if duplicates:
        raise UserError(
            f"{len(duplicates)} keys were predicted more than once, e.g. {duplicates[:5]}; every "
            "instance must have exactly one result."
        )


def _join_ground_truth(
    ground_truth: pa.Table,
    row_keys: list[str | None],
    key_column: str,
    target_column: str,
    failed_keys: set[str],
    columns: dict[str, Any],
    meta: dict[str, Any],
) -> list[int]:
    """Adds the key and target columns; returns the result order (ground-truth order)."""
    if any(k is None for k in row_keys):
        raise UserError(
            f"Some predictions carry no key: set key_field={key_column!r} in the batch "
            "prediction job, or keep the key column in the instances."
        )
    gt_keys = [normalize_key(k) for k in ground_truth.column(key_column).to_pylist()]
    position = {k: i for i, k in enumerate(gt_keys)}
    if len(position) != len(gt_keys):
        raise UserError(f"The ground truth's key column {key_column!r} has duplicate values.")
    unknown = [k for k in row_keys if k not in position]
    if unknown:
        raise UserError(
            f"{len(unknown)} predicted keys are not in the ground truth, e.g. {unknown[:5]}; "
            "was the ground truth the table the instances were prepared from?"
        )
    order = sorted(range(len(row_keys)), key=lambda i: position[row_keys[i]])
    gt_rows = pa.array([position[row_keys[i]] for i in order], pa.int64())
    columns[key_column] = ground_truth.column(key_column).take(gt_rows)
    if target_column:
        columns[target_column] = ground_truth.column(target_column).take(gt_rows)
    predicted = set(row_keys)
    unpredicted = [k for k in gt_keys if k not in predicted]
    meta["ground_truth_rows"] = len(gt_keys)
    meta["unpredicted_rows"] = len(unpredicted)
    meta["unpredicted_keys"] = unpredicted[:MAX_LISTED_KEYS]
    meta["unpredicted_without_error"] = len([k for k in unpredicted if k not in failed_keys])
    return order


def _label_columns(
    predicted_values: list[Any],
    class_labels: list[Any],
    target_type: pa.DataType | None,
    target_column: str,
    columns: dict[str, Any],
) -> pa.DataType:
    """Adds ``predicted`` in the target's type (text when labels do not fit it); returns it."""
    if target_type is not None:
        predicted = _coerce(predicted_values, target_type)
        if predicted is not None and (not class_labels or _coerce(class_labels, target_type)):
            columns[PREDICTED_COLUMN] = predicted
            return target_type
        # Labels that do not fit the target's type (e.g. AutoML's "1" for an int target that
        # is not a number): compare both as text.
        columns[target_column] = _coerce(columns[target_column].to_pylist(), pa.string())
        columns[PREDICTED_COLUMN] = _coerce(predicted_values, pa.string())
        return pa.string()
    try:
        predicted = pa.array(predicted_values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        predicted = pa.array([None if v is None else str(v) for v in predicted_values])
    columns[PREDICTED_COLUMN] = predicted
    return None if pa.types.is_null(predicted.type) else predicted.type


def _score_columns(
    flat: list[_Flat],
    order: list[int],
    class_labels: list[Any],
    label_type: pa.DataType | None,
    columns: dict[str, Any],
) -> list[Any]:
    """Adds one ``score_<label>`` column per class; returns the labels in column order."""
    if not any(f.scores for f in flat):
        return []
    texts: list[str] = []
    for f in flat:
        texts.extend(t for t in (f.scores or {}) if t not in texts)
    if class_labels and sorted(normalize_key(c) for c in class_labels) == sorted(texts):
        texts = [normalize_key(c) for c in class_labels]
    for text in texts:
        columns[SCORE_PREFIX + text] = pa.array(
            [(flat[i].scores or {}).get(text) for i in order], pa.float64()
        )
    if label_type is not None:
        coerced = _coerce(texts, label_type)
        if coerced is not None:
            return coerced.to_pylist()
    return list(texts)


def _extra_columns(flat: list[_Flat], order: list[int], columns: dict[str, Any]) -> None:
    names: list[str] = []
    for f in flat:
        names.extend(n for n in f.extra if n not in names)
    for name in names:
        values = [flat[i].extra.get(name) for i in order]
        try:
            columns[f"prediction_{name}"] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[f"prediction_{name}"] = pa.array([json.dumps(v) for v in values])


def check_failed_fraction(metadata: dict[str, Any], max_failed_fraction: float) -> None:
    """Raises when a larger fraction of the rows than ``max_failed_fraction`` has no prediction."""
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise UserError(f"max_failed_fraction must be within [0, 1]; got {max_failed_fraction}.")
    fraction = metadata.get("failed_fraction", 0.0)
    if fraction > max_failed_fraction:
        parts = [f"{metadata.get('failed_count', 0)} failed instances"]
        if metadata.get("ground_truth_rows"):
            parts.append(
                f"{metadata['unpredicted_rows']} of {metadata['ground_truth_rows']} ground-truth "
                f"rows without a prediction (e.g. keys {metadata['unpredicted_keys'][:5]})"
            )
        stats = metadata.get("errors_stats") or []
        top = f" Most frequent error: {stats[0][0]!r} x{stats[0][1]}." if stats else ""
        raise UserError(
            f"{fraction:.2%} of the rows have no prediction ({'; '.join(parts)}), above "
            f"max_failed_fraction={max_failed_fraction}.{top} See the errors in "
            f"{metadata.get('predictions_directory')}; raise max_failed_fraction to accept them."
        )


def _infer_problem_type(
    results: list[Record], class_labels: list[Any], target_type: pa.DataType | None
) -> str:
    if class_labels:
        return CLASSIFICATION
    sample = [r.prediction for r in results[:100]]
    if any(isinstance(p, dict) and _first(p, SCORE_KEYS) is not None for p in sample):
        return CLASSIFICATION
    if any(isinstance(p, dict) and _first(p, VALUE_KEYS) is not None for p in sample):
        return REGRESSION
    if any(isinstance(p, list) and len(p) > 1 for p in sample):
        return CLASSIFICATION
    if target_type is not None:
        if pa.types.is_floating(target_type):
            return REGRESSION
        return CLASSIFICATION
    if any(isinstance(p, (str, bool)) for p in sample):
        return CLASSIFICATION
    return REGRESSION


def _errors_table(records: list[Record], key_column: str) -> pa.Table:
    keys, instances, codes, messages = [], [], [], []
    for r in records:
        key = _record_key(r, key_column)
        keys.append(None if key is None else normalize_key(key))
        instances.append(None if r.instance is None else json.dumps(r.instance))
        codes.append((r.error or {}).get("code"))
        messages.append((r.error or {}).get("message"))
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "instance": pa.array(instances, pa.string()),
            "code": pa.array(codes, pa.int64()),
            "message": pa.array(messages, pa.string()),
        }
    )


def write_collected(result: CollectResult, output_dir: str) -> None:
    """Writes predictions.parquet, predictions.csv, errors.csv and summary.json."""
    os.makedirs(output_dir, exist_ok=True)
    write_parquet(result.table, os.path.join(output_dir, PREDICTIONS_PARQUET))
    write_csv(result.table, os.path.join(output_dir, PREDICTIONS_CSV))
    write_csv(result.errors, os.path.join(output_dir, ERRORS_CSV))
    write_json(result.metadata, os.path.join(output_dir, SUMMARY_JSON))


def run_collect_predictions(
    *,
    predictions: ArtifactLike,
    ground_truth: ArtifactLike,
    model: ArtifactLike,
    collected: ArtifactLike,
    key_column: str = "",
    target_column: str = "",
    problem_type: str = "",
    class_labels: list[Any] | None = None,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
) -> CollectResult:
    """The Collect predictions component.

    Target, problem type and class labels default to the model's metadata (as Train writes it),
    then to the ground truth Dataset's. The output is a directory artifact.
    """
    model_meta = model.metadata or {}
    gt_meta = ground_truth.metadata or {}
    result = collect_predictions(
        predictions_dir=predictions.uri if "://" in predictions.uri else predictions.path,
        ground_truth_path=ground_truth.path,
        key_column=key_column,
        target_column=target_column or model_meta.get("target") or gt_meta.get("target_column", ""),
        problem_type=problem_type
        or model_meta.get("problem_type")
        or gt_meta.get("problem_type", ""),
        class_labels=list(class_labels or model_meta.get("class_labels") or []),
        class_names=list(model_meta.get("class_names") or []) if not class_labels else None,
    )
    write_collected(result, collected.path)
    collected.metadata.update(result.metadata)
    check_failed_fraction(result.metadata, max_failed_fraction)
    return result
