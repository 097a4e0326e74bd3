"""The component image: built by the scripts in containers/, checked, and run under DockerRunner.

The Docker tests need a Docker engine (`make test` starts one through scripts/ensure_docker.sh).
Without one they skip, except in CI (CI=true), where they fail: there the image must be tested.
The image is built on a local Debian base (containers/build_base_image.sh, no registry needed);
BATCHPREDICT_TEST_BASE_IMAGE names another base, e.g. python:3.11-slim-bookworm.

A pipeline run under kfp.local.DockerRunner must give what a SubprocessRunner run of the same
pipeline gives: the same predictions (to the last digit of every probability), the same counts.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations as types.
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from batchpredict import __version__
from batchpredict.image import IMAGE_GID, IMAGE_UID, component_image, docker_runner_args

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 40 * 60  # a cold build on 2 cores (debootstrap + dependencies) takes ~5 min
RUN_TIMEOUT_S = 120
SLOW_DOCKER = [pytest.mark.slow, pytest.mark.docker]

# Keys of completion_stats.json and of the artifacts' metadata that measure time, not outcome.
TIMING_KEYS = {"elapsed_seconds", "rows_per_second", "elapsedSeconds", "rowsPerSecond"}


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client (run scripts/ensure_docker.sh)"
    try:
        import docker  # noqa: F401  (kfp.local.DockerRunner needs the SDK)
    except ImportError:
        return "the docker Python package is missing (pip install -e '.[dev]')"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"no Docker engine answers (run scripts/ensure_docker.sh): {proc.stderr.strip()}"
    return None


def _docker(*args: str, timeout: int = RUN_TIMEOUT_S) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"docker {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def image() -> str:
    """Builds the image with containers/build_image.sh (cached by Docker) and returns its name."""
    problem = _docker_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the component image, but {problem}")
        pytest.skip(problem)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "BASE_IMAGE": os.environ.get("BATCHPREDICT_TEST_BASE_IMAGE", "local"),
    }
    env.pop("BATCHPREDICT_IMAGE_REGISTRY", None)  # the local name, as the committed specs use
    proc = subprocess.run(
        [str(ROOT / "containers" / "build_image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(f"containers/build_image.sh failed:\n{proc.stderr[-6000:]}")
    built = proc.stdout.strip().splitlines()[-1]
    assert built == component_image(registry="")
    return built


# ---- the image itself -----------------------------------------------------------------------


@pytest.mark.parametrize("mark", SLOW_DOCKER)
def test_marks_exist(mark: pytest.MarkDecorator, pytestconfig: pytest.Config) -> None:
    declared = "\n".join(pytestconfig.getini("markers"))
    assert re.search(rf"^{mark.name}:", declared, re.MULTILINE)


def test_dockerfile_pins_no_latest_and_has_no_entrypoint() -> None:
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    assert ":latest" not in dockerfile
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base and re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", base.group(1)), base
    # KFP passes the step's command as the container command; DockerRunner as CMD. An
    # ENTRYPOINT would run in front of it under DockerRunner only.
    assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.docker
def test_image_runs_batchpredict_as_non_root(image: str) -> None:
    out = _docker(
        "run",
        "--rm",
        image,
        "python3",
        "-c",
        "import json, os, batchpredict, kfp;"
        "print(json.dumps([os.getuid(), os.getgid(), batchpredict.__version__, kfp.__version__]))",
    )
    uid, gid, version, kfp_version = json.loads(out.strip().splitlines()[-1])
    assert (uid, gid) == (IMAGE_UID, IMAGE_GID)
    assert uid != 0
    assert version == __version__
    import kfp

    assert kfp_version == kfp.__version__


@pytest.mark.slow
@pytest.mark.docker
def test_image_metadata(image: str) -> None:
    info = json.loads(_docker("image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_GID}"
    assert not config.get("Entrypoint")
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    assert image.endswith(f":{__version__}")
    size_mb = info["Size"] / 1e6
    print(f"\n{image}: {size_mb:.0f} MB")
    assert size_mb < 1200, f"the image grew to {size_mb:.0f} MB"


@pytest.mark.slow
@pytest.mark.docker
def test_image_has_no_build_tools(image: str) -> None:
    out = _docker(
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "for t in gcc cc c++ g++ make ld as; do command -v $t || true; done;"
        " ls /usr/include/python3*/Python.h 2>/dev/null || true",
    )
    assert out.strip() == "", f"build tools in the image:\n{out}"


@pytest.mark.slow
@pytest.mark.docker
def test_image_runs_under_another_uid(image: str) -> None:
    # What docker_runner() does for a non-root user: any uid can run the steps.
    out = _docker(
        "run", "--rm", "--user", "4321:4321", image,
        "python3", "-c", "import os, batchpredict.engine; open(os.path.expanduser('~/x'), 'w')",
    )  # fmt: skip
    assert out == ""


# ---- DockerRunner arguments (no Docker needed) ------------------------------------------------


def test_docker_runner_args_non_root_runs_as_the_caller(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 1234)
    monkeypatch.setattr(os, "getgid", lambda: 567)
    root = tmp_path / "new" / "root"
    assert docker_runner_args(root) == {"user": "1234:567"}
    assert root.is_dir()  # created here, so Docker does not create it root-owned


@pytest.mark.skipif(os.getuid() != 0, reason="the root case chowns")
def test_docker_runner_args_root_hands_the_root_to_the_image_user(tmp_path) -> None:
    root = tmp_path / "root"
    assert docker_runner_args(root) == {"user": f"{IMAGE_UID}:{IMAGE_GID}"}
    assert (root.stat().st_uid, root.stat().st_gid) == (IMAGE_UID, IMAGE_GID)


# ---- DockerRunner vs SubprocessRunner -------------------------------------------------------


class RunOutput(NamedTuple):
    directory: Path
    files: list[str]
    results: list[str]
    errors: list[str]
    errors_stats: str
    completion: dict[str, Any]
    job_metadata: dict[str, Any]


def _small_pipeline():
    """Train a tiny scikit-learn model and write JSONL instances, then batch predict."""
    from kfp import dsl
    from kfp.dsl import Dataset, Model, Output

    from components.model_batch_predict import ModelBatchPredictOp

    @dsl.component(base_image=component_image(), install_kfp_package=False)
    def make_model_and_instances(model: Output[Model], instances: Output[Dataset]) -> NamedTuple(
        "Outputs", [("sources", list), ("destination", str)]
    ):
        import json
        import os
        from collections import namedtuple

        import joblib
        from sklearn.datasets import load_breast_cancer
        from sklearn.ensemble import RandomForestClassifier

        x, y = load_breast_cancer(return_X_y=True)
        os.makedirs(model.path, exist_ok=True)
        clf = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
        joblib.dump(clf, os.path.join(model.path, "model.joblib"))
        os.makedirs(instances.path, exist_ok=True)
        for shard in range(2):
            with open(os.path.join(instances.path, f"part-{shard}.jsonl"), "w") as f:
                for row in x[shard::2]:
                    f.write(json.dumps([round(v, 4) for v in row.tolist()]) + "\n")
                f.write('["not", "numbers"]\n')  # one failure per shard, isolated and counted
        destination = os.path.join(os.path.dirname(instances.path), "predictions")
        outputs = namedtuple("Outputs", ["sources", "destination"])
        return outputs([os.path.join(instances.path, "*.jsonl")], destination)

    @dsl.pipeline(name="image-smoke")
    def image_smoke() -> dsl.Artifact:
        data = make_model_and_instances()
        predict = ModelBatchPredictOp(
            job_display_name="image-smoke",
            model=data.outputs["model"],
            gcs_source_uris=data.outputs["sources"],
            gcs_destination_output_uri_prefix=data.outputs["destination"],
            instances_format="jsonl",
            return_probabilities=True,
            workers=2,
            manual_batch_tuning_parameters_batch_size=16,
            output_directory_name="prediction-smoke",
        )
        return predict.outputs["gcs_output_directory"]

    return image_smoke


def _collect(directory: Path, metadata: dict[str, Any]) -> RunOutput:
    results = sorted(
        line
        for path in sorted(directory.glob("prediction.results-*"))
        for line in path.read_text().splitlines()
    )
    errors = sorted(
        line
        for path in sorted(directory.glob("prediction.errors-*"))
        for line in path.read_text().splitlines()
    )
    completion = metadata.get("completionStats", {})  # not in the directory: Vertex's files only
    # Which worker met the bad lines is timing: the errors files (written only by workers that
    # had failures) may be one or two, so they are compared by content, not by name.
    return RunOutput(
        directory=directory,
        files=sorted(p.name for p in directory.iterdir() if ".errors-" not in p.name),
        results=results,
        errors=errors,
        errors_stats=(directory / "prediction.errors_stats-00000-of-00001").read_text(),
        completion={k: v for k, v in completion.items() if k not in TIMING_KEYS},
        job_metadata={k: v for k, v in metadata.items() if k not in TIMING_KEYS},
    )


def _without_source(records: list[str]) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in json.loads(r).items() if k != "source"} for r in records),
        key=json.dumps,
    )


def _run_pipeline(pipeline, runner, pipeline_root: Path) -> Any:
    from kfp import local

    local.init(runner=runner, pipeline_root=str(pipeline_root))
    return pipeline()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")
def test_docker_runner_matches_subprocess_runner(image: str, tmp_path: Path) -> None:
    from kfp import local

    from batchpredict.image import docker_runner

    pipeline = _small_pipeline()
    runs = {}
    for name, make_runner in (
        ("subprocess", lambda root: local.SubprocessRunner(use_venv=False)),
        ("docker", docker_runner),
    ):
        root = tmp_path / name
        root.mkdir()
        task = _run_pipeline(pipeline, make_runner(root), root)
        out = task.output
        directory = Path(out.uri)
        assert directory.is_relative_to(root), directory
        runs[name] = _collect(directory, dict(out.metadata))

    sub, dock = runs["subprocess"], runs["docker"]
    # The docker steps really ran in the image, as its non-root user.
    assert all(p.stat().st_uid == IMAGE_UID for p in dock.directory.iterdir())
    assert len(sub.results) == 569 and sub.completion["successful_count"] == 569
    assert sub.completion["failed_count"] == 2
    assert dock.files == sub.files
    assert dock.results == sub.results
    # Error records name their input file, which lies under each run's own pipeline root.
    assert _without_source(dock.errors) == _without_source(sub.errors)
    assert dock.errors_stats == sub.errors_stats
    assert dock.completion == sub.completion
    assert dock.job_metadata == sub.job_metadata


# ---- the classification pipeline, DockerRunner vs SubprocessRunner ------------------------------


def _classification_outcome(outputs: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the runner: predictions, counts, metrics."""
    import pyarrow.parquet as pq

    predictions = Path(outputs["predictions_directory"].uri)
    collected = Path(outputs["collected"].uri)
    table_path = collected if collected.is_file() else next(collected.rglob("*.parquet"))
    job = outputs["batchpredictionjob"].metadata
    evaluation = Path(outputs["evaluation_metrics"].uri)
    evaluation_files = sorted(evaluation.rglob("*.json")) if evaluation.is_dir() else [evaluation]
    return {
        "results": _collect(predictions, {}).results,
        "errors_stats": _collect(predictions, {}).errors_stats,
        "completion_stats": job["completionStats"],
        "read_count": job.get("readCount"),
        "collected": pq.read_table(table_path).to_pylist(),
        "metrics": dict(outputs["metrics"].metadata),
        "classification_metrics": dict(outputs["classification_metrics"].metadata),
        "evaluation_metrics": {p.name: json.loads(p.read_text()) for p in evaluation_files},
    }


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")
def test_classification_pipeline_docker_matches_subprocess(image: str, tmp_path: Path) -> None:
    from kfp import local

    from batchpredict.image import docker_runner
    from pipelines.tabular_classification import tabular_classification

    outcomes = {}
    for name, make_runner in (
        ("subprocess", lambda root: local.SubprocessRunner(use_venv=False)),
        ("docker", docker_runner),
    ):
        root = tmp_path / name
        root.mkdir()
        local.init(runner=make_runner(root), pipeline_root=str(root), raise_on_error=True)
        task = tabular_classification()
        outputs = dict(task.outputs)
        assert Path(outputs["predictions_directory"].uri).is_relative_to(root)
        outcomes[name] = _classification_outcome(outputs)

    sub, dock = outcomes["subprocess"], outcomes["docker"]
    assert sub["metrics"]["accuracy"] > 0.9
    assert sub["completion_stats"]["failed_count"] == 0
    assert len(sub["results"]) == sub["completion_stats"]["successful_count"] > 0
    assert len(sub["collected"]) == len(sub["results"])
    assert sub["evaluation_metrics"] and all(sub["evaluation_metrics"].values())
    for key in sub:
        assert dock[key] == sub[key], key


