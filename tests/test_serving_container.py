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


def test_contract_variables_routes_port_and_read_only_model(tmp_path, model_dir, server_image):
    names = [
        "AIP_MODE",
        "AIP_MODE_VERSION",
        "AIP_FRAMEWORK",
        "AIP_HTTP_PORT",
        "AIP_HEALTH_ROUTE",
        "AIP_PREDICT_ROUTE",
        "AIP_STORAGE_URI",
        "AIP_DEPLOYED_MODEL_ID",
        "AIP_ENDPOINT_ID",
        "AIP_MACHINE_TYPE",
        "DERIVED",
    ]
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
        model_parameters={"scale": 10},
        manual_batch_tuning_parameters_batch_size=4,
    )
    result = run_batch_prediction(spec)
    out = read_output(result.gcs_output_directory, result)
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert got == {
        '{"env": "AIP_MODE"}': "PREDICTION",
        '{"env": "AIP_MODE_VERSION"}': "1.0.0",
        '{"env": "AIP_FRAMEWORK"}': "CUSTOM_CONTAINER",
        '{"env": "AIP_HTTP_PORT"}': "9123",
        '{"env": "AIP_HEALTH_ROUTE"}': "/custom/ready",
        '{"env": "AIP_PREDICT_ROUTE"}': "/custom/predict",
        '{"env": "AIP_STORAGE_URI"}': serving.MODEL_MOUNT,
        '{"env": "AIP_DEPLOYED_MODEL_ID"}': serving.LOCAL_DEPLOYED_MODEL_ID,
        '{"env": "AIP_ENDPOINT_ID"}': serving.LOCAL_ENDPOINT_ID,
        '{"env": "AIP_MACHINE_TYPE"}': "n1-standard-4",
        '{"env": "DERIVED"}': "port 9123 $(AIP_MODE)",
        '{"file": "model.txt"}': "weights",
        '{"write": 1}': "read-only",
        "[1, 2]": 30,
    }
    assert out["stats"]["model_framework"] == "container"
    assert out["stats"]["batch_size"] == 4
    assert our_containers("ctr-contract") == []


def test_default_routes_and_batch_size(tmp_path, model_dir, server_image):
    data = write_jsonl(tmp_path / "in.jsonl", [[i, 1] for i in range(200)])
    result = run_batch_prediction(
        job_spec(tmp_path, data, model_dir, server_image, "ctr-defaults", workers=1)
    )
    out = read_output(result.gcs_output_directory, result)
    assert [r["prediction"] for r in out["results"]] == [i + 1 for i in range(200)]
    assert out["stats"]["batch_size"] == serving.DEFAULT_CONTAINER_BATCH_SIZE
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
