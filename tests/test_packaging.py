"""One `pip install` gives the runtime and the component definitions, outside this repository.

Builds the wheel, installs it (without its dependencies, which are taken from this environment so
the test stays quick) into a fresh virtual environment in a temporary directory, and runs a user's
pipeline written against the installed package both ways: importing ``batchpredict_components``,
and loading its compiled YAML. Nothing of the repository is on the path there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

USER_PIPELINE = """
import json
import sys

from kfp import components, dsl, local

import batchpredict
import batchpredict_components
from batchpredict_components import ModelBatchPredictOp, spec_path

way, model_dir, instances, out, root = sys.argv[1:6]
if way == "import":
    batch_predict = ModelBatchPredictOp
else:
    batch_predict = components.load_component_from_file(spec_path("model_batch_predict"))


@dsl.pipeline
def my_pipeline(model_dir: str, instances: str, out: str):
    model = dsl.importer(artifact_uri=model_dir, artifact_class=dsl.Model)
    batch_predict(
        job_display_name="mine",
        model=model.output,
        gcs_source_uris=[instances],
        gcs_destination_output_uri_prefix=out,
        key_field="id",
        instance_type="array",
        included_fields=["a", "b", "c", "d"],
        workers=1,
    )


local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
my_pipeline(model_dir=model_dir, instances=instances, out=out)
print(json.dumps({"runtime": batchpredict.__file__, "components": batchpredict_components.__file__,
                  "spec": spec_path("model_batch_predict")}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [BIN / "python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("batchpredict-*.whl")
    return found


def test_wheel_holds_the_runtime_the_components_and_their_specs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "batchpredict/component_entry.py" in names
    assert "batchpredict_components/model_batch_predict.py" in names
    assert "batchpredict_components/specs/model_batch_predict.yaml" in names
    assert not any(n.startswith(("components/", "pipelines/", "tests/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    )
    requires = [ln for ln in metadata.decode().splitlines() if ln.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("Requires-Dist: xgboost-cpu") for r in runtime)  # no NCCL
    for dev_only in ("pytest", "ruff", "docker", "google-cloud-pipeline-components", "tensorflow"):
        assert not any(dev_only in r for r in runtime), dev_only


@pytest.fixture(scope="module")
def user_env(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the repository: the wheel, and this environment's dependencies."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [BIN / "uv", "pip", "install", "-q", "--no-deps", "--python", str(python), str(wheel)],
        check=True,
        timeout=120,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (kfp, scikit-learn, ...) from this environment, after the venv's own
    # packages; as a plain path, so this environment's editable install of the repo stays out.
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("way", ["import", "yaml"])
def test_a_users_pipeline_runs_against_the_installed_package(
    user_env, way, tmp_path, sklearn_model_dir, iris
):
    X, _ = iris
    data = tmp_path / "instances.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, **dict(zip("abcd", row))}) + "\n"
            for i, row in enumerate(X.tolist())
        )
    )
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "run.py").write_text(USER_PIPELINE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(user_env), "run.py", way, sklearn_model_dir, str(data), str(tmp_path / "out")]
        + [str(tmp_path / "root")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    where = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in where.values():  # the installed copies, not this repository's
        assert str(user_env.parent.parent) in path and str(ROOT) not in path, where
    (out_dir,) = (tmp_path / "out").iterdir()
    keys = []
    for shard in sorted(out_dir.glob("prediction.results-*")):
        keys += [json.loads(line)["key"] for line in shard.read_text().splitlines()]
    assert sorted(keys) == list(range(150))
