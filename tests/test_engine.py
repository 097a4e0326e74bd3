"""The local engine end to end: layout, formats, counts, isolation, workers, job-level errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.instances import InstanceConfig
from batchpredict.io import formats, sources
from tests.conftest import read_output, write_jsonl

DIR_RE = re.compile(r"prediction-(?P<model>.+)-\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z$")


def spec(tmp_path, uris, model_dir, **kw) -> BatchPredictionJobSpec:
    kw.setdefault("gcs_destination_output_uri_prefix", str(tmp_path / "out"))
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return BatchPredictionJobSpec(
        job_display_name=kw.pop("job_display_name", "job"),
        gcs_source_uris=uris,
        model_uri=model_dir,
        **kw,
    )


def test_vertex_layout_and_exact_json_lines(tmp_path, sklearn_model_dir, sklearn_model, iris):
    X, _ = iris
    rows = X[:20].tolist()
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_batch_prediction(
        spec(tmp_path, [data], sklearn_model_dir, model_display_name="iris_model")
    )
    out_dir = result.gcs_output_directory
    assert DIR_RE.search(os.path.basename(out_dir)).group("model") == "iris_model"
    # exactly what Vertex writes for a custom model on a clean run: "always 2 files"
    assert sorted(os.listdir(out_dir)) == [
        "prediction.errors_stats-00000-of-00001",
        "prediction.results-00000-of-00001",
    ]
    # the completion stats are in the result (and artifacts, CLI JSON), not beside the directory:
    # a local directory appears at once, so it needs no completeness marker
    assert os.listdir(os.path.dirname(out_dir)) == [os.path.basename(out_dir)]
    expected = sklearn_model.predict(np.asarray(rows)).tolist()
    with open(os.path.join(out_dir, "prediction.results-00000-of-00001")) as f:
        lines = f.read().splitlines()
    assert lines == [json.dumps({"instance": r, "prediction": p}) for r, p in zip(rows, expected)]
    assert Path(out_dir, "prediction.errors_stats-00000-of-00001").read_text() == ""
    assert result.completion_stats == {
        "successful_count": 20,
        "failed_count": 0,
        "incomplete_count": 0,
    }


def test_counts_conserved_with_malformed_lines_wrong_arity_and_strings(
    tmp_path, sklearn_model_dir, iris
):
    X, _ = iris
    good = X[:30].tolist()
    raw = ["{not json", "[1.0, 2.0]", '["a", "b", "c", "d"]', "", "   "]
    data = write_jsonl(tmp_path / "in.jsonl", good, raw)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data, str(empty)],
            sklearn_model_dir,
            manual_batch_tuning_parameters_batch_size=8,
        )
    )
    out = read_output(result.gcs_output_directory, result)
    assert len(out["results"]) == 30
    assert len(out["errors"]) == 3  # blank lines are not instances
    assert out["stats"]["read_count"] == 33
    assert (
        result.completion_stats["successful_count"] + result.completion_stats["failed_count"] == 33
    )
    codes = sorted(e["error"]["code"] for e in out["errors"])
    assert codes == [3, 3, 3]
    shown = [e["instance"] for e in out["errors"]]
    assert "{not json" in shown and [1.0, 2.0] in shown and ["a", "b", "c", "d"] in shown
    total = sum(eval(line)[1] for line in out["errors_stats"])  # lines are repr((msg, count))
    assert total == 3


def test_model_error_isolated_with_code_13(tmp_path):
    """A model that fails on some instances: the rest succeed, each failure is recorded."""
    model_dir = tmp_path / "cpr"
    model_dir.mkdir()
    module = tmp_path / "flaky_predictor.py"
    module.write_text(
        "class Flaky:\n"
        "    def load(self, artifacts_uri):\n"
        "        self.loaded = artifacts_uri\n"
        "    def preprocess(self, body):\n"
        "        return body['instances']\n"
        "    def predict(self, instances):\n"
        "        if any(i == 13 for i in instances):\n"
        "            raise RuntimeError('unlucky')\n"
        "        return [i * 2 for i in instances]\n"
        "    def postprocess(self, results):\n"
        "        return {'predictions': results}\n"
    )
    data = write_jsonl(tmp_path / "in.jsonl", list(range(40)))
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data],
            str(model_dir),
            predictor_class=f"{module}:Flaky",
            manual_batch_tuning_parameters_batch_size=16,
        )
    )
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"] for r in out["results"]) == [i for i in range(40) if i != 13]
    assert all(r["prediction"] == r["instance"] * 2 for r in out["results"])
    assert out["errors"] == [
        {
            "instance": 13,
            "error": {"code": 13, "message": "RuntimeError: unlucky"},
            "source": {"uri": data, "line": 14},  # the 14th line holds 13
        }
    ]
    assert out["errors_stats"] == ["('RuntimeError: unlucky', 1)"]


def test_batch_size_is_respected_exactly(tmp_path):
    module = tmp_path / "sizes_predictor.py"
    log = tmp_path / "sizes.txt"
    module.write_text(
        "class Sizes:\n"
        "    def load(self, artifacts_uri): pass\n"
        "    def preprocess(self, body): return body\n"
        "    def predict(self, body):\n"
        f"        open({str(log)!r}, 'a').write(str(len(body['instances'])) + '\\n')\n"
        "        return [body['parameters']['scale'] * i for i in body['instances']]\n"
        "    def postprocess(self, results): return {'predictions': results}\n"
    )
    (tmp_path / "m").mkdir()
    data = write_jsonl(tmp_path / "in.jsonl", list(range(25)))
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data],
            str(tmp_path / "m"),
            predictor_class=f"{module}:Sizes",
            manual_batch_tuning_parameters_batch_size=7,
            model_parameters={"scale": 3},
        )
    )
    assert log.read_text().split() == ["7", "7", "7", "4"]
    out = read_output(result.gcs_output_directory)
    assert sorted(r["prediction"] for r in out["results"]) == [3 * i for i in range(25)]


def test_key_field_output_and_csv_and_parquet_formats(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    X, _ = iris
    names = ["a", "b", "c", "d"]
    rows = [{"id": f"r{i}", **dict(zip(names, x))} for i, x in enumerate(X[:10].tolist())]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    expected = dict(zip([r["id"] for r in rows], sklearn_model.predict(X[:10]).tolist()))
    common = dict(key_field="id", instance_type="array", included_fields=names)
    jsonl = run_batch_prediction(spec(tmp_path, [data], sklearn_model_dir, **common))
    got = {r["key"]: r["prediction"] for r in read_output(jsonl.gcs_output_directory)["results"]}
    assert got == expected
    csv_result = run_batch_prediction(
        spec(tmp_path, [data], sklearn_model_dir, predictions_format="csv", **common)
    )
    csv_path = os.path.join(
        csv_result.gcs_output_directory, "prediction.results-00000-of-00001.csv"
    )
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == "key,prediction"
    assert {ln.split(",")[0]: int(ln.split(",")[1]) for ln in lines[1:]} == expected
    pq_result = run_batch_prediction(
        spec(tmp_path, [data], sklearn_model_dir, predictions_format="parquet", **common)
    )
    table = pq.read_table(
        os.path.join(pq_result.gcs_output_directory, "prediction.results-00000-of-00001.parquet")
    )
    assert dict(zip(table["key"].to_pylist(), table["prediction"].to_pylist())) == expected


def test_csv_input_csv_output_has_instance_columns(tmp_path, sklearn_model_dir):
    path = tmp_path / "in.csv"
    path.write_text("sl,sw,pl,pw\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    result = run_batch_prediction(
        spec(
            tmp_path,
            [str(path)],
            sklearn_model_dir,
            instances_format="csv",
            predictions_format="csv",
        )
    )
    lines = (
        Path(result.gcs_output_directory, "prediction.results-00000-of-00001.csv")
        .read_text()
        .splitlines()
    )
    assert lines[0] == "sl,sw,pl,pw,prediction"
    assert lines[1] == "5.1,3.5,1.4,0.2,0"


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "spawn"])
def test_many_workers_many_splits_count_everything_once(
    tmp_path, sklearn_model_dir, monkeypatch, fork
):
    from batchpredict import engine

    monkeypatch.setattr(engine, "FORK_WHEN_SINGLE_THREADED", fork)
    monkeypatch.setattr(sources, "SPLIT_BYTES", 4096)
    rng = np.random.default_rng(3)
    rows = rng.normal(5, 1, size=(3000, 4)).round(3).tolist()
    data = write_jsonl(tmp_path / "in.jsonl", rows, ["oops"] * 5)
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data],
            sklearn_model_dir,
            workers=2,
            manual_batch_tuning_parameters_batch_size=100,
        )
    )
    assert result.stats["workers"] == 2
    out = read_output(result.gcs_output_directory)
    names = sorted(os.listdir(result.gcs_output_directory))
    assert "prediction.results-00000-of-00002" in names
    assert "prediction.results-00001-of-00002" in names
    assert sorted(r["instance"] for r in out["results"]) == sorted(rows)
    assert len(out["errors"]) == 5
    assert result.completion_stats["successful_count"] == 3000
    assert result.completion_stats["failed_count"] == 5


def test_line_splits_cover_every_line_exactly_once(tmp_path, monkeypatch):
    """Byte-range splits never lose or repeat a line, whatever the split size."""
    lines = [json.dumps(list(range(i % 7))) for i in range(500)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines))  # no trailing newline on purpose
    for size in (1, 5, 17, 64, 1000, 10**6):
        monkeypatch.setattr(sources, "SPLIT_BYTES", size)
        src = formats.make_source("jsonl", [str(path)], InstanceConfig())
        seen = []
        for split in src.splits():
            for batch in src.batches(split, 50):
                seen += batch.converted.instances
        assert seen == [json.loads(x) for x in lines], size


def test_xgboost_layouts_predict_through_dmatrix(tmp_path, iris):
    import joblib
    import xgboost as xgb

    X, y = iris
    yb = (y > 0).astype(int)
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, yb)
    booster = clf.get_booster()
    expected = booster.predict(xgb.DMatrix(X[:5].astype(np.float32))).tolist()
    data = write_jsonl(tmp_path / "in.jsonl", X[:5].tolist())
    for name in ("model.bst", "model.json", "model.ubj", "model.joblib", "model.pkl"):
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        if name in ("model.joblib", "model.pkl"):
            joblib.dump(clf, d / name)
        else:
            booster.save_model(str(d / name))
        result = run_batch_prediction(spec(tmp_path, [data], str(d)))
        preds = [r["prediction"] for r in read_output(result.gcs_output_directory)["results"]]
        assert preds == pytest.approx(expected, rel=1e-6), name
        assert result.stats["model_framework"] == "xgboost"


def test_sklearn_pkl_and_return_probabilities(tmp_path, sklearn_model, iris):
    import pickle

    X, _ = iris
    d = tmp_path / "pkl"
    d.mkdir()
    with open(d / "model.pkl", "wb") as f:
        pickle.dump(sklearn_model, f)
    data = write_jsonl(tmp_path / "in.jsonl", X[:3].tolist())
    labels = run_batch_prediction(spec(tmp_path, [data], str(d)))
    probs = run_batch_prediction(spec(tmp_path, [data], str(d), return_probabilities=True))
    got_labels = [r["prediction"] for r in read_output(labels.gcs_output_directory)["results"]]
    got_probs = [r["prediction"] for r in read_output(probs.gcs_output_directory)["results"]]
    assert got_labels == sklearn_model.predict(X[:3]).tolist()
    np.testing.assert_allclose(got_probs, sklearn_model.predict_proba(X[:3]), rtol=1e-12)


def test_image_uri_picks_the_framework(tmp_path, sklearn_model_dir):
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]])
    tf_image = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-13:latest"
    with pytest.raises(UserError, match="is a TensorFlow SavedModel image, but the model") as err:
        run_batch_prediction(
            spec(tmp_path, [data], sklearn_model_dir, container_image_uri=tf_image)
        )
    assert "saved_model.pb" in str(err.value) and "model.joblib" in str(err.value)
    # An image of a framework with no in-process handler: in_process refuses it, naming the way
    # out (serving_mode auto runs it in its container: tests/test_serving_container.py).
    torch_image = "us-docker.pkg.dev/vertex-ai/prediction/pytorch-cpu.2-1:latest"
    with pytest.raises(
        UserError, match="PyTorch TorchServe archive model, which the local backend"
    ) as err:
        run_batch_prediction(
            spec(
                tmp_path,
                [data],
                sklearn_model_dir,
                container_image_uri=torch_image,
                serving_mode="in_process",
            )
        )
    assert "serving_mode='auto' or 'container'" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gcs_source_uris": ["/nonexistent/*.jsonl"]}, "No input file matches"),
        ({"model_uri": "/nonexistent/model"}, "does not exist"),
        ({"instances_format": "avro"}, "Unknown instances_format='avro'"),
        (
            {"included_fields": ["a"], "excluded_fields": ["b"]},
            "included_fields and excluded_fields are mutually exclusive",
        ),
        ({"generate_explanation": True}, "not supported locally yet"),
        ({"instance_type": "object", "instances_format": "csv"}, "instance_type='object'"),
    ],
)
def test_job_level_errors_leave_no_output(tmp_path, sklearn_model_dir, kwargs, message):
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]])
    base = dict(gcs_source_uris=[data], model_uri=sklearn_model_dir)
    base.update(kwargs)
    uris = base.pop("gcs_source_uris")
    model = base.pop("model_uri")
    with pytest.raises(UserError, match=re.escape(message)):
        run_batch_prediction(spec(tmp_path, uris, model, **base))
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_unreadable_model_fails_and_removes_partial_output(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "model.joblib").write_bytes(b"this is not a pickle")
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]])
    with pytest.raises(UserError, match="Cannot load the sklearn model"):
        run_batch_prediction(spec(tmp_path, [data], str(d)))
    assert os.listdir(tmp_path / "out") == []


def test_max_failed_fraction_fails_the_job_after_writing_output(tmp_path, sklearn_model_dir):
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]], ["bad"] * 3)
    with pytest.raises(UserError, match=r"3 of 4 instances failed \(75.0%\)"):
        run_batch_prediction(spec(tmp_path, [data], sklearn_model_dir, max_failed_fraction=0.5))
    (out_dir,) = os.listdir(tmp_path / "out")
    assert len(read_output(str(tmp_path / "out" / out_dir))["errors"]) == 3


def test_fixed_output_directory_name_replaces_previous_run(tmp_path, sklearn_model_dir):
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]])
    for _ in range(2):
        result = run_batch_prediction(
            spec(tmp_path, [data], sklearn_model_dir, output_directory_name="fixed")
        )
    assert result.gcs_output_directory == str(tmp_path / "out" / "fixed")
    assert os.listdir(tmp_path / "out") == ["fixed"]


def test_vertex_only_inputs_are_recorded(tmp_path, sklearn_model_dir):
    data = write_jsonl(tmp_path / "in.jsonl", [[1, 2, 3, 4]])
    result = run_batch_prediction(
        spec(tmp_path, [data], sklearn_model_dir, machine_type="n1-standard-4", max_replica_count=3)
    )
    assert result.stats["vertex_only_settings"] == {
        "machine_type": "n1-standard-4",
        "max_replica_count": 3,
    }


def test_a_worker_that_dies_redoes_its_work_and_records_the_crashing_instance(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sources, "SPLIT_BYTES", 64)
    module = tmp_path / "crash_predictor.py"
    module.write_text(
        "import os\n"
        "class Crash:\n"
        "    def load(self, artifacts_uri): pass\n"
        "    def preprocess(self, body): return body['instances']\n"
        "    def predict(self, instances):\n"
        "        if 7 in instances:\n"
        "            os._exit(3)\n"
        "        return instances\n"
        "    def postprocess(self, results): return {'predictions': results}\n"
    )
    (tmp_path / "m").mkdir()
    data = write_jsonl(tmp_path / "in.jsonl", list(range(100)))
    result = run_batch_prediction(
        spec(tmp_path, [data], str(tmp_path / "m"), workers=2, predictor_class=f"{module}:Crash")
    )
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"] for r in out["results"]) == [i for i in range(100) if i != 7]
    (error,) = out["errors"]
    assert error["instance"] == 7 and error["source"]["line"] == 8
    assert error["error"] == {
        "code": 13,
        "message": "The model crashed the worker process (exit code 3) on this instance.",
    }
    assert sorted(os.listdir(tmp_path / "out")) == [os.path.basename(result.gcs_output_directory)]


def test_csv_output_of_jsonl_objects_names_the_included_columns(tmp_path, sklearn_model_dir, iris):
    X, _ = iris
    names = ["a", "b", "c", "d"]
    data = write_jsonl(tmp_path / "in.jsonl", [dict(zip(names, X[0].tolist()))])
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data],
            sklearn_model_dir,
            instance_type="array",
            included_fields=names,
            predictions_format="csv",
        )
    )
    header = (
        Path(result.gcs_output_directory, "prediction.results-00000-of-00001.csv")
        .read_text()
        .splitlines()[0]
    )
    assert header == "a,b,c,d,prediction"


def test_a_real_cpr_predictor_subclass_runs_unchanged(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    """A Predictor written for Vertex's CPR model server, artifacts copied into its cwd."""
    module = tmp_path / "cpr_predictor.py"
    module.write_text(
        "import joblib, numpy as np\n"
        "from google.cloud.aiplatform.prediction.predictor import Predictor\n"
        "from google.cloud.aiplatform.utils import prediction_utils\n"
        "class IrisPredictor(Predictor):\n"
        "    def load(self, artifacts_uri):\n"
        "        prediction_utils.download_model_artifacts(artifacts_uri)\n"
        "        self._model = joblib.load('model.joblib')\n"
        "    def preprocess(self, prediction_input):\n"
        "        self._scale = prediction_input.get('parameters', {}).get('scale', 1)\n"
        "        return np.asarray(prediction_input['instances'])\n"
        "    def predict(self, instances):\n"
        "        return self._model.predict_proba(instances)\n"
        "    def postprocess(self, results):\n"
        "        scaled = [(r * self._scale).tolist() for r in results]\n"
        "        return {'predictions': [{'scores': s} for s in scaled]}\n"
    )
    X, _ = iris
    data = write_jsonl(tmp_path / "in.jsonl", X[:6].tolist())
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data],
            sklearn_model_dir,
            predictor_class=f"{module}:IrisPredictor",
            model_parameters={"scale": 2},
        )
    )
    got = [r["prediction"]["scores"] for r in read_output(result.gcs_output_directory)["results"]]
    np.testing.assert_allclose(got, sklearn_model.predict_proba(X[:6]) * 2, rtol=1e-12)
    assert result.stats["model_framework"] == "custom"


