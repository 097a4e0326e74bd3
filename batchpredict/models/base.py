"""The model reference and the handler interface every framework implements.

A handler loads a model directory once per worker and predicts a batch of instances at a time
(``predict(instances, parameters) -> predictions``, one per instance, in order). The engine owns
batching, workers and failure isolation; a handler only answers the questions the engine asks
through the hooks below.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchpredict.errors import CODE_INTERNAL, CODE_INVALID_ARGUMENT
from batchpredict.spec import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from batchpredict.models.container import Endpoint

# Exceptions that mean "this instance is bad input" (code 3) for Python-level frameworks: NumPy and
# scikit-learn raise these for wrong arity and non-numeric values. Anything else is code 13.
BAD_INPUT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
)


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where it is on local disk and how to run it."""

    local_dir: str
    framework: str  # a name from the framework table (batchpredict.models.FRAMEWORKS)
    source_uri: str
    return_probabilities: bool = False
    predictor_class: str = ""
    staged: bool = False  # local_dir is a temporary copy of a remote directory
    image_uri: str = ""  # the serving image (framework "container")
    endpoint: Endpoint | None = None  # the started serving container (framework "container")

    def cleanup(self) -> None:
        """Deletes the temporary copy of a remote model directory."""
        if self.staged:
            shutil.rmtree(self.local_dir, ignore_errors=True)


class ModelHandler(ABC):
    """Loads a model and predicts batches of instances.

    Hooks the engine calls, in order: ``limit_threads`` (when several workers share the cores; may
    come before or after ``load``), ``load`` (once per worker; never in the main process, so a
    crash in it is a worker's death), ``predict`` per batch, ``classify_error`` for each isolated
    failure, ``close`` when the worker ends.
    """

    framework = ""
    # Whether ``predict`` takes a 2-D NumPy array (one row per instance) as well as a list. Sources
    # that read numeric rows in bulk (JSONL arrays of numbers, Parquet, BigQuery) hand such an
    # array over without a Python object per value; other handlers get ``array.tolist()``.
    accepts_arrays = False
    # Whether one process's ``predict`` already keeps every core busy (a runtime with its own
    # thread pools, as TensorFlow's). The local backend then starts one worker unless the user
    # sets ``workers``: more processes would each load the runtime and the model and contend for
    # the same cores (bench/tf_bench.py measures it).
    uses_every_core = False
    # Instances per predict call when the user leaves batch size at 0 (a user's value is always
    # respected exactly). Vertex's service default is 64, tuned for HTTP model servers; models
    # that run in the worker are far faster on larger batches (bench/engine_bench.py).
    default_batch_size = DEFAULT_BATCH_SIZE
    # The same for columnar input (``Source.columnar``: Parquet, BigQuery); 0: default_batch_size.
    columnar_batch_size = 0

    def __init__(self, ref: ModelRef) -> None:
        """Keeps the reference; nothing is loaded until ``load``."""
        self.ref = ref

    @abstractmethod
    def load(self) -> None:
        """Loads the model (once per worker)."""

    @abstractmethod
    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """One JSON-ready prediction per instance, in order."""

    @property
    def concurrency(self) -> int:
        """Predict calls the engine may run at once in one worker (threads); 1: one at a time.

        Handlers that wait on something else (a model server over HTTP) raise it.
        """
        return 1

    def classify_error(self, err: BaseException) -> int:
        """The error record code of a failed prediction: 3 (bad instance) or 13 (model error)."""
        return CODE_INVALID_ARGUMENT if isinstance(err, BAD_INPUT_EXCEPTIONS) else CODE_INTERNAL

    def limit_threads(self) -> None:  # noqa: B027 - optional hook
        """Keeps the framework to one thread (several worker processes share the cores)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what ``load`` acquired; called once when the worker ends."""

    def specialize(self) -> ModelHandler:
        """After ``load``: the handler that should run this model (default: this one)."""
        return self

    @classmethod
    def can_fork_workers(cls) -> bool:
        """Whether this process may fork workers that will load this framework themselves."""
        return True


def tolist(values: Any) -> list[Any]:
    """A NumPy array (or any sequence) as a list of JSON-ready values."""
    return values.tolist() if hasattr(values, "tolist") else list(values)