# ---- the TensorFlow variant (containers/Dockerfile.variant) -----------------------------------


@pytest.fixture(scope="session")
def tf_image(image: str) -> str:
    """Builds batchpredict:<version>-tf on top of the default image (one extra layer)."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "BASE_IMAGE": os.environ.get("BATCHPREDICT_TEST_BASE_IMAGE", "local"),
        "BATCHPREDICT_IMAGE_VARIANT": "tf",
    }
    env.pop("BATCHPREDICT_IMAGE_REGISTRY", None)
    proc = subprocess.run(
        [str(ROOT / "containers" / "build_image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(f"containers/build_image.sh (tf variant) failed:\n{proc.stderr[-6000:]}")
    built = proc.stdout.strip().splitlines()
    assert built[-2:] == [image, component_image(registry="", variant="tf")]
    return built[-1]


@pytest.mark.slow
@pytest.mark.docker
def test_tf_variant_predicts_a_savedmodel_as_this_machine_does(
    tf_image: str, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    import base64

    from batchpredict import BatchPredictionJobSpec, run_batch_prediction
    from batchpredict.tasks.train_image import (
        build_model,
        digit_images,
        encode_jpegs,
        export_saved_model,
    )

    model_dir = tmp_path / "model"
    export_saved_model(build_model(), str(model_dir))
    images, _ = digit_images()
    lines = [
        {"bytes_inputs": {"b64": base64.b64encode(j).decode()}} for j in encode_jpegs(images[:20])
    ]
    lines.append({"bytes_inputs": {"b64": base64.b64encode(b"not a jpeg").decode()}})
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tmp_path.chmod(0o777)
    args = [
        "--job-display-name", "tf", "--model-uri", str(model_dir),
        "--gcs-source-uris", str(data), "--output-directory-name", "out",
        "--container-image-uri", "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest",
    ]  # fmt: skip
    _docker(
        "run", "--rm", "--user", "0:0", "-v", f"{tmp_path}:{tmp_path}", tf_image,
        "batchpredict", "predict", *args,
        "--gcs-destination-output-uri-prefix", str(tmp_path / "docker"),
        timeout=300,
    )  # fmt: skip
    run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="tf",
            model_uri=str(model_dir),
            gcs_source_uris=[str(data)],
            gcs_destination_output_uri_prefix=str(tmp_path / "here"),
            output_directory_name="out",
            progress=False,
        )
    )

    def lines_of(root: str, prefix: str) -> list[str]:
        found = []
        for path in sorted((tmp_path / root / "out").glob(prefix + "*")):
            found += path.read_text().splitlines()
        return sorted(found)

    assert len(lines_of("docker", "prediction.results-")) == 20
    assert lines_of("docker", "prediction.results-") == lines_of("here", "prediction.results-")
    errors = [json.loads(e) for e in lines_of("docker", "prediction.errors-")]
    assert [e["error"]["code"] for e in errors] == [3]
    info = json.loads(_docker("image", "inspect", tf_image))[0]
    size_mb = info["Size"] / 1e6
    print(f"\n{tf_image}: {size_mb:.0f} MB")
    assert size_mb < 2500, f"the TensorFlow variant grew to {size_mb:.0f} MB"
