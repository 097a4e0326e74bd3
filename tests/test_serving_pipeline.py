"""The component under kfp.local's SubprocessRunner serves an UnmanagedContainerModel's image."""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.
import json
import os

import pytest
from kfp import dsl, local

from batchpredict.kfp_artifacts import UnmanagedContainerModel
from components.model_batch_predict import ModelBatchPredictOp
from tests.conftest import write_jsonl
from tests.test_serving_container import our_containers, server_image  # noqa: F401

pytestmark = pytest.mark.docker


def test_component_serves_the_artifacts_container_under_subprocess_runner(
    tmp_path,
    server_image,  # noqa: F811
):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "a": i, "b": 1} for i in range(10)])
    spec = {"imageUri": server_image, "predictRoute": "/p", "healthRoute": "/h"}

    @dsl.pipeline(name="serving-container-under-kfp-local")
    def serve(model_dir: str, data: str, out_prefix: str):
        model = dsl.importer(
            artifact_uri=model_dir,
            artifact_class=UnmanagedContainerModel,
            metadata={"containerSpec": spec},
        )
        ModelBatchPredictOp(
            job_display_name="kfp-serving",
            unmanaged_container_model=model.output,
            gcs_source_uris=[data],
            gcs_destination_output_uri_prefix=out_prefix,
            output_directory_name="out",
            key_field="id",
            instance_type="array",
            included_fields=["a", "b"],
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    serve(model_dir=str(model_dir), data=data, out_prefix=str(tmp_path / "predictions"))
    out = tmp_path / "predictions" / "out"
    lines = []
    for name in sorted(os.listdir(out)):
        if name.startswith("prediction.results-"):
            lines += [json.loads(line) for line in (out / name).read_text().splitlines()]
    assert sorted((r["key"], r["prediction"]) for r in lines) == [(i, i + 1) for i in range(10)]
    assert our_containers("kfp-serving") == []
