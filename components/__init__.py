"""KFP component definitions: one module per component, each a thin layer over ``batchpredict``.

``scripts/compile.py`` compiles every component found here into ``component_specs/<module>.yaml``.
Installed (``pip install batchpredict``), this package is ``batchpredict_components`` and carries
those compiled specs (``spec_path``)::

    from batchpredict_components import ModelBatchPredictOp
    # or, without importing the definitions:
    op = kfp.components.load_component_from_file(spec_path("model_batch_predict"))
"""

from __future__ import annotations

import os

from .collect_predictions import CollectPredictionsOp
from .dataset import DatasetOp
from .evaluate import EvaluateOp
from .model_batch_predict import ModelBatchPredictOp
from .prepare_instances import PrepareInstancesOp
from .train import TrainOp
from .train_image_classifier import TrainImageClassifierOp

# Installed: batchpredict_components/specs/ (package data); in the repository: component_specs/.
_SPEC_DIRS = (
    os.path.join(os.path.dirname(__file__), "specs"),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "component_specs"),
)


def spec_path(name: str) -> str:
    """The compiled YAML of component module ``name`` (e.g. ``model_batch_predict``).

    Raises:
        FileNotFoundError: no such component, naming the ones there are.
    """
    for directory in _SPEC_DIRS:
        path = os.path.join(directory, f"{name}.yaml")
        if os.path.isfile(path):
            return path
    known = sorted(
        f[: -len(".yaml")] for d in _SPEC_DIRS if os.path.isdir(d) for f in os.listdir(d)
    )
    raise FileNotFoundError(f"No compiled component {name!r}; there are: {', '.join(known)}.")


__all__ = [
    "CollectPredictionsOp",
    "DatasetOp",
    "EvaluateOp",
    "ModelBatchPredictOp",
    "PrepareInstancesOp",
    "TrainImageClassifierOp",
    "TrainOp",
    "spec_path",
]
