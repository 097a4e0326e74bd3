"""Model handlers: one per framework, with the predict semantics of Vertex's serving containers.

``FRAMEWORKS`` is the one table of frameworks: the files that mark a model directory, the serving
image name fragments that choose it, the handler that runs it and the extra to install. Model
resolution and handler loading read the table; adding a framework is one module (a
``ModelHandler`` subclass in ``batchpredict/models/``), one row here and its tests. The framework
is chosen once, from the serving image URI or the directory's files, never per batch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from batchpredict.errors import UserError
from batchpredict.io import fs
from batchpredict.models.base import ModelHandler, ModelRef
from batchpredict.models.container import FRAMEWORK as CONTAINER
from batchpredict.models.container import ContainerHandler
from batchpredict.models.cpr import CustomPredictorHandler, import_predictor_class
from batchpredict.models.sklearn import MODEL_FILES as SKLEARN_FILES
from batchpredict.models.sklearn import SklearnHandler
from batchpredict.models.tensorflow import SAVED_MODEL_FILES, TensorFlowHandler
from batchpredict.models.xgboost import NATIVE_FILES as XGBOOST_NATIVE_FILES
from batchpredict.models.xgboost import XGBoostHandler
from batchpredict.spec import SERVING_MODES

__all__ = [
    "CONTAINER",
    "FRAMEWORKS",
    "SERVING_MODES",
    "Framework",
    "ModelHandler",
    "ModelRef",
    "framework",
    "handler_class",
    "import_predictor_class",
    "load_handler",
    "resolve_model",
]

# The framework of a Custom Prediction Routine, chosen by predictor_class alone.
CUSTOM = "custom"


@dataclass(frozen=True)
class Framework:
    """One row of the framework table."""

    name: str  # ModelRef.framework and completion_stats' model_framework
    title: str  # for people: "TensorFlow SavedModel"
    marker_files: tuple[str, ...]  # any of these in a model directory chooses this framework
    image_fragments: tuple[str, ...]  # any of these in the serving image URI chooses it
    handler: type[ModelHandler] | None  # None: recognised, but not run locally (yet)
    model_files: tuple[str, ...] = ()  # files it loads when the image chose it (default: markers)
    extra: str = ""  # pip extra that installs the framework: batchpredict[<extra>]

    @property
    def loads(self) -> tuple[str, ...]:
        """The files this framework's handler can load."""
        return self.model_files or self.marker_files


# Order matters for directories: a native XGBoost file wins over a pickle (a pickled XGBoost model
# is recognised on load, see SklearnHandler.specialize).
FRAMEWORKS: tuple[Framework, ...] = (
    Framework(
        "xgboost",
        "XGBoost",
        XGBOOST_NATIVE_FILES,
        ("/xgboost-",),
        XGBoostHandler,
        model_files=XGBOOST_NATIVE_FILES + SKLEARN_FILES,
    ),
    Framework("sklearn", "scikit-learn", SKLEARN_FILES, ("/sklearn-",), SklearnHandler),
    Framework(
        "tensorflow",
        "TensorFlow SavedModel",
        SAVED_MODEL_FILES,
        ("/tf2-", "/tf-"),
        TensorFlowHandler,
        extra="tf",
    ),
    Framework("pytorch", "PyTorch TorchServe archive", ("model.mar",), ("/pytorch-",), None),
    Framework(CUSTOM, "Custom Prediction Routine", (), (), CustomPredictorHandler),
    # Any serving image, run by Docker under Vertex's custom-container contract; chosen by
    # serving_mode (or by an image no in-process handler runs), never by files.
    Framework(CONTAINER, "serving container", (), (), ContainerHandler),
)


def framework(name: str) -> Framework:
    """The table row named ``name``."""
    for row in FRAMEWORKS:
        if row.name == name:
            return row
    raise KeyError(f"No framework {name!r}; known: {[f.name for f in FRAMEWORKS]}")


def handler_class(ref: ModelRef) -> type[ModelHandler]:
    """The handler class that runs ``ref`` (before it is loaded)."""
    handler = framework(ref.framework).handler
    if handler is None:  # resolve_model never returns such a ref
        raise UserError(f"The {ref.framework} framework does not run locally.")
    return handler


def supported_frameworks() -> str:
    """Every framework that runs locally and what chooses it, for error messages."""
    parts = []
    for row in FRAMEWORKS:
        if row.handler is None:
            continue
        if row.name == CUSTOM:
            parts.append(f"{row.title} (predictor_class='module:Class')")
        elif row.name == CONTAINER:
            parts.append(f"any {row.title} (container_image_uri, serving_mode='container')")
        else:
            parts.append(f"{row.title} ({', '.join(row.marker_files)})")
    return "; ".join(parts)


