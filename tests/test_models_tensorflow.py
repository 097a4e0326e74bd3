"""TensorFlow SavedModels through the engine, with TF Serving's REST semantics."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.models.tensorflow import _json_rows
from tests.conftest import read_output, write_jsonl

tf = pytest.importorskip("tensorflow")

TF_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest"
# A real output line of a Vertex AI batch prediction job on a tf2-cpu model (Google's sample
# "UJ2,12 Custom Training Prebuilt Container TF Keras"), prediction part.
REFERENCE_PREDICTION = (
    "[0.0407731421, 0.125140116, 0.118551917, 0.100501947, 0.128865793, 0.089787662, "
    "0.157575116, 0.121281914, 0.0312845968, 0.0862377882]"
)


class Multi(tf.Module):
    """Two inputs and four outputs, plus a second, single-input signature."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="x"),
            tf.TensorSpec([None], tf.string, name="tag"),
        ]
    )
    def serve(self, x, tag):
        return {
            "total": tf.reduce_sum(x, axis=1),
            "count": tf.strings.length(tag),
            "label": tf.strings.upper(tag),
            "echo_bytes": tag,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(self, x):
        return x * 2.0


@pytest.fixture(scope="module")
def multi_model_dir(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("multi"))
    m = Multi()
    tf.saved_model.save(m, d, signatures={"serving_default": m.serve, "double": m.double})
    return d


@pytest.fixture(scope="module")
def jpeg_model_dir(tmp_path_factory) -> str:
    """The tutorial's CNN (untrained) with its JPEG-bytes serving signature."""
    from batchpredict.tasks.train_image import build_model, export_saved_model

    d = str(tmp_path_factory.mktemp("cnn"))
    export_saved_model(build_model(), d)
    return d


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    from batchpredict.tasks.train_image import digit_images, encode_jpegs

    images, _ = digit_images()
    return encode_jpegs(images[:6])


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def run(tmp_path, model_dir, instances, raw_lines=(), **kw):
    data = write_jsonl(tmp_path / "in.jsonl", instances, raw_lines)
    kw.setdefault("workers", 1)
    result = job_on(tmp_path, model_dir, [data], **kw)
    return read_output(result.gcs_output_directory, result)


def job_on(tmp_path, model_dir, files, **kw):
    """The job's result on ``files``, its output under ``tmp_path / "out"``."""
    return run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="tf",
            gcs_source_uris=files,
            model_uri=model_dir,
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            progress=False,
            **kw,
        )
    )


def test_float32_written_as_tf_serving_writes_them():
    """'%.9g' digits of the float32, not its shortest repr nor the float64 widening."""
    reference = json.loads(REFERENCE_PREDICTION)
    row = np.array([reference], dtype=np.float32)
    assert repr(float(row[0, 0])) == "0.040773142129182816"  # the float64 widening
    assert str(row[0, 0]) == "0.040773142"  # NumPy's shortest float32 repr
    written = json.dumps(_json_rows("output_0", row)[0])
    assert written == REFERENCE_PREDICTION


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_batches_match_per_value_9_digit_formatting(dtype):
    """The batch formatting gives what '%.9g' per value gives: any magnitude, nan, inf, -0, nd."""
    rng = np.random.default_rng(1)
    for scale in (1e-30, 1e-6, 1.0, 1e6, 1e30):
        with np.errstate(over="ignore"):
            array = (rng.standard_normal((50, 7)) * scale).astype(dtype)
        array[0, 0], array[1, 1], array[2, 2], array[3, 3], array[4, 4] = (
            np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
        )
        expected = [[float(f"{v:.9g}") for v in row] for row in array.astype(np.float64).tolist()]
        assert json.dumps(_json_rows("out", array)) == json.dumps(expected)
    cube = rng.standard_normal((3, 2, 4)).astype(dtype)
    expected = [[[float(f"{v:.9g}") for v in r] for r in m] for m in cube.astype(float).tolist()]
    assert json.dumps(_json_rows("out", cube)) == json.dumps(expected)
    assert _json_rows("out", np.zeros((0, 3), dtype)) == []
    assert _json_rows("out", np.zeros((2, 0), dtype)) == [[], []]
    assert _json_rows("out", np.array([1.5, 0.1], dtype)) == [
        1.5,
        float(f"{float(dtype(0.1)):.9g}"),
    ]


