"""Evaluate: metrics of collected predictions against the ground truth, and an HTML report.

Classification: accuracy, precision / recall / F1 (macro and per class), a confusion matrix, and
from the scores, when the predictions have them, log loss, ROC AUC, PR AUC and a ROC curve
(one-vs-rest, micro-averaged for more than two classes). Regression: RMSE, MAE, MAPE, R2 and RMSLE
(MAPE only when every label is positive, RMSLE only when labels and predictions are non-negative, as
Vertex AI reports them; MAPE is a fraction, as scikit-learn computes it).

The metrics come out three ways: flat names for KFP's ``Metrics``, a confusion matrix and ROC curve
for KFP's ``ClassificationMetrics``, and a JSON document with the keys of Google's
``google.ClassificationMetrics`` / ``google.RegressionMetrics`` artifacts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.io.tables import read_table, write_json, write_text
from batchpredict.tasks.contract import (
    CLASSIFICATION,
    PREDICTED_COLUMN,
    REGRESSION,
    check_problem_type,
    is_score_column,
    normalize_key,
    score_label,
)

# Metrics where lower is better: the quality gate fails when they are above the threshold.
LOWER_IS_BETTER = ("log_loss", "rmse", "mae", "mape", "rmsle")
METRIC_ALIASES = {
    "f1": "f1_macro",
    "precision": "precision_macro",
    "recall": "recall_macro",
    "auc": "roc_auc",
    "auRoc": "roc_auc",
    "auPrc": "pr_auc",
    "logLoss": "log_loss",
    "f1Score": "f1_macro",
    "rootMeanSquaredError": "rmse",
    "meanAbsoluteError": "mae",
    "meanAbsolutePercentageError": "mape",
    "rSquared": "r2",
    "rootMeanSquaredLogError": "rmsle",
}
# Thresholds of Google's confidenceMetrics list: 0.00, 0.05, ..., 1.00.
CONFIDENCE_THRESHOLDS = tuple(round(i / 20, 2) for i in range(21))
REPORT_SUFFIX = ".html"
METRICS_FILE = "metrics.json"


@dataclass
class Evaluation:
    """Everything Evaluate computes."""

    problem_type: str
    rows: int
    metrics: dict[str, float]
    google_metrics: dict[str, Any]
    labels: list[Any] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    confusion_matrix: list[list[int]] = field(default_factory=list)
    roc_curve: dict[str, list[float]] = field(default_factory=dict)
    pr_curve: dict[str, list[float]] = field(default_factory=dict)
    y_true: list[float] = field(default_factory=list)
    y_pred: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gate: dict[str, Any] = field(default_factory=dict)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def clamp_thresholds(thresholds: np.ndarray, scores: np.ndarray) -> list[float]:
    """ROC thresholds without scikit-learn's leading ``inf``: clamped to 1 (or the top score)."""
    top = max(1.0, float(np.max(scores))) if scores.size else 1.0
    return [top if not math.isfinite(t) else float(t) for t in thresholds]


def classification_metrics(
    y_true: list[Any],
    y_pred: list[Any],
    labels: list[Any],
    scores: np.ndarray | None = None,
    label_names: list[str] | None = None,
) -> Evaluation:
    """Classification metrics.

    Args:
        y_true: the true labels.
        y_pred: the predicted labels.
        labels: the classes, in the order of the columns of ``scores``.
        scores: per-class scores (rows x classes), or None.
        label_names: display names of ``labels``.

    Returns:
        The evaluation.
    """
    from sklearn import metrics as skm

    labels = list(labels) or sorted({*y_true, *y_pred}, key=normalize_key)
    extra = [v for v in {*y_true, *y_pred} if v not in labels]
    all_labels = labels + sorted(extra, key=normalize_key)
    names = list(label_names or [])
    names = names + [_label_text(v) for v in all_labels[len(names) :]]
    notes = []
    if extra:
        notes.append(f"Labels outside the model's classes: {extra}.")
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=all_labels, zero_division=0
    )
    present = [i for i, s in enumerate(support) if s > 0 or all_labels[i] in y_pred]
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(precision[present])),
        "recall_macro": float(np.mean(recall[present])),
        "f1_macro": float(np.mean(f1[present])),
    }
    per_class = [
        {
            "label": all_labels[i],
            "name": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(all_labels))
    ]
    for row in per_class:
        key = normalize_key(row["label"])
        out[f"precision_{key}"] = row["precision"]
        out[f"recall_{key}"] = row["recall"]
        out[f"f1_{key}"] = row["f1"]
    matrix = skm.confusion_matrix(y_true, y_pred, labels=all_labels).tolist()
    evaluation = Evaluation(
        problem_type=CLASSIFICATION,
        rows=len(y_true),
        metrics=out,
        google_metrics={},
        labels=all_labels,
        label_names=names,
        per_class=per_class,
        confusion_matrix=matrix,
        notes=notes,
    )
    if scores is not None and len(y_true):
        _score_metrics(evaluation, y_true, labels, scores)
    evaluation.google_metrics = _google_classification(evaluation, y_true, labels, scores)
    return evaluation


