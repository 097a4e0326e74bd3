"""Model handlers: one per framework, with the predict semantics of Vertex's prebuilt containers.

A handler loads a model directory once per worker and predicts a batch of instances at a time
(``predict(instances, parameters) -> predictions``, one per instance, in order). The framework is
chosen once, from the artifact's files or the serving image URI, never per batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from batchpredict.errors import UserError
from batchpredict.io import fs

SKLEARN_FILES = ("model.joblib", "model.pkl")
XGBOOST_NATIVE_FILES = ("model.bst", "model.json", "model.ubj")
UNSUPPORTED_FILES = {
    "saved_model.pb": "TensorFlow SavedModel",
    "model.mar": "PyTorch TorchServe archive",
}
# Serving image name fragments of Vertex's prebuilt prediction containers.
IMAGE_FRAMEWORKS = {
    "/sklearn-": "sklearn",
    "/xgboost-": "xgboost",
    "/tf2-": "TensorFlow SavedModel",
    "/tf-": "TensorFlow SavedModel",
    "/pytorch-": "PyTorch TorchServe archive",
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where it is on local disk and how to run it."""

    local_dir: str
    framework: str  # sklearn | xgboost | custom
    source_uri: str
    return_probabilities: bool = False
    predictor_class: str = ""
    staged: bool = False  # local_dir is a temporary copy of a remote directory

    def cleanup(self) -> None:
        """Deletes the temporary copy of a remote model directory."""
        if self.staged:
            shutil.rmtree(self.local_dir, ignore_errors=True)


class ModelHandler(ABC):
    """Loads a model and predicts batches of instances."""

    framework = ""

    def __init__(self, ref: ModelRef) -> None:
        """Keeps the reference; nothing is loaded until ``load``."""
        self.ref = ref

    @abstractmethod
    def load(self) -> None:
        """Loads the model (once per worker)."""

    @abstractmethod
    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """One JSON-ready prediction per instance, in order."""

    def limit_threads(self) -> None:  # noqa: B027 - optional hook
        """Keeps the framework to one thread (several worker processes share the cores)."""


def resolve_model(
    model_uri: str,
    container_image_uri: str = "",
    predictor_class: str = "",
    return_probabilities: bool = False,
    staging_dir: str | None = None,
) -> ModelRef:
    """Finds the model directory's framework and stages a remote directory to local disk.

    Raises:
        UserError: the directory is missing, empty of known model files, or of a framework that
            does not run locally.
    """
    local_dir, staged = _stage(model_uri, staging_dir)
    files = set(os.listdir(local_dir))
    if predictor_class:
        return ModelRef(
            local_dir, "custom", model_uri, return_probabilities, predictor_class, staged
        )
    framework = next((n for frag, n in IMAGE_FRAMEWORKS.items() if frag in container_image_uri), "")
    if not framework:
        if files & set(XGBOOST_NATIVE_FILES):
            framework = "xgboost"
        elif files & set(SKLEARN_FILES):
            framework = "sklearn"  # refined on load: a pickled XGBoost model runs as XGBoost
        else:
            framework = next((what for f, what in UNSUPPORTED_FILES.items() if f in files), "")
    if framework and framework not in ("sklearn", "xgboost"):
        raise UserError(
            f"The model at {model_uri!r} is a {framework} model, which the local backend does not "
            "run yet. Use backend='vertex', or wrap it in a Custom Prediction Routine Predictor "
            "(predictor_class='module:Class')."
        )
    if not framework:
        expected = ", ".join(SKLEARN_FILES + XGBOOST_NATIVE_FILES)
        raise UserError(
            f"No model file in {model_uri!r} (found {sorted(files) or 'nothing'}); expected one of "
            f"{expected}, as Vertex's prebuilt containers load, or give predictor_class."
        )
    return ModelRef(local_dir, framework, model_uri, return_probabilities, staged=staged)


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
                "directory holding model.joblib / model.bst."
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


def load_handler(ref: ModelRef) -> ModelHandler:
    """A loaded handler for ``ref``.

    Raises:
        UserError: the model file cannot be loaded (named, with the cause).
    """
    if ref.framework == "custom":
        handler: ModelHandler = CustomPredictorHandler(ref)
    elif ref.framework == "xgboost":
        handler = XGBoostHandler(ref)
    else:
        handler = SklearnHandler(ref)
    try:
        handler.load()
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"Cannot load the {ref.framework} model from {ref.source_uri!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(handler, SklearnHandler) and _is_xgboost(handler.model):
        handler = XGBoostHandler(ref, preloaded=handler.model)
        handler.load()
    return handler


def _load_pickled(local_dir: str, names: tuple[str, ...]) -> Any:
    for name in names:
        path = os.path.join(local_dir, name)
        if os.path.exists(path):
            if name.endswith(".joblib"):
                import joblib

                return joblib.load(path)
            with open(path, "rb") as f:
                return pickle.load(f)
    raise UserError(f"None of {list(names)} in {local_dir!r}.")


