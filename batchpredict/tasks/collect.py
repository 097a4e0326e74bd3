"""Collect predictions: read a batch prediction output directory into one table.

The output is read by ``io/results.py`` (custom and AutoML layouts, local or ``gs://``), the same
reader a user's ``JobResult`` uses. Predictions are flattened into columns: ``predicted`` (the label
or the value) and, where the model gives scores, one ``score_<label>`` column per class. Score
lists (``predict_proba`` rows), ``{"classes": [...], "scores": [...]}`` dicts (AutoML),
``{"value": ...}`` dicts (AutoML regression) and a single probability of the positive class
(XGBoost ``binary:logistic``) are understood. Rows are joined by key with the ground truth; the
counts of successful, failed and unpredicted rows are reported, and the step fails when too many
rows have no prediction.

The work is a sequence of steps, each returning its values: read the output, read the ground
truth, decide the problem type, flatten the predictions, key the results, join, build the
columns, count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.io.reader import DirectoryReader, Output
from batchpredict.io.results import Record
from batchpredict.io.tables import read_table, write_csv, write_json, write_parquet
from batchpredict.result import check_max_failed_fraction
from batchpredict.tasks.contract import (
    CLASSIFICATION,
    PREDICTED_COLUMN,
    REGRESSION,
    check_problem_type,
    ensure_key_column,
    normalize_key,
    score_column,
)

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
class CollectResult:
    """The flattened predictions, the failed instances, and the counts."""

    table: pa.Table
    errors: pa.Table
    metadata: dict[str, Any]


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
    check_problem_type(problem_type, allow_empty=True)
    output = DirectoryReader(predictions_dir).load()
    ground_truth = _read_ground_truth(ground_truth_path, key_column, target_column)
    target = ground_truth.column(target_column) if ground_truth and target_column else None
    target_type = target.type if target is not None else None
    class_labels = list(class_labels or [])
    problem_type = problem_type or _infer_problem_type(output.results, class_labels, target_type)
    flat = _flatten_all([r.prediction for r in output.results], problem_type, class_labels)
    keys = [r.key_in(key_column) for r in output.results]
    row_keys = _row_keys(keys)
    if ground_truth is not None:
        failed_keys = {
            normalize_key(k) for k in (r.key_in(key_column) for r in output.errors) if k is not None
        }
        joined = _join_ground_truth(ground_truth, row_keys, key_column, target_column, failed_keys)
    else:
        joined = _Joined(order=list(range(len(keys))))
        if key_column:
            joined.columns[key_column] = pa.array(keys)
    columns = dict(joined.columns)
    predicted_values = [flat[i].predicted for i in joined.order]
    predicted, label_type, target_as_text = _predicted_column(
        predicted_values, problem_type, class_labels, joined.columns.get(target_column)
    )
    if target_as_text is not None:
        columns[target_column] = target_as_text
    columns[PREDICTED_COLUMN] = predicted
    scores, score_labels = _score_columns(flat, joined.order, class_labels, label_type)
    columns.update(scores)
    columns.update(_extra_columns(flat, joined.order))
    table = pa.table(columns)
    labels_out = _labels_out(class_labels, label_type, score_labels)
    metadata = {
        "layout": output.layout,
        "predictions_directory": output.location,
        "problem_type": problem_type,
        "key_column": key_column,
        "target_column": target_column,
        **joined.counts,
        "rows": table.num_rows,
        "columns": table.column_names,
        "class_labels": labels_out,
        "class_names": _names_out(class_names, labels_out),
        "score_columns": [score_column(c) for c in score_labels],
        **_failure_counts(output, joined.counts),
    }
    if output.completion_stats is not None:
        metadata["reported_completion_stats"] = output.completion_stats
    return CollectResult(
        table=table, errors=_errors_table(output.errors, key_column), metadata=metadata
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


def _flatten_all(predictions: list[Any], problem_type: str, class_labels: list[Any]) -> list[_Flat]:
    binary = problem_type == CLASSIFICATION and _looks_like_binary_probabilities(
        predictions, class_labels
    )
    return [flatten_prediction(p, problem_type, class_labels, binary) for p in predictions]


def _row_keys(keys: list[Any]) -> list[str | None]:
    """The join form of each result's key; refuses a key predicted twice."""
    row_keys = [None if k is None else normalize_key(k) for k in keys]
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
    return row_keys


