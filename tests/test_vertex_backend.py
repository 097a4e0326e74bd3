"""The vertex backend against a local fake of Vertex AI's JobService (tests/fake_vertex.py).

The real aiplatform_v1 JobServiceClient talks gRPC to the fake on 127.0.0.1; nothing of ours is
mocked. Poll and retry delays are shortened through the environment variables the backend reads
at call time, which also reach a component body running in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.cloud.aiplatform_v1 import types

from batchpredict import component_entry
from batchpredict.backends import run_batch_prediction, vertex
from batchpredict.errors import InternalError, UserError
from batchpredict.kfp_outputs import gcp_resources_json
from batchpredict.spec import BatchPredictionJobSpec
from tests.fake_vertex import CANCEL, CREATE, GET, FakeJobService, Script

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "my-project"
MODEL_NAME = f"projects/{PROJECT}/locations/us-central1/models/4242"
SKLEARN_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
FAST_ENV = {vertex.POLL_INTERVAL_ENV: "0.01", vertex.RETRY_INITIAL_ENV: "0.01"}


@pytest.fixture
def fake(monkeypatch) -> FakeJobService:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("VERTEX_AI_PIPELINES_RUN_LABELS", raising=False)
    with FakeJobService() as service:
        yield service


def make_spec(fake: FakeJobService, **overrides: Any) -> BatchPredictionJobSpec:
    fields: dict[str, Any] = {
        "job_display_name": "nightly-scoring",
        "backend": "vertex",
        "project": PROJECT,
        "model_resource_name": MODEL_NAME,
        "gcs_source_uris": ["gs://bucket/in/*.jsonl"],
        "gcs_destination_output_uri_prefix": "gs://bucket/out",
        "vertex_api_endpoint": fake.endpoint,
    }
    fields.update(overrides)
    return BatchPredictionJobSpec(**fields)


def created_name(fake: FakeJobService) -> str:
    (name,) = fake.jobs
    return name


def test_success_returns_google_uris_and_completion_stats(fake, tmp_path) -> None:
    fake.script_next_job(
        Script(
            states=["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"],
            completion_stats={"successful_count": 990, "failed_count": 10},
            replica_hours=0.5,
        )
    )
    resources = tmp_path / "gcp_resources"
    result = run_batch_prediction(make_spec(fake), gcp_resources_path=str(resources))

    name = created_name(fake)
    assert name.startswith(f"projects/{PROJECT}/locations/us-central1/batchPredictionJobs/")
    assert result.state == "JOB_STATE_SUCCEEDED"
    assert result.resource_name == name
    assert result.resource_uri == f"https://us-central1-aiplatform.googleapis.com/v1/{name}"
    assert result.gcs_output_directory == (
        "gs://bucket/out/prediction-nightly-scoring-2024_05_06T07_08_09_123Z"
    )
    assert result.completion_stats == {
        "successful_count": 990,
        "failed_count": 10,
        "incomplete_count": 0,
    }
    assert result.stats["elapsed_seconds"] == 120.0
    assert result.stats["replica_hours"] == 0.5
    assert resources.read_text() == gcp_resources_json("BatchPredictionJob", result.resource_uri)
    (create,) = fake.calls(CREATE)
    assert create.parent == f"projects/{PROJECT}/locations/us-central1"
    assert create.batch_prediction_job.model == MODEL_NAME
    assert len(fake.calls(GET)) == 3


def test_failed_job_with_a_user_error_code_exits_1(fake) -> None:
    fake.script_next_job(
        Script(
            states=["JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
            error=(3, "Instances are not valid JSON."),
            partial_failures=["line 7: Expecting value"],
        )
    )
    with pytest.raises(UserError) as caught:
        run_batch_prediction(make_spec(fake))
    message = str(caught.value)
    assert caught.value.exit_code == 1
    assert created_name(fake) in message
    assert "'nightly-scoring'" in message
    assert "JOB_STATE_FAILED" in message
    assert "Instances are not valid JSON." in message
    assert "INVALID_ARGUMENT" in message
    assert "line 7: Expecting value" in message
    assert "console.cloud.google.com" in message


def test_failed_job_with_an_internal_error_exits_13(fake) -> None:
    fake.script_next_job(Script(states=["JOB_STATE_FAILED"], error=(13, "Internal error.")))
    with pytest.raises(InternalError) as caught:
        run_batch_prediction(make_spec(fake))
    assert caught.value.exit_code == 13
    assert created_name(fake) in str(caught.value)
    assert "JOB_STATE_FAILED: Internal error. (code 13)" in str(caught.value)


def test_expired_ends_the_wait(fake) -> None:
    fake.script_next_job(Script(states=["JOB_STATE_QUEUED", "JOB_STATE_EXPIRED"]))
    with pytest.raises(InternalError, match="ended in JOB_STATE_EXPIRED"):
        run_batch_prediction(make_spec(fake))
    assert len(fake.calls(GET)) == 2


def test_partially_succeeded_ends_the_wait_with_the_output(fake) -> None:
    fake.script_next_job(
        Script(
            states=["JOB_STATE_RUNNING", "JOB_STATE_PARTIALLY_SUCCEEDED"],
            completion_stats={"successful_count": 80, "failed_count": 15, "incomplete_count": 5},
        )
    )
    result = run_batch_prediction(make_spec(fake))
    assert result.state == "JOB_STATE_PARTIALLY_SUCCEEDED"
    assert result.gcs_output_directory.startswith("gs://bucket/out/prediction-nightly-scoring-")
    assert result.completion_stats["incomplete_count"] == 5
    assert len(fake.calls(GET)) == 2


def test_max_failed_fraction_applies_to_vertex_jobs(fake) -> None:
    fake.script_next_job(
        Script(
            states=["JOB_STATE_PARTIALLY_SUCCEEDED"],
            completion_stats={"successful_count": 80, "failed_count": 20},
        )
    )
    with pytest.raises(UserError, match="20 of 100 instances failed.*max_failed_fraction=0.1"):
        run_batch_prediction(make_spec(fake, max_failed_fraction=0.1))


def test_reattaches_to_the_job_named_in_gcp_resources(fake, tmp_path) -> None:
    name = f"projects/{PROJECT}/locations/europe-west4/batchPredictionJobs/777"
    job = types.BatchPredictionJob(
        display_name="nightly-scoring",
        model=MODEL_NAME,
        output_config={"gcs_destination": {"output_uri_prefix": "gs://bucket/out"}},
    )
    fake.add_job(
        name,
        job,
        Script(
            states=["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"],
            completion_stats={"successful_count": 5},
        ),
    )
    resources = tmp_path / "gcp_resources"
    uri = f"https://europe-west4-aiplatform.googleapis.com/v1/{name}"
    resources.write_text(gcp_resources_json("BatchPredictionJob", uri))

    result = run_batch_prediction(make_spec(fake), gcp_resources_path=str(resources))

    assert fake.calls(CREATE) == []
    assert [r.name for r in fake.calls(GET)] == [name, name]
    assert result.resource_name == name
    assert result.resource_uri == uri
    assert result.completion_stats["successful_count"] == 5


def test_empty_or_other_gcp_resources_creates_a_job(fake, tmp_path) -> None:
    resources = tmp_path / "gcp_resources"
    resources.write_text("")
    run_batch_prediction(make_spec(fake), gcp_resources_path=str(resources))
    resources.write_text(gcp_resources_json("LocalBatchPredictionJob", "/tmp/out"))
    run_batch_prediction(make_spec(fake), gcp_resources_path=str(resources))
    assert len(fake.calls(CREATE)) == 2


def test_transient_errors_are_retried_then_the_job_succeeds(fake) -> None:
    fake.fail_next(CREATE, grpc.StatusCode.UNAVAILABLE)
    fake.fail_next(GET, grpc.StatusCode.UNAVAILABLE, times=2)
    fake.fail_next(GET, grpc.StatusCode.DEADLINE_EXCEEDED)
    fake.script_next_job(Script(states=["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]))

    result = run_batch_prediction(make_spec(fake))

    assert result.state == "JOB_STATE_SUCCEEDED"
    assert len(fake.jobs) == 1  # the failed create created nothing, the retry one job
    assert len(fake.calls(CREATE)) == 2
    assert len(fake.calls(GET)) == 3 + 2


def test_transient_errors_are_bounded(fake) -> None:
    fake.fail_next(GET, grpc.StatusCode.UNAVAILABLE, times=vertex.RETRY_ATTEMPTS)
    with pytest.raises(InternalError) as caught:
        run_batch_prediction(make_spec(fake))
    message = str(caught.value)
    assert f"{vertex.RETRY_ATTEMPTS} attempts in a row" in message
    assert created_name(fake) in message
    assert "UNAVAILABLE" in message


def test_a_timed_out_create_is_not_retried(fake) -> None:
    fake.fail_next(CREATE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(InternalError, match="may still have created the job"):
        run_batch_prediction(make_spec(fake))
    assert len(fake.calls(CREATE)) == 1


def test_a_refused_create_is_a_user_error(fake) -> None:
    fake.fail_next(CREATE, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(UserError) as caught:
        run_batch_prediction(make_spec(fake))
    assert "'nightly-scoring'" in str(caught.value)
    assert f"projects/{PROJECT}/locations/us-central1" in str(caught.value)
    assert "PERMISSION_DENIED" in str(caught.value)


def test_a_local_model_directory_says_what_to_do(fake, tmp_path) -> None:
    spec = make_spec(
        fake,
        model_resource_name="",
        model_uri=str(tmp_path / "model"),
        container_image_uri=SKLEARN_IMAGE,
    )
    with pytest.raises(UserError) as caught:
        run_batch_prediction(spec)
    message = str(caught.value)
    assert str(tmp_path / "model") in message
    assert "gcloud storage cp" in message
    assert "backend='local'" in message
    assert fake.requests == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gcs_source_uris": ["data/in.jsonl"]}, "gcs_source_uris='data/in.jsonl'"),
        ({"gcs_destination_output_uri_prefix": "out/"}, "gcs_destination_output_uri_prefix"),
        ({"instances_format": "parquet"}, "instances_format='parquet'"),
        ({"model_resource_name": ""}, "needs a model"),
        (
            {"model_resource_name": "", "model_uri": "gs://bucket/model"},
            "has no serving image",
        ),
        (
            {
                "model_resource_name": "",
                "model_uri": f"https://x-aiplatform.googleapis.com/v1/{MODEL_NAME}",
            },
            "metadata has no resourceName",
        ),
    ],
)
def test_what_vertex_cannot_run_is_refused_before_any_call(fake, overrides, expected) -> None:
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        run_batch_prediction(make_spec(fake, **overrides))
    assert fake.requests == []


def test_project_comes_from_the_environment(fake, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    run_batch_prediction(make_spec(fake, project=""))
    assert fake.calls(CREATE)[0].parent == "projects/env-project/locations/us-central1"


def test_no_project_anywhere_is_a_clear_user_error(fake, monkeypatch, tmp_path) -> None:
    for var in vertex.PROJECT_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(UserError, match="No Google Cloud project.*GOOGLE_CLOUD_PROJECT"):
        run_batch_prediction(make_spec(fake, project=""))
    assert fake.requests == []


def test_a_bad_knob_in_the_environment_names_it(fake, monkeypatch) -> None:
    monkeypatch.setenv(vertex.POLL_INTERVAL_ENV, "soon")
    with pytest.raises(UserError, match=f"{vertex.POLL_INTERVAL_ENV}='soon'"):
        run_batch_prediction(make_spec(fake))


def _artifact(uri: str = "", metadata: dict[str, Any] | None = None) -> SimpleNamespace:
    return SimpleNamespace(uri=uri, metadata=dict(metadata or {}))


def test_component_body_with_an_unmanaged_model_and_bigquery_output(fake, tmp_path) -> None:
    fake.script_next_job(
        Script(
            states=["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"],
            completion_stats={"successful_count": 42},
        )
    )
    job, gcs_dir, bq_table = _artifact(), _artifact(), _artifact()
    resources = tmp_path / "outputs" / "gcp_resources"
    result = component_entry.model_batch_predict(
        model=None,
        unmanaged_container_model=_artifact(
            "gs://bucket/model",
            # As kfp.local passes metadata: numbers through a protobuf Struct are floats.
            {"containerSpec": {"imageUri": SKLEARN_IMAGE, "ports": [{"containerPort": 8080.0}]}},
        ),
        gcp_resources=str(resources),
        batchpredictionjob=job,
        gcs_output_directory=gcs_dir,
        bigquery_output_table=bq_table,
        job_display_name="scoring",
        project=PROJECT,
        backend="vertex",
        vertex_api_endpoint=fake.endpoint,
        instances_format="bigquery",
        predictions_format="bigquery",
        bigquery_source_input_uri="my-project.features.today",
        bigquery_destination_output_uri="bq://my-project",
    )
    name = created_name(fake)
    (create,) = fake.calls(CREATE)
    model = create.batch_prediction_job.unmanaged_container_model
    assert model.artifact_uri == "gs://bucket/model"
    assert model.container_spec.image_uri == SKLEARN_IMAGE
    assert model.container_spec.ports[0].container_port == 8080
    assert create.batch_prediction_job.input_config.bigquery_source.input_uri == (
        "bq://my-project.features.today"
    )

    uri = f"https://us-central1-aiplatform.googleapis.com/v1/{name}"
    assert json.loads(resources.read_text()) == {
        "resources": [{"resourceType": "BatchPredictionJob", "resourceUri": uri}]
    }
    dataset = result.bigquery_output_dataset.removeprefix("bq://my-project.")
    assert job.uri == uri
    assert job.metadata["resourceName"] == name
    assert job.metadata["gcsOutputDirectory"] == ""
    assert job.metadata["bigqueryOutputDataset"] == f"bq://my-project.{dataset}"
    assert job.metadata["bigqueryOutputTable"] == "predictions"
    assert job.metadata["completionStats"]["successful_count"] == 42
    assert bq_table.uri == (
        f"https://www.googleapis.com/bigquery/v2/projects/my-project/datasets/{dataset}"
        "/tables/predictions"
    )
    assert bq_table.metadata["projectId"] == "my-project"
    assert bq_table.metadata["datasetId"] == dataset
    assert bq_table.metadata["tableId"] == "predictions"
    assert gcs_dir.uri == ""  # not produced, as GCPC


def test_component_body_with_a_vertex_model_and_gcs_output(fake, tmp_path) -> None:
    fake.script_next_job(Script(completion_stats={"successful_count": 3, "failed_count": 1}))
    job, gcs_dir, bq_table = _artifact(), _artifact(), _artifact()
    component_entry.model_batch_predict(
        model=_artifact(
            f"https://us-central1-aiplatform.googleapis.com/v1/{MODEL_NAME}",
            {"resourceName": MODEL_NAME},
        ),
        unmanaged_container_model=None,
        gcp_resources=str(tmp_path / "gcp_resources"),
        batchpredictionjob=job,
        gcs_output_directory=gcs_dir,
        bigquery_output_table=bq_table,
        job_display_name="scoring",
        project=PROJECT,
        backend="vertex",
        vertex_api_endpoint=fake.endpoint,
        gcs_source_uris=["gs://bucket/in/*.jsonl"],
        gcs_destination_output_uri_prefix="gs://bucket/out",
    )
    assert fake.calls(CREATE)[0].batch_prediction_job.model == MODEL_NAME
    directory = "gs://bucket/out/prediction-scoring-2024_05_06T07_08_09_123Z"
    assert gcs_dir.uri == directory
    assert gcs_dir.metadata["completionStats"] == {
        "successful_count": 3,
        "failed_count": 1,
        "incomplete_count": 0,
    }
    assert job.metadata["gcsOutputDirectory"] == directory
    assert bq_table.uri == ""


SUBPROCESS_BODY = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    from batchpredict import component_entry
    from batchpredict.errors import BatchPredictError

    def artifact():
        return SimpleNamespace(uri="", metadata={})

    try:
        component_entry.model_batch_predict(
            model=SimpleNamespace(uri="", metadata={"resourceName": sys.argv[3]}),
            unmanaged_container_model=None,
            gcp_resources=sys.argv[2],
            batchpredictionjob=artifact(),
            gcs_output_directory=artifact(),
            bigquery_output_table=artifact(),
            **json.loads(sys.argv[1]),
        )
    except BatchPredictError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    """
)


