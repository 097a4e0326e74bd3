"""Failed instances are never silent: the job names the count, the causes and the errors file."""

import json
import os

import pytest
from kfp import dsl, local

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.errors import UserError
from components.model_batch_predict import ModelBatchPredictOp
from tests.conftest import write_jsonl


def _keyed(tmp_path, iris, n=30):
    X, _ = iris
    rows = [{"id": i, "a": r[0], "b": r[1], "c": r[2], "d": r[3]} for i, r in enumerate(X[:n])]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _spec(src, out, model, **kw):
    return BatchPredictionJobSpec(
        job_display_name="summary",
        model_uri=model,
        gcs_source_uris=[src],
        gcs_destination_output_uri_prefix=str(out),
        progress=False,
        workers=1,
        **kw,
    )


def test_objects_to_an_array_model_fail_loudly_with_the_array_hint(
    tmp_path, iris, sklearn_model_dir, capfd
):
    src = _keyed(tmp_path, iris)
    result = run_batch_prediction(_spec(src, tmp_path / "out", sklearn_model_dir, key_field="id"))
    assert result.completion_stats["failed_count"] == 30
    err = capfd.readouterr().err
    assert "30 of 30 instances failed (100.0%)" in err
    assert "30 x TypeError: float() argument must be" in err
    assert f"{result.gcs_output_directory}/prediction.errors-*" in err
    assert "instance_type='array' with included_fields=" in err
    assert "key_field='id'" in err


def test_a_typo_in_included_fields_is_reported_without_the_hint(
    tmp_path, iris, sklearn_model_dir, capfd
):
    src = _keyed(tmp_path, iris)
    spec = _spec(
        src,
        tmp_path / "out",
        sklearn_model_dir,
        key_field="id",
        instance_type="array",
        included_fields=["a", "b", "c", "dd"],
    )
    run_batch_prediction(spec)
    err = capfd.readouterr().err
    assert "30 x included_fields ['dd'] missing from the instance." in err
    assert "Hint" not in err


def test_some_failures_are_reported_and_a_clean_run_prints_nothing(
    tmp_path, iris, sklearn_model_dir, capfd
):
    X, _ = iris
    src = write_jsonl(tmp_path / "in.jsonl", X[:10].tolist(), raw_lines=["[1, 2]", "{bad"])
    run_batch_prediction(_spec(src, tmp_path / "out", sklearn_model_dir))
    err = capfd.readouterr().err
    assert "2 of 12 instances failed (16.7%)" in err
    assert "1 x Invalid JSON" in err
    assert "Hint" not in err
    clean = write_jsonl(tmp_path / "clean.jsonl", X[:10].tolist())
    run_batch_prediction(_spec(clean, tmp_path / "out2", sklearn_model_dir))
    assert "failed" not in capfd.readouterr().err


def test_above_max_failed_fraction_the_error_names_the_errors_file(
    tmp_path, iris, sklearn_model_dir, capfd
):
    src = _keyed(tmp_path, iris)
    spec = _spec(src, tmp_path / "out", sklearn_model_dir, key_field="id", max_failed_fraction=0.5)
    with pytest.raises(UserError, match=r"Failed instances and their errors: .*prediction\.errors"):
        run_batch_prediction(spec)
    assert "Hint:" in capfd.readouterr().err


@dsl.component
def iris_keyed(model: dsl.Output[dsl.Model], instances: dsl.Output[dsl.Dataset]) -> list[str]:
    import json
    import os

    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    os.makedirs(model.path, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), f"{model.path}/model.joblib")
    with open(instances.path, "w") as f:
        for i, r in enumerate(X.tolist()):
            f.write(json.dumps({"id": i, "a": r[0], "b": r[1], "c": r[2], "d": r[3]}) + "\n")
    return [instances.path]


@dsl.pipeline(name="objects-to-an-array-model")
def objects_pipeline(out: str):
    made = iris_keyed()
    ModelBatchPredictOp(
        job_display_name="objects",
        model=made.outputs["model"],
        gcs_source_uris=made.outputs["Output"],
        gcs_destination_output_uri_prefix=out,
        key_field="id",
        workers=1,
    )


def test_the_step_log_says_instances_failed(tmp_path, capfd):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    objects_pipeline(out=str(tmp_path / "predictions"))
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert "150 of 150 instances failed (100.0%)" in log
    assert "Hint: the sklearn model received JSON objects" in log
    (out_dir,) = os.listdir(tmp_path / "predictions")
    errors = os.path.join(tmp_path, "predictions", out_dir, "prediction.errors-00000-of-00001")
    with open(errors) as f:
        assert len([json.loads(line) for line in f]) == 150
