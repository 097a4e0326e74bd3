"""What ModelBatchPredictOp's body does, as plain Python (testable without KFP).

The KFP component in ``components/model_batch_predict.py`` is a thin definition: its body passes
its inputs and output artifacts here. Artifacts are duck-typed (``uri``, ``metadata``), so tests
can call this with simple stand-ins.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from batchpredict.artifacts import ArtifactLike, container_image_uri
from batchpredict.backends import run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.kfp_outputs import ArtifactOut, component_outputs
from batchpredict.result import JobResult
from batchpredict.spec import BatchPredictionJobSpec

log = logging.getLogger(__name__)


def model_batch_predict(
    *,
    model: ArtifactLike | None,
    unmanaged_container_model: ArtifactLike | None,
    gcp_resources: str,
    batchpredictionjob: ArtifactLike,
    gcs_output_directory: ArtifactLike,
    bigquery_output_table: ArtifactLike,
    **inputs: Any,
) -> JobResult:
    """Runs the job described by the component's inputs and fills its outputs.

    Args:
        model: a ``google.VertexModel`` (metadata ``resourceName``) or a local model artifact
            (``system.Model``) whose URI is the model directory.
        unmanaged_container_model: a model directory plus ``containerSpec.imageUri``.
        gcp_resources: the path of the ``gcp_resources`` output file.
        batchpredictionjob: the ``google.VertexBatchPredictionJob`` output.
        gcs_output_directory: the output directory artifact.
        bigquery_output_table: the ``google.BQTable`` output.
        **inputs: every other component input, by its name (BatchPredictionJobSpec fields).

    Returns:
        The job's result.
    """
    spec = BatchPredictionJobSpec(**inputs)
    _apply_model_artifacts(spec, model, unmanaged_container_model)
    if not spec.gcs_destination_output_uri_prefix and not spec.bigquery_destination_output_uri:
        spec.gcs_destination_output_uri_prefix = step_directory(gcs_output_directory)
    result = run_batch_prediction(spec, gcp_resources_path=gcp_resources)
    outputs = component_outputs(result)
    os.makedirs(os.path.dirname(gcp_resources) or ".", exist_ok=True)
    with open(gcp_resources, "w") as f:
        f.write(outputs.gcp_resources)
    _fill(batchpredictionjob, outputs.batchpredictionjob)
    for artifact, out in (
        (gcs_output_directory, outputs.gcs_output_directory),
        (bigquery_output_table, outputs.bigquery_output_table),
    ):
        if out is not None:
            _fill(artifact, out)
        else:
            _touch(artifact)
    log.info("Batch prediction finished: %s", result.to_dict())
    return result


def step_directory(artifact: ArtifactLike) -> str:
    """This step's own output directory: the one holding its ``gcs_output_directory`` output.

    The default output prefix when neither destination is given, so that predictions land under
    the batch-predict step (``<pipeline_root>/<run>/<task>/prediction-<model>-<timestamp>``).
    """
    uri = artifact.uri.rstrip("/")
    if not uri:
        raise UserError(
            "Give gcs_destination_output_uri_prefix or bigquery_destination_output_uri; both are "
            "empty and this step has no output directory to default to."
        )
    return uri.rsplit("/", 1)[0]


def _apply_model_artifacts(
    spec: BatchPredictionJobSpec,
    model: ArtifactLike | None,
    unmanaged: ArtifactLike | None,
) -> None:
    """Resolves the model inputs into the spec's model fields."""
    if model is not None and unmanaged is not None:
        raise UserError(
            "Give either model or unmanaged_container_model, not both; got model="
            f"{model.uri!r} and unmanaged_container_model={unmanaged.uri!r}."
        )
    if model is not None:
        resource_name = (model.metadata or {}).get("resourceName", "")
        if resource_name:
            spec.model_resource_name = resource_name
        else:
            spec.model_uri = model.uri
            spec.model_metadata = dict(model.metadata or {})
        spec.container_image_uri = spec.container_image_uri or container_image_uri(model.metadata)
        spec.model_display_name = spec.model_display_name or (model.metadata or {}).get(
            "displayName", ""
        )
    elif unmanaged is not None:
        spec.model_uri = unmanaged.uri
        spec.model_metadata = dict(unmanaged.metadata or {})
        spec.container_image_uri = spec.container_image_uri or container_image_uri(
            unmanaged.metadata
        )


def _touch(artifact: ArtifactLike) -> None:
    """Leaves an empty file for an output the job did not produce.

    KFP lightweight components always declare every output; kfp.local's cache treats a cached
    output whose file is missing as deleted and reruns the step, so unused outputs get a file.
    """
    path = getattr(artifact, "path", "")
    if path and not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w"):
            pass


def _fill(artifact: ArtifactLike, out: ArtifactOut) -> None:
    artifact.uri = out.uri
    artifact.metadata.update(out.metadata)