def _score_metrics(
    evaluation: Evaluation, y_true: list[Any], labels: list[Any], scores: np.ndarray
) -> None:
    from sklearn import metrics as skm

    index = {normalize_key(c): i for i, c in enumerate(labels)}
    truth_idx = np.asarray([index.get(normalize_key(v), -1) for v in y_true])
    known = truth_idx >= 0
    onehot = np.zeros_like(scores)
    onehot[np.nonzero(known)[0], truth_idx[known]] = 1.0
    sums = scores.sum(axis=1, keepdims=True)
    probs = np.where(sums > 0, scores / np.where(sums > 0, sums, 1.0), 1.0 / scores.shape[1])
    if known.all():
        evaluation.metrics["log_loss"] = float(
            skm.log_loss(truth_idx, probs, labels=list(range(len(labels))))
        )
    present = onehot.sum(axis=0)
    if len(labels) == 2:
        y_pos, s_pos = onehot[:, 1], scores[:, 1]
    else:
        y_pos, s_pos = onehot.ravel(), scores.ravel()
    if 0 < y_pos.sum() < len(y_pos):
        fpr, tpr, thr = skm.roc_curve(y_pos, s_pos)
        evaluation.roc_curve = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": clamp_thresholds(thr, s_pos),
        }
        prec, rec, _ = skm.precision_recall_curve(y_pos, s_pos)
        evaluation.pr_curve = {"precision": prec.tolist(), "recall": rec.tolist()}
        if len(labels) == 2:
            evaluation.metrics["roc_auc"] = float(skm.roc_auc_score(y_pos, s_pos))
            evaluation.metrics["pr_auc"] = float(skm.average_precision_score(y_pos, s_pos))
        else:
            cols = [j for j in range(len(labels)) if 0 < present[j] < len(y_true)]
            if len(cols) == len(labels):
                evaluation.metrics["roc_auc"] = float(
                    skm.roc_auc_score(onehot, scores, average="macro")
                )
                evaluation.metrics["pr_auc"] = float(
                    skm.average_precision_score(onehot, scores, average="macro")
                )
            else:
                evaluation.notes.append(
                    "ROC AUC and PR AUC left out: some classes are absent from the labels."
                )
            evaluation.notes.append("The ROC curve is micro-averaged over one-vs-rest classes.")
    else:
        evaluation.notes.append("ROC AUC left out: the labels hold a single class.")


def _confidence_metrics(
    y_true: list[Any], labels: list[Any], scores: np.ndarray
) -> list[dict[str, Any]]:
    """Google's confidenceMetrics: micro-averaged one-vs-rest counts at each threshold."""
    index = {normalize_key(c): i for i, c in enumerate(labels)}
    truth = np.zeros_like(scores, dtype=bool)
    for r, v in enumerate(y_true):
        j = index.get(normalize_key(v))
        if j is not None:
            truth[r, j] = True
    top = np.zeros_like(truth)
    top[np.arange(len(scores)), scores.argmax(axis=1)] = True
    out = []
    for t in CONFIDENCE_THRESHOLDS:
        entry: dict[str, Any] = {"confidenceThreshold": t}
        for suffix, positive in (("", scores >= t), ("At1", (scores >= t) & top)):
            tp = int((positive & truth).sum())
            fp = int((positive & ~truth).sum())
            fn = int((~positive & truth).sum())
            tn = int((~positive & ~truth).sum())
            precision = tp / (tp + fp) if tp + fp else 1.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            entry[f"precision{suffix}"] = precision
            entry[f"recall{suffix}"] = recall
            entry[f"f1Score{suffix}"] = f1
            entry[f"falsePositiveRate{suffix}"] = fp / (fp + tn) if fp + tn else 0.0
            if not suffix:
                entry.update(
                    {
                        "truePositiveCount": tp,
                        "falsePositiveCount": fp,
                        "falseNegativeCount": fn,
                        "trueNegativeCount": tn,
                    }
                )
        out.append(entry)
    return out


