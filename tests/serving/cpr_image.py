"""A Custom Prediction Routine image made as aiplatform's ``LocalModel.build_cpr_model`` makes one.

``build_cpr_model(src_dir, uri, predictor=IrisPredictor)`` generates its Dockerfile with
``docker_utils.build.make_dockerfile`` and runs ``docker build`` on ``src_dir``. We call the same
``make_dockerfile`` with the same arguments (model_server module as ENTRYPOINT, port 8080,
HANDLER_* and PREDICTOR_* variables, /usr/app workdir, ``COPY . .``), with two differences forced by
a machine that reaches no package index:

- the base image is the project's component image ``batchpredict:<version>`` (Python 3.11,
  google-cloud-aiplatform and scikit-learn at the project's versions) plus a layer that copies
  the pure-Python packages of aiplatform's ``prediction`` extra it lacks (docker, fastapi,
  starlette, uvicorn, annotated-doc) from this environment, instead of build_cpr_model's
  ``pip install 'google-cloud-aiplatform[prediction]>=1.27.0'`` from PyPI;
- ``USER root`` first, since the component image runs as a non-root user and the generated
  Dockerfile's ``mkdir`` needs root (build_cpr_model's default ``python:3.10`` base is root).

The predictor is aiplatform's own scikit-learn predictor as a user's subclass in ``src_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sysconfig
from pathlib import Path

PREDICTION_EXTRA_MISSING = ("docker", "fastapi", "starlette", "uvicorn", "annotated-doc")
IMAGE_SITE_PACKAGES = "/opt/batchpredict/lib/python3.11/site-packages"
PREDICTOR_SOURCE = '''"""A user's CPR predictor: Vertex's scikit-learn predictor, unchanged."""

from google.cloud.aiplatform.prediction.sklearn.predictor import SklearnPredictor


class IrisPredictor(SklearnPredictor):
    """model.joblib -> model.predict(np.asarray(instances)), as Vertex's sklearn container."""
'''
# What LocalModel.get_serving_container_spec() gives for a build_cpr_model image.
CONTAINER_SPEC = {"predictRoute": "/predict", "healthRoute": "/health"}


def _docker_build(tag: str, dockerfile: str, context: Path) -> str:
    proc = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-f", "-", str(context)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=20 * 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker build {tag} failed:\n{dockerfile}\n{proc.stderr[-4000:]}")
    return tag


def _copy_dist(name: str, site: Path) -> None:
    dist = importlib.metadata.distribution(name)
    root = Path(sysconfig.get_paths()["purelib"])
    for f in dist.files or []:
        if f.parts[0] == ".." or "__pycache__" in f.parts:
            continue
        target = site / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)


def build_cpr_image(component_image: str, workdir: Path) -> str:
    """Builds (or finds, by content) the CPR image on ``component_image``; returns its tag."""
    from google.cloud.aiplatform.docker_utils.build import make_dockerfile
    from google.cloud.aiplatform.docker_utils.utils import Package
    from google.cloud.aiplatform.prediction import local_model

    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", component_image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # 1. The base: the component image plus the prediction extra's missing packages.
    base_ctx = workdir / "cpr-base"
    shutil.rmtree(base_ctx, ignore_errors=True)
    for name in PREDICTION_EXTRA_MISSING:
        _copy_dist(name, base_ctx / "site")
    base_dockerfile = f"FROM {component_image}\nUSER root\nCOPY site/ {IMAGE_SITE_PACKAGES}/\n"
    versions = [importlib.metadata.version(n) for n in PREDICTION_EXTRA_MISSING]
    key = hashlib.sha256(f"{image_id}{base_dockerfile}{versions}".encode()).hexdigest()[:12]
    base = _docker_build(f"batchpredict-test-cpr-base:{key}", base_dockerfile, base_ctx)
    # 2. The CPR image: build_cpr_model's Dockerfile on that base, src_dir = the predictor.
    src = workdir / "cpr-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "predictor.py").write_text(PREDICTOR_SOURCE)
    dockerfile = make_dockerfile(
        base,
        Package(
            script=None, package_path=str(src), python_module=local_model._DEFAULT_PYTHON_MODULE
        ),
        "/usr/app",
        "/home",
        exposed_ports=[local_model.DEFAULT_HTTP_PORT],
        environment_variables={
            "HANDLER_MODULE": local_model._DEFAULT_HANDLER_MODULE,
            "HANDLER_CLASS": local_model._DEFAULT_HANDLER_CLASS,
            "PREDICTOR_MODULE": "predictor",
            "PREDICTOR_CLASS": "IrisPredictor",
        },
        pip_command="pip",
        python_command="python",
    )
    key = hashlib.sha256(f"{base}{dockerfile}{PREDICTOR_SOURCE}".encode()).hexdigest()[:12]
    return _docker_build(f"batchpredict-test-cpr:{key}", dockerfile, src)
