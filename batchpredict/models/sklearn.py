"""scikit-learn, as Vertex's ``sklearn-cpu`` prebuilt container runs it."""

from __future__ import annotations

import os
import pickle
from typing import Any

from batchpredict.errors import UserError
from batchpredict.models.base import ModelHandler, tolist

MODEL_FILES = ("model.joblib", "model.pkl")


def load_pickled(local_dir: str, names: tuple[str, ...] = MODEL_FILES) -> Any:
    """Unpickles the first of ``names`` found in ``local_dir`` (joblib for ``.joblib``)."""
    for name in names:
        path = os.path.join(local_dir, name)
        if os.path.exists(path):
            if name.endswith(".joblib"):
                import joblib

                return joblib.load(path)
            with open(path, "rb") as f:
                return pickle.load(f)
    raise UserError(f"None of {list(names)} in {local_dir!r}.")


class SklearnHandler(ModelHandler):
    """Vertex's sklearn container: ``model.predict(np.asarray(instances))``.

    ``return_probabilities`` uses ``predict_proba`` instead, for classifiers.
    """

    framework = "sklearn"
    accepts_arrays = True  # np.asarray(instances), as Vertex's container does with its list
    # A tree ensemble's predict has a fixed cost per call and per tree: on the benchmark's model a
    # row costs 5.3 us of CPU in calls of 2048 rows, 4.7 us in calls of 8192, and a 1M-row
    # Parquet->Parquet job took 8% less time at 8192. On JSON Lines the larger batch was 6% slower
    # (the bulk parse's buffers outgrow the cache), so line input keeps the default 2048
    # (README, "Columnar benchmark").
    columnar_batch_size = 8192
    _single_thread = False

    def load(self) -> None:
        """Loads model.joblib, else model.pkl."""
        self.model = load_pickled(self.ref.local_dir)
        if self._single_thread:  # the model's OpenMP runtime is loaded only now
            self._apply_thread_limit()
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
            return tolist(self.model.predict_proba(array))
        return tolist(self.model.predict(array))

    def limit_threads(self) -> None:
        """One OpenMP/BLAS thread per worker process (applied at load when called before it).

        threadpoolctl limits the thread pools of the libraries loaded when it is called; before
        unpickling, scikit-learn's OpenMP runtime is usually not loaded yet, and two workers of two
        OpenMP threads each on two cores ran predict 5x slower under load.
        """
        self._single_thread = True
        if hasattr(self, "model"):
            self._apply_thread_limit()

    def _apply_thread_limit(self) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(1)

    def specialize(self) -> ModelHandler:
        """A pickled XGBoost model runs as XGBoost (through its booster, as model.bst would)."""
        if type(self.model).__module__.split(".")[0] != "xgboost":
            return self
        from batchpredict.models.xgboost import XGBoostHandler

        handler = XGBoostHandler(self.ref, preloaded=self.model)
        handler.load()
        return handler