@dataclass
class _Joined:
    """The results' order, the columns taken from the ground truth, and the join's counts."""

    order: list[int]
    columns: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def _join_ground_truth(
    ground_truth: pa.Table,
    row_keys: list[str | None],
    key_column: str,
    target_column: str,
    failed_keys: set[str],
) -> _Joined:
    """Orders the results as the ground truth; takes its key and target columns."""
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
    columns = {key_column: ground_truth.column(key_column).take(gt_rows)}
    if target_column:
        columns[target_column] = ground_truth.column(target_column).take(gt_rows)
    predicted = set(row_keys)
    unpredicted = [k for k in gt_keys if k not in predicted]
    counts = {
        "ground_truth_rows": len(gt_keys),
        "unpredicted_rows": len(unpredicted),
        "unpredicted_keys": unpredicted[:MAX_LISTED_KEYS],
        "unpredicted_without_error": len([k for k in unpredicted if k not in failed_keys]),
    }
    return _Joined(order=order, columns=columns, counts=counts)


def _predicted_column(
    predicted_values: list[Any],
    problem_type: str,
    class_labels: list[Any],
    target: Any,
) -> tuple[Any, pa.DataType | None, Any]:
    """``predicted``, its label type, and the target as text when the labels do not fit it.

    A regression's values are floats. A classification's labels take the target's type; labels
    that do not fit it (e.g. AutoML's ``"1"`` for an int target that is not a number) are
    compared with the target as text.
    """
    if problem_type == REGRESSION:
        try:
            values = [None if v is None else float(v) for v in predicted_values]
        except (TypeError, ValueError) as e:
            raise UserError(f"Regression predictions must be numbers: {e}") from e
        return pa.array(values, pa.float64()), None, None
    if target is not None:
        predicted = _coerce(predicted_values, target.type)
        if predicted is not None and (not class_labels or _coerce(class_labels, target.type)):
            return predicted, target.type, None
        as_text = _coerce(target.to_pylist(), pa.string())
        return _coerce(predicted_values, pa.string()), pa.string(), as_text
    try:
        predicted = pa.array(predicted_values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        predicted = pa.array([None if v is None else str(v) for v in predicted_values])
    return predicted, None if pa.types.is_null(predicted.type) else predicted.type, None


def _score_columns(
    flat: list[_Flat],
    order: list[int],
    class_labels: list[Any],
    label_type: pa.DataType | None,
) -> tuple[dict[str, Any], list[Any]]:
    """One ``score_<label>`` column per class, and the labels in column order."""
    if not any(f.scores for f in flat):
        return {}, []
    texts: list[str] = []
    for f in flat:
        texts.extend(t for t in (f.scores or {}) if t not in texts)
    if class_labels and sorted(normalize_key(c) for c in class_labels) == sorted(texts):
        texts = [normalize_key(c) for c in class_labels]
    columns = {
        score_column(text): pa.array(
            [(flat[i].scores or {}).get(text) for i in order], pa.float64()
        )
        for text in texts
    }
    if label_type is not None:
        coerced = _coerce(texts, label_type)
        if coerced is not None:
            return columns, coerced.to_pylist()
    return columns, list(texts)


def _extra_columns(flat: list[_Flat], order: list[int]) -> dict[str, Any]:
    """``prediction_<name>`` for each scalar a prediction dict carries besides its label/scores."""
    names: list[str] = []
    for f in flat:
        names.extend(n for n in f.extra if n not in names)
    columns = {}
    for name in names:
        values = [flat[i].extra.get(name) for i in order]
        try:
            columns[f"prediction_{name}"] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[f"prediction_{name}"] = pa.array([json.dumps(v) for v in values])
    return columns


def _labels_out(
    class_labels: list[Any], label_type: pa.DataType | None, score_labels: list[Any]
) -> list[Any]:
    """The class labels to report: the score columns' labels, else the model's, as the target."""
    if score_labels:
        return score_labels
    if class_labels and label_type is not None:
        coerced = _coerce(class_labels, label_type)
        if coerced is not None:
            return coerced.to_pylist()
    return list(class_labels)


def _names_out(class_names: list[str] | None, labels: list[Any]) -> list[str]:
    names = list(class_names or [])
    return names if len(names) == len(labels) else [str(c) for c in labels]


def _failure_counts(output: Output, join_counts: dict[str, Any]) -> dict[str, Any]:
    """Successful and failed counts, and the failed fraction the gate compares."""
    successful = len(output.results)
    failed = len(output.errors) or sum(c for _, c in output.errors_stats)
    total = successful + failed
    job_fraction = failed / total if total else 0.0
    gt_rows = join_counts.get("ground_truth_rows")
    missing_fraction = join_counts["unpredicted_rows"] / gt_rows if gt_rows else 0.0
    return {
        "successful_count": successful,
        "failed_count": failed,
        "errors_stats": [list(s) for s in output.errors_stats],
        "failed_fraction": max(job_fraction, missing_fraction),
    }


def check_failed_fraction(metadata: dict[str, Any], max_failed_fraction: float) -> None:
    """Raises when a larger fraction of the rows than ``max_failed_fraction`` has no prediction."""
    check_max_failed_fraction(max_failed_fraction)
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
        key = r.key_in(key_column)
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
