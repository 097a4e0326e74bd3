"""Google's custom model training tutorial on Vertex AI: CustomJob training, ModelUploadOp, batch.

The same steps as ``pipelines/custom_model_training.py`` (the local form), in the tutorial's
Vertex shape: the training component runs as a Vertex AI CustomJob through GCPC's
``create_custom_training_job_from_component`` (the current name of
``create_custom_training_job_op_from_component``, which GCPC keeps as a deprecated alias), the
SavedModel is imported as an ``UnmanagedContainerModel`` with the ``tf2-cpu`` prediction image
and registered with ``ModelUploadOp``, and ``ModelBatchPredictOp`` (ours, ``backend='vertex'``)
runs a Vertex AI BatchPredictionJob on the uploaded model; collect and evaluate follow as
pipeline steps. Compile it against your registry's image, which must include TensorFlow (see the
README: the component image's TensorFlow variant), and submit it with
``aiplatform.PipelineJob``.
"""

from google_cloud_pipeline_components.v1.custom_job import (
    create_custom_training_job_from_component,
)
from google_cloud_pipeline_components.v1.model import ModelUploadOp
from kfp import dsl

from batchpredict.kfp_artifacts import UnmanagedContainerModel
from components.collect_predictions import CollectPredictionsOp
from components.evaluate import EvaluateOp
from components.model_batch_predict import ModelBatchPredictOp
from components.train_image_classifier import TrainImageClassifierOp

# pipelines.run lists this pipeline apart and refuses to run it under kfp.local with this text.
VERTEX_ONLY = (
    "its training step is a Vertex AI CustomJob and its model is registered with ModelUploadOp, "
    "which kfp.local cannot run. Run the same steps locally with `python -m pipelines.run "
    "custom_model_training`; submit this one to Vertex AI as its compiled "
    "pipelines/custom_model_training_vertex.yaml with aiplatform.PipelineJob (README: Google's "
    "TensorFlow tutorial, locally)."
)
PIPELINE_NAME = "custom-model-training-batch-prediction-vertex"
TF_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest"
MODEL_DISPLAY_NAME = "custom-model-training-cnn"
JOB_DISPLAY_NAME = "custom-model-training-batch-predict"
TRAINING_DISPLAY_NAME = "model-training"
TRAINING_MACHINE_TYPE = "n1-standard-4"
DEFAULT_MACHINE_TYPE = "n1-standard-4"
KEY_FIELD = "key"
CLASS_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

# The training component as a Vertex AI CustomJob (one n1-standard-4 replica). No persistent
# resource: GCPC's default is a run-level placeholder that only Vertex resolves, which
# tests/test_vertex_readiness.py keeps out of every spec.
CustomTrainingJobOp = create_custom_training_job_from_component(
    TrainImageClassifierOp,
    display_name=TRAINING_DISPLAY_NAME,
    machine_type=TRAINING_MACHINE_TYPE,
    replica_count=1,
    persistent_resource_id="",
)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Google's custom model training tutorial on Vertex AI: CustomJob training, "
    "ModelUploadOp (tf2-cpu), ModelBatchPredictOp, evaluation.",
)
def custom_model_training_vertex(
    project: str,
    location: str = "us-central1",
    epochs: int = 8,
    test_fraction: float = 0.25,
    seed: int = 0,
    serving_image: str = TF_SERVING_IMAGE,
    machine_type: str = DEFAULT_MACHINE_TYPE,
    starting_replica_count: int = 1,
    max_replica_count: int = 1,
    min_accuracy: float = 0.5,
):
    """CustomJob training -> import -> ModelUploadOp -> ModelBatchPredictOp -> collect -> evaluate.

    Args:
        project: Google Cloud project of the training job, the model and the batch job.
        location: Vertex AI region.
        epochs: Training epochs of the CNN.
        test_fraction: The share of the images held out and batch predicted.
        seed: The split and weight seed.
        serving_image: The model's prebuilt prediction image (the tutorial's ``tf2-cpu``).
        machine_type: Machine type of the batch prediction workers.
        starting_replica_count: Batch prediction workers at the start.
        max_replica_count: Batch prediction workers at most.
        min_accuracy: The quality gate on held-out accuracy (chance is 0.1).
    """
    trained = CustomTrainingJobOp(
        project=project,
        location=location,
        epochs=epochs,
        test_fraction=test_fraction,
        seed=seed,
        serving_image_uri=serving_image,
    ).set_display_name("model-training")
    model_import = dsl.importer(
        artifact_uri=trained.outputs["model_uri"],
        artifact_class=UnmanagedContainerModel,
        metadata={"containerSpec": {"imageUri": serving_image}},
    ).set_display_name("import-unmanaged-model")
    upload = ModelUploadOp(
        project=project,
        location=location,
        display_name=MODEL_DISPLAY_NAME,
        unmanaged_container_model=model_import.output,
    )
    predicted = ModelBatchPredictOp(
        project=project,
        location=location,
        job_display_name=JOB_DISPLAY_NAME,
        model=upload.outputs["model"],
        gcs_source_uris=trained.outputs["gcs_source_uris"],
        instances_format="jsonl",
        predictions_format="jsonl",
        key_field=KEY_FIELD,
        gcs_destination_output_uri_prefix=trained.outputs["predictions_uri_prefix"],
        machine_type=machine_type,
        starting_replica_count=starting_replica_count,
        max_replica_count=max_replica_count,
        backend="vertex",
    ).set_display_name("batch-predict")
    collected = CollectPredictionsOp(
        predictions=predicted.outputs["gcs_output_directory"],
        ground_truth=trained.outputs["ground_truth"],
        model=trained.outputs["model"],
        key_column=KEY_FIELD,
        class_labels=CLASS_LABELS,
    )
    EvaluateOp(
        predictions=collected.outputs["collected"],
        gate_metric="accuracy",
        gate_threshold=min_accuracy,
        title="Custom model training (Google's tutorial CNN) on Vertex AI",
    )