def test_sigterm_cancels_the_job(fake, tmp_path) -> None:
    """A component body in its own process, stopped as KFP stops a cancelled run's step."""
    fake.script_next_job(Script(states=["JOB_STATE_RUNNING"]))  # runs until cancelled
    resources = tmp_path / "gcp_resources"
    inputs = {
        "job_display_name": "long-job",
        "project": PROJECT,
        "backend": "vertex",
        "vertex_api_endpoint": fake.endpoint,
        "gcs_source_uris": ["gs://bucket/in/*.jsonl"],
        "gcs_destination_output_uri_prefix": "gs://bucket/out",
    }
    env = {**os.environ, **FAST_ENV, "PYTHONPATH": str(ROOT)}
    env[vertex.POLL_INTERVAL_ENV] = "0.05"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS_BODY, json.dumps(inputs), str(resources), MODEL_NAME],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(fake.calls(GET)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job was never polled"
            time.sleep(0.05)
        name = created_name(fake)
        # gcp_resources names the job while it runs.
        assert name in resources.read_text()
        assert fake.jobs[name].message.state.name == "JOB_STATE_RUNNING"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 13, stderr
    assert [r.name for r in fake.calls(CANCEL)] == [name]
    assert fake.jobs[name].message.state.name in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    assert "SIGTERM" in stderr
    assert name in stderr
    assert "JOB_STATE_CANCELLING" in stderr


def test_cli_runs_the_same_backend(fake, capsys) -> None:
    from batchpredict.cli import main

    fake.script_next_job(Script(completion_stats={"successful_count": 7}))
    common = [
        "predict",
        "--backend",
        "vertex",
        "--job-display-name",
        "from-cli",
        "--project",
        PROJECT,
        "--gcs-source-uris",
        "gs://bucket/in/*.jsonl",
        "--gcs-destination-output-uri-prefix",
        "gs://bucket/out",
        "--vertex-api-endpoint",
        fake.endpoint,
    ]
    assert main([*common, "--model-resource-name", MODEL_NAME]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["state"] == "JOB_STATE_SUCCEEDED"
    assert printed["completion_stats"]["successful_count"] == 7
    assert printed["resource_name"] == created_name(fake)

    local_dir = ["--model-uri", "/tmp/model", "--container-image-uri", SKLEARN_IMAGE]
    assert main([*common, *local_dir]) == 1
    assert "gcloud storage cp" in capsys.readouterr().err
