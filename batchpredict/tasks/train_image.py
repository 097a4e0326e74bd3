"""Google's tutorial image classifier: a Keras CNN exported as a JPEG-bytes SavedModel.

The training step of Google's "Custom training with prebuilt Google Cloud Pipeline Components"
tutorial (vertex-ai-samples, ``custom_model_training_and_batch_prediction.ipynb``), on data that
ships with scikit-learn instead of CIFAR-10, so nothing is downloaded at run time:

1. ``load_digits`` (1,797 8x8 grey images, 10 classes) scaled to 32x32x3 and JPEG-encoded;
2. the tutorial's CNN (Conv2D(32,3,relu) -> MaxPool -> Conv2D(32,3,relu) -> MaxPool -> Flatten
   -> Dense(10, softmax)), trained for a few epochs on the decoded JPEGs of the training part;
3. a SavedModel whose ``serving_default`` signature takes JPEG bytes (``bytes_inputs``:
   ``tf.string[None]``), decodes and resizes them inside the graph and returns the 10 class
   probabilities, as the tutorial exports it for Vertex's ``tf2-cpu`` prebuilt container;
4. the held-out images as ``test.jsonl`` lines ``{"bytes_inputs": {"b64": "<base64 jpeg>"}}``
   beside it, and their labels.

TensorFlow is imported inside the functions (the ``[tf]`` extra installs it).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchpredict.artifacts import ArtifactLike
from batchpredict.tasks.contract import CLASSIFICATION

IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
# The serving signature's input (the tutorial's name) and the model's own input name.
SERVING_INPUT = "bytes_inputs"
CONCRETE_INPUT = "numpy_inputs"
SIGNATURE = "serving_default"
JPEG_QUALITY = 95
DEFAULT_EPOCHS = 8
DEFAULT_TEST_FRACTION = 0.25
DEFAULT_LEARNING_RATE = 0.002
TRAIN_BATCH_SIZE = 32
TEST_FILE = "test.jsonl"  # the tutorial's lines: {"bytes_inputs": {"b64": ...}}
KEYED_FILE = "test_keyed.jsonl"  # the same with a "key", for ModelBatchPredictOp(key_field="key")
KEY = "key"
LABEL = "label"
GROUND_TRUTH_FILE = "ground_truth.parquet"  # key, label
PREDICTIONS_DIR_NAME = "batch_predictions"
# Vertex AI's prebuilt TensorFlow prediction image, as in the tutorial (published under :latest).
TF_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest"


@dataclass
class ImageTrainResult:
    """What training wrote and how well the model does on the held-out images."""

    model_dir: str
    test_jsonl: str
    test_labels: list[int]
    train_accuracy: float
    test_accuracy: float
    metadata: dict[str, Any]


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 RGB images of 32x32 (nearest-neighbour 4x), and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (n, 8, 8)
    scale = IMAGE_SIZE // grey.shape[1]
    big = grey.repeat(scale, axis=1).repeat(scale, axis=2)
    rgb = np.repeat(big[..., None], CHANNELS, axis=3)
    return rgb, digits.target.astype(np.int64)


def encode_jpegs(images: np.ndarray) -> list[bytes]:
    """Each uint8 HxWx3 image as JPEG bytes."""
    import tensorflow as tf

    return [tf.io.encode_jpeg(img, quality=JPEG_QUALITY).numpy() for img in images]


def preprocess_jpeg(jpeg: Any) -> Any:
    """One JPEG as the model's float input (the tutorial's ``_preprocess``)."""
    import tensorflow as tf

    decoded = tf.io.decode_jpeg(jpeg, channels=CHANNELS)
    decoded = tf.image.convert_image_dtype(decoded, tf.float32)
    return tf.image.resize(decoded, size=(IMAGE_SIZE, IMAGE_SIZE))


def build_model(learning_rate: float = DEFAULT_LEARNING_RATE, seed: int = 0) -> Any:
    """The tutorial's CNN, compiled for sparse labels."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, CHANNELS), name=CONCRETE_INPUT),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
        metrics=["accuracy"],
    )
    return model


