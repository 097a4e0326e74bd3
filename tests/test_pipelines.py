"""The example pipelines end to end under kfp.local (SubprocessRunner), asserting real outcomes."""

import glob
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.run import main, run_pipeline

# The component image's name has no "python" in it; SubprocessRunner warns about that, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")

CLASSIFICATION_TASKS = [
    "collect-predictions",
    "dataset",
    "evaluate",
    "model-batch-predict",
    "prepare-instances",
    "train",
]


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp_root")
    return root, run_pipeline("tabular_classification", cache=True, pipeline_root=str(root))


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp_root")
    return root, run_pipeline("tabular_regression", pipeline_root=str(root))


def _result_keys(directory: str) -> list:
    keys = []
    for path in sorted(glob.glob(os.path.join(directory, "prediction.results-*"))):
        keys += [json.loads(line)["key"] for line in Path(path).read_text().splitlines()]
    return keys


def _assert_every_test_row_predicted_once(outputs) -> int:
    test_rows = pq.read_table(outputs["test_data"].path).num_rows
    raw_keys = _result_keys(outputs["predictions_directory"].uri)
    assert sorted(raw_keys) == list(range(test_rows))  # each key once, none missing
    stats = outputs["batchpredictionjob"].metadata["completionStats"]
    assert (stats["successful_count"], stats["failed_count"]) == (test_rows, 0)
    collected = outputs["collected"]
    table = pq.read_table(os.path.join(collected.path, "predictions.parquet"))
    assert table.column("row_id").to_pylist() == list(range(test_rows))
    assert collected.metadata["unpredicted_rows"] == 0
    return test_rows


def test_classification_pipeline_accuracy_and_every_row_once(classification):
    _, summary = classification
    assert summary.executed == CLASSIFICATION_TASKS
    out = summary.outputs
    assert out["metrics"].metadata["accuracy"] > 0.9
    assert out["metrics"].metadata["roc_auc"] > 0.95
    assert _assert_every_test_row_predicted_once(out) == 114
    model = out["model"]
    assert os.path.exists(os.path.join(model.path, "model.joblib"))
    assert "/sklearn-cpu." in model.metadata["containerSpec"]["imageUri"]
    assert out["collected"].metadata["score_columns"] == ["score_0", "score_1"]
    google = json.loads(Path(out["evaluation_metrics"].path, "metrics.json").read_text())
    assert google["accuracy"] == pytest.approx(out["metrics"].metadata["accuracy"], abs=1e-6)
    assert out["classification_metrics"].metadata["confusionMatrix"]["annotationSpecs"] == [
        {"displayName": "malignant"},
        {"displayName": "benign"},
    ]


def test_classification_report_exists_and_names_the_metrics(classification):
    _, summary = classification
    html = Path(summary.outputs["report"].path).read_text()
    accuracy = summary.outputs["metrics"].metadata["accuracy"]
    for text in ("Accuracy", "Precision (macro)", "F1 (macro)", "ROC AUC", "Confusion matrix"):
        assert text in html
    assert f"{accuracy:.4f}" in html
    assert "Quality gate <span class='pass'>passed</span>" in html


def test_second_identical_run_hits_the_cache_for_every_step(classification, capsys):
    root, first = classification
    # ModelBatchPredictOp leaves a file for its unused bigquery_output_table output: without it
    # kfp.local's cache takes the output for deleted and reruns the step.
    assert Path(first.run_directory, "model-batch-predict", "bigquery_output_table").exists()
    assert main(["tabular_classification", "--cache", "--pipeline-root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "Steps executed: 0/6" in printed
    assert "accuracy" in printed and "successful 114, failed 0" in printed
    second = run_pipeline("tabular_classification", cache=True, pipeline_root=str(root))
    assert second.executed == [] and second.cached == CLASSIFICATION_TASKS
    assert {k: a.uri for k, a in second.outputs.items()} == {
        k: a.uri for k, a in first.outputs.items()
    }


def test_regression_pipeline_with_xgboost(regression):
    _, summary = regression
    out = summary.outputs
    assert out["metrics"].metadata["r2"] > 0.3
    assert out["metrics"].metadata["rmse"] < 70
    assert _assert_every_test_row_predicted_once(out) == 88
    assert os.path.exists(os.path.join(out["model"].path, "model.bst"))
    assert "/xgboost-cpu." in out["model"].metadata["containerSpec"]["imageUri"]
    html = Path(out["report"].path).read_text()
    for text in ("RMSE", "MAE", "R2", "Residuals"):
        assert text in html
