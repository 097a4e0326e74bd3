import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl
from sklearn import metrics as skm

from batchpredict.errors import UserError
from batchpredict.tasks.evaluate import (
    clamp_thresholds,
    classification_metrics,
    evaluate_table,
    quality_gate,
    regression_metrics,
    run_evaluate,
)
from batchpredict.tasks.report import render_report


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    p1 = np.clip(0.7 * y + rng.normal(0.15, 0.2, size=200), 0, 1)
    pred = (p1 >= 0.5).astype(int)
    return y, pred, np.column_stack([1 - p1, p1])


def test_binary_classification_matches_sklearn(binary):
    y, pred, scores = binary
    ev = classification_metrics(y.tolist(), pred.tolist(), [0, 1], scores, ["neg", "pos"])
    m = ev.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["recall_1"] == pytest.approx(skm.recall_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores[:, 1]))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores[:, 1]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, scores))
    assert ev.confusion_matrix == skm.confusion_matrix(y, pred).tolist()
    assert ev.label_names == ["neg", "pos"]
    # sklearn's leading inf threshold is clamped: every value is finite JSON
    assert all(math.isfinite(t) for t in ev.roc_curve["thresholds"])
    assert ev.roc_curve["thresholds"][0] == 1.0
    json.dumps(ev.google_metrics, allow_nan=False)


def test_google_classification_keys(binary):
    y, pred, scores = binary
    g = classification_metrics(y.tolist(), pred.tolist(), [0, 1], scores).google_metrics
    assert {"accuracy", "precision", "recall", "f1Score", "auRoc", "auPrc", "logLoss"} <= set(g)
    assert g["aggregationType"] == "MACRO_AVERAGE"
    assert g["confusionMatrix"]["annotationSpecs"] == [
        {"id": "0", "displayName": "0"},
        {"id": "1", "displayName": "1"},
    ]
    cm = g["confidenceMetrics"]
    assert [c["confidenceThreshold"] for c in cm] == [round(i / 20, 2) for i in range(21)]
    at_half = cm[10]
    counts = sum(at_half[k] for k in ("truePositiveCount", "falsePositiveCount"))
    assert counts + at_half["falseNegativeCount"] + at_half["trueNegativeCount"] == 400
    assert {"recallAt1", "precisionAt1", "f1ScoreAt1", "falsePositiveRateAt1"} <= set(at_half)


def test_labels_only_has_no_score_metrics():
    ev = classification_metrics(["a", "b", "a", "c"], ["a", "b", "b", "c"], ["a", "b", "c"])
    assert ev.metrics["accuracy"] == 0.75
    assert "roc_auc" not in ev.metrics and "log_loss" not in ev.metrics
    assert not ev.roc_curve and "confidenceMetrics" not in ev.google_metrics
    assert ev.confusion_matrix == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_multiclass_scores_micro_roc_and_macro_auc():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 30)
    scores = rng.dirichlet([1, 1, 1], size=90)
    scores[np.arange(90), y] += 0.5
    scores /= scores.sum(axis=1, keepdims=True)
    pred = scores.argmax(axis=1)
    ev = classification_metrics(y.tolist(), pred.tolist(), [0, 1, 2], scores)
    assert ev.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovr"))
    assert ev.roc_curve and any("micro-averaged" in n for n in ev.notes)


def test_clamp_thresholds_uses_top_score_above_one():
    assert clamp_thresholds(np.array([np.inf, 0.5]), np.array([0.2, 0.5])) == [1.0, 0.5]
    assert clamp_thresholds(np.array([np.inf, 3.0]), np.array([3.0, -1.0])) == [3.0, 3.0]


def test_regression_matches_sklearn_and_google_keys():
    t = np.array([3.0, 5.0, 2.5, 7.0])
    p = np.array([2.5, 5.0, 4.0, 8.0])
    ev = regression_metrics(t.tolist(), p.tolist())
    m = ev.metrics
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(t, p)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(t, p))
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(t, p))
    assert m["r2"] == pytest.approx(skm.r2_score(t, p))
    assert m["rmsle"] == pytest.approx(np.sqrt(skm.mean_squared_log_error(t, p)))
    assert ev.google_metrics == {
        "rootMeanSquaredError": m["rmse"],
        "meanAbsoluteError": m["mae"],
        "meanAbsolutePercentageError": m["mape"],
        "rSquared": m["r2"],
        "rootMeanSquaredLogError": m["rmsle"],
    }


def test_regression_leaves_out_mape_and_rmsle_when_undefined():
    ev = regression_metrics([0.0, -1.0, 2.0], [0.5, -0.5, 2.0])
    assert "mape" not in ev.metrics and "rmsle" not in ev.metrics
    assert len(ev.notes) == 2


def test_quality_gate_directions_and_unknown_metric():
    ev = regression_metrics([1.0, 2.0, 3.0], [1.1, 2.1, 2.9])
    assert quality_gate(ev, "rmse", 0.2)["passed"] is True
    assert quality_gate(ev, "rootMeanSquaredError", 0.05)["passed"] is False
    assert quality_gate(ev, "r2", 0.9) | {"direction": "at least"} == quality_gate(ev, "r2", 0.9)
    with pytest.raises(UserError, match=r"Unknown gate metric 'accuracy'.*available: \['mae'"):
        quality_gate(ev, "accuracy", 0.9)


