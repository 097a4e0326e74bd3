"""Train image classifier: Google's tutorial CNN, exported as a JPEG-bytes TensorFlow SavedModel."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Model, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train_image_classifier(
    model: Output[Model],
    test_instances: Output[Dataset],
    ground_truth: Output[Dataset],
    epochs: int = 8,
    test_fraction: float = 0.25,
    learning_rate: float = 0.002,
    seed: int = 0,
    serving_image_uri: str = "",
) -> NamedTuple(
    "Outputs",
    [
        ("model_uri", str),
        ("gcs_source_uris", List[str]),
        ("predictions_uri_prefix", str),
        ("test_accuracy", float),
    ],
):
    """Trains the CNN of Google's custom-training tutorial and exports it for tf2-cpu serving.

    The images are scikit-learn's digits (bundled: nothing is downloaded), scaled to 32x32x3 and
    JPEG-encoded. The model is the tutorial's Conv2D(32) -> MaxPool -> Conv2D(32) -> MaxPool ->
    Flatten -> Dense(10, softmax), trained with Adam on the decoded JPEGs. Needs TensorFlow
    (the ``[tf]`` extra).

    Args:
        epochs: Training epochs.
        test_fraction: The share of the 1,797 images held out for batch prediction.
        learning_rate: Adam's learning rate.
        seed: The split and weight seed.
        serving_image_uri: The prediction image to record; empty: Vertex's
            ``us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest``.

    Returns:
        model: The SavedModel directory (``saved_model.pb``; ``serving_default`` takes
            ``bytes_inputs``, a string tensor of JPEG bytes, and returns 10 probabilities);
            metadata ``framework``, ``target``, ``class_labels``, ``containerSpec.imageUri``,
            ``train_accuracy``, ``test_accuracy``.
        test_instances: ``test.jsonl`` (the tutorial's ``{"bytes_inputs": {"b64": ...}}``
            lines) and ``test_keyed.jsonl`` (the same with a ``key``).
        ground_truth: ``ground_truth.parquet`` with ``key`` and ``label``.
        model_uri: The model's URI, for an importer of an UnmanagedContainerModel.
        gcs_source_uris: The keyed instances, for ModelBatchPredictOp (``key_field='key'``).
        predictions_uri_prefix: Where batch predictions go: beside the instances.
        test_accuracy: The held-out accuracy Keras measured.
    """
    from batchpredict.tasks.train_image import run_train_image_classifier

    out = run_train_image_classifier(
        model=model,
        test_instances=test_instances,
        ground_truth=ground_truth,
        epochs=epochs,
        test_fraction=test_fraction,
        learning_rate=learning_rate,
        seed=seed,
        serving_image_uri=serving_image_uri,
    )
    return (out.model_uri, out.gcs_source_uris, out.predictions_uri_prefix, out.test_accuracy)


TrainImageClassifierOp = train_image_classifier
