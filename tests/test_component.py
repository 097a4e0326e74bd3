"""ModelBatchPredictOp: interface parity with GCPC, outputs, and runs under kfp.local."""

import json
import os

from kfp import dsl, local

from batchpredict.component_entry import model_batch_predict as run_component
from batchpredict.kfp_outputs import component_outputs
from batchpredict.result import JobResult
from components.model_batch_predict import ModelBatchPredictOp
from tests.conftest import read_output, write_jsonl


def test_accepts_every_gcpc_input_with_the_same_name_type_and_default():
    from google_cloud_pipeline_components.v1.batch_predict_job import ModelBatchPredictOp as Gcpc

    ours = ModelBatchPredictOp.component_spec.inputs
    theirs = Gcpc.component_spec.inputs
    for name, spec in theirs.items():
        assert name in ours, f"missing input {name}"
        if name == "project":  # its placeholder default crashes kfp.local: ours is ""
            assert ours[name].default == ""
            continue
        if name == "model":  # a generic artifact: google.VertexModel and local system.Model
            assert ours[name].type == "system.Artifact@0.0.1"
            assert ours[name].optional
            continue
        assert ours[name].type == spec.type, name
        assert ours[name].default == spec.default, name
        assert ours[name].optional == spec.optional, name
    assert ours["backend"].default == "local"


def test_spec_declares_gcpc_output_types():
    outputs = ModelBatchPredictOp.component_spec.outputs
    assert outputs["batchpredictionjob"].type == "google.VertexBatchPredictionJob@0.0.1"
    assert outputs["bigquery_output_table"].type == "google.BQTable@0.0.1"
    assert outputs["gcs_output_directory"].type == "system.Artifact@0.0.1"
    assert outputs["gcp_resources"].type == "String"


def test_bigquery_output_maps_to_google_uris():
    out = component_outputs(
        JobResult(
            state="JOB_STATE_SUCCEEDED",
            resource_name="projects/p/locations/l/batchPredictionJobs/1",
            resource_uri="https://l-aiplatform.googleapis.com/v1/projects/p/locations/l/batchPredictionJobs/1",
            bigquery_output_dataset="bq://my-project.prediction_m_2021",
            bigquery_output_table="predictions",
            completion_stats={"successful_count": 1, "failed_count": 0, "incomplete_count": 0},
        )
    )
    assert out.gcs_output_directory is None
    assert out.bigquery_output_table.uri == (
        "https://www.googleapis.com/bigquery/v2/projects/my-project/datasets/"
        "prediction_m_2021/tables/predictions"
    )
    assert out.bigquery_output_table.metadata["tableId"] == "predictions"
    assert json.loads(out.gcp_resources) == {
        "resources": [
            {
                "resourceType": "BatchPredictionJob",
                "resourceUri": "https://l-aiplatform.googleapis.com/v1/projects/p/locations/l/batchPredictionJobs/1",
            }
        ]
    }


class _Art:
    def __init__(self, uri="", metadata=None):
        self.uri = uri
        self.metadata = metadata or {}


def test_body_with_unmanaged_container_model_fills_outputs(tmp_path, sklearn_model_dir, iris):
    X, _ = iris
    data = write_jsonl(tmp_path / "in.jsonl", X[:4].tolist())
    job, gcs, bq = _Art(), _Art(), _Art()
    result = run_component(
        model=None,
        unmanaged_container_model=_Art(
            sklearn_model_dir,
            {
                "containerSpec": {
                    "imageUri": "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
                }
            },
        ),
        gcp_resources=str(tmp_path / "gcp_resources"),
        batchpredictionjob=job,
        gcs_output_directory=gcs,
        bigquery_output_table=bq,
        job_display_name="unmanaged",
        gcs_source_uris=[data],
        gcs_destination_output_uri_prefix=str(tmp_path / "out"),
        progress=False,
    )
    assert gcs.uri == result.gcs_output_directory
    assert job.metadata["gcsOutputDirectory"] == gcs.uri
    assert job.metadata["completionStats"]["successful_count"] == 4
    assert set(job.metadata) >= {"resourceName", "bigqueryOutputTable", "bigqueryOutputDataset"}
    resources = json.loads((tmp_path / "gcp_resources").read_text())
    assert resources["resources"][0]["resourceType"] == "LocalBatchPredictionJob"
    assert bq.uri == ""


@dsl.component
def make_model_and_data(
    model: dsl.Output[dsl.Model], instances: dsl.Output[dsl.Dataset]
) -> list[str]:
    import json
    import os

    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    os.makedirs(model.path, exist_ok=True)
    model_file = os.path.join(model.path, "model.joblib")
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), model_file)
    with open(instances.path, "w") as f:
        for i, row in enumerate(X.tolist()):
            f.write(
                json.dumps({"id": i, "a": row[0], "b": row[1], "c": row[2], "d": row[3]}) + "\n"
            )
    return [instances.path]


@dsl.component
def count_results(directory: dsl.Input[dsl.Artifact], job: dsl.Input[dsl.Artifact]) -> int:
    import glob
    import json

    keys = []
    for path in glob.glob(directory.path + "/prediction.results-*"):
        with open(path) as f:
            keys += [json.loads(line)["key"] for line in f]
    assert sorted(keys) == list(range(150)), keys[:5]
    assert job.metadata["completionStats"]["successful_count"] == len(keys)
    return len(keys)


@dsl.pipeline(name="component-under-kfp-local")
def predict_pipeline(out_prefix: str) -> int:
    made = make_model_and_data()
    predicted = ModelBatchPredictOp(
        job_display_name="kfp-local",
        model=made.outputs["model"],
        gcs_source_uris=made.outputs["Output"],
        gcs_destination_output_uri_prefix=out_prefix,
        key_field="id",
        instance_type="array",
        included_fields=["a", "b", "c", "d"],
        workers=1,
    )
    return count_results(
        directory=predicted.outputs["gcs_output_directory"],
        job=predicted.outputs["batchpredictionjob"],
    ).output


def test_runs_in_a_pipeline_under_kfp_local_subprocess_runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = predict_pipeline(out_prefix=str(tmp_path / "predictions"))
    assert task.output == 150
    (out_dir,) = os.listdir(tmp_path / "predictions")
    assert out_dir.startswith("prediction-kfp-local-")
    assert len(read_output(str(tmp_path / "predictions" / out_dir))["results"]) == 150
