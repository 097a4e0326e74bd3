"""The framework table: resolution by files and serving image, and the handler hooks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from batchpredict.errors import CODE_INTERNAL, CODE_INVALID_ARGUMENT, UserError
from batchpredict.models import FRAMEWORKS, ModelHandler, framework, resolve_model
from batchpredict.models.sklearn import SklearnHandler
from tests.conftest import write_jsonl


def _dir(tmp_path, *files) -> str:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    for name in files:
        (d / name).write_bytes(b"x")
    return str(d)


def test_every_framework_row_is_consistent():
    names = [f.name for f in FRAMEWORKS]
    assert len(names) == len(set(names))
    for row in FRAMEWORKS:
        if row.handler is not None:
            assert issubclass(row.handler, ModelHandler)
            assert row.handler.framework == row.name
    assert framework("tensorflow").marker_files == ("saved_model.pb",)
    assert framework("tensorflow").extra == "tf"


def test_unknown_model_directory_names_every_supported_framework_and_its_files(tmp_path):
    model_dir = _dir(tmp_path, "weights.h5", "README.md")
    with pytest.raises(UserError) as err:
        resolve_model(model_dir)
    message = str(err.value)
    assert "['README.md', 'weights.h5']" in message
    for row in FRAMEWORKS:
        if row.handler is None:
            continue
        assert row.title in message
        for name in row.marker_files:
            assert name in message
    assert "predictor_class='module:Class'" in message


@pytest.mark.parametrize(
    ("files", "image", "expected"),
    [
        (("model.joblib",), "", "sklearn"),
        (("model.pkl",), "", "sklearn"),
        (("model.bst",), "", "xgboost"),
        (("model.json",), "", "xgboost"),
        (("model.bst", "model.joblib"), "", "xgboost"),
        (("saved_model.pb",), "", "tensorflow"),
        (
            ("model.joblib",),
            "us-docker.pkg.dev/vertex-ai/prediction/xgboost-cpu.1-7:latest",
            "xgboost",
        ),
        (
            ("saved_model.pb",),
            "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest",
            "tensorflow",
        ),
        (
            ("saved_model.pb",),
            "us-docker.pkg.dev/vertex-ai/prediction/tf-cpu.1-15:latest",
            "tensorflow",
        ),
    ],
)
def test_resolution_by_files_and_image(tmp_path, files, image, expected):
    assert resolve_model(_dir(tmp_path, *files), container_image_uri=image).framework == expected


def test_predictor_class_wins_over_files(tmp_path):
    ref = resolve_model(_dir(tmp_path, "saved_model.pb"), predictor_class="m:C")
    assert ref.framework == "custom"


def test_a_recognised_framework_that_does_not_run_locally_says_what_does(tmp_path):
    with pytest.raises(UserError, match="PyTorch TorchServe archive model, which the local") as err:
        resolve_model(_dir(tmp_path, "model.mar"))
    assert "saved_model.pb" in str(err.value)


def test_base_classify_error_keeps_the_numpy_vocabulary():
    handler = SklearnHandler.__new__(SklearnHandler)
    assert handler.classify_error(ValueError("x")) == CODE_INVALID_ARGUMENT
    assert handler.classify_error(KeyError("x")) == CODE_INVALID_ARGUMENT
    assert handler.classify_error(RuntimeError("x")) == CODE_INTERNAL


CLOSE_SCRIPT = """
import os, sys
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.models.sklearn import SklearnHandler

marks, model_dir, out, workers, *files = sys.argv[1:]

def close(self):
    with open(os.path.join(marks, f"{os.getpid()}-{id(self)}"), "w") as f:
        f.write("closed")

