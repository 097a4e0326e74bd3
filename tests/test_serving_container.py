"""Serving containers through a real Docker engine, under Vertex's custom-container contract.

Two small images are built once per session on the local Debian base
(containers/build_base_image.sh, no registry): a stdlib HTTP server honouring the contract's
variables (tests/serving/server.py), and a Custom Prediction Routine image made as
aiplatform's LocalModel.build_cpr_model makes one (tests/test_serving_cpr.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchpredict.backends import run_batch_prediction, serving
from batchpredict.errors import UserError
from batchpredict.spec import BatchPredictionJobSpec
from tests.cloud_fixtures import bucket, gcs_emulator, gcs_env, gcs_put  # noqa: F401 - fixtures
from tests.conftest import read_output, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "serving" / "server.py"
pytestmark = pytest.mark.docker


def docker_or_skip() -> None:
    from tests.test_image import _docker_problem

    problem = _docker_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test serving containers, but {problem}")
        pytest.skip(problem)


def base_image() -> str:
    proc = subprocess.run(
        [str(ROOT / "containers" / "build_base_image.sh")],
        capture_output=True,
        text=True,
        timeout=40 * 60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


def build(tag: str, dockerfile: str, context: Path) -> str:
    proc = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-f", "-", str(context)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=20 * 60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tag


@pytest.fixture(scope="session")
def server_image(tmp_path_factory) -> str:
    """The stdlib contract server on the local Debian base, tagged by its content."""
    docker_or_skip()
    base = base_image()
    dockerfile = (
        f"FROM {base}\nCOPY server.py /srv/server.py\nUSER 10001\n"
        'ENTRYPOINT ["python3", "-u", "/srv/server.py"]\n'
    )
    digest = hashlib.sha256((dockerfile + SERVER.read_text()).encode()).hexdigest()[:12]
    tag = f"batchpredict-test-server:{digest}"
    context = tmp_path_factory.mktemp("server_ctx")
    (context / "server.py").write_text(SERVER.read_text())
    return build(tag, dockerfile, context)


def our_containers(job: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={serving.LABEL_JOB}={job}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def job_spec(tmp_path, data, model_dir, image, name, **kw) -> BatchPredictionJobSpec:
    return BatchPredictionJobSpec(
        job_display_name=name,
        gcs_source_uris=[data],
        gcs_destination_output_uri_prefix=str(tmp_path / "out"),
        model_uri=str(model_dir),
        container_image_uri=image,
        progress=False,
        **kw,
    )


@pytest.fixture
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.txt").write_text("weights")
    return d


def env_spec(**env) -> dict:
    return {"containerSpec": {"env": [{"name": k, "value": v} for k, v in env.items()]}}


# Google's list of the variables Vertex sets in a custom container ("Custom container
# requirements for prediction", "Variables set by Vertex AI").
CONTRACT_VARIABLES = [
    "AIP_ACCELERATOR_TYPE",
    "AIP_DEPLOYED_MODEL_ID",
    "AIP_ENDPOINT_ID",
    "AIP_FRAMEWORK",
    "AIP_HEALTH_ROUTE",
    "AIP_HTTP_PORT",
    "AIP_MACHINE_TYPE",
    "AIP_MODE",
    "AIP_MODE_VERSION",
    "AIP_MODEL_NAME",
    "AIP_PREDICT_ROUTE",
    "AIP_PROJECT_NUMBER",
    "AIP_STORAGE_URI",
    "AIP_VERSION_NAME",
]


def test_contract_variables_routes_port_and_read_only_model(
    tmp_path, model_dir, server_image, caplog
):
    names = [*CONTRACT_VARIABLES, "DERIVED", "VERTEX_CPR_WEB_CONCURRENCY"]
    instances = [{"env": n} for n in names] + [{"file": "model.txt"}, {"write": 1}, [1, 2]]
    data = write_jsonl(tmp_path / "in.jsonl", instances)
    metadata = {
        "containerSpec": {
            "imageUri": server_image,
            "ports": [{"containerPort": 9123}],
            "predictRoute": "/custom/predict",
            "healthRoute": "/custom/ready",
            "env": [{"name": "DERIVED", "value": "port $(AIP_HTTP_PORT) $$(AIP_MODE)"}],
        }
    }
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-contract",
        model_metadata=metadata,
        machine_type="n1-standard-4",
        accelerator_type="NVIDIA_TESLA_T4",  # no accelerator_count: the variable, no GPU
        max_replica_count=3,
        project="123456789012",
        model_parameters={"scale": 10},
        manual_batch_tuning_parameters_batch_size=4,
    )
    with caplog.at_level("WARNING", logger="batchpredict.backends.local"):
        result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert got == {
        '{"env": "AIP_ACCELERATOR_TYPE"}': "NVIDIA_TESLA_T4",
        '{"env": "AIP_DEPLOYED_MODEL_ID"}': serving.LOCAL_DEPLOYED_MODEL_ID,
        '{"env": "AIP_ENDPOINT_ID"}': serving.LOCAL_ENDPOINT_ID,
        '{"env": "AIP_FRAMEWORK"}': "CUSTOM_CONTAINER",
        '{"env": "AIP_HEALTH_ROUTE"}': "/custom/ready",
        '{"env": "AIP_HTTP_PORT"}': "9123",
        '{"env": "AIP_MACHINE_TYPE"}': "n1-standard-4",
        '{"env": "AIP_MODE"}': "PREDICTION",
        '{"env": "AIP_MODE_VERSION"}': "1.0.0",
        '{"env": "AIP_MODEL_NAME"}': serving.LOCAL_ENDPOINT_ID,
        '{"env": "AIP_PREDICT_ROUTE"}': "/custom/predict",
        '{"env": "AIP_PROJECT_NUMBER"}': "123456789012",
        '{"env": "AIP_STORAGE_URI"}': serving.MODEL_MOUNT,
        '{"env": "AIP_VERSION_NAME"}': serving.LOCAL_DEPLOYED_MODEL_ID,
        '{"env": "DERIVED"}': "port 9123 $(AIP_MODE)",
        '{"env": "VERTEX_CPR_WEB_CONCURRENCY"}': "1",
        '{"file": "model.txt"}': "weights",
        '{"write": 1}': "read-only",
        "[1, 2]": 30,
    }
    assert out["stats"]["model_framework"] == "container"
    assert out["stats"]["batch_size"] == 4
    # The container uses the machine settings: only the replica count is "Vertex only".
    assert result.stats["vertex_only_settings"] == {"max_replica_count": 3}
    assert result.stats["serving_resources"] == {
        "machine_type": "n1-standard-4",
        "accelerator_type": "NVIDIA_TESLA_T4",
    }
    (warning,) = [r.getMessage() for r in caplog.records if "Vertex only" in r.getMessage()]
    assert "max_replica_count" in warning and "machine_type" not in warning
    assert "accelerator" not in warning
    assert our_containers("ctr-contract") == []


def test_project_id_and_the_users_cpr_worker_settings(tmp_path, model_dir, server_image):
    names = ["AIP_PROJECT_NUMBER", "VERTEX_CPR_WEB_CONCURRENCY", "VERTEX_CPR_MAX_WORKERS"]
    data = write_jsonl(tmp_path / "in.jsonl", [{"env": n} for n in names])
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-project-id",
        project="my-project",
        model_metadata=env_spec(VERTEX_CPR_MAX_WORKERS="3"),
    )
    result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    got = {r["instance"]["env"]: r["prediction"] for r in out["results"]}
    # A project ID where Vertex sets the number (README); the user's CPR setting alone decides.
    assert got == {
        "AIP_PROJECT_NUMBER": "my-project",
        "VERTEX_CPR_WEB_CONCURRENCY": None,
        "VERTEX_CPR_MAX_WORKERS": "3",
    }


def test_a_request_never_answered_is_retried_then_deadline_exceeded(
    tmp_path, model_dir, server_image
):
    hang = [5, 0]
    instances = [[1, 0], hang, {"count": json.dumps(hang)}, [2, 0]]
    data = write_jsonl(tmp_path / "in.jsonl", instances)
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-deadline",
        model_metadata=env_spec(HANG_ON=json.dumps(hang)),
        predict_timeout_seconds=1,
        manual_batch_tuning_parameters_batch_size=1,
        requests_in_flight=1,  # one request at a time: the count is asked after the retries
    )
    started = time.monotonic()
    result = run_batch_prediction(spec)
    elapsed = time.monotonic() - started
    out = read_output(result.gcs_output_directory, result)
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert got == {"[1, 0]": 1, "[2, 0]": 2, json.dumps(instances[2]): 4}  # sent 1 + 3 times
    (error,) = out["errors"]
    assert error["instance"] == hang
    assert error["error"]["code"] == 4  # DEADLINE_EXCEEDED, as in-process
    assert error["error"]["message"].startswith("DEADLINE_EXCEEDED:")
    assert "within 1 s (predict_timeout_seconds), 3 retries" in error["error"]["message"]
    assert elapsed < 60  # 4 x 1 s of waiting, not Vertex's 600 s
    assert our_containers("ctr-deadline") == []


def test_gcs_model_directory_is_staged_and_mounted(
    tmp_path,
    server_image,
    bucket,  # noqa: F811 - the fixture
    monkeypatch,
):
    import tempfile

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))  # where the model is staged
    gcs_put(f"{bucket}/models/m/model.txt", "weights")
    gcs_put(f"{bucket}/models/m/sub/vocab.txt", "a b c")
    instances = [
        {"file": "model.txt"},
        {"file": "sub/vocab.txt"},
        {"env": "AIP_STORAGE_URI"},
        {"write": 1},
    ]
    data = write_jsonl(tmp_path / "in.jsonl", instances)
    spec = job_spec(tmp_path, data, f"{bucket}/models/m", server_image, "ctr-gcs-model")
    result = run_batch_prediction(spec)  # the image's server runs as uid 10001, not as us
    out = read_output(result.gcs_output_directory, result)
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert got == {
        '{"file": "model.txt"}': "weights",
        '{"file": "sub/vocab.txt"}': "a b c",
        '{"env": "AIP_STORAGE_URI"}': serving.MODEL_MOUNT,
        '{"write": 1}': "read-only",
    }
    assert os.listdir(staging) == []  # the staged copy is removed
    assert our_containers("ctr-gcs-model") == []


def test_default_routes_and_batch_size(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[i, 1] for i in range(200)])
    result = run_batch_prediction(
        job_spec(tmp_path, data, model_dir, server_image, "ctr-defaults", workers=1)
    )
    out = read_output(result.gcs_output_directory, result)
    assert [r["prediction"] for r in out["results"]] == [i + 1 for i in range(200)]
    assert out["stats"]["batch_size"] == 64  # Vertex's default
    assert our_containers("ctr-defaults") == []


def test_one_failing_instance_fails_alone(tmp_path, model_dir, server_image):
    instances = [[i, 0] for i in range(40)]
    data = write_jsonl(tmp_path / "in.jsonl", instances)
    metadata = env_spec(FAIL_ON=json.dumps([7, 0]), BAD_ON=json.dumps([30, 0]))
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-500",
        model_metadata=metadata,
        manual_batch_tuning_parameters_batch_size=8,
    )
    result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    assert sorted(r["instance"][0] for r in out["results"]) == [
        i for i in range(40) if i not in (7, 30)
    ]
    errors = {e["instance"][0]: e["error"] for e in out["errors"]}
    assert set(errors) == {7, 30}
    assert errors[7]["code"] == 13 and "retries" in errors[7]["message"]
    assert "HTTP 500" in errors[7]["message"]
    assert errors[30]["code"] == 3 and "HTTP 400" in errors[30]["message"]
    assert result.completion_stats["failed_count"] == 2


def test_connections_are_kept_alive_and_reopened_when_the_server_drops_them(
    tmp_path, model_dir, server_image
):
    fail = [5, 0]  # the 6th request: sent first on the connection the server dropped after 5
    instances = [[i, 0] for i in range(30)] + [{"count": json.dumps(fail)}, {"connections": 1}]
    data = write_jsonl(tmp_path / "in.jsonl", instances)
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-keepalive",
        model_metadata=env_spec(DROP_EVERY="5", FAIL_ON=json.dumps(fail)),
        manual_batch_tuning_parameters_batch_size=1,
        requests_in_flight=1,
    )
    result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    assert [e["instance"] for e in out["errors"]] == [fail]
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert [got[json.dumps([i, 0])] for i in range(30) if i != 5] == [
        i for i in range(30) if i != 5
    ]
    # A dropped connection is reopened without spending a retry: the server saw 1 + 3 tries.
    assert got[json.dumps({"count": json.dumps(fail)})] == 4
    # 35 requests, 5 per connection before the server drops it: 7 connections, not 35.
    assert got['{"connections": 1}'] == 7


def test_requests_turn_nagle_off():
    import socket

    from batchpredict.models.container import _Connection

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        conn = _Connection("127.0.0.1", server.getsockname()[1], timeout=5)
        conn.connect()
        try:
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            conn.close()


def test_wrong_prediction_count_fails_the_request(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[1], [2], [3]])
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-count",
        model_metadata=env_spec(WRONG_COUNT="1"),
    )
    result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    assert out["results"] == []
    assert len(out["errors"]) == 3
    assert all("0 predictions for 1 instances" in e["error"]["message"] for e in out["errors"])


def test_never_healthy_container_says_why_and_is_removed(
    tmp_path, model_dir, server_image, monkeypatch
):
    monkeypatch.setenv(serving.READY_TIMEOUT_ENV, "3")
    data = write_jsonl(tmp_path / "in.jsonl", [[1]])
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-unhealthy",
        model_metadata=env_spec(NEVER_HEALTHY="1"),
    )
    with pytest.raises(UserError, match="did not become healthy within 3 s") as err:
        run_batch_prediction(spec)
    assert "HTTP 503" in str(err.value)
    assert "test server: listening on 8080" in str(err.value)  # the log tail
    assert our_containers("ctr-unhealthy") == []
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_container_that_exits_at_start_quotes_its_log(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[1]])
    metadata = {"containerSpec": {"command": ["python3", "-c", "print('no model here'); exit(4)"]}}
    spec = job_spec(tmp_path, data, model_dir, server_image, "ctr-exit", model_metadata=metadata)
    with pytest.raises(UserError, match="exited with code 4") as err:
        run_batch_prediction(spec)
    assert "no model here" in str(err.value)
    assert our_containers("ctr-exit") == []


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "batchpredict.cli", "predict", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kw,
    )


def cli_args(tmp_path, data, model_dir, image, name, metadata=None, *extra) -> list[str]:
    args = [
        "--job-display-name",
        name,
        "--gcs-source-uris",
        data,
        "--gcs-destination-output-uri-prefix",
        str(tmp_path / "out"),
        "--model-uri",
        str(model_dir),
        "--container-image-uri",
        image,
        "--no-progress",
        *extra,
    ]
    if metadata:
        args += ["--model-metadata", json.dumps(metadata)]
    return args


def test_server_dying_mid_job_stops_it_with_exit_13(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[i] for i in range(500)])
    args = cli_args(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-dies",
        env_spec(DIE_AFTER="3"),
        "--manual-batch-tuning-parameters-batch-size",
        "10",
    )
    proc = cli(*args)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 13, stderr
    assert "stopped answering" in stderr
    assert "exit code 3" in stderr and "dying after 3 requests" in stderr
    out = tmp_path / "out"
    assert not out.exists() or [p for p in os.listdir(out) if not p.startswith(".")] == []
    assert our_containers("ctr-dies") == []


def _wait_for_container(job: str, proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = our_containers(job)
        if ids:
            return ids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no container of {job} appeared")


def test_sigterm_removes_the_container(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[i] for i in range(100)])
    args = cli_args(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-sigterm",
        env_spec(SLOW_S="1"),
        "--manual-batch-tuning-parameters-batch-size",
        "1",
        "--requests-in-flight",
        "1",
    )
    proc = cli(*args)
    _wait_for_container("ctr-sigterm", proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert our_containers("ctr-sigterm") == []


def test_kill_9_then_a_rerun_removes_the_orphan(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[i] for i in range(100)])
    args = cli_args(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-killed",
        env_spec(SLOW_S="1"),
        "--manual-batch-tuning-parameters-batch-size",
        "1",
    )
    proc = cli(*args)
    orphans = _wait_for_container("ctr-killed", proc)
    proc.kill()
    proc.wait(timeout=30)
    assert our_containers("ctr-killed") == orphans  # nothing removed it: the owner died
    small = write_jsonl(tmp_path / "small.jsonl", [[1, 2]])
    result = run_batch_prediction(
        job_spec(tmp_path / "rerun", small, model_dir, server_image, "ctr-rerun")
    )
    assert result.completion_stats["successful_count"] == 1
    assert our_containers("ctr-killed") == []
    assert our_containers("ctr-rerun") == []


def test_kill_9_then_any_local_job_removes_the_orphan(
    tmp_path, model_dir, server_image, sklearn_model_dir, monkeypatch
):
    state = tmp_path / "state"
    monkeypatch.setenv(serving.STATE_DIR_ENV, str(state))  # inherited by the CLI below
    data = write_jsonl(tmp_path / "in.jsonl", [[i] for i in range(100)])
    args = cli_args(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-killed-any",
        env_spec(SLOW_S="1"),
        "--manual-batch-tuning-parameters-batch-size",
        "1",
    )
    proc = cli(*args)
    orphans = _wait_for_container("ctr-killed-any", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert our_containers("ctr-killed-any") == orphans
    assert len(os.listdir(state)) == 1  # its record
    # An in-process job (no container of its own) removes it.
    iris = write_jsonl(tmp_path / "iris.jsonl", [[5.1, 3.5, 1.4, 0.2]])
    result = run_batch_prediction(
        job_spec(tmp_path / "next", iris, sklearn_model_dir, "", "in-process-next")
    )
    assert result.stats["model_framework"] == "sklearn"
    assert our_containers("ctr-killed-any") == []
    assert os.listdir(state) == []


def test_gpu_device_request_is_what_docker_run_gpus_sends(server_image):
    """The DeviceRequest for accelerator_count=2 against `docker create --gpus 2`, on the engine.

    Creating a container does not need the NVIDIA runtime (starting it does), so the engine
    records both HostConfig.DeviceRequests without a GPU.
    """
    import docker

    requests = serving.device_requests(["runc", "nvidia"], 2, "NVIDIA_TESLA_T4")
    client = docker.from_env()
    ours = client.containers.create(server_image, device_requests=requests, labels={"t": "gpu"})
    cli_id = subprocess.run(
        ["docker", "create", "--gpus", "2", "--label", "t=gpu", server_image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        got = client.api.inspect_container(ours.id)["HostConfig"]["DeviceRequests"]
        want = client.api.inspect_container(cli_id)["HostConfig"]["DeviceRequests"]
    finally:
        ours.remove(force=True)
        client.api.remove_container(cli_id, force=True)
    # DeviceIDs: [] from the SDK, null from the CLI; both mean "any devices".
    assert [{**r, "DeviceIDs": r["DeviceIDs"] or None} for r in got] == want
    assert want[0]["Count"] == 2 and want[0]["Capabilities"] == [["gpu"]]
    assert serving.device_requests(["runc"], 0) is None
    with pytest.raises(UserError, match="accelerator_count=2 .* no NVIDIA runtime"):
        serving.device_requests(["runc"], 2, "NVIDIA_TESLA_T4")


def test_serving_mode_choices(tmp_path, model_dir, sklearn_model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(UserError, match="serving_mode='container' runs the model's serving"):
        run_batch_prediction(
            job_spec(tmp_path, data, sklearn_model_dir, "", "m", serving_mode="container")
        )
    with pytest.raises(UserError, match="Unknown serving_mode='docker'"):
        run_batch_prediction(job_spec(tmp_path, data, model_dir, "", "m", serving_mode="docker"))
    # A prebuilt image batchpredict runs in-process: auto stays in-process, container is forced.
    sk_image = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
    auto = run_batch_prediction(job_spec(tmp_path / "a", data, sklearn_model_dir, sk_image, "m"))
    assert auto.stats["model_framework"] == "sklearn"
    with pytest.raises(UserError, match="is not on this Docker engine and pulling it failed"):
        run_batch_prediction(
            job_spec(tmp_path, data, sklearn_model_dir, sk_image, "m", serving_mode="container")
        )
    # A custom image runs in its container under auto; in_process refuses a model dir it cannot
    # run (no model file) rather than starting Docker.
    forced = run_batch_prediction(job_spec(tmp_path / "c", data, model_dir, server_image, "m"))
    assert forced.stats["model_framework"] == "container"
    with pytest.raises(UserError, match="No model file"):
        run_batch_prediction(
            job_spec(tmp_path, data, model_dir, server_image, "m", serving_mode="in_process")
        )


def test_accelerators_need_an_nvidia_runtime(tmp_path, model_dir, server_image):
    import docker

    if "nvidia" in (docker.from_env().info().get("Runtimes") or {}):
        pytest.skip("this engine has an NVIDIA runtime")
    data = write_jsonl(tmp_path / "in.jsonl", [[1]])
    spec = job_spec(
        tmp_path,
        data,
        model_dir,
        server_image,
        "ctr-gpu",
        accelerator_type="NVIDIA_TESLA_T4",
        accelerator_count=1,
    )
    with pytest.raises(UserError, match="accelerator_count=1 .* no NVIDIA runtime"):
        run_batch_prediction(spec)
    assert our_containers("ctr-gpu") == []
