"""A Custom Prediction Routine image (as LocalModel.build_cpr_model makes it) in its container.

The same scikit-learn model, the same job: in-process and through the CPR container give
byte-identical results files.
"""

from __future__ import annotations

import json
import os

import pytest

from batchpredict.backends import run_batch_prediction
from batchpredict.spec import BatchPredictionJobSpec
from tests.serving.cpr_image import CONTAINER_SPEC, build_cpr_image
from tests.test_image import image  # noqa: F401 - the component image fixture (session)
from tests.test_serving_container import our_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def cpr_image(image, tmp_path_factory) -> str:  # noqa: F811
    return build_cpr_image(image, tmp_path_factory.mktemp("cpr"))


def run(tmp_path, name, data, model_dir, **kw):
    return run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name=name,
            gcs_source_uris=[data],
            gcs_destination_output_uri_prefix=str(tmp_path / name),
            output_directory_name="predictions",
            model_uri=model_dir,
            workers=1,
            progress=False,
            **kw,
        )
    )


def test_cpr_container_output_is_byte_identical_to_in_process(
    tmp_path, iris, sklearn_model_dir, cpr_image
):
    X, _ = iris
    arrays = tmp_path / "arrays.jsonl"
    with open(arrays, "w") as f:
        for row in X.tolist():
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps([1.0, 2.0]) + "\n")  # wrong arity: fails alone on both paths
    local = run(tmp_path, "in-process", str(arrays), sklearn_model_dir)
    served = run(
        tmp_path,
        "container",
        str(arrays),
        sklearn_model_dir,
        serving_mode="container",
        container_image_uri=cpr_image,
        # No VERTEX_CPR_WEB_CONCURRENCY: the backend's default of one uvicorn worker keeps
        # uvicorn's supervisor from killing workers still importing on a loaded machine.
        model_metadata={"containerSpec": {"imageUri": cpr_image, **CONTAINER_SPEC}},
    )
    assert served.stats["model_framework"] == "container"
    assert local.completion_stats == served.completion_stats
    assert served.completion_stats["failed_count"] == 1
    names = sorted(os.listdir(local.gcs_output_directory))
    results = [n for n in names if n.startswith("prediction.results-")]
    assert results == ["prediction.results-00000-of-00001"]
    for name in results:
        with (
            open(os.path.join(local.gcs_output_directory, name), "rb") as a,
            open(os.path.join(served.gcs_output_directory, name), "rb") as b,
        ):
            assert a.read() == b.read()
    # The bad instance: code 3 in-process (ValueError); the CPR server answers it with HTTP 500,
    # so through the container it is code 13, as on Vertex.
    with open(os.path.join(served.gcs_output_directory, "prediction.errors-00000-of-00001")) as f:
        (error,) = [json.loads(line) for line in f]
    assert error["instance"] == [1.0, 2.0] and error["error"]["code"] == 13
    assert our_containers("container") == []
