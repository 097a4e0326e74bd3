"""TensorFlow SavedModel, with TF Serving's REST semantics (Vertex's ``tf2-*`` prebuilt containers).

What a ``{"instances": [...], "parameters": {...}}`` request means to TF Serving, here per batch:

- the signature is ``serving_default`` unless the parameters name another (``signature_name``);
- row format: for a single-input signature an instance is that input's value (or an object keyed
  by the input's name); for several inputs an instance is an object keyed by input name;
  ``{"b64": "..."}`` anywhere in an instance becomes bytes (string inputs only);
- the whole batch goes to one signature call;
- predictions: a single output gives its row per instance; several give an object keyed by output
  name. float32 values are written with 9 significant digits (``%.9g``, as TF Serving's JSON
  writer prints them: ``0.0407731421``), string outputs as text, or ``{"b64": ...}`` when the
  output's name ends in ``_bytes`` (or the bytes are not UTF-8).

TensorFlow is imported on load only (``pip install 'batchpredict[tf]'`` installs
``tensorflow-cpu``); nothing else in the package imports it.
"""

from __future__ import annotations

import base64
import binascii
import sys
from typing import Any

from batchpredict.errors import CODE_INTERNAL, CODE_INVALID_ARGUMENT, UserError
from batchpredict.models.base import BAD_INPUT_EXCEPTIONS, ModelHandler

SAVED_MODEL_FILES = ("saved_model.pb",)
DEFAULT_SIGNATURE = "serving_default"
# The request parameter that picks another signature, as in TF Serving's REST API.
SIGNATURE_PARAMETER = "signature_name"
# TF Serving writes float32 with FLT_DECIMAL_DIG (9) significant digits.
FLOAT32_FORMAT = "%.9g"
B64_KEY = "b64"
BYTES_OUTPUT_SUFFIX = "_bytes"
INSTALL_HINT = "pip install 'batchpredict[tf]' (installs tensorflow-cpu)"
# ``import tensorflow`` ends by importing Keras's optimizers (and with them Keras, scikit-learn and
# SciPy: about a quarter of the import's CPU time) only so that Keras objects can be revived from a
# SavedModel. Serving a signature needs none of it (TF Serving has no Keras), so a process that
# has not imported TensorFlow yet imports it without them; if a model then fails to load, Keras is
# imported and the load retried. TensorFlow's own import treats these modules as optional.
KERAS_EAGER_IMPORTS = ("keras.src.optimizers", "tf_keras.src.optimizers")


class BadInstance(ValueError):
    """An instance that does not fit the signature (code 3)."""


class TensorFlowHandler(ModelHandler):
    """Runs a SavedModel's signature on a batch of instances, as TF Serving's REST API."""

    framework = "tensorflow"
    # Its intra-op thread pool spreads each signature call over the cores: one worker by default.
    uses_every_core = True

    def __init__(self, ref: Any) -> None:
        """Nothing is imported until ``load``."""
        super().__init__(ref)
        self.threads = 0  # 0: TensorFlow's default (all cores)
        self._signatures: dict[str, Any] = {}

    @classmethod
    def can_fork_workers(cls) -> bool:
        """Forking is safe until TensorFlow's runtime has started here (importing it is fine).

        A process that ran TensorFlow (its eager context holds thread pools) spawns its workers.
        """
        if "tensorflow" not in sys.modules:
            return True
        try:
            from tensorflow.python.eager import context

            return context.context()._context_handle is None
        except Exception:  # noqa: BLE001 - any doubt: spawn
            return False

    def limit_threads(self) -> None:
        """One intra-op and one inter-op thread (applied on load: TF fixes them at start)."""
        self.threads = 1

    def load(self) -> None:
        """Loads the SavedModel and checks that the default signature exists."""
        tf = _import_tensorflow()
        if self.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.threads)
            except RuntimeError:  # the runtime was already started in this process
                pass
        try:
            self.model = tf.saved_model.load(self.ref.local_dir)
        except Exception:
            if not _import_keras():
                raise
            self.model = tf.saved_model.load(self.ref.local_dir)
        if not list(self.model.signatures.keys()):
            raise UserError(
                f"The SavedModel at {self.ref.source_uri!r} has no signatures; export it with "
                "tf.saved_model.save(obj, path, signatures={'serving_default': fn})."
            )

    def signature(self, name: str) -> Any:
        """The signature ``name`` (a concrete function), or BadInstance naming the choices."""
        fn = self._signatures.get(name)
        if fn is None:
            available = sorted(self.model.signatures.keys())
            if name not in available:
                raise BadInstance(
                    f"The SavedModel has no signature {name!r}; its signatures are {available}. "
                    f"Set parameters {{'{SIGNATURE_PARAMETER}': ...}} to one of them."
                )
            fn = self._signatures[name] = self.model.signatures[name]
        return fn

    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """One signature call for the whole batch."""
        tf = _import_tensorflow()
        fn = self.signature(str(parameters.get(SIGNATURE_PARAMETER) or DEFAULT_SIGNATURE))
        specs: dict[str, Any] = fn.structured_input_signature[1]
        columns = _columns(instances, specs)
        tensors = {
            name: tf.convert_to_tensor(_array(name, values, specs[name]))
            for name, values in columns.items()
        }
        outputs = fn(**tensors)
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        rows = {name: _json_rows(name, value.numpy()) for name, value in outputs.items()}
        for name, values in rows.items():
            if len(values) != len(instances):
                raise RuntimeError(
                    f"Output {name!r} has {len(values)} rows for {len(instances)} instances; "
                    "every output of a batch signature needs the batch dimension first."
                )
        if len(rows) == 1:
            return next(iter(rows.values()))
        names = sorted(rows)
        return [{name: rows[name][i] for name in names} for i in range(len(instances))]

    def classify_error(self, err: BaseException) -> int:
        """Bad input: what NumPy raises on conversion and TF's InvalidArgument (shape, JPEG)."""
        if isinstance(err, BAD_INPUT_EXCEPTIONS):
            return CODE_INVALID_ARGUMENT
        tf = _import_tensorflow()
        if isinstance(err, tf.errors.InvalidArgumentError):
            return CODE_INVALID_ARGUMENT
        return CODE_INTERNAL

    def close(self) -> None:
        """Drops the model and its signatures."""
        self._signatures.clear()
        self.model = None


