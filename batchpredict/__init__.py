"""batchpredict: Vertex AI-compatible batch prediction, locally or on Vertex AI.

The runtime package: everything that runs inside a component's container. It never imports kfp at
module top level, so it is usable from a notebook, a script or the ``batchpredict`` CLI.
"""

from batchpredict.version import __version__

__all__ = ["__version__", "BatchPredictionJobSpec", "read_predictions", "run_batch_prediction"]


def __getattr__(name: str):  # lazy exports keep `import batchpredict` cheap
    if name == "BatchPredictionJobSpec":
        from batchpredict.spec import BatchPredictionJobSpec

        return BatchPredictionJobSpec
    if name == "read_predictions":
        from batchpredict.io.reader import read_predictions

        return read_predictions
    if name == "run_batch_prediction":
        from batchpredict.backends import run_batch_prediction

        return run_batch_prediction
    raise AttributeError(name)
