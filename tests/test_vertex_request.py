"""Our BatchPredictionJob request against the one google-cloud-pipeline-components 2.22.0 sends.

For each argument set, Google's side runs exactly what a Vertex AI Pipelines task runs: GCPC's
ModelBatchPredictOp container spec, its placeholders resolved by KFP's own code (kfp.local), then
GCPC's launcher ``main`` on the resolved arguments, its JobServiceClient pointed at the fake
JobService. Our side runs the component body (``component_entry.model_batch_predict``) against the
same fake. The requests the server received are compared field by field, and so are the output
artifacts each side wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.cloud import aiplatform
from google.cloud.aiplatform_v1.services.job_service import JobServiceClient
from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport
from google.protobuf import json_format
from google_cloud_pipeline_components.container.v1.batch_prediction_job import launcher
from google_cloud_pipeline_components.types import artifact_types as gcpc_types
from google_cloud_pipeline_components.v1.batch_predict_job import ModelBatchPredictOp as GcpcOp
from kfp.local import executor_input_utils, placeholder_utils, task_dispatcher, utils

from batchpredict import component_entry
from batchpredict.backends import vertex_request
from batchpredict.spec import BatchPredictionJobSpec
from tests.fake_vertex import CREATE, FakeJobService

PROJECT = "my-project"
MODEL_NAME = f"projects/{PROJECT}/locations/us-central1/models/4242"
SKLEARN_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
JSONL_IN = ["gs://bucket/in/a.jsonl", "gs://bucket/in/b*.jsonl"]


def _vertex_model() -> Any:
    return gcpc_types.VertexModel(
        name="model",
        uri=f"https://us-central1-aiplatform.googleapis.com/v1/{MODEL_NAME}",
        metadata={"resourceName": MODEL_NAME},
    )


def _unmanaged(metadata: dict[str, Any]) -> Any:
    return gcpc_types.UnmanagedContainerModel(
        name="unmanaged_container_model", uri="gs://bucket/model", metadata=metadata
    )


# (id, arguments of ModelBatchPredictOp, extra environment)
CASES: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    (
        "vertex-model-jsonl-defaults",
        {
            "model": _vertex_model(),
            "gcs_source_uris": JSONL_IN,
            "gcs_destination_output_uri_prefix": "gs://bucket/out",
        },
        {},
    ),
    (
        "unmanaged-custom-container-csv-resources",
        {
            "unmanaged_container_model": _unmanaged(
                {
                    "containerSpec": {
                        "imageUri": "us-central1-docker.pkg.dev/p/r/server:1.0",
                        "command": ["python", "-m", "server"],
                        "args": ["--port", "8080"],
                        "env": [{"name": "MODE", "value": "batch"}, {"name": "EMPTY", "value": ""}],
                        "ports": [{"containerPort": 8080}],
                        "predictRoute": "/predict",
                        "healthRoute": "/health",
                    },
                    "predictSchemata": {
                        "instanceSchemaUri": "gs://bucket/schema/instance.yaml",
                        "predictionSchemaUri": "gs://bucket/schema/prediction.yaml",
                    },
                }
            ),
            "instances_format": "csv",
            "gcs_source_uris": ["gs://bucket/in/rows.csv"],
            "gcs_destination_output_uri_prefix": "gs://bucket/out/",
            "machine_type": "n1-standard-4",
            "starting_replica_count": 2,
            "max_replica_count": 5,
            "manual_batch_tuning_parameters_batch_size": 32,
            "service_account": "runner@my-project.iam.gserviceaccount.com",
            "labels": {"team": "ml", "empty": ""},
            "encryption_spec_key_name": "projects/my-project/locations/us-central1/keyRings/k/"
            "cryptoKeys/c",
        },
        {},
    ),
    (
        "bigquery-in-out-without-scheme-object",
        {
            "model": _vertex_model(),
            "instances_format": "bigquery",
            "predictions_format": "bigquery",
            "bigquery_source_input_uri": "my-project.dataset.table",
            "bigquery_destination_output_uri": "my-project",
            "instance_type": "object",
            "excluded_fields": ["id", "label"],
        },
        {},
    ),
    (
        "bigquery-with-scheme-full-table",
        {
            "model": _vertex_model(),
            "instances_format": "bigquery",
            "predictions_format": "bigquery",
            "bigquery_source_input_uri": "bq://my-project.dataset.table",
            "bigquery_destination_output_uri": "my-project.out_ds.preds",
            "location": "europe-west4",
        },
        {},
    ),
    (
        "fields-key-parameters-accelerator-system-labels",
        {
            "unmanaged_container_model": _unmanaged({"containerSpec": {"imageUri": SKLEARN_IMAGE}}),
            "gcs_source_uris": JSONL_IN,
            "gcs_destination_output_uri_prefix": "gs://bucket/out",
            "instance_type": "array",
            "key_field": "id",
            "included_fields": ["f2", "f1", "f3"],
            "model_parameters": {"confidence": 0.5, "top_k": 5, "nested": {"a": [1, 2]}},
            "machine_type": "n1-standard-8",
            "accelerator_type": "NVIDIA_TESLA_T4",
            "accelerator_count": 1,
            "labels": {"team": "ml"},
        },
        {
            vertex_request.SYSTEM_LABELS_ENV: json.dumps(
                {"vertex-ai-pipelines-run-billing-id": "9876", "team": "system"}
            )
        },
    ),
    (
        "explanations",
        {
            "model": _vertex_model(),
            "gcs_source_uris": JSONL_IN,
            "gcs_destination_output_uri_prefix": "gs://bucket/out",
            "generate_explanation": True,
            "explanation_metadata": {
                "inputs": {"features": {"inputTensorName": "dense_input"}},
                "outputs": {"prediction": {"outputTensorName": "dense_2"}},
            },
            "explanation_parameters": {"sampled_shapley_attribution": {"path_count": 10}},
        },
        {},
    ),
    (
        "explanations-empty-outputs-kept",
        {
            "model": _vertex_model(),
            "gcs_source_uris": JSONL_IN,
            "gcs_destination_output_uri_prefix": "gs://bucket/out",
            "generate_explanation": True,
            "explanation_metadata": {
                "inputs": {"features": {"inputTensorName": "dense_input"}},
                "outputs": {},
            },
        },
        {},
    ),
    (
        "tf-record-file-list-like-empty-lists",
        {
            "model": _vertex_model(),
            "instances_format": "tf-record-gzip",
            "gcs_source_uris": ["gs://bucket/in/part-*.tfrecord.gz"],
            "gcs_destination_output_uri_prefix": "gs://bucket/out",
            "included_fields": [],
            "labels": {},
        },
        {},
    ),
]


@pytest.fixture(scope="module")
def fake() -> FakeJobService:
    with FakeJobService() as service:
        yield service


def _client_factory(endpoint: str):
    def factory(*_: Any, **__: Any) -> JobServiceClient:
        channel = grpc.insecure_channel(endpoint)
        return JobServiceClient(transport=JobServiceGrpcTransport(host=endpoint, channel=channel))

    return factory


def run_gcpc(
    fake: FakeJobService, arguments: dict[str, Any], task_root: Path, monkeypatch
) -> dict[str, Any]:
    """Runs GCPC's ModelBatchPredictOp container the way a pipeline task runs it."""
    monkeypatch.setattr(aiplatform.gapic, "JobServiceClient", _client_factory(fake.endpoint))
    pipeline_spec = GcpcOp.pipeline_spec
    _, component_spec = list(pipeline_spec.components.items())[0]
    executor_spec = utils.struct_to_executor_spec(
        task_dispatcher.get_executor_spec(pipeline_spec, component_spec.executor_label)
    )
    executor_input = executor_input_utils.construct_executor_input(
        component_spec=component_spec,
        arguments={"project": PROJECT, **arguments},
        task_root=str(task_root),
        block_input_artifact=False,
    )
    executor_input_dict = executor_input_utils.executor_input_to_dict(
        executor_input, component_spec
    )
    _ints_as_the_backend_renders_them(executor_input_dict["inputs"])
    container = executor_spec.container
    command = placeholder_utils.replace_placeholders(
        full_command=list(container.command) + list(container.args),
        executor_input_dict=executor_input_dict,
        pipeline_resource_name="pipeline-1",
        task_resource_name="model-batch-predict",
        pipeline_root=str(task_root),
        unique_pipeline_id="1",
    )
    module_at = command.index(launcher.__name__)
    before = len(fake.calls(CREATE))
    launcher.main(command[module_at + 1 :])
    assert len(fake.calls(CREATE)) == before + 1
    output = json.loads((task_root / "executor_output.json").read_text())
    return {
        "request": fake.calls(CREATE)[-1],
        "gcp_resources": (task_root / "gcp_resources").read_text(),
        "artifacts": {
            name: value["artifacts"][0] for name, value in output["artifacts"].items() if value
        },
    }