def resolve_model(
    model_uri: str,
    container_image_uri: str = "",
    predictor_class: str = "",
    return_probabilities: bool = False,
    staging_dir: str | None = None,
    serving_mode: str = "auto",
) -> ModelRef:
    """Finds the model directory's framework and stages a remote directory to local disk.

    The framework is, in order: the serving container when ``serving_mode='container'``; a
    Custom Prediction Routine when ``predictor_class`` is given; the framework whose serving image
    fragment is in ``container_image_uri``; with ``serving_mode='auto'``, the serving container
    when that image is of no framework run in-process; the first framework whose marker file is in
    the directory.

    Raises:
        UserError: the directory is missing, holds no file the chosen framework loads, or is of a
            framework that does not run locally; the message names what each framework needs.
    """
    if serving_mode not in SERVING_MODES:
        raise UserError(
            f"Unknown serving_mode={serving_mode!r}; expected one of "
            + ", ".join(repr(m) for m in SERVING_MODES)
            + "."
        )
    if serving_mode == "container":
        if not container_image_uri:
            raise UserError(
                "serving_mode='container' runs the model's serving image, but none is given: set "
                "container_image_uri (or the model artifact's metadata containerSpec.imageUri)."
            )
        if predictor_class:
            raise UserError(
                f"predictor_class={predictor_class!r} runs a Predictor in this process, and "
                "serving_mode='container' runs the serving image: give one of them (a Custom "
                "Prediction Routine image built with LocalModel.build_cpr_model runs in its "
                "container without predictor_class)."
            )
    local_dir, staged = _stage(model_uri, staging_dir)
    if serving_mode == "container":
        return _container_ref(local_dir, model_uri, container_image_uri, staged)
    files = set(os.listdir(local_dir))
    if predictor_class:
        return ModelRef(local_dir, CUSTOM, model_uri, return_probabilities, predictor_class, staged)
    chosen = next(
        (f for f in FRAMEWORKS if any(frag in container_image_uri for frag in f.image_fragments)),
        None,
    )
    if serving_mode == "auto" and container_image_uri and (chosen is None or not chosen.handler):
        return _container_ref(local_dir, model_uri, container_image_uri, staged)
    if chosen is not None and not files & set(chosen.loads) and chosen.handler is not None:
        raise UserError(
            f"The serving image {container_image_uri!r} is a {chosen.title} image, but the model "
            f"directory {model_uri!r} holds none of {list(chosen.loads)} (found "
            f"{sorted(files) or 'nothing'}). Point model_uri at the directory with the model "
            "file, or give the image of the model's framework."
        )
    if chosen is None:
        chosen = next((f for f in FRAMEWORKS if files & set(f.marker_files)), None)
    if chosen is None:
        raise UserError(
            f"No model file in {model_uri!r} (found {sorted(files) or 'nothing'}). The local "
            f"backend runs: {supported_frameworks()}; the same files Vertex's prebuilt "
            "containers load."
        )
    if chosen.handler is None:
        raise UserError(
            f"The model at {model_uri!r} is a {chosen.title} model, which the local backend does "
            "not run in-process. Give its serving image (container_image_uri) to run it in its "
            "container (serving_mode='auto' or 'container'), use backend='vertex', or wrap it in "
            "a Custom Prediction Routine Predictor (predictor_class='module:Class'). Runs "
            f"locally: {supported_frameworks()}."
        )
    return ModelRef(local_dir, chosen.name, model_uri, return_probabilities, staged=staged)


def _container_ref(local_dir: str, model_uri: str, image: str, staged: bool) -> ModelRef:
    """A model served by its image; the backend starts the container and sets the endpoint.

    A staged copy (private to us: mkdtemp makes it 0700) is made readable by every user, since
    the image's server may run as any uid; it is mounted read-only.
    """
    if staged:
        _readable_by_all(local_dir)
    return ModelRef(local_dir, CONTAINER, model_uri, staged=staged, image_uri=image)


def _readable_by_all(top: str) -> None:
    os.chmod(top, os.stat(top).st_mode | 0o555)
    for root, dirs, files in os.walk(top):
        for name in dirs:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o555)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)


def _stage(model_uri: str, staging_dir: str | None) -> tuple[str, bool]:
    """The model directory on local disk, and whether it is a temporary copy."""
    uri = fs.normalize_uri(model_uri)
    filesystem, path = fs.filesystem(uri)
    protocol = (
        filesystem.protocol if isinstance(filesystem.protocol, str) else filesystem.protocol[0]
    )
    if protocol in ("file", "local"):
        if not os.path.isdir(path):
            raise UserError(
                f"Model directory {model_uri!r} does not exist or is not a directory; pass the "
                "directory holding the model file (model.joblib, model.bst, saved_model.pb, ...)."
            )
        return path, False
    try:
        if not filesystem.isdir(path):
            raise UserError(f"Model directory {model_uri!r} does not exist.")
        target = tempfile.mkdtemp(prefix="batchpredict-model-", dir=staging_dir)
        filesystem.get(path.rstrip("/") + "/", target + "/", recursive=True)
    except UserError:
        raise
    except Exception as err:  # gcsfs raises many kinds; name the URI
        raise UserError(f"Cannot read model directory {model_uri!r}: {err}") from err
    return target, True


def load_handler(ref: ModelRef, single_thread: bool = False) -> ModelHandler:
    """A loaded handler for ``ref``; ``single_thread`` when several workers share the cores.

    Raises:
        UserError: the model cannot be loaded (named, with the cause).
    """
    handler = handler_class(ref)(ref)
    if single_thread:
        handler.limit_threads()
    try:
        handler.load()
        specialized = handler.specialize()
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"Cannot load the {ref.framework} model from {ref.source_uri!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    if specialized is not handler and single_thread:
        specialized.limit_threads()
    return specialized
