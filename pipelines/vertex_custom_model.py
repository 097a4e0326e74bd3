"""Batch prediction of a custom model on Vertex AI, in the shape of Google's tutorial.

Google's "custom model training and batch prediction" tutorial imports a model directory written
in the layout of a prebuilt prediction container as an ``UnmanagedContainerModel``, registers it
with ``ModelUploadOp`` and runs ``ModelBatchPredictOp`` on it. This pipeline does the same with
our ``ModelBatchPredictOp`` in place of Google's, so the job runs as a real Vertex AI
BatchPredictionJob with ``backend='vertex'``.

With ``backend='local'`` the same pipeline runs on one machine under ``kfp.local``: Google's
``ModelUploadOp`` is a container component that only runs on Vertex AI (kfp.local's
SubprocessRunner refuses container components, and it would need credentials anyway), so the
pipeline branches on ``backend`` (``dsl.If`` / ``dsl.Else``): on Vertex, import -> upload ->
batch predict on the uploaded ``google.VertexModel``; locally, import -> batch predict on the
imported ``UnmanagedContainerModel`` directly. Both branches read the same inputs and write the
same output layout, so one pipeline serves both, and a local run checks the model, the data and
the arguments before paying for a cloud job.

Parameters a user sets: ``project``, ``location``, ``bucket`` (where predictions go:
``<bucket>/predictions/prediction-<model>-<timestamp>/``), ``model_dir`` (the model directory,
e.g. ``gs://BUCKET/model`` holding ``model.joblib``) and ``gcs_source_uris`` (the instances,
wildcards allowed). The model directory is its own parameter because KFP 2.17 compiles an
f-string ``dsl.importer`` URI into an unresolved channel pattern; instance URIs are a list
parameter because kfp.local does not resolve f-strings inside list arguments.

``python -m pipelines.run vertex_custom_model`` runs the local form on a small generated model
and instances (``local_arguments``); pass ``--param`` to use your own.
"""

import json
import os
from typing import Any, List

from google_cloud_pipeline_components.v1.model import ModelUploadOp
from kfp import dsl

from batchpredict.kfp_artifacts import UnmanagedContainerModel
from components.model_batch_predict import ModelBatchPredictOp

PIPELINE_NAME = "vertex-custom-model-batch-prediction"
# The Vertex AI prebuilt prediction image for scikit-learn 1.3 models (Google publishes these
# images under the :latest tag only); use xgboost-cpu.1-7, tf2-cpu.2-13, ... for other models.
SKLEARN_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
MODEL_DISPLAY_NAME = "batchpredict-custom-model"
JOB_DISPLAY_NAME = "batchpredict-custom-model-batch"
DEFAULT_MACHINE_TYPE = "n1-standard-4"


@dsl.pipeline(name=PIPELINE_NAME)
def vertex_custom_model(
    project: str,
    bucket: str,
    model_dir: str,
    gcs_source_uris: List[str],
    location: str = "us-central1",
    backend: str = "vertex",
    serving_image: str = SKLEARN_SERVING_IMAGE,
    instances_format: str = "jsonl",
    machine_type: str = DEFAULT_MACHINE_TYPE,
    starting_replica_count: int = 1,
    max_replica_count: int = 2,
):
    """Imports a prebuilt-container model directory and batch predicts with it.

    Args:
        project: Google Cloud project of the model and the job.
        bucket: Where predictions go, ``gs://BUCKET[/PREFIX]`` (a local directory with
            ``backend='local'``); the job writes under ``<bucket>/predictions``.
        model_dir: The model directory in a prebuilt prediction container's layout
            (``model.joblib``, ``model.pkl`` or ``model.bst``), ``gs://`` on Vertex AI.
        gcs_source_uris: The instances, e.g. ``['gs://BUCKET/instances/*.jsonl']``.
        location: Vertex AI region of the model and the job.
        backend: ``vertex`` (upload the model, run a Vertex AI BatchPredictionJob) or ``local``
            (predict in this pipeline's step, under kfp.local or any KFP backend).
        serving_image: The model's prebuilt prediction image; also picks the framework locally.
        instances_format: ``jsonl``, ``csv``, ``tf-record``, ... as ModelBatchPredictOp.
        machine_type: Vertex AI machine type of the prediction workers.
        starting_replica_count: Vertex AI workers at the start.
        max_replica_count: Vertex AI workers at most.
    """
    model_import = dsl.importer(
        artifact_uri=model_dir,
        artifact_class=UnmanagedContainerModel,
        metadata={"containerSpec": {"imageUri": serving_image}},
    ).set_display_name("import-model")
    output_prefix = f"{bucket}/predictions"

    with dsl.If(backend == "vertex", name="on-vertex-ai"):
        upload = ModelUploadOp(
            project=project,
            location=location,
            display_name=MODEL_DISPLAY_NAME,
            unmanaged_container_model=model_import.output,
        )
        ModelBatchPredictOp(
            project=project,
            location=location,
            job_display_name=JOB_DISPLAY_NAME,
            model=upload.outputs["model"],
            gcs_source_uris=gcs_source_uris,
            instances_format=instances_format,
            gcs_destination_output_uri_prefix=output_prefix,
            machine_type=machine_type,
            starting_replica_count=starting_replica_count,
            max_replica_count=max_replica_count,
            backend=backend,
        ).set_display_name("batch-predict-on-vertex-ai")
    with dsl.Else(name="on-this-machine"):
        ModelBatchPredictOp(
            project=project,
            location=location,
            job_display_name=JOB_DISPLAY_NAME,
            unmanaged_container_model=model_import.output,
            model_display_name=MODEL_DISPLAY_NAME,
            gcs_source_uris=gcs_source_uris,
            instances_format=instances_format,
            gcs_destination_output_uri_prefix=output_prefix,
            machine_type=machine_type,
            starting_replica_count=starting_replica_count,
            max_replica_count=max_replica_count,
            backend=backend,
        ).set_display_name("batch-predict-locally")


# The generated example of the local form: rows of LOCAL_FEATURES values, in LOCAL_FILES files.
LOCAL_ROWS = 200
LOCAL_FEATURES = 4
LOCAL_FILES = 2


def local_arguments(workdir: str) -> dict[str, Any]:
    """Arguments of a local run: writes a scikit-learn model and JSONL instances into ``workdir``.

    Returns:
        ``project``, ``bucket`` (``<workdir>/bucket``: predictions go to its ``predictions/``),
        ``model_dir``, ``gcs_source_uris`` and ``backend='local'``.
    """
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.random((LOCAL_ROWS, LOCAL_FEATURES)).round(6)
    labels = (features[:, 0] + features[:, 1] > 1).astype(int)
    model_dir = os.path.join(workdir, "model")
    instances = os.path.join(workdir, "bucket", "instances")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(instances, exist_ok=True)
    joblib.dump(LogisticRegression().fit(features, labels), os.path.join(model_dir, "model.joblib"))
    for part, rows in enumerate(np.array_split(features, LOCAL_FILES)):
        with open(os.path.join(instances, f"part-{part}.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows.tolist())
    return {
        "project": "local-project",
        "bucket": os.path.join(workdir, "bucket"),
        "model_dir": model_dir,
        "gcs_source_uris": [os.path.join(instances, "*.jsonl")],
        "backend": "local",
    }