def _is_xgboost(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "xgboost"


def _tolist(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


class SklearnHandler(ModelHandler):
    """Vertex's sklearn container: ``model.predict(np.asarray(instances))``.

    ``return_probabilities`` uses ``predict_proba`` instead, for classifiers.
    """

    framework = "sklearn"

    def load(self) -> None:
        """Loads model.joblib, else model.pkl."""
        self.model = _load_pickled(self.ref.local_dir, SKLEARN_FILES)
        self.use_proba = self.ref.return_probabilities
        if self.use_proba and not hasattr(self.model, "predict_proba"):
            raise UserError(
                f"return_probabilities=True, but {type(self.model).__name__} has no "
                "predict_proba; set it to False for this model."
            )

    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Predicts labels (or class probabilities)."""
        import numpy as np

        array = np.asarray(instances)
        if self.use_proba:
            return _tolist(self.model.predict_proba(array))
        return _tolist(self.model.predict(array))

    def limit_threads(self) -> None:
        """One OpenMP/BLAS thread per worker process."""
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(1)


class XGBoostHandler(ModelHandler):
    """Vertex's XGBoost container: ``booster.predict(xgb.DMatrix(instances))``.

    Loads model.bst (also model.json / model.ubj), else model.joblib / model.pkl; a pickled
    scikit-learn-API model runs through its booster, so output matches model.bst's.
    """

    framework = "xgboost"

    def __init__(self, ref: ModelRef, preloaded: Any = None) -> None:
        """``preloaded``: an already unpickled XGBoost model."""
        super().__init__(ref)
        self._preloaded = preloaded

    def load(self) -> None:
        """Loads the booster."""
        import xgboost as xgb

        model = self._preloaded
        if model is None:
            for name in XGBOOST_NATIVE_FILES:
                path = os.path.join(self.ref.local_dir, name)
                if os.path.exists(path):
                    # From bytes, the format (JSON, UBJSON) is read from the content: a
                    # model.bst of either kind loads without XGBoost guessing from the name.
                    model = xgb.Booster()
                    with open(path, "rb") as f:
                        model.load_model(bytearray(f.read()))
                    break
        if model is None:
            model = _load_pickled(self.ref.local_dir, SKLEARN_FILES)
        self.sk_model = model if isinstance(model, xgb.XGBModel) else None
        # A raw booster's output is what its objective gives (probabilities for binary:logistic
        # and multi:softprob), so return_probabilities only changes scikit-learn-API models.
        self.booster = model.get_booster() if isinstance(model, xgb.XGBModel) else model

    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Predicts through a DMatrix."""
        import numpy as np
        import xgboost as xgb

        array = np.asarray(instances, dtype=np.float32)
        if self.ref.return_probabilities and self.sk_model is not None:
            return _tolist(self.sk_model.predict_proba(array))
        return _tolist(self.booster.predict(xgb.DMatrix(array)))

    def limit_threads(self) -> None:
        """One thread per worker process."""
        self.booster.set_param({"nthread": 1})


class CustomPredictorHandler(ModelHandler):
    """A Custom Prediction Routine ``Predictor`` (google.cloud.aiplatform.prediction), unchanged.

    Per batch, as Vertex's CPR model server: ``postprocess(predict(preprocess(body)))`` with
    ``body = {"instances": [...], "parameters": {...}}`` (parameters only when given).
    """

    framework = "custom"

    def load(self) -> None:
        """Imports the class and calls ``load(artifacts_uri)`` in a fresh working directory."""
        cls = import_predictor_class(self.ref.predictor_class)
        self.predictor = cls()
        # CPR predictors often copy artifacts into the working directory
        # (prediction_utils.download_model_artifacts); give them their own.
        workdir = tempfile.mkdtemp(prefix="batchpredict-cpr-")
        previous = os.getcwd()
        os.chdir(workdir)
        try:
            self.predictor.load(self.ref.local_dir)
        finally:
            os.chdir(previous)

    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Runs the predictor's three steps on one request body."""
        body: dict[str, Any] = {"instances": instances}
        if parameters:
            body["parameters"] = parameters
        p = self.predictor
        result = p.postprocess(p.predict(p.preprocess(body)))
        if isinstance(result, dict) and "predictions" in result:
            result = result["predictions"]
        predictions = _tolist(result)
        if len(predictions) != len(instances):
            raise ValueError(
                f"{self.ref.predictor_class} returned {len(predictions)} predictions for "
                f"{len(instances)} instances; postprocess must return one per instance."
            )
        return predictions


def import_predictor_class(spec: str) -> type:
    """Imports ``module:Class`` or ``path/to/file.py:Class``.

    Raises:
        UserError: the format is wrong or the class cannot be imported.
    """
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise UserError(
            f"predictor_class must be 'module:Class' or 'path/to/file.py:Class'; got {spec!r}."
        )
    try:
        if module_name.endswith(".py"):
            name = "batchpredict_user_predictor"
            loader_spec = importlib.util.spec_from_file_location(name, module_name)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError, OSError) as err:
        raise UserError(f"Cannot import predictor_class {spec!r}: {err}") from err
