"""Reading results back: JobResult.predictions() / read_predictions over every output kind."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from batchpredict import BatchPredictionJobSpec, read_predictions, run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.io.reader import BigQueryReader, DirectoryReader
from batchpredict.result import JobResult
from tests.cloud_fixtures import *  # noqa: F403 - fixtures
from tests.cloud_fixtures import BQ_PROJECT, gcs_put_dir
from tests.conftest import write_jsonl


def _keyed_input(tmp_path, iris, bad=()) -> str:
    """Iris rows as objects with an ``id``; rows in ``bad`` carry a value the model refuses."""
    X, _ = iris
    rows = []
    for i, row in enumerate(X[:10].tolist()):
        values = ["not a number", *row[1:]] if i in bad else row
        rows.append({"id": f"r{i}", **{f"f{j}": v for j, v in enumerate(values)}})
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _job(tmp_path, source, model_dir, **kw) -> BatchPredictionJobSpec:
    values = {
        "job_display_name": "read-back",
        "gcs_source_uris": [source],
        "gcs_destination_output_uri_prefix": str(tmp_path / "out"),
        "model_uri": model_dir,
        "instance_type": "array",
        "key_field": "id",
        "included_fields": ["id", "f0", "f1", "f2", "f3"],
        "workers": 1,
        "progress": False,
    }
    return BatchPredictionJobSpec(**{**values, **kw})


def test_a_local_jsonl_job_reads_back_as_keys_predictions_and_errors(
    tmp_path, iris, sklearn_model_dir, sklearn_model
):
    X, _ = iris
    source = _keyed_input(tmp_path, iris, bad={3, 7})
    result = run_batch_prediction(_job(tmp_path, source, sklearn_model_dir))
    reader = result.predictions()
    pairs = dict(reader)
    expected = sklearn_model.predict(X[:10]).tolist()
    assert pairs == {f"r{i}": expected[i] for i in range(10) if i not in (3, 7)}
    errors = sorted(reader.errors(), key=lambda r: r.key)
    assert [r.key for r in errors] == ["r3", "r7"]
    assert all(r.error["code"] == 3 and r.error["message"] for r in errors)
    assert reader.errors_stats() == [(errors[0].error["message"], 2)]
    table = reader.to_arrow()
    assert table.column_names == ["key", "prediction"] and table.num_rows == 8
    assert dict(zip(table["key"].to_pylist(), table["prediction"].to_pylist())) == pairs
    frame = reader.to_pandas()
    assert list(frame.columns) == ["key", "prediction"] and len(frame) == 8
    assert sorted(reader.errors_to_pandas()["key"]) == ["r3", "r7"]
    names = [f.name for f in result.iter_outputs()]
    assert "prediction.results-00000-of-00001" in names
    results_file = next(f for f in reader.iter_outputs() if f.name.startswith("prediction.res"))
    lines = results_file.download_as_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(pairs)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_outputs_read_back_with_their_instance_columns(
    tmp_path, iris, sklearn_model_dir, sklearn_model, fmt
):
    X, _ = iris
    source = _keyed_input(tmp_path, iris)
    features = ["f0", "f1", "f2", "f3"]
    job = _job(
        tmp_path,
        source,
        sklearn_model_dir,
        predictions_format=fmt,
        key_field="",
        included_fields=features,
    )
    reader = read_predictions(run_batch_prediction(job).gcs_output_directory)
    records = list(reader.records())
    expected = sklearn_model.predict(X[:10]).tolist()
    got = sorted(([r.instance[f] for f in features], r.prediction) for r in records)
    assert got == sorted(zip(X[:10].tolist(), expected))
    table = reader.to_arrow()
    assert table.column_names == [*features, "prediction"]
    assert table.num_rows == 10 and list(reader.errors()) == []


def test_gcs_output_reads_back_through_the_emulator(bucket, tmp_path, iris, sklearn_model_dir):
    source = _keyed_input(tmp_path, iris, bad={0})
    local = run_batch_prediction(_job(tmp_path, source, sklearn_model_dir)).gcs_output_directory
    name = os.path.basename(local)
    gcs_put_dir(local, f"{bucket}/runs/{name}")
    reader = read_predictions(f"{bucket}/runs")  # a prefix holding one prediction-* directory
    assert isinstance(reader, DirectoryReader)
    assert reader.location == f"{bucket}/runs/{name}"
    assert len(dict(reader)) == 9 and [r.key for r in reader.errors()] == ["r0"]
    assert reader.to_arrow().num_rows == 9
    blobs = {f.name: f for f in reader.iter_outputs()}
    results_name = f"runs/{name}/prediction.results-00000-of-00001"
    assert results_name in blobs  # named as a Blob: the path within the bucket
    assert len(blobs[results_name].download_as_bytes().splitlines()) == 9
    # A JobResult that names the gs:// directory reads the same way.
    same = JobResult(state="JOB_STATE_SUCCEEDED", gcs_output_directory=reader.location)
    assert dict(same.predictions()) == dict(reader)


def test_bigquery_output_reads_back_through_the_emulator(bq, tmp_path, sklearn_model_dir, iris):
    X, _ = iris
    dataset = f"{BQ_PROJECT}.read_back"
    bq.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    bq.create_dataset(dataset)
    header = '"a","b","c","d"\n'
    body = "".join(",".join(map(str, r)) + "\n" for r in X[:6].tolist())
    (tmp_path / "in.csv").write_text(header + body + '"x",1.0,2.0,3.0\n')
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="bq-read-back",
            instances_format="csv",
            gcs_source_uris=[str(tmp_path / "in.csv")],
            predictions_format="bigquery",
            bigquery_destination_output_uri=f"bq://{dataset}.scored",
            model_uri=sklearn_model_dir,
            workers=1,
            progress=False,
        )
    )
    reader = result.predictions()
    assert isinstance(reader, BigQueryReader)
    assert reader.location == f"bq://{dataset}.scored"
    records = list(reader.records())
    assert sorted([r.instance[c] for c in "abcd"] for r in records) == sorted(X[:6].tolist())
    assert all(isinstance(r.prediction, int) for r in records)
    errors = list(reader.errors())
    assert len(errors) == 1 and errors[0].instance["a"] == "x" and errors[0].error["code"] == 3
    assert reader.errors_stats()[0][1] == 1
    table = reader.to_arrow()
    assert table.column_names == ["a", "b", "c", "d", "prediction"] and table.num_rows == 6
    assert pa.types.is_integer(table.schema.field("prediction").type)
    assert reader.to_pandas().shape == (6, 5)
    rows = list(result.iter_outputs(bq_max_results=4))  # as aiplatform: the table's rows
    assert len(rows) == 4 and "prediction" in dict(rows[0])


def test_automl_layout_reads_back(tmp_path):
    out = tmp_path / "automl"
    out.mkdir()
    (out / "predictions_1.jsonl").write_text(
        json.dumps({"instance": {"x": 1}, "prediction": {"classes": ["a"], "scores": [1.0]}}) + "\n"
    )
    (out / "errors_1.jsonl").write_text(
        "".join(
            json.dumps({"instance": {"x": i}, "error": {"code": 3, "message": "bad"}}) + "\n"
            for i in (2, 3)
        )
    )
    reader = read_predictions(str(out))
    assert list(reader) == [({"x": 1}, {"classes": ["a"], "scores": [1.0]})]
    assert reader.errors_stats() == [("bad", 2)]  # no errors_stats file: counted
    table = reader.to_arrow()
    assert table.column_names == ["instance", "prediction"]


def test_nothing_to_read_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_predictions(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="reported no output"):
        JobResult(state="JOB_STATE_SUCCEEDED", resource_name="local://x").predictions()
    with pytest.raises(UserError, match="does not name a predictions table"):
        read_predictions("bq://project.dataset")