def test_evaluate_table_drops_unpredicted_rows_and_reads_score_columns():
    table = pa.table(
        {
            "k": [0, 1, 2, 3],
            "y": [0, 1, 1, 0],
            "predicted": [0, 1, None, 1],
            "score_0": [0.9, 0.2, None, 0.4],
            "score_1": [0.1, 0.8, None, 0.6],
        }
    )
    ev = evaluate_table(table, "y")
    assert ev.rows == 3 and ev.labels == [0, 1]
    assert ev.metrics["accuracy"] == pytest.approx(2 / 3)
    assert "roc_auc" in ev.metrics
    with pytest.raises(UserError, match="Column 'label' is not in the predictions table"):
        evaluate_table(table, "label")


def _collected(tmp_path, table: pa.Table, metadata: dict) -> dsl.Dataset:
    d = tmp_path / "collected"
    d.mkdir()
    pq.write_table(table, d / "predictions.parquet")
    return dsl.Dataset(uri=str(d), metadata=metadata)


def _outputs(tmp_path):
    return dict(
        metrics=dsl.Metrics(uri=str(tmp_path / "metrics")),
        classification_metrics=dsl.ClassificationMetrics(uri=str(tmp_path / "cm")),
        evaluation_metrics=dsl.Artifact(uri=str(tmp_path / "em")),
        report=dsl.HTML(uri=str(tmp_path / "report")),
    )


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg .*?</svg>", html, flags=re.S)


def test_run_evaluate_classification_fills_kfp_outputs_and_report(tmp_path, binary):
    y, pred, scores = binary
    table = pa.table(
        {"target": y, "predicted": pred, "score_0": scores[:, 0], "score_1": scores[:, 1]}
    )
    meta = {
        "target_column": "target",
        "problem_type": "classification",
        "class_labels": [0, 1],
        "class_names": ["malignant", "benign"],
        "score_columns": ["score_0", "score_1"],
        "successful_count": 200,
        "failed_count": 0,
    }
    out = _outputs(tmp_path)
    ev = run_evaluate(
        predictions=_collected(tmp_path, table, meta),
        **out,
        gate_metric="accuracy",
        gate_threshold=0.5,
    )
    assert ev.gate["passed"]
    assert out["metrics"].metadata["accuracy"] == pytest.approx(ev.metrics["accuracy"], abs=1e-6)
    assert out["metrics"].metadata["rows"] == 200
    cm = out["classification_metrics"].metadata
    assert cm["confusionMatrix"]["annotationSpecs"] == [
        {"displayName": "malignant"},
        {"displayName": "benign"},
    ]
    assert len(cm["confidenceMetrics"]) == len(ev.roc_curve["fpr"])
    for name in ("metrics", "classification_metrics"):
        assert json.loads(Path(out[name].path).read_text())  # a file exists for each output
    google = json.loads(Path(out["evaluation_metrics"].path, "metrics.json").read_text())
    assert google["auRoc"] == pytest.approx(ev.metrics["roc_auc"])
    assert out["evaluation_metrics"].metadata["schema"] == "google.ClassificationMetrics"
    html = Path(out["report"].path).read_text()
    for text in ("Accuracy", "F1 (macro)", "ROC AUC", "Log loss", "Confusion matrix", "malignant"):
        assert text in html
    assert "Quality gate <span class='pass'>passed</span>" in html
    assert not re.search(r"(src|href)=|https?://(?!www\.w3\.org/2000/svg)", html)
    svgs = _svgs(html)
    assert len(svgs) == 3  # confusion matrix, ROC, precision-recall
    for svg in svgs:
        ET.fromstring(svg)  # well-formed


def test_run_evaluate_regression_and_failed_gate_keeps_the_report(tmp_path):
    rng = np.random.default_rng(2)
    t = rng.uniform(50, 300, size=80)
    table = pa.table({"target": t, "predicted": t + rng.normal(0, 40, size=80)})
    out = _outputs(tmp_path)
    with pytest.raises(UserError, match=r"Quality gate failed: rmse=\d+\.\d+, required at most 1"):
        run_evaluate(
            predictions=_collected(tmp_path, table, {"target_column": "target"}),
            **out,
            gate_metric="rmse",
            gate_threshold=1.0,
        )
    html = Path(out["report"].path).read_text()
    for text in ("RMSE", "MAE", "MAPE", "R2", "RMSLE", "Residuals", "Predicted vs actual"):
        assert text in html
    assert "class='fail'>failed" in html
    for svg in _svgs(html):
        ET.fromstring(svg)
    assert out["evaluation_metrics"].metadata["schema"] == "google.RegressionMetrics"
    assert os.path.exists(out["classification_metrics"].path)


def test_report_escapes_names():
    ev = classification_metrics(["<a>", "b"], ["<a>", "b"], ["<a>", "b"])
    html = render_report(ev, title="x & y", context={"k": "<v>"})
    assert "&lt;a&gt;" in html and "<a>" not in html
    assert "x &amp; y" in html and "&lt;v&gt;" in html
    for svg in _svgs(html):
        ET.fromstring(svg)