SklearnHandler.close = close
result = run_batch_prediction(
    BatchPredictionJobSpec(
        job_display_name="j", gcs_source_uris=files, model_uri=model_dir,
        gcs_destination_output_uri_prefix=out, workers=int(workers), progress=False,
    )
)
print(os.getpid(), result.completion_stats["successful_count"])
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_close_is_called_once_per_worker_and_never_in_the_main_process(
    tmp_path, sklearn_model_dir, workers
):
    """Each worker process closes the handler it loaded; the main process never loads the model.

    Run in a fresh interpreter: this test process may hold threads, and then workers are spawned
    (and would not see the patched close).
    """
    marks = tmp_path / "closed"
    marks.mkdir()
    files = [write_jsonl(tmp_path / f"in{i}.jsonl", [[1, 2, 3, 4]] * 5) for i in range(2)]
    args = [str(marks), sklearn_model_dir, str(tmp_path / "out"), str(workers), *files]
    proc = subprocess.run(
        [sys.executable, "-c", CLOSE_SCRIPT, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    main_pid, successful = proc.stdout.split()
    assert successful == "10"
    closed = os.listdir(marks)
    pids = {name.split("-")[0] for name in closed}
    assert len(closed) == workers and len(pids) == workers and main_pid not in pids


THREADS_SCRIPT = """
import os, sys
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.models.sklearn import SklearnHandler

marks, model_dir, out, *files = sys.argv[1:]
predict = SklearnHandler.predict

def counting_predict(self, instances, parameters):
    from threadpoolctl import threadpool_info
    threads = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
    with open(os.path.join(marks, str(os.getpid())), "w") as f:
        f.write(str(threads.get("openmp")))
    return predict(self, instances, parameters)

SklearnHandler.predict = counting_predict
run_batch_prediction(
    BatchPredictionJobSpec(
        job_display_name="j", gcs_source_uris=files, model_uri=model_dir,
        gcs_destination_output_uri_prefix=out, workers=2, progress=False,
    )
)
"""


def test_two_workers_predict_with_one_openmp_thread_each(tmp_path, iris):
    """scikit-learn's OpenMP runtime is loaded by unpickling: the limit must apply after load.

    Two workers of two OpenMP threads each on two cores ran predict about 5x slower under load.
    """
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = iris
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    joblib.dump(model, model_dir / "model.joblib")
    marks = tmp_path / "threads"
    marks.mkdir()
    files = [write_jsonl(tmp_path / f"in{i}.jsonl", X[:20].tolist()) for i in range(2)]
    args = [str(marks), str(model_dir), str(tmp_path / "out"), *files]
    env = dict(os.environ, OMP_NUM_THREADS="4")  # what the workers would use unlimited
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    seen = {name: (marks / name).read_text() for name in os.listdir(marks)}
    assert seen and set(seen.values()) == {"1"}, seen


def test_each_framework_has_its_own_default_batch_sizes():
    """Batch size 0 picks the framework's default; tree ensembles gain from large columnar calls."""
    defaults = {
        row.name: (row.handler.default_batch_size, row.handler.columnar_batch_size)
        for row in FRAMEWORKS
        if row.handler
    }
    assert defaults == {
        "sklearn": (2048, 8192),
        "xgboost": (2048, 8192),
        "tensorflow": (2048, 0),
        "custom": (2048, 0),
        "container": (64, 0),  # Vertex's default for model servers
    }


@pytest.mark.parametrize(
    "fmt, default_size, default_calls", [("jsonl", 2048, 10), ("parquet", 8192, 3)]
)
def test_a_scikit_learn_job_picks_its_batch_size_by_input_unless_the_user_sets_one(
    tmp_path, sklearn_model_dir, iris, fmt, default_size, default_calls
):
    """One split of 20,000 rows: calls of 8192, 8192 and 3616 from Parquet; of 2048 from JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchpredict import BatchPredictionJobSpec, run_batch_prediction

    rows = (iris[0].tolist() * 140)[:20_000]
    if fmt == "jsonl":
        data = write_jsonl(tmp_path / "in.jsonl", rows)
    else:
        data = str(tmp_path / "in.parquet")
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate("abcd")})
        pq.write_table(table, data, row_group_size=len(rows))

    def run(size: int) -> dict:
        return run_batch_prediction(
            BatchPredictionJobSpec(
                job_display_name="sizes",
                gcs_source_uris=[data],
                instances_format=fmt,
                model_uri=sklearn_model_dir,
                gcs_destination_output_uri_prefix=str(tmp_path / f"out{size}"),
                manual_batch_tuning_parameters_batch_size=size,
                workers=1,
                progress=False,
            )
        ).stats

    default, chosen = run(0), run(1000)
    assert (default["batch_size"], default["predict_calls"]) == (default_size, default_calls)
    assert (chosen["batch_size"], chosen["predict_calls"]) == (1000, 20)