def _google_classification(
    evaluation: Evaluation, y_true: list[Any], labels: list[Any], scores: np.ndarray | None
) -> dict[str, Any]:
    m = evaluation.metrics
    doc: dict[str, Any] = {
        "aggregationType": "MACRO_AVERAGE",
        "aggregationThreshold": 0.5,
        "accuracy": m["accuracy"],
        "precision": m["precision_macro"],
        "recall": m["recall_macro"],
        "f1Score": m["f1_macro"],
    }
    for google_key, key in (("auRoc", "roc_auc"), ("auPrc", "pr_auc"), ("logLoss", "log_loss")):
        if key in m:
            doc[google_key] = m[key]
    doc["confusionMatrix"] = {
        "annotationSpecs": [
            {"id": normalize_key(label), "displayName": name}
            for label, name in zip(evaluation.labels, evaluation.label_names, strict=True)
        ],
        "rows": evaluation.confusion_matrix,
    }
    if scores is not None and len(y_true):
        doc["confidenceMetrics"] = _confidence_metrics(y_true, labels, scores)
    return doc


def regression_metrics(y_true: list[float], y_pred: list[float]) -> Evaluation:
    """Regression metrics (RMSE, MAE, MAPE, R2, RMSLE)."""
    from sklearn import metrics as skm

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    out: dict[str, float] = {
        "rmse": float(np.sqrt(skm.mean_squared_error(t, p))),
        "mae": float(skm.mean_absolute_error(t, p)),
    }
    notes = []
    if (t > 0).all():
        out["mape"] = float(skm.mean_absolute_percentage_error(t, p))
    else:
        notes.append("MAPE left out: some labels are not positive.")
    if len(t) > 1:
        out["r2"] = float(skm.r2_score(t, p))
    if (t >= 0).all() and (p >= 0).all():
        out["rmsle"] = float(np.sqrt(skm.mean_squared_log_error(t, p)))
    else:
        notes.append("RMSLE left out: some labels or predictions are negative.")
    google_keys = {
        "rmse": "rootMeanSquaredError",
        "mae": "meanAbsoluteError",
        "mape": "meanAbsolutePercentageError",
        "r2": "rSquared",
        "rmsle": "rootMeanSquaredLogError",
    }
    return Evaluation(
        problem_type=REGRESSION,
        rows=len(t),
        metrics=out,
        google_metrics={google_keys[k]: v for k, v in out.items()},
        y_true=t.tolist(),
        y_pred=p.tolist(),
        notes=notes,
    )


def evaluate_table(
    table: pa.Table,
    target_column: str,
    problem_type: str = "",
    class_labels: list[Any] | None = None,
    class_names: list[str] | None = None,
    score_columns: list[str] | None = None,
) -> Evaluation:
    """Evaluates a collected table (``target_column``, ``predicted``, ``score_*`` columns).

    Rows without a prediction are left out (Collect reports them). ``score_columns`` default to
    every ``score_*`` column, in table order; ``class_labels`` to the labels they name.
    """
    for name in (target_column, PREDICTED_COLUMN):
        if name not in table.column_names:
            raise UserError(
                f"Column {name!r} is not in the predictions table; its columns are "
                f"{table.column_names}. Evaluate reads the output of Collect predictions."
            )
    table = table.filter(pc.is_valid(table.column(PREDICTED_COLUMN)))
    table = table.filter(pc.is_valid(table.column(target_column)))
    if not problem_type:
        t = table.column(PREDICTED_COLUMN).type
        problem_type = REGRESSION if pa.types.is_floating(t) else CLASSIFICATION
    check_problem_type(problem_type)
    if table.num_rows == 0:
        raise UserError("No row has both a label and a prediction: nothing to evaluate.")
    y_true = table.column(target_column).to_pylist()
    y_pred = table.column(PREDICTED_COLUMN).to_pylist()
    if problem_type == REGRESSION:
        return regression_metrics(y_true, y_pred)
    score_columns = list(score_columns or [c for c in table.column_names if is_score_column(c)])
    labels = list(class_labels or [])
    scores = None
    if score_columns:
        if not labels or len(labels) != len(score_columns):
            labels = [score_label(c) for c in score_columns]
            if all(isinstance(v, int) for v in y_true) and all(
                x.lstrip("-").isdigit() for x in labels
            ):
                labels = [int(x) for x in labels]
        scores = np.column_stack(
            [
                table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in score_columns
            ]
        )
        if np.isnan(scores).any():
            scores = None
    return classification_metrics(y_true, y_pred, labels, scores, class_names)


