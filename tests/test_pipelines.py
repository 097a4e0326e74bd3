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


def test_predictions_land_under_the_batch_predict_steps_own_directory(classification):
    _, summary = classification
    predictions = Path(summary.outputs["predictions_directory"].uri)
    assert predictions.parent == Path(summary.run_directory, "model-batch-predict")
    assert predictions.name.startswith("prediction-tabular-classification-")
    assert not list(Path(summary.run_directory, "prepare-instances").glob("**/prediction.*"))


def test_every_file_the_steps_wrote_is_readable_by_others(classification):
    _, summary = classification
    checked = 0
    for dirpath, _, files in os.walk(summary.run_directory):
        for name in files:
            mode = os.stat(os.path.join(dirpath, name)).st_mode & 0o777
            assert mode & 0o044 == 0o044, (os.path.join(dirpath, name), oct(mode))
            checked += 1
    assert checked > 10


def test_the_report_has_an_html_name(classification):
    _, summary = classification
    report = summary.outputs["report"]
    assert report.uri.endswith("/evaluate/report.html")
    assert Path(report.path).read_text().startswith("<!DOCTYPE html>")


def test_runner_is_quiet_by_default_and_keeps_the_step_logs(classification, capsys):
    root, _ = classification
    assert main(["tabular_classification", "--cache", "--pipeline-root", str(root)]) == 0
    captured = capsys.readouterr()
    assert "Running pipeline" not in captured.out + captured.err
    log_path = captured.out.split("Step logs: ")[1].split()[0]
    assert "Running pipeline" in Path(log_path).read_text()
    argv = ["tabular_classification", "--cache", "--verbose", "--pipeline-root", str(root)]
    assert main(argv) == 0
    assert "Running pipeline" in capsys.readouterr().out


def test_a_failed_step_prints_its_error_run_directory_and_report_and_exits_1(tmp_path, capsys):
    argv = ["tabular_classification", "--pipeline-root", str(tmp_path)]
    assert main([*argv, "--param", "min_accuracy=0.9999"]) == 1
    err = capsys.readouterr().err
    assert "failed at step evaluate:" in err
    assert "UserError: Quality gate failed: accuracy=" in err
    run_dir = err.split("Run directory: ")[1].split()[0]
    assert Path(run_dir, "evaluate").is_dir()
    report = err.split("Report: file://")[1].split()[0]
    assert report.endswith("report.html") and Path(report).exists()
    assert "Traceback" not in err


def test_vertex_custom_model_runs_its_local_form_without_arguments(tmp_path, capsys):
    # --param goes over the generated local arguments (model, instances, backend='local')
    argv = ["vertex_custom_model", "--pipeline-root", str(tmp_path)]
    assert main([*argv, "--param", "max_replica_count=3"]) == 0
    out = capsys.readouterr().out
    assert "successful 200, failed 0" in out
    run_dir = Path(out.split("Run directory: ")[1].split()[0])
    (executor_output,) = run_dir.glob("*/executor_output.json")
    job = json.loads(executor_output.read_text())["artifacts"]["batchpredictionjob"]["artifacts"][0]
    assert job["metadata"]["vertexOnlySettings"]["max_replica_count"] == 3  # the --param
    predictions = out.split("output directory ")[1].split()[0]
    assert (
        Path(predictions).parent
        == tmp_path / "vertex_custom_model_inputs" / "bucket" / "predictions"
    )


def test_helpers_are_not_listed_as_pipelines(capsys):
    from pipelines.run import available_pipelines

    assert available_pipelines() == [
        "custom_model_training",
        "tabular_classification",
        "tabular_regression",
        "vertex_custom_model",
    ]
    with pytest.raises(SystemExit, match="No pipeline '_tabular'"):
        main(["_tabular"])
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert (
        "custom_model_training, tabular_classification, tabular_regression, vertex_custom_model"
        in (shown)
    )
    assert "(on Vertex AI only, not run here: custom_model_training_vertex)" in shown


def test_a_vertex_only_pipeline_is_listed_apart_and_refused_before_anything_runs(tmp_path):
    """custom_model_training_vertex trains as a Vertex CustomJob: refused, and no step runs."""
    from pipelines.run import vertex_only_pipelines

    assert list(vertex_only_pipelines()) == ["custom_model_training_vertex"]
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as refused:
        main(["custom_model_training_vertex", "--pipeline-root", str(root)])
    message = str(refused.value)
    assert message.startswith("Pipeline 'custom_model_training_vertex' runs on Vertex AI only")
    assert "Vertex AI CustomJob" in message and "ModelUploadOp" in message
    assert "python -m pipelines.run custom_model_training`" in message
    assert "aiplatform.PipelineJob" in message
    assert not root.exists()
