"""pipelines/vertex_custom_model.py: compiles, loads into a Vertex AI PipelineJob, runs locally."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "pipelines" / "vertex_custom_model.yaml"
sys.path.insert(0, str(ROOT / "scripts"))


def test_compiled_yaml_is_up_to_date(tmp_path, monkeypatch) -> None:
    import compile as compile_script

    from pipelines.vertex_custom_model import vertex_custom_model

    monkeypatch.delenv("BATCHPREDICT_IMAGE_REGISTRY", raising=False)
    fresh = tmp_path / "fresh.yaml"
    compile_script._compile(vertex_custom_model, fresh)
    assert fresh.read_text() == COMPILED.read_text(), "run `make compile`"


def test_the_vertex_branch_uploads_then_predicts_on_vertex() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
    vertex_dag = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(vertex_dag) == {"model-upload", "model-batch-predict"}
    predict = vertex_dag["model-batch-predict"]["inputs"]
    assert predict["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "model-upload",
    }
    images = {
        e["container"]["image"]
        for e in spec["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert "gcr.io/ml-pipeline/google-cloud-pipeline-components:2.22.0" in images
    assert all(":latest" not in image for image in images)


def test_loads_into_a_vertex_pipeline_job_without_submitting() -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    parameters = {
        "project": "my-project",
        "bucket": "gs://my-bucket/batch",
        "model_dir": "gs://my-bucket/model",
        "gcs_source_uris": ["gs://my-bucket/instances/*.jsonl"],
    }
    job = aiplatform.PipelineJob(
        display_name="vertex-custom-model",
        template_path=str(COMPILED),
        pipeline_root="gs://my-bucket/pipeline-root",
        parameter_values=parameters,
        project="my-project",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )
    resource = job._gca_resource  # the request submit() would send; nothing is sent here
    assert resource.runtime_config.gcs_output_directory == "gs://my-bucket/pipeline-root"
    values = resource.runtime_config.parameter_values
    assert values["bucket"] == "gs://my-bucket/batch"
    assert list(values["gcs_source_uris"]) == ["gs://my-bucket/instances/*.jsonl"]
    assert "backend" not in values  # its default applies: vertex
    pipeline_spec = resource.pipeline_spec
    assert pipeline_spec["pipelineInfo"]["name"] == "vertex-custom-model-batch-prediction"
    backend = pipeline_spec["root"]["inputDefinitions"]["parameters"]["backend"]
    assert backend["defaultValue"] == "vertex"


@pytest.fixture
def local_model(tmp_path: Path) -> dict[str, object]:
    """A scikit-learn model in the prebuilt container's layout, and JSONL instances."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    features = rng.rand(200, 4)
    labels = (features[:, 0] + features[:, 1] > 1).astype(int)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    joblib.dump(LogisticRegression().fit(features, labels), model_dir / "model.joblib")
    bucket = tmp_path / "bucket"
    (bucket / "instances").mkdir(parents=True)
    for part in range(2):
        rows = features[part * 30 : (part + 1) * 30]
        lines = [json.dumps([round(float(v), 6) for v in row]) for row in rows]
        (bucket / "instances" / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")
    return {"model_dir": str(model_dir), "bucket": str(bucket), "rows": 60}


def test_runs_locally_under_kfp_local_with_the_local_backend(local_model, tmp_path) -> None:
    from kfp import local

    from pipelines.vertex_custom_model import MODEL_DISPLAY_NAME, vertex_custom_model

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        workspace_root=str(tmp_path / "workspace"),
    )
    vertex_custom_model(
        project="local-project",
        bucket=local_model["bucket"],
        model_dir=local_model["model_dir"],
        gcs_source_uris=[f"{local_model['bucket']}/instances/*.jsonl"],
        backend="local",
    )

    (output_dir,) = (Path(local_model["bucket"]) / "predictions").iterdir()
    assert output_dir.name.startswith(f"prediction-{MODEL_DISPLAY_NAME}-")
    results = sorted(output_dir.glob("prediction.results-*"))
    assert results
    records = [json.loads(line) for path in results for line in path.read_text().splitlines()]
    assert len(records) == local_model["rows"]
    assert {r["prediction"] for r in records} <= {0, 1}
    assert all(len(r["instance"]) == 4 for r in records)
    assert sorted(output_dir.glob("prediction.errors_stats-*"))
    # Only the local branch ran: no ModelUploadOp task directory.
    (run_dir,) = (tmp_path / "pipeline-root").iterdir()
    tasks = {p.name for p in run_dir.iterdir()}
    assert not any(name.startswith("model-upload") for name in tasks)
    (predict_task,) = [name for name in tasks if name.startswith("model-batch-predict")]
    output = json.loads((run_dir / predict_task / "executor_output.json").read_text())
    job = output["artifacts"]["batchpredictionjob"]["artifacts"][0]
    stats = job["metadata"]["completionStats"]
    assert stats["successful_count"] == local_model["rows"]
    assert stats["failed_count"] == 0