def quality_gate(evaluation: Evaluation, metric: str, threshold: float) -> dict[str, Any]:
    """Checks one metric against ``threshold``: scores must reach it, errors stay within it.

    Returns:
        ``{"metric", "value", "threshold", "direction", "passed"}``.

    Raises:
        UserError: the metric is unknown (the message lists the available ones).
    """
    name = METRIC_ALIASES.get(metric, metric)
    if name not in evaluation.metrics:
        raise UserError(
            f"Unknown gate metric {metric!r} for this {evaluation.problem_type} evaluation; "
            f"available: {sorted(evaluation.metrics)}."
        )
    value = evaluation.metrics[name]
    lower = name in LOWER_IS_BETTER
    passed = value <= threshold if lower else value >= threshold
    return {
        "metric": name,
        "value": value,
        "threshold": threshold,
        "direction": "at most" if lower else "at least",
        "passed": bool(passed),
    }


def _label_text(value: Any) -> str:
    """A class label's display name: ``1`` for a label read as ``1.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _count(value: Any) -> Any:
    """A count from artifact metadata (KFP stores numbers as floats) as a whole number."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def run_evaluate(
    *,
    predictions: ArtifactLike,
    metrics: Any,
    classification_metrics: Any,
    evaluation_metrics: ArtifactLike,
    report: ArtifactLike,
    target_column: str = "",
    problem_type: str = "",
    gate_metric: str = "",
    gate_threshold: float = 0.0,
    title: str = "",
) -> Evaluation:
    """The Evaluate component.

    Reads Collect's output (table and metadata), logs the flat metrics on ``metrics``
    (``log_metric``), the confusion matrix and ROC curve on ``classification_metrics``
    (``log_confusion_matrix``, ``log_roc_curve``), writes the Google-keyed JSON into
    ``evaluation_metrics`` and the HTML report into ``report``, then applies the gate.
    """
    from batchpredict.tasks.report import render_report

    meta = dict(predictions.metadata or {})
    table = read_table(predictions.path)
    evaluation = evaluate_table(
        table,
        target_column=target_column or meta.get("target_column", ""),
        problem_type=problem_type or meta.get("problem_type", ""),
        class_labels=meta.get("class_labels") or None,
        class_names=meta.get("class_names") or None,
        score_columns=meta.get("score_columns") or None,
    )
    if gate_metric:
        evaluation.gate = quality_gate(evaluation, gate_metric, gate_threshold)
    for name, value in evaluation.metrics.items():
        metrics.log_metric(name, round(value, 6))
    metrics.log_metric("rows", evaluation.rows)
    if evaluation.problem_type == CLASSIFICATION:
        classification_metrics.log_confusion_matrix(
            evaluation.label_names, evaluation.confusion_matrix
        )
        if evaluation.roc_curve:
            classification_metrics.log_roc_curve(
                evaluation.roc_curve["fpr"],
                evaluation.roc_curve["tpr"],
                evaluation.roc_curve["thresholds"],
            )
    # KFP's metrics artifacts live in metadata; files at their paths too, so that the outputs
    # exist on disk (kfp.local's cache treats an output without a file as missing).
    write_json(metrics.metadata, metrics.path)
    write_json(
        {k: v for k, v in classification_metrics.metadata.items()}, classification_metrics.path
    )
    os.makedirs(evaluation_metrics.path, exist_ok=True)
    write_json(evaluation.google_metrics, os.path.join(evaluation_metrics.path, METRICS_FILE))
    evaluation_metrics.metadata.update(
        {
            "schema": "google.ClassificationMetrics"
            if evaluation.problem_type == CLASSIFICATION
            else "google.RegressionMetrics",
            **{k: v for k, v in evaluation.google_metrics.items() if k != "confidenceMetrics"},
        }
    )
    context = {
        "Predictions": meta.get("predictions_directory", ""),
        "Rows evaluated": evaluation.rows,
        "Successful / failed": f"{_count(meta.get('successful_count', '?'))} / "
        f"{_count(meta.get('failed_count', '?'))}",
    }
    # An .html name, so that a browser opening the file (or the printed file:// link) renders it
    # instead of showing the source; KFP records the changed URI in the step's outputs.
    if not report.uri.endswith(REPORT_SUFFIX):
        report.uri = report.uri + REPORT_SUFFIX
    write_text(render_report(evaluation, title=title, context=context), report.path)
    if evaluation.gate and not evaluation.gate["passed"]:
        g = evaluation.gate
        raise UserError(
            f"Quality gate failed: {g['metric']}={g['value']:.4f}, required {g['direction']} "
            f"{g['threshold']}."
        )
    return evaluation
