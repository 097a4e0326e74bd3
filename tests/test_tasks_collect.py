"""Collect on hand-made outputs in each layout Vertex AI writes (and ours)."""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from batchpredict.errors import UserError
from batchpredict.io.results import find_prediction_files, read_errors_stats
from batchpredict.tasks.collect import (
    check_failed_fraction,
    collect_predictions,
    run_collect_predictions,
    write_collected,
)


def _write_lines(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Python json.dumps formatting, as Vertex writes results lines
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def ground_truth(tmp_path):
    """Six labelled rows without a key column: keys are row positions, as Prepare generates."""
    path = tmp_path / "truth.parquet"
    pq.write_table(
        pa.table({"f": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "label": [0, 1, 1, 0, 1, 0]}), path
    )
    return str(path)


def _custom_output(directory: Path, predictions: dict, failed: dict | None = None) -> Path:
    """Our layout (= Vertex custom model): two results shards, errors, errors_stats, stats."""
    keys = sorted(predictions)
    half = len(keys) // 2
    _write_lines(
        directory / "prediction.results-00000-of-00002",
        [{"key": k, "prediction": predictions[k]} for k in keys[half:]],  # out of order
    )
    _write_lines(
        directory / "prediction.results-00001-of-00002",
        [{"key": k, "prediction": predictions[k]} for k in keys[:half]],
    )
    failed = failed or {}
    _write_lines(
        directory / "prediction.errors-00000-of-00002",
        [{"key": k, "error": {"code": 3, "message": m}} for k, m in failed.items()],
    )
    _write_lines(directory / "prediction.errors-00001-of-00002", [])
    stats = {}
    for m in failed.values():
        stats[m] = stats.get(m, 0) + 1
    (directory / "prediction.errors_stats-00000-of-00001").write_text(
        "".join(f"{(m, c)!r}\n" for m, c in stats.items())
    )
    (directory / "completion_stats.json").write_text(
        json.dumps(
            {"successful_count": len(keys), "failed_count": len(failed), "incomplete_count": 0}
        )
    )
    return directory


def test_custom_layout_scalar_labels_with_failures(tmp_path, ground_truth):
    out = _custom_output(
        tmp_path / "prediction-m-2026_01_01T00_00_00_000Z",
        {0: 0, 1: 1, 2: 0, 3: 0, 4: 1},
        failed={5: "could not convert string to float: 'x'"},
    )
    result = collect_predictions(
        str(out), ground_truth, key_column="row_id", target_column="label", class_labels=[0, 1]
    )
    t = result.table
    assert t.column_names == ["row_id", "label", "predicted"]
    assert t.column("row_id").to_pylist() == [0, 1, 2, 3, 4]  # ground-truth order
    assert t.column("predicted").to_pylist() == [0, 1, 0, 0, 1]
    assert t.schema.field("predicted").type == pa.int64()
    m = result.metadata
    assert m["layout"] == "custom" and m["problem_type"] == "classification"
    assert (m["successful_count"], m["failed_count"]) == (5, 1)
    assert (m["ground_truth_rows"], m["unpredicted_rows"], m["unpredicted_keys"]) == (6, 1, ["5"])
    assert m["unpredicted_without_error"] == 0
    assert m["failed_fraction"] == pytest.approx(1 / 6)
    assert m["errors_stats"] == [["could not convert string to float: 'x'", 1]]
    assert m["reported_completion_stats"]["successful_count"] == 5
    assert result.errors.to_pylist() == [
        {
            "key": "5",
            "instance": None,
            "code": 3,
            "message": "could not convert string to float: 'x'",
        }
    ]
    with pytest.raises(UserError, match=r"16.67% of the rows have no prediction") as err:
        check_failed_fraction(m, 0.1)
    assert "Most frequent error: \"could not convert string to float: 'x'\" x1" in str(err.value)
    check_failed_fraction(m, 0.2)


def test_probability_lists_become_scores_and_argmax_labels(tmp_path, ground_truth):
    probs = {k: [0.8, 0.2] if k % 2 == 0 else [0.3, 0.7] for k in range(6)}
    out = _custom_output(tmp_path / "out", probs)
    result = collect_predictions(
        str(out),
        ground_truth,
        key_column="row_id",
        target_column="label",
        class_labels=[0, 1],
        class_names=["no", "yes"],
    )
    t = result.table
    assert t.column_names == ["row_id", "label", "predicted", "score_0", "score_1"]
    assert t.column("predicted").to_pylist() == [0, 1, 0, 1, 0, 1]
    assert t.column("score_1").to_pylist() == [0.2, 0.7, 0.2, 0.7, 0.2, 0.7]
    m = result.metadata
    assert m["class_labels"] == [0, 1] and m["class_names"] == ["no", "yes"]
    assert m["score_columns"] == ["score_0", "score_1"] and m["failed_fraction"] == 0.0


def test_single_probability_of_the_positive_class(tmp_path, ground_truth):
    # XGBoost binary:logistic through Vertex's container: one float per instance.
    out = _custom_output(tmp_path / "out", {k: [0.9, 0.2, 0.6, 0.1, 1.0, 0.0][k] for k in range(6)})
    result = collect_predictions(
        str(out), ground_truth, key_column="row_id", target_column="label", class_labels=[0, 1]
    )
    assert result.table.column("predicted").to_pylist() == [1, 0, 1, 0, 1, 0]
    assert result.table.column("score_1").to_pylist() == [0.9, 0.2, 0.6, 0.1, 1.0, 0.0]
    assert result.table.column("score_0").to_pylist()[1] == pytest.approx(0.8)


def test_instances_without_key_field_join_on_the_key_inside_the_instance(tmp_path, ground_truth):
    d = tmp_path / "out"
    _write_lines(
        d / "prediction.results-00000-of-00001",
        [
            {"instance": {"row_id": k, "f": 0.1 * k}, "prediction": k % 2}
            for k in (3, 1, 0, 2, 5, 4)
        ],
    )
    (d / "prediction.errors_stats-00000-of-00001").write_text("")
    result = collect_predictions(str(d), ground_truth, key_column="row_id", target_column="label")
    assert result.table.column("row_id").to_pylist() == list(range(6))
    assert result.metadata["problem_type"] == "classification"  # inferred from the int label
    assert result.metadata["successful_count"] == 6 and result.metadata["failed_count"] == 0


def test_csv_results_with_key_column_and_json_encoded_scores(tmp_path, ground_truth):
    d = tmp_path / "out"
    d.mkdir()
    rows = [(float(k), json.dumps([0.4, 0.6] if k % 2 else [0.6, 0.4])) for k in range(6)]
    pacsv.write_csv(
        pa.table({"key": [r[0] for r in rows], "prediction": [r[1] for r in rows]}),
        d / "prediction.results-00000-of-00001.csv",
    )
    (d / "prediction.errors_stats-00000-of-00001").write_text("")
    result = collect_predictions(
        str(d), ground_truth, key_column="row_id", target_column="label", class_labels=[0, 1]
    )
    assert result.table.column("row_id").to_pylist() == list(range(6))  # 0.0 joins 0
    assert result.table.column("predicted").to_pylist() == [0, 1, 0, 1, 0, 1]


def test_csv_results_with_instance_columns_and_regression(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    pacsv.write_csv(
        pa.table({"x": [1.0, 2.0], "y": [3.0, 4.0], "prediction": [10.5, 20.25]}),
        d / "prediction.results-00000-of-00001.csv",
    )
    result = collect_predictions(str(d), problem_type="regression")
    assert result.table.column("predicted").to_pylist() == [10.5, 20.25]
    assert result.metadata["successful_count"] == 2


def test_parquet_results(tmp_path, ground_truth):
    d = tmp_path / "out"
    d.mkdir()
    pq.write_table(
        pa.table({"key": list(range(6)), "prediction": [[0.9, 0.1]] * 3 + [[0.2, 0.8]] * 3}),
        d / "prediction.results-00000-of-00001.parquet",
    )
    result = collect_predictions(
        str(d), ground_truth, key_column="row_id", target_column="label", class_labels=[0, 1]
    )
    assert result.table.column("predicted").to_pylist() == [0, 0, 0, 1, 1, 1]


def test_automl_classification_layout_with_string_classes(tmp_path, ground_truth):
    d = tmp_path / "out"
    _write_lines(
        d / "predictions_00001.jsonl",
        [
            {
                "instance": {"row_id": str(k), "f": str(0.1 * k)},
                "prediction": {
                    "classes": ["0", "1"],
                    "scores": [0.3, 0.7] if k < 3 else [0.9, 0.1],
                },
            }
            for k in range(5)
        ],
    )
    _write_lines(
        d / "errors_00001.jsonl",
        [{"instance": {"row_id": "5", "f": "x"}, "error": {"code": 3, "message": "bad value"}}],
    )
    files = find_prediction_files(str(d))
    assert files.layout == "automl" and len(files.errors) == 1
    result = collect_predictions(str(d), ground_truth, key_column="row_id", target_column="label")
    t = result.table
    assert t.column("predicted").to_pylist() == [1, 1, 1, 0, 0]  # "1" -> the int label 1
    assert t.column("score_1").to_pylist() == [0.7, 0.7, 0.7, 0.1, 0.1]
    m = result.metadata
    assert m["class_labels"] == [0, 1] and m["score_columns"] == ["score_0", "score_1"]
    assert (m["successful_count"], m["failed_count"], m["unpredicted_rows"]) == (5, 1, 1)
    assert result.errors.column("key").to_pylist() == ["5"]


def test_automl_regression_value_dicts(tmp_path):
    d = tmp_path / "out"
    _write_lines(
        d / "predictions_00001.jsonl",
        [
            {
                "instance": {"id": 1},
                "prediction": {"value": 2.5, "lower_bound": 2.0, "upper_bound": 3.0},
            },
            {
                "instance": {"id": 2},
                "prediction": {"value": 4.0, "lower_bound": 3.5, "upper_bound": 4.5},
            },
        ],
    )
    result = collect_predictions(str(d), key_column="id")
    t = result.table
    assert result.metadata["problem_type"] == "regression"
    assert t.column("predicted").to_pylist() == [2.5, 4.0]
    assert t.column("prediction_lower_bound").to_pylist() == [2.0, 3.5]
    assert t.column("id").to_pylist() == [1, 2]


def test_prefix_with_one_prediction_directory_is_followed(tmp_path, ground_truth):
    _custom_output(
        tmp_path / "prefix" / "prediction-m-2026_01_01T00_00_00_000Z", {k: 0 for k in range(6)}
    )
    files = find_prediction_files(str(tmp_path / "prefix"))
    assert files.directory.endswith("prediction-m-2026_01_01T00_00_00_000Z")
    assert len(files.results) == 2 and files.completion_stats


def test_every_instance_failed(tmp_path, ground_truth):
    d = tmp_path / "out"
    _write_lines(
        d / "prediction.errors-00000-of-00001",
        [{"key": 0, "error": {"code": 13, "message": "boom"}}],
    )
    (d / "prediction.errors_stats-00000-of-00001").write_text("('boom', 1)\n")
    result = collect_predictions(str(d), ground_truth, key_column="row_id", target_column="label")
    assert result.table.num_rows == 0 and result.metadata["failed_count"] == 1
    assert result.metadata["failed_fraction"] == 1.0


def test_errors_stats_are_python_tuples(tmp_path):
    path = tmp_path / "prediction.errors_stats-00000-of-00001"
    path.write_text(
        '(\'Post request fails. Cannot get predictions. Error: "x"\', 16)\n("it\'s bad", 2)\n'
    )
    assert read_errors_stats(str(path)) == [
        ('Post request fails. Cannot get predictions. Error: "x"', 16),
        ("it's bad", 2),
    ]


def test_duplicate_unknown_and_missing_keys_are_refused(tmp_path, ground_truth):
    dup = _custom_output(tmp_path / "dup", {k: 0 for k in range(6)})
    _write_lines(dup / "prediction.results-00002-of-00002", [{"key": 3, "prediction": 1}])
    with pytest.raises(UserError, match=r"1 keys were predicted more than once, e.g. \['3'\]"):
        collect_predictions(str(dup), ground_truth, key_column="row_id", target_column="label")
    unknown = _custom_output(tmp_path / "unknown", {k: 0 for k in range(7)})
    with pytest.raises(
        UserError, match=r"1 predicted keys are not in the ground truth, e.g. \['6'\]"
    ):
        collect_predictions(str(unknown), ground_truth, key_column="row_id", target_column="label")
    with pytest.raises(UserError, match="No batch prediction output in"):
        collect_predictions(str(tmp_path), key_column="row_id")
    with pytest.raises(UserError, match="does not exist"):
        collect_predictions(str(tmp_path / "nope"))


def test_run_collect_uses_model_metadata_and_writes_the_directory(tmp_path, ground_truth):
    out = _custom_output(tmp_path / "out", {k: [0.1, 0.9] for k in range(6)})
    predictions = dsl.Artifact(uri=str(out))
    truth = dsl.Dataset(uri=ground_truth)
    model = dsl.Model(
        uri=str(tmp_path / "m"),
        metadata={
            "target": "label",
            "problem_type": "classification",
            "class_labels": [0, 1],
            "class_names": ["neg", "pos"],
        },
    )
    collected = dsl.Dataset(uri=str(tmp_path / "collected"))
    run_collect_predictions(
        predictions=predictions,
        ground_truth=truth,
        model=model,
        collected=collected,
        key_column="row_id",
    )
    assert sorted(os.listdir(collected.path)) == [
        "errors.csv",
        "predictions.csv",
        "predictions.parquet",
        "summary.json",
    ]
    assert pq.read_table(os.path.join(collected.path, "predictions.parquet")).num_rows == 6
    assert collected.metadata["class_names"] == ["neg", "pos"]
    assert json.loads(Path(collected.path, "summary.json").read_text())["rows"] == 6


def test_run_collect_fails_above_the_threshold_after_writing(tmp_path, ground_truth):
    out = _custom_output(tmp_path / "out", {k: 0 for k in range(4)}, failed={4: "bad", 5: "bad"})
    collected = dsl.Dataset(uri=str(tmp_path / "collected"))
    with pytest.raises(UserError, match="max_failed_fraction=0.1"):
        run_collect_predictions(
            predictions=dsl.Artifact(uri=str(out)),
            ground_truth=dsl.Dataset(uri=ground_truth),
            model=dsl.Model(uri="", metadata={"target": "label"}),
            collected=collected,
            key_column="row_id",
            max_failed_fraction=0.1,
        )
    assert os.path.exists(os.path.join(collected.path, "errors.csv"))


def test_write_collected_round_trip(tmp_path, ground_truth):
    out = _custom_output(tmp_path / "out", {k: 1 for k in range(6)})
    result = collect_predictions(str(out), ground_truth, key_column="row_id", target_column="label")
    write_collected(result, str(tmp_path / "c"))
    assert pq.read_table(tmp_path / "c" / "predictions.parquet").equals(result.table)
