"""Custom Prediction Routines: a user's ``Predictor`` (google.cloud.aiplatform.prediction)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from typing import Any

from batchpredict.errors import CODE_INTERNAL, InstanceError, UserError
from batchpredict.models.base import ModelHandler, tolist


class CustomPredictorHandler(ModelHandler):
    """A Custom Prediction Routine ``Predictor``, unchanged.

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
        predictions = tolist(result)
        if len(predictions) != len(instances):
            raise InstanceError(  # the model's fault, not the instance's: code 13
                f"{self.ref.predictor_class} returned {len(predictions)} predictions for "
                f"{len(instances)} instances; postprocess must return one per instance.",
                CODE_INTERNAL,
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