def test_multi_input_objects_b64_and_several_outputs(tmp_path, multi_model_dir):
    out = run(
        tmp_path,
        multi_model_dir,
        [{"x": [1, 2], "tag": "ab"}, {"x": [0.1, 0.2], "tag": _b64(b"\xff\x00z")}],
    )
    assert out["stats"]["model_framework"] == "tensorflow"
    assert out["errors"] == []
    got = {json.dumps(r["instance"]): r["prediction"] for r in out["results"]}
    assert got[json.dumps({"x": [1, 2], "tag": "ab"})] == {
        "count": 2,
        "echo_bytes": {"b64": base64.b64encode(b"ab").decode()},
        "label": "AB",
        "total": 3.0,
    }
    second = got[json.dumps({"x": [0.1, 0.2], "tag": _b64(b"\xff\x00z")})]
    # b64 became bytes: 3 bytes, and the bytes came back as b64 (name ends in _bytes) and, not
    # being UTF-8, as b64 in "label" too.
    assert second["count"] == 3
    assert second["echo_bytes"] == _b64(b"\xff\x00z")
    assert second["label"] == _b64(b"\xff\x00Z")
    assert second["total"] == 0.300000012  # float32(0.1) + float32(0.2), '%.9g'


def test_signature_name_picks_a_single_input_signature_in_both_row_forms(tmp_path, multi_model_dir):
    out = run(
        tmp_path,
        multi_model_dir,
        [[1, 2], {"x": [3, 4]}],
        model_parameters={"signature_name": "double"},
    )
    assert out["errors"] == []
    assert sorted(r["prediction"] for r in out["results"]) == [[2.0, 4.0], [6.0, 8.0]]


def test_unknown_signature_fails_each_instance_naming_the_signatures(tmp_path, multi_model_dir):
    out = run(tmp_path, multi_model_dir, [[1, 2]], model_parameters={"signature_name": "nope"})
    assert out["results"] == []
    [error] = out["errors"]
    assert error["error"]["code"] == 3
    assert "no signature 'nope'" in error["error"]["message"]
    assert "['double', 'serving_default']" in error["error"]["message"]


def test_bad_shapes_and_types_are_isolated_with_code_3(tmp_path, multi_model_dir):
    instances = [
        {"x": [1, 2], "tag": "ok"},
        {"x": [1, 2, 3], "tag": "wide"},
        {"x": ["a", "b"], "tag": "text"},
        {"x": [5, 6]},
        {"x": _b64(b"12"), "tag": "b64 for a float"},
        {"x": [7, 8], "tag": "ok too"},
        [9, 10],
    ]
    out = run(tmp_path, multi_model_dir, instances)
    assert sorted(r["instance"]["tag"] for r in out["results"]) == ["ok", "ok too"]
    assert len(out["errors"]) == 5
    assert {e["error"]["code"] for e in out["errors"]} == {3}
    messages = " | ".join(e["error"]["message"] for e in out["errors"])
    assert "do not fit the signature's [2]" in messages
    assert "missing ['tag']" in messages
    assert "each instance must be an object keyed by input name" in messages
    stats = out["stats"]
    assert stats["successful_count"] + stats["failed_count"] == 7


def test_jpeg_model_bad_jpeg_isolated_with_code_3(tmp_path, jpeg_model_dir, jpegs):
    instances = [{"bytes_inputs": _b64(j)} for j in jpegs]
    instances.insert(2, {"bytes_inputs": _b64(b"not a jpeg")})
    instances.insert(4, {"bytes_inputs": {"b64": "%%% not base64"}})
    out = run(tmp_path, jpeg_model_dir, instances, container_image_uri=TF_IMAGE)
    assert len(out["results"]) == 6
    for r in out["results"]:
        assert len(r["prediction"]) == 10
        assert abs(sum(r["prediction"]) - 1) < 1e-5
        assert all(len(f"{v:.17g}".rstrip("0")) <= 20 for v in r["prediction"])
    assert sorted(e["error"]["code"] for e in out["errors"]) == [3, 3]
    messages = " | ".join(e["error"]["message"] for e in out["errors"])
    assert "InvalidArgumentError" in messages
    assert "Invalid base64" in messages


def test_predictions_match_the_signature_in_9_digit_form(tmp_path, jpeg_model_dir, jpegs):
    out = run(tmp_path, jpeg_model_dir, [_b64(j) for j in jpegs])  # unnamed single-input form
    loaded = tf.saved_model.load(jpeg_model_dir)
    expected = loaded.signatures["serving_default"](bytes_inputs=tf.constant(jpegs))
    [probs] = expected.values()
    by_instance = {r["instance"]["b64"]: r["prediction"] for r in out["results"]}
    for jpeg, row in zip(jpegs, probs.numpy()):
        assert by_instance[_b64(jpeg)["b64"]] == [float(f"{v:.9g}") for v in row]


def test_spawned_workers_each_load_the_model(tmp_path, jpeg_model_dir, jpegs):
    """TF is imported in this process: workers are spawned and load the SavedModel themselves."""
    files = []
    for i in range(3):
        files.append(
            write_jsonl(tmp_path / f"in{i}.jsonl", [{"bytes_inputs": _b64(j)} for j in jpegs])
        )
    result = job_on(tmp_path, jpeg_model_dir, files, workers=2)
    out = read_output(result.gcs_output_directory, result)
    assert result.stats["workers"] == 2
    assert out["stats"]["successful_count"] == 18 and out["errors"] == []


