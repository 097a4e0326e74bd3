"""Google's custom model training tutorial: locally under kfp.local, and its Vertex AI form."""

import base64
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.run import report, run_pipeline

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")

ROOT = Path(__file__).resolve().parent.parent
VERTEX_YAML = ROOT / "pipelines" / "custom_model_training_vertex.yaml"
TASKS = [
    "collect-predictions",
    "evaluate",
    "importer",
    "model-batch-predict",
    "train-image-classifier",
]


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp_root")
    return run_pipeline("custom_model_training", pipeline_root=str(root))


def test_tutorial_runs_locally_with_accuracy_well_above_chance(tutorial):
    out = tutorial.outputs
    assert sorted(tutorial.tasks) == TASKS
    accuracy = out["metrics"].metadata["accuracy"]
    assert accuracy > 0.8  # chance: 0.1
    printed = report(tutorial)
    assert f"accuracy           {accuracy:.4f}" in printed
    assert "successful 450, failed 0" in printed
    matrix = out["classification_metrics"].metadata["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == 10
    assert len(matrix["rows"]) == 10 and all(len(r["row"]) == 10 for r in matrix["rows"])
    assert sum(sum(r["row"]) for r in matrix["rows"]) == 450
    html = Path(out["report"].path).read_text()
    assert "Confusion matrix" in html and f"{accuracy:.4f}" in html


def test_tutorial_model_instances_and_predictions_have_the_tutorial_shape(tutorial):
    out = tutorial.outputs
    model = out["model"]
    assert os.path.exists(os.path.join(model.path, "saved_model.pb"))
    assert model.metadata["containerSpec"]["imageUri"].endswith("/tf2-cpu.2-13:latest")
    imported = out["unmanaged_container_model"]
    assert imported.uri == model.uri
    test_dir = out["test_instances"].path
    lines = Path(test_dir, "test.jsonl").read_text().splitlines()
    assert len(lines) == 450
    first = json.loads(lines[0])
    assert list(first) == ["bytes_inputs"] and list(first["bytes_inputs"]) == ["b64"]
    assert base64.b64decode(first["bytes_inputs"]["b64"])[:2] == b"\xff\xd8"  # a JPEG
    job = out["batchpredictionjob"].metadata
    assert job["completionStats"]["successful_count"] == 450
    results = []
    directory = out["predictions_directory"].uri
    for name in sorted(os.listdir(directory)):
        if name.startswith("prediction.results-"):
            results += [json.loads(line) for line in Path(directory, name).read_text().splitlines()]
    assert sorted(r["key"] for r in results) == list(range(450))
    row = results[0]["prediction"]
    assert len(row) == 10 and abs(sum(row) - 1) < 1e-5
    assert job["modelFramework"] == "tensorflow"  # the handler the table chose for the tf2 image
    truth = pq.read_table(Path(out["ground_truth"].path, "ground_truth.parquet"))
    assert truth.column_names == ["key", "label"] and truth.num_rows == 450


def test_vertex_form_trains_as_a_custom_job_uploads_then_predicts():
    spec = yaml.safe_load(VERTEX_YAML.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {
        "train-image-classifier",
        "importer",
        "model-upload",
        "model-batch-predict",
        "collect-predictions",
        "evaluate",
    } <= set(tasks)
    train_executor = spec["deploymentSpec"]["executors"]["exec-train-image-classifier"]
    # create_custom_training_job_from_component: the step is GCPC's CustomJob launcher, with our
    # component (its image and command) as the worker pool's container.
    assert "custom_job" in " ".join(
        train_executor["container"]["command"] + train_executor["container"]["args"]
    )
    train_comp = spec["components"]["comp-train-image-classifier"]["inputDefinitions"]["parameters"]
    pools = train_comp["worker_pool_specs"]["defaultValue"]
    assert pools[0]["container_spec"]["image_uri"].rsplit("/", 1)[-1].startswith("batchpredict:")
    assert pools[0]["machine_spec"]["machine_type"] == "n1-standard-4"
    importer = tasks["importer"]["inputs"]["parameters"]["uri"]["taskOutputParameter"]
    assert importer == {"outputParameterKey": "model_uri", "producerTask": "train-image-classifier"}
    predict = tasks["model-batch-predict"]["inputs"]
    assert predict["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "model-upload",
    }
    assert predict["parameters"]["backend"]["runtimeValue"]["constant"] == "vertex"
    assert predict["parameters"]["key_field"]["runtimeValue"]["constant"] == "key"


def test_vertex_form_loads_into_a_pipeline_job_without_submitting():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(
        display_name="custom-model-training",
        template_path=str(VERTEX_YAML),
        pipeline_root="gs://my-bucket/pipeline-root",
        parameter_values={"project": "my-project", "epochs": 3},
        project="my-project",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )
    resource = job._gca_resource  # the request submit() would send; nothing is sent here
    assert resource.runtime_config.parameter_values["epochs"] == 3
    name = resource.pipeline_spec["pipelineInfo"]["name"]
    assert name == "custom-model-training-batch-prediction-vertex"