def export_saved_model(model: Any, path: str) -> None:
    """Saves ``model`` with the tutorial's JPEG-bytes ``serving_default`` signature."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serving_fn(bytes_inputs):
        images = tf.map_fn(
            preprocess_jpeg,
            bytes_inputs,
            fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.float32),
        )
        return model(images, training=False)

    module = tf.Module()
    module.model = model
    module.serve = serving_fn
    tf.saved_model.save(module, path, signatures={SIGNATURE: serving_fn})


def write_instances(jpegs: list[bytes], path: str, keys: list[int] | None = None) -> None:
    """``{"bytes_inputs": {"b64": ...}}`` lines, the tutorial's batch prediction input.

    With ``keys``, each line also carries ``"key"``: ModelBatchPredictOp(key_field="key") strips
    it before the model sees the instance and writes it on the output line instead.
    """
    with open(path, "w") as f:
        for i, jpeg in enumerate(jpegs):
            line: dict[str, Any] = {} if keys is None else {KEY: keys[i]}
            line[SERVING_INPUT] = {"b64": base64.b64encode(jpeg).decode("ascii")}
            f.write(json.dumps(line) + "\n")


def train_image_classifier(
    model_dir: str,
    test_dir: str,
    epochs: int = DEFAULT_EPOCHS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
) -> ImageTrainResult:
    """Trains the tutorial's CNN and writes the SavedModel and the test instances.

    Args:
        model_dir: Where the SavedModel goes (``saved_model.pb`` at its root).
        test_dir: Where ``test.jsonl`` (the tutorial's lines), ``test_keyed.jsonl`` (with a key
            per line) and ``ground_truth.parquet`` (key, label) go.
        epochs: Training epochs.
        test_fraction: The share of images held out (stratified).
        learning_rate: Adam's learning rate.
        seed: Seeds the split and the weights.
    """
    import tensorflow as tf
    from sklearn.model_selection import train_test_split

    images, labels = digit_images()
    jpegs = encode_jpegs(images)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    # Train on what serving sees: the decoded JPEGs.
    x_train = tf.stack([preprocess_jpeg(jpegs[i]) for i in train_idx]).numpy()
    x_test = tf.stack([preprocess_jpeg(jpegs[i]) for i in test_idx]).numpy()
    model = build_model(learning_rate, seed)
    history = model.fit(
        x_train,
        labels[train_idx],
        epochs=epochs,
        batch_size=TRAIN_BATCH_SIZE,
        shuffle=True,
        verbose=0,
    )
    _, test_accuracy = model.evaluate(x_test, labels[test_idx], verbose=0)
    os.makedirs(model_dir, exist_ok=True)
    export_saved_model(model, model_dir)
    os.makedirs(test_dir, exist_ok=True)
    test_jsonl = os.path.join(test_dir, TEST_FILE)
    test_jpegs = [jpegs[i] for i in test_idx]
    test_labels = [int(v) for v in labels[test_idx]]
    write_instances(test_jpegs, test_jsonl)
    write_instances(test_jpegs, os.path.join(test_dir, KEYED_FILE), list(range(len(test_idx))))
    metadata = {
        "framework": "tensorflow",
        "target": LABEL,
        "problem_type": CLASSIFICATION,
        "framework_version": tf.__version__,
        "containerSpec": {"imageUri": TF_SERVING_IMAGE},
        "signature": SIGNATURE,
        "input": SERVING_INPUT,
        "class_labels": list(range(NUM_CLASSES)),
        "train_images": len(train_idx),
        "test_images": len(test_idx),
        "epochs": epochs,
    }
    return ImageTrainResult(
        model_dir=model_dir,
        test_jsonl=test_jsonl,
        test_labels=test_labels,
        train_accuracy=float(history.history["accuracy"][-1]),
        test_accuracy=float(test_accuracy),
        metadata=metadata,
    )


@dataclass
class ImageTrainOutputs:
    """The component's output parameters."""

    model_uri: str
    gcs_source_uris: list[str]
    predictions_uri_prefix: str
    test_accuracy: float


def run_train_image_classifier(
    *,
    model: ArtifactLike,
    test_instances: ArtifactLike,
    ground_truth: ArtifactLike,
    epochs: int = DEFAULT_EPOCHS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    serving_image_uri: str = "",
) -> ImageTrainOutputs:
    """The Train image classifier component: train, export, write instances and ground truth.

    Returns:
        The model's URI (for an importer of an ``UnmanagedContainerModel``), the keyed test
        instances' URI (``gcs_source_uris``), where batch predictions go (beside the instances)
        and the held-out accuracy Keras measured.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchpredict.errors import UserError

    if epochs < 1:
        raise UserError(f"epochs must be at least 1; got {epochs}.")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be between 0 and 1 (exclusive); got {test_fraction}.")
    result = train_image_classifier(
        model.path, test_instances.path, epochs, test_fraction, learning_rate, seed
    )
    image = serving_image_uri or TF_SERVING_IMAGE
    meta = dict(result.metadata, containerSpec={"imageUri": image})
    meta["train_accuracy"] = round(result.train_accuracy, 6)
    meta["test_accuracy"] = round(result.test_accuracy, 6)
    model.metadata.update(meta)
    os.makedirs(ground_truth.path, exist_ok=True)
    table = pa.table(
        {KEY: list(range(len(result.test_labels))), LABEL: result.test_labels},
    )
    pq.write_table(table, os.path.join(ground_truth.path, GROUND_TRUTH_FILE))
    ground_truth.metadata.update(
        {"target_column": LABEL, "key_column": KEY, "rows": table.num_rows}
    )
    test_instances.metadata.update({"rows": table.num_rows, "key_field": KEY, "format": "jsonl"})
    base = test_instances.uri.rstrip("/")
    return ImageTrainOutputs(
        model_uri=model.uri,
        gcs_source_uris=[f"{base}/{KEYED_FILE}"],
        predictions_uri_prefix=f"{base.rsplit('/', 1)[0]}/{PREDICTIONS_DIR_NAME}",
        test_accuracy=result.test_accuracy,
    )
