"""Google's "Custom training with prebuilt Google Cloud Pipeline Components" tutorial, locally.

The tutorial (vertex-ai-samples, ``custom_model_training_and_batch_prediction.ipynb``) trains a
Keras CNN, exports a SavedModel whose ``serving_default`` takes JPEG bytes, imports it as an
``UnmanagedContainerModel`` with the ``tf2-cpu`` prediction image, and batch predicts
``{"bytes_inputs": {"b64": ...}}`` lines with ``ModelBatchPredictOp``. Here the same steps run on
one machine under ``kfp.local`` (``python -m pipelines.run custom_model_training``):

train (the tutorial's CNN on scikit-learn's digits as 32x32 JPEGs) -> import the model
directory as an UnmanagedContainerModel (tf2-cpu image) -> ModelBatchPredictOp (our TensorFlow
handler, TF Serving's semantics) -> collect (join with the labels by key) -> evaluate (accuracy,
10-class confusion matrix, HTML report).

The Vertex AI form, with training as a Vertex CustomJob and ``ModelUploadOp``, is
``pipelines/custom_model_training_vertex.py``.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from batchpredict.kfp_artifacts import UnmanagedContainerModel, VertexBatchPredictionJob
from components.collect_predictions import CollectPredictionsOp
from components.evaluate import EvaluateOp
from components.model_batch_predict import ModelBatchPredictOp
from components.train_image_classifier import TrainImageClassifierOp

PIPELINE_NAME = "custom-model-training-batch-prediction"
# Vertex AI's prebuilt TensorFlow prediction image, as in the tutorial (published as :latest only).
TF_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest"
MODEL_DISPLAY_NAME = "custom-model-training-cnn"
JOB_DISPLAY_NAME = "custom-model-training-batch-predict"
KEY_FIELD = "key"
CLASS_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


class Outputs(NamedTuple):
    """The pipeline's outputs, for local runs to print."""

    model: Model
    test_instances: Dataset
    ground_truth: Dataset
    unmanaged_container_model: UnmanagedContainerModel
    batchpredictionjob: VertexBatchPredictionJob
    predictions_directory: Artifact
    collected: Dataset
    metrics: Metrics
    classification_metrics: ClassificationMetrics
    evaluation_metrics: Artifact
    report: HTML


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Google's custom model training tutorial: a Keras CNN exported as a JPEG-bytes "
    "SavedModel, batch predicted from an UnmanagedContainerModel (tf2-cpu) and evaluated.",
)
def custom_model_training(
    epochs: int = 8,
    test_fraction: float = 0.25,
    seed: int = 0,
    serving_image: str = TF_SERVING_IMAGE,
    predictions_uri_prefix: str = "",
    workers: int = 1,
    min_accuracy: float = 0.5,
) -> Outputs:
    """Train -> import (UnmanagedContainerModel) -> ModelBatchPredictOp -> collect -> evaluate.

    Args:
        epochs: Training epochs of the CNN.
        test_fraction: The share of the images held out and batch predicted.
        seed: The split and weight seed.
        serving_image: The model's serving image; a ``tf2-`` image runs it as TF Serving would.
        predictions_uri_prefix: Where batch prediction writes; empty: the batch-predict step's
            own directory.
        workers: Local batch prediction worker processes (0: one per core); one suits a few
            hundred images, where starting a worker (and TensorFlow in it) costs more than
            predicting.
        min_accuracy: The quality gate on held-out accuracy (chance is 0.1).
    """
    trained = TrainImageClassifierOp(
        epochs=epochs, test_fraction=test_fraction, seed=seed, serving_image_uri=serving_image
    )
    model_import = dsl.importer(
        artifact_uri=trained.outputs["model_uri"],
        artifact_class=UnmanagedContainerModel,
        metadata={"containerSpec": {"imageUri": serving_image}},
    ).set_display_name("import-unmanaged-model")
    predicted = ModelBatchPredictOp(
        job_display_name=JOB_DISPLAY_NAME,
        unmanaged_container_model=model_import.output,
        model_display_name=MODEL_DISPLAY_NAME,
        gcs_source_uris=trained.outputs["gcs_source_uris"],
        instances_format="jsonl",
        predictions_format="jsonl",
        key_field=KEY_FIELD,
        gcs_destination_output_uri_prefix=predictions_uri_prefix,
        workers=workers,
    )
    collected = CollectPredictionsOp(
        predictions=predicted.outputs["gcs_output_directory"],
        ground_truth=trained.outputs["ground_truth"],
        model=trained.outputs["model"],
        key_column=KEY_FIELD,
        class_labels=CLASS_LABELS,
    )
    evaluated = EvaluateOp(
        predictions=collected.outputs["collected"],
        gate_metric="accuracy",
        gate_threshold=min_accuracy,
        title="Custom model training (Google's tutorial CNN): held-out batch predictions",
    )
    return Outputs(
        model=trained.outputs["model"],
        test_instances=trained.outputs["test_instances"],
        ground_truth=trained.outputs["ground_truth"],
        unmanaged_container_model=model_import.output,
        batchpredictionjob=predicted.outputs["batchpredictionjob"],
        predictions_directory=predicted.outputs["gcs_output_directory"],
        collected=collected.outputs["collected"],
        metrics=evaluated.outputs["metrics"],
        classification_metrics=evaluated.outputs["classification_metrics"],
        evaluation_metrics=evaluated.outputs["evaluation_metrics"],
        report=evaluated.outputs["report"],
    )