def test_one_worker_by_default_as_tensorflow_uses_every_core(
    tmp_path, monkeypatch, multi_model_dir
):
    """Three files, four cores: one worker unless the user asks for more (workers=2 above)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    files = [
        write_jsonl(tmp_path / f"in{i}.jsonl", [{"x": [1.0, 2.0], "tag": "a"}]) for i in range(3)
    ]
    result = job_on(tmp_path, multi_model_dir, files)
    assert result.stats["workers"] == 1
    assert result.completion_stats["successful_count"] == 3


FORK_SCRIPT = """
import json, sys
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
model_dir, out, *files = sys.argv[1:]
assert "tensorflow" not in sys.modules  # nothing imports it before a SavedModel runs
result = run_batch_prediction(BatchPredictionJobSpec(
    job_display_name="tf", gcs_source_uris=files, model_uri=model_dir,
    gcs_destination_output_uri_prefix=out, workers=2, progress=False))
imported_here = "tensorflow" in sys.modules
print(json.dumps({
    "successful": result.completion_stats["successful_count"],
    "workers": result.stats["workers"],
    # the workers imported and ran it; this process never did
    "imported_here": imported_here,
}))
"""


def test_forked_workers_each_load_the_model(tmp_path, jpeg_model_dir, jpegs):
    """A fresh process that never imports TensorFlow forks; each worker loads the SavedModel."""
    import subprocess
    import sys

    files = [
        write_jsonl(tmp_path / f"in{i}.jsonl", [{"bytes_inputs": _b64(j)} for j in jpegs])
        for i in range(3)
    ]
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, jpeg_model_dir, str(tmp_path / "out"), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {
        "successful": 18,
        "workers": 2,
        "imported_here": False,
    }


def test_the_whole_batch_goes_to_one_signature_call(jpeg_model_dir, jpegs):
    """The handler's predict on a batch of 10 instances is one signature call of 10."""
    from batchpredict.models import load_handler, resolve_model

    handler = load_handler(resolve_model(jpeg_model_dir))
    fn = handler.signature("serving_default")
    sizes: list[int] = []

    def call(**tensors):
        sizes.append(int(next(iter(tensors.values())).shape[0]))
        return fn(**tensors)

    call.structured_input_signature = fn.structured_input_signature
    handler._signatures["serving_default"] = call
    instances = [{"bytes_inputs": _b64(jpegs[i % len(jpegs)])} for i in range(10)]
    predictions = handler.predict(instances, {})
    assert len(predictions) == 10
    assert sizes == [10]


KERAS_FREE_SCRIPT = """
import json, sys
import numpy as np
from batchpredict.models import load_handler, resolve_model
model_dir, fail_first, *b64s = sys.argv[1:]
calls = []
if fail_first == "1":  # a SavedModel that (like one needing Keras's classes) fails without Keras
    from batchpredict.models import tensorflow as handler_module
    real_import = handler_module._import_tensorflow
    def import_tensorflow():
        tf = real_import()  # the handler's own first import, as in a worker
        if not calls:
            real_load = tf.saved_model.load
            def load(path):
                calls.append("keras.src.optimizers" in sys.modules)
                if not calls[-1]:
                    raise ValueError("needs Keras")
                return real_load(path)
            tf.saved_model.load = load
        return tf
    handler_module._import_tensorflow = import_tensorflow
handler = load_handler(resolve_model(model_dir))
predictions = handler.predict([{"b64": b} for b in b64s], {})
print(json.dumps({
    "keras": "keras" in sys.modules, "sklearn": "sklearn" in sys.modules,
    "blocked_left": "keras.src.optimizers" in sys.modules
        and sys.modules["keras.src.optimizers"] is None,
    "load_calls": calls,
    "predictions": predictions,
}))
"""


def _keras_free_run(jpeg_model_dir: str, jpegs: list[bytes], fail_first: bool) -> dict:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", KERAS_FREE_SCRIPT, jpeg_model_dir, "1" if fail_first else "0"]
        + [_b64(j)["b64"] for j in jpegs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fresh_process_serves_the_signature_without_importing_keras(jpeg_model_dir, jpegs):
    """Keras (and scikit-learn with it) is not imported; the predictions are the same."""
    from batchpredict.models import load_handler, resolve_model

    report = _keras_free_run(jpeg_model_dir, jpegs, fail_first=False)
    assert report["keras"] is False and report["sklearn"] is False
    assert report["blocked_left"] is False  # a later `import keras` works as usual
    here = load_handler(resolve_model(jpeg_model_dir)).predict([_b64(j) for j in jpegs], {})
    assert report["predictions"] == here


def test_a_model_that_fails_to_load_without_keras_is_loaded_after_importing_it(
    jpeg_model_dir, jpegs
):
    report = _keras_free_run(jpeg_model_dir, jpegs, fail_first=True)
    assert report["load_calls"] == [False, True]
    assert report["keras"] is True
    assert len(report["predictions"]) == len(jpegs)