def _import_tensorflow() -> Any:
    """TensorFlow; the first import in a process skips Keras (KERAS_EAGER_IMPORTS)."""
    blocked = []
    if "tensorflow" not in sys.modules:
        blocked = [name for name in KERAS_EAGER_IMPORTS if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import tensorflow as tf
    except ImportError as err:
        raise UserError(
            f"A TensorFlow SavedModel needs TensorFlow, which is not installed: {INSTALL_HINT}."
        ) from err
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tf


def _import_keras() -> bool:
    """Imports what ``import tensorflow`` was kept from importing; False if nothing was kept."""
    import importlib

    imported = False
    for name in KERAS_EAGER_IMPORTS:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            imported = True
        except ImportError:
            pass
    return imported


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and B64_KEY in value


def _columns(instances: list[Any], specs: dict[str, Any]) -> dict[str, list[Any]]:
    """Instances (row format) as one list of values per signature input."""
    names = sorted(specs)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for instance in instances:
        if isinstance(instance, dict) and not _is_b64(instance):
            missing = [n for n in names if n not in instance]
            extra = sorted(set(instance) - set(names))
            if missing or extra:
                raise BadInstance(
                    f"Instance keys {sorted(instance)} do not match the signature's inputs "
                    f"{names} (missing {missing}, unknown {extra})."
                )
            for name in names:
                columns[name].append(instance[name])
        elif len(names) == 1:
            columns[names[0]].append(instance)
        else:
            raise BadInstance(
                f"The signature has {len(names)} inputs {names}: each instance must be an object "
                f"keyed by input name; got {type(instance).__name__}."
            )
    return columns


def _bytes(value: Any) -> Any:
    """A string input's value with {"b64": ...} decoded and text encoded, nested lists kept."""
    if isinstance(value, list):
        return [_bytes(v) for v in value]
    if _is_b64(value):
        try:
            return base64.b64decode(value[B64_KEY], validate=True)
        except (binascii.Error, TypeError, ValueError) as err:
            raise BadInstance(f"Invalid base64 in {{'b64': ...}}: {err}") from err
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise BadInstance(f"A string input needs text or {{'b64': ...}}; got {type(value).__name__}.")


def _array(name: str, values: list[Any], spec: Any) -> Any:
    """The batch of one input as a NumPy array of the signature's dtype and shape."""
    import numpy as np

    if spec.dtype.name == "string":
        array = np.array([_bytes(v) for v in values], dtype=object)
    else:
        if any(_contains_b64(v) for v in values):
            raise BadInstance(
                f"Input {name!r} is {spec.dtype.name}; {{'b64': ...}} is for strings."
            )
        array = np.asarray(values, dtype=spec.dtype.as_numpy_dtype)
    if not spec.shape.is_compatible_with(array.shape):
        raise BadInstance(
            f"Input {name!r}: instances of shape {list(array.shape[1:])} do not fit the "
            f"signature's {spec.shape.as_list()[1:]} (None: any size)."
        )
    return array


def _contains_b64(value: Any) -> bool:
    if isinstance(value, list):
        return any(_contains_b64(v) for v in value)
    return _is_b64(value)


def _json_rows(name: str, array: Any) -> list[Any]:
    """An output tensor's rows as JSON-ready values, as TF Serving writes them."""
    import numpy as np

    if array.ndim == 0:
        raise RuntimeError(f"Output {name!r} is a scalar; a batch signature returns one row each.")
    if array.dtype == np.float32 or array.dtype == np.float16:
        # '%.9g' text parsed back to a Python float: the JSON writer's shortest repr of that
        # float is exactly the 9-digit text (0.0407731421), as TF Serving writes float32. The
        # batch is formatted with one '%' and parsed with one NumPy conversion (nan and inf
        # included), 3x faster than NumPy's per-element np.char.mod.
        flat = array.ravel().tolist()
        text = ((FLOAT32_FORMAT + " ") * len(flat)) % tuple(flat)
        return np.array(text.split(), dtype=np.float64).reshape(array.shape).tolist()
    if array.dtype == object:  # tf.string
        as_b64 = name.endswith(BYTES_OUTPUT_SUFFIX)
        return _strings(array, as_b64).tolist()
    return array.tolist()


def _strings(array: Any, as_b64: bool) -> Any:
    import numpy as np

    def convert(value: bytes) -> Any:
        if not as_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {B64_KEY: base64.b64encode(value).decode("ascii")}

    out = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        out[index] = convert(value)
    return out