def _ints_as_the_backend_renders_them(value: Any) -> Any:
    """Whole floats back to ints in place, in the executor input's inputs.

    Artifact metadata and dict parameters are protobuf Structs, whose numbers are doubles. Vertex
    AI Pipelines' Go backend renders a whole double as ``8080`` (in the executor input and in
    placeholders); Python's json_format (kfp.local) renders ``8080.0``, which GCPC's proto-plus
    conversion then refuses for an int field. Render them as the real backend does, so that
    Google's side runs as it does on Vertex.
    """
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        if isinstance(item, float) and item.is_integer():
            value[key] = int(item)
        elif isinstance(item, (dict, list)):
            _ints_as_the_backend_renders_them(item)
    return value


def _stand_in(artifact: Any | None) -> Any | None:
    if artifact is None:
        return None
    return SimpleNamespace(uri=artifact.uri, metadata=dict(artifact.metadata))


def run_ours(fake: FakeJobService, arguments: dict[str, Any], task_root: Path) -> dict[str, Any]:
    """Runs our component body with the same arguments against the same fake."""
    inputs = dict(arguments)
    outputs = {
        name: SimpleNamespace(uri="", metadata={})
        for name in ("batchpredictionjob", "gcs_output_directory", "bigquery_output_table")
    }
    before = len(fake.calls(CREATE))
    component_entry.model_batch_predict(
        model=_stand_in(inputs.pop("model", None)),
        unmanaged_container_model=_stand_in(inputs.pop("unmanaged_container_model", None)),
        gcp_resources=str(task_root / "gcp_resources"),
        **outputs,
        job_display_name=inputs.pop("job_display_name"),
        project=PROJECT,
        backend="vertex",
        vertex_api_endpoint=fake.endpoint,
        **inputs,
    )
    assert len(fake.calls(CREATE)) == before + 1
    return {
        "request": fake.calls(CREATE)[-1],
        "gcp_resources": (task_root / "gcp_resources").read_text(),
        "artifacts": {name: vars(a) for name, a in outputs.items() if a.uri},
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out or {prefix: {}}
    return {prefix: value}


def _request_fields(request: Any) -> dict[str, Any]:
    return _flatten(json_format.MessageToDict(type(request).pb(request)))


def _created_name(result: dict[str, Any]) -> str:
    resources = json.loads(result["gcp_resources"])["resources"]
    return resources[0]["resourceUri"].split("/v1/", 1)[1]


def _normalise(text: Any, name: str) -> Any:
    return json.loads(json.dumps(text).replace(name, "<job>"))


@pytest.mark.parametrize(("case", "arguments", "env"), CASES, ids=[c[0] for c in CASES])
def test_request_equals_gcpc(
    case: str,
    arguments: dict[str, Any],
    env: dict[str, str],
    fake: FakeJobService,
    tmp_path: Path,
    monkeypatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    arguments = {"job_display_name": f"job-{case}", **arguments}
    theirs = run_gcpc(fake, arguments, tmp_path / "gcpc", monkeypatch)
    ours = run_ours(fake, arguments, tmp_path / "ours")

    # The request, field by field, then as whole messages.
    their_fields = _request_fields(theirs["request"])
    our_fields = _request_fields(ours["request"])
    assert sorted(our_fields) == sorted(their_fields), "different fields set"
    for path, value in their_fields.items():
        assert our_fields[path] == value, path
    assert ours["request"] == theirs["request"]

    # gcp_resources: the same document, naming each side's job.
    their_name, our_name = _created_name(theirs), _created_name(ours)
    assert _normalise(json.loads(ours["gcp_resources"]), our_name) == _normalise(
        json.loads(theirs["gcp_resources"]), their_name
    )

    # Output artifacts: the same ones, same URIs, Google's metadata keys and values.
    assert sorted(ours["artifacts"]) == sorted(theirs["artifacts"])
    for name, their_artifact in theirs["artifacts"].items():
        our_artifact = _normalise(ours["artifacts"][name], our_name)
        their_artifact = _normalise(their_artifact, their_name)
        assert our_artifact["uri"] == their_artifact["uri"], name
        for key, value in their_artifact.get("metadata", {}).items():
            assert our_artifact["metadata"][key] == value, f"{name}.metadata.{key}"


def test_the_cases_cover_every_request_field_gcpc_can_set(fake, tmp_path, monkeypatch) -> None:
    """Guards the table: together the cases exercise every top-level field GCPC fills."""
    seen: set[str] = set()
    for case, arguments, _ in CASES:
        spec = BatchPredictionJobSpec(job_display_name=case, backend="vertex", project=PROJECT)
        for key, value in arguments.items():
            if key == "model":
                spec.model_resource_name = value.metadata["resourceName"]
            elif key == "unmanaged_container_model":
                spec.model_uri, spec.model_metadata = value.uri, dict(value.metadata)
            else:
                setattr(spec, key, value)
        seen |= set(vertex_request.job_payload(spec))
    assert seen >= {
        "display_name",
        "model",
        "unmanaged_container_model",
        "input_config",
        "instance_config",
        "model_parameters",
        "output_config",
        "dedicated_resources",
        "service_account",
        "manual_batch_tuning_parameters",
        "generate_explanation",
        "explanation_spec",
        "labels",
        "encryption_spec",
    }


def test_falsy_model_parameters_are_sent_where_gcpc_drops_them(fake, tmp_path, monkeypatch):
    """GCPC's empty-value stripping reaches into model_parameters: a bug we do not copy."""
    arguments = {
        "job_display_name": "params",
        "model": _vertex_model(),
        "gcs_source_uris": JSONL_IN,
        "gcs_destination_output_uri_prefix": "gs://bucket/out",
        "model_parameters": {"threshold": 0, "strict": False, "top_k": 5},
    }
    theirs = run_gcpc(fake, arguments, tmp_path / "gcpc", monkeypatch)
    ours = run_ours(fake, arguments, tmp_path / "ours")
    their_params = json_format.MessageToDict(theirs["request"].batch_prediction_job._pb)
    our_params = json_format.MessageToDict(ours["request"].batch_prediction_job._pb)
    assert their_params["modelParameters"] == {"top_k": 5}
    assert our_params["modelParameters"] == {"threshold": 0, "strict": False, "top_k": 5}
    their_params.pop("modelParameters"), our_params.pop("modelParameters")
    assert our_params == their_params


def test_extra_model_metadata_is_left_out_where_gcpc_fails(fake, tmp_path, monkeypatch):
    """A training component's metadata (framework, ...) beside containerSpec breaks GCPC."""
    metadata = {"containerSpec": {"imageUri": SKLEARN_IMAGE}, "framework": "sklearn"}
    arguments = {
        "job_display_name": "extra-metadata",
        "unmanaged_container_model": _unmanaged(metadata),
        "gcs_source_uris": JSONL_IN,
        "gcs_destination_output_uri_prefix": "gs://bucket/out",
    }
    with pytest.raises(ValueError, match="framework"):
        run_gcpc(fake, arguments, tmp_path / "gcpc", monkeypatch)
    ours = run_ours(fake, arguments, tmp_path / "ours")
    model = ours["request"].batch_prediction_job.unmanaged_container_model
    assert model.artifact_uri == "gs://bucket/model"
    assert model.container_spec.image_uri == SKLEARN_IMAGE


def test_gcs_fuse_paths_become_gs_uris() -> None:
    spec = BatchPredictionJobSpec(
        job_display_name="fuse",
        backend="vertex",
        gcs_source_uris=["/gcs/bucket/in/*.jsonl"],
        gcs_destination_output_uri_prefix="/gcs/bucket/out",
        model_uri="/gcs/bucket/model",
        container_image_uri=SKLEARN_IMAGE,
    )
    job = vertex_request.build_batch_prediction_job(spec)
    assert list(job.input_config.gcs_source.uris) == ["gs://bucket/in/*.jsonl"]
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://bucket/out"
    assert job.unmanaged_container_model.artifact_uri == "gs://bucket/model"


def test_system_labels_env_is_read_at_call_time(monkeypatch) -> None:
    monkeypatch.delenv(vertex_request.SYSTEM_LABELS_ENV, raising=False)
    assert vertex_request.attach_system_labels({"a": "1"}) == {"a": "1"}
    monkeypatch.setenv(vertex_request.SYSTEM_LABELS_ENV, '{"a": "sys", "b": "2"}')
    assert vertex_request.attach_system_labels({"a": "1"}) == {"a": "1", "b": "2"}
    monkeypatch.setenv(vertex_request.SYSTEM_LABELS_ENV, "not json")
    assert vertex_request.attach_system_labels({"a": "1"}) == {"a": "1"}