def test_excluded_id_is_attached_to_results_in_every_format(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    import csv as csv_module

    X, _ = iris
    rows = [{"row": f"r{i}", **dict(zip("abcd", x))} for i, x in enumerate(X[:6].tolist())]
    expected = dict(zip((r["row"] for r in rows), sklearn_model.predict(X[:6]).tolist()))
    # CSV rows are arrays in column order, as the scikit-learn model takes them.
    csv_path = tmp_path / "in.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv_module.writer(f, quoting=csv_module.QUOTE_NONNUMERIC)
        w.writerow(["row", "a", "b", "c", "d"])
        for r in rows:
            w.writerow([r["row"], r["a"], r["b"], r["c"], r["d"]])
    for fmt in ("jsonl", "csv", "parquet"):
        result = run_batch_prediction(
            BatchPredictionJobSpec(
                job_display_name=f"excl-{fmt}",
                model_uri=sklearn_model_dir,
                instances_format="csv",
                gcs_source_uris=[str(csv_path)],
                gcs_destination_output_uri_prefix=str(tmp_path / fmt),
                excluded_fields=["row"],
                predictions_format=fmt,
                progress=False,
                workers=1,
            )
        )
        assert result.completion_stats["failed_count"] == 0
        directory = result.gcs_output_directory
        (shard,) = [p for p in os.listdir(directory) if p.startswith("prediction.results-")]
        path = os.path.join(directory, shard)
        if fmt == "jsonl":
            with open(path) as f:
                got = {json.loads(ln)["instance"][0]: json.loads(ln)["prediction"] for ln in f}
        elif fmt == "csv":
            with open(path) as f:
                table = list(csv_module.DictReader(f))
            assert list(table[0]) == ["row", "a", "b", "c", "d", "prediction"]
            got = {r["row"]: int(r["prediction"]) for r in table}
        else:
            table = pq.read_table(path).to_pylist()
            assert list(table[0]) == ["row", "a", "b", "c", "d", "prediction"]
            got = {r["row"]: r["prediction"] for r in table}
        assert got == expected, fmt


def test_error_records_label_a_record_whose_key_could_not_be_read_as_instance(
    tmp_path, sklearn_model_dir
):
    bad_value = {"id": 3, "a": "x", "b": 1.0, "c": 1.0, "d": 1.0}
    rows = [{"id": 1, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, {"a": 1.0}, bad_value]
    data = write_jsonl(tmp_path / "in.jsonl", rows, raw_lines=['{"id": 4, "a": '])
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="labels",
            model_uri=sklearn_model_dir,
            gcs_source_uris=[data],
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            key_field="id",
            instance_type="array",
            included_fields=["a", "b", "c", "d"],
            progress=False,
            workers=1,
        )
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    assert len(errors) == 3
    # the key could not be read: the record carries the instance (the parsed line, or its text)
    missing = [e for e in errors if e.get("instance") == {"a": 1.0}]
    assert missing[0]["error"]["message"] == "key_field 'id' is missing from the instance."
    assert [e["instance"] for e in errors if "Invalid JSON" in e["error"]["message"]] == [
        '{"id": 4, "a": '
    ]
    # the key was read and the model failed on the instance: the record carries the key alone
    assert [e["key"] for e in errors if "key" in e] == [3]


def test_error_records_say_which_file_and_line(tmp_path, sklearn_model_dir, monkeypatch):
    # small splits and batches: failures in later splits and batches, blank lines between
    monkeypatch.setattr(sources, "SPLIT_BYTES", 200)
    good = "[1.0, 2.0, 3.0, 4.0]"
    lines = []
    for i in range(60):
        lines.append("" if i % 7 == 3 else good)
    bad = {10: "{not json", 25: '["a", "b", "c", "d"]', 41: "[1.0, 2.0]", 58: "{oops"}
    for n, text in bad.items():
        lines[n - 1] = text  # line n (1-based)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_batch_prediction(
        spec(tmp_path, [str(path)], sklearn_model_dir, manual_batch_tuning_parameters_batch_size=4)
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    got = {e["source"]["line"]: e for e in errors}
    assert sorted(got) == sorted(bad)
    assert all(e["source"]["uri"] == str(path) for e in errors)
    assert got[25]["error"]["code"] == 3 and "instance" in got[25]  # failed in predict
    assert got[10]["instance"] == "{not json"  # failed to parse
    csv_path = tmp_path / "in.csv"
    csv_path.write_text('a,b,c,d\n1,2,3,4\n\n1,2\n"x",2,3,4\n5,6,7,8\n')
    result = run_batch_prediction(
        spec(tmp_path, [str(csv_path)], sklearn_model_dir, instances_format="csv")
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    assert sorted(e["source"]["line"] for e in errors) == [4, 5]


UNLUCKY_PREDICTOR = (
    "import base64\n"
    "class Unlucky:\n"
    "    # fails on instances whose first value (or b64 payload) is 13 or 27\n"
    "    def load(self, artifacts_uri):\n"
    "        pass\n"
    "    def preprocess(self, body):\n"
    "        return body['instances']\n"
    "    def predict(self, instances):\n"
    "        values = [int(base64.b64decode(x['b64'])) if isinstance(x, dict) else x[0]\n"
    "                  for x in instances]\n"
    "        if any(v in (13, 27) for v in values):\n"
    "            raise RuntimeError('unlucky')\n"
    "        return values\n"
    "    def postprocess(self, results):\n"
    "        return {'predictions': results}\n"
)


def test_parquet_error_records_say_which_file_and_row(tmp_path, sklearn_model_dir):
    import pyarrow as pa

    (tmp_path / "unlucky.py").write_text(UNLUCKY_PREDICTOR)
    paths = []
    for n, first in enumerate((0, 20)):  # two files, several row groups each
        path = tmp_path / f"part{n}.parquet"
        values = list(range(first, first + 20))
        table = pa.table({"v": values, "w": [float(v) for v in values]})
        pq.write_table(table, path, row_group_size=6)
        paths.append(str(path))
    result = run_batch_prediction(
        spec(
            tmp_path,
            paths,
            sklearn_model_dir,
            instances_format="parquet",
            predictor_class=f"{tmp_path / 'unlucky.py'}:Unlucky",
            manual_batch_tuning_parameters_batch_size=4,
        )
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    got = sorted((e["instance"][0], e["source"]) for e in errors)
    assert got == [(13, {"uri": paths[0], "row": 13}), (27, {"uri": paths[1], "row": 7})]
    for value, where in got:  # the row as pyarrow reads it
        assert pq.read_table(where["uri"]).slice(where["row"], 1)["v"][0].as_py() == value


@pytest.mark.parametrize("fmt", ["tf-record", "tf-record-gzip"])
def test_tfrecord_error_records_say_which_file_and_record(tmp_path, sklearn_model_dir, fmt):
    import gzip

    from batchpredict.io.tfrecord import write_record

    (tmp_path / "unlucky.py").write_text(UNLUCKY_PREDICTOR)
    path = tmp_path / "in.tfrecord"
    opener = gzip.open if fmt == "tf-record-gzip" else open
    with opener(path, "wb") as f:
        for v in range(30):
            write_record(f, str(v).encode())
        write_record(f, b"corrupted")
    if fmt == "tf-record":
        data = bytearray(path.read_bytes())
        data[-6] ^= 0xFF  # a byte of the last record's data: its CRC fails
        path.write_bytes(bytes(data))
    else:  # cut the last record short inside the stream
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:-5]))
    result = run_batch_prediction(
        spec(
            tmp_path,
            [str(path)],
            sklearn_model_dir,
            instances_format=fmt,
            predictor_class=f"{tmp_path / 'unlucky.py'}:Unlucky",
            manual_batch_tuning_parameters_batch_size=8,
        )
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    by_record = {e["source"]["record"]: e for e in errors}
    assert sorted(by_record) == [13, 27, 30]
    assert all(e["source"]["uri"] == str(path) for e in errors)
    assert "Corrupt TFRecord input" in by_record[30]["error"]["message"]
    assert by_record[27]["error"]["message"] == "RuntimeError: unlucky"


def test_errors_stats_groups_model_errors_by_cause_without_instance_values(
    tmp_path, sklearn_model_dir
):
    # 10% bad rows, each with its own value: errors_stats has one line per cause, not per row;
    # the errors file keeps each message as the model raised it
    module = tmp_path / "lookup_predictor.py"
    module.write_text(
        "import numpy as np\n"
        "COLOURS = {'red': 1.0, 'blue': 2.0}\n"
        "class Lookup:\n"
        "    def load(self, artifacts_uri):\n"
        "        pass\n"
        "    def preprocess(self, body):\n"
        "        return body['instances']\n"
        "    def predict(self, instances):\n"
        "        colours = [COLOURS[x[0]] for x in instances]\n"
        "        values = np.asarray([x[1:] for x in instances], dtype=np.float64)\n"
        "        return (values.sum(axis=1) * colours).tolist()\n"
        "    def postprocess(self, results):\n"
        "        return {'predictions': results}\n"
    )
    rows = [["red", 1.0, 2.0] for _ in range(200)]
    for i in range(0, 200, 10):
        rows[i] = ["red", f"n/a-{i}", 2.0]  # numpy: could not convert string to float: 'n/a-0'
        rows[i + 1] = [f"colour{i}", 1.5, 2.5]  # KeyError: 'colour0'
        rows[i + 2] = ["blue", 1234567.5, 0.000123]  # fine: numbers in the data are not causes
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    bad = tmp_path / "in2.jsonl"
    bad.write_text('{"a": \n[1, 2\n   {oops}\n')  # malformed JSON, failing at different columns
    result = run_batch_prediction(
        spec(
            tmp_path,
            [data, str(bad)],
            sklearn_model_dir,
            predictor_class=f"{module}:Lookup",
            manual_batch_tuning_parameters_batch_size=32,
        )
    )
    out = read_output(result.gcs_output_directory)
    assert out["errors_stats"] == [
        "('KeyError: <value>', 20)",
        "('ValueError: could not convert string to float: <value>', 20)",
        "('Invalid JSON: unexpected end of data', 2)",
        "('Invalid JSON: unexpected character, expected a string key', 1)",
    ]
    messages = sorted(e["error"]["message"] for e in out["errors"])
    assert [m for m in messages if "convert string" in m] == sorted(
        f"ValueError: could not convert string to float: 'n/a-{i}'" for i in range(0, 200, 10)
    )
    assert [m for m in messages if m.startswith("KeyError")] == sorted(
        f"KeyError: 'colour{i}'" for i in range(0, 200, 10)
    )
    assert "Invalid JSON: unexpected end of data: line 1 column 7 (char 6)" in messages
    assert len(out["results"]) == 160 and len(out["errors"]) == 43


def test_errors_stats_stays_small_however_many_distinct_messages(tmp_path, sklearn_model_dir):
    # every failure with its own message that no rule generalises: the most frequent causes get
    # a line each, the rest one line
    from batchpredict import layout

    module = tmp_path / "wordy_predictor.py"
    module.write_text(
        "class Wordy:\n"
        "    def load(self, artifacts_uri):\n"
        "        pass\n"
        "    def preprocess(self, body):\n"
        "        return body['instances']\n"
        "    def predict(self, instances):\n"
        "        for i in instances:\n"
        "            if i % 2:\n"
        "                word = ''.join(chr(97 + int(d)) for d in str(i))\n"
        "                raise RuntimeError('no luck with ' + word)\n"
        "        return instances\n"
        "    def postprocess(self, results):\n"
        "        return {'predictions': results}\n"
    )
    data = write_jsonl(tmp_path / "in.jsonl", list(range(400)))
    result = run_batch_prediction(
        spec(tmp_path, [data], sklearn_model_dir, predictor_class=f"{module}:Wordy")
    )
    out = read_output(result.gcs_output_directory)
    assert len(out["errors"]) == 200
    assert len(out["errors_stats"]) == layout.MAX_ERRORS_STATS_LINES + 1
    rest = 200 - layout.MAX_ERRORS_STATS_LINES
    assert out["errors_stats"][-1] == repr((layout.OTHER_ERRORS_CAUSE, rest))
