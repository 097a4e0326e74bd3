import json
import os

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from kfp import dsl

from batchpredict.errors import UserError
from batchpredict.tasks.dataset import make_splits
from batchpredict.tasks.train import (
    normalize_hyperparameters,
    prebuilt_image_uri,
    run_train,
    train_model,
)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    d = tmp_path_factory.mktemp("cancer")
    split = make_splits("breast_cancer")
    pq.write_table(split.train, d / "train.parquet")
    pq.write_table(split.test, d / "test.parquet")
    return d, split


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    d = tmp_path_factory.mktemp("diabetes")
    split = make_splits("diabetes")
    pq.write_table(split.train, d / "train.parquet")
    return d, split


def _features(table: pa.Table, names: list[str]) -> list[list[float]]:
    """Instances as batch prediction sends them: JSON arrays of floats in feature order."""
    return json.loads(json.dumps([[row[n] for n in names] for row in table.to_pylist()]))


def test_sklearn_classifier_in_vertex_layout(cancer, tmp_path):
    d, split = cancer
    result = train_model(
        str(d / "train.parquet"),
        str(tmp_path / "model"),
        "target",
        dataset_metadata=split.train_metadata,
    )
    meta = result.metadata
    assert os.listdir(tmp_path / "model") == ["model.joblib"]
    assert meta["framework"] == "sklearn" and meta["model_file"] == "model.joblib"
    assert meta["problem_type"] == "classification" and meta["algorithm"] == "logistic_regression"
    assert meta["class_labels"] == [0, 1] and meta["class_names"] == ["malignant", "benign"]
    assert meta["feature_names"] == [c for c in split.train.column_names if c != "target"]
    assert meta["target"] == "target"
    assert meta["containerSpec"]["imageUri"] == (
        "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"
    )
    json.dumps(meta)  # KFP metadata must be JSON
    # Vertex's sklearn container: model.predict(np.asarray(instances)), no column names.
    model = joblib.load(tmp_path / "model" / "model.joblib")
    predictions = model.predict(np.asarray(_features(split.test, meta["feature_names"])))
    accuracy = float(np.mean(predictions == split.test.column("target").to_numpy()))
    assert accuracy > 0.9


def test_xgboost_regressor_is_a_booster_predicted_on_an_unnamed_dmatrix(diabetes, tmp_path):
    d, split = diabetes
    result = train_model(
        str(d / "train.parquet"),
        str(tmp_path / "model"),
        "target",
        framework="xgboost",
        hyperparameters={"max_depth": 2.0, "eta": 0.05, "num_boost_round": 50.0},
        dataset_metadata=split.train_metadata,
    )
    meta = result.metadata
    assert os.listdir(tmp_path / "model") == ["model.bst"]
    assert meta["problem_type"] == "regression" and meta["class_labels"] == []
    assert meta["containerSpec"]["imageUri"].endswith("/xgboost-cpu.2-1:latest")
    assert meta["hyperparameters"] == {"max_depth": 2, "eta": 0.05}
    booster = xgb.Booster(model_file=str(tmp_path / "model" / "model.bst"))
    x = _features(split.train.slice(0, 5), meta["feature_names"])
    out = booster.predict(xgb.DMatrix(x))
    assert out.shape == (5,) and np.all(out > 0)


def test_xgboost_binary_classifier_predicts_probabilities_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    labels = np.where(x[:, 0] + x[:, 1] > 0, "spam", "ham")
    pq.write_table(
        pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": labels}), tmp_path / "t.parquet"
    )
    meta = train_model(
        str(tmp_path / "t.parquet"), str(tmp_path / "m"), "y", framework="xgboost"
    ).metadata
    assert meta["class_labels"] == ["ham", "spam"] and meta["problem_type"] == "classification"
    booster = xgb.Booster(model_file=str(tmp_path / "m" / "model.bst"))
    p = booster.predict(xgb.DMatrix(x.tolist()))
    assert ((p >= 0) & (p <= 1)).all()
    picked = np.where(p >= 0.5, "spam", "ham")
    assert np.mean(picked == labels) > 0.9


def test_sklearn_regressor_algorithms(diabetes, tmp_path):
    d, _ = diabetes
    for algorithm in ("ridge", "random_forest"):
        meta = train_model(
            str(d / "train.parquet"),
            str(tmp_path / algorithm),
            "target",
            algorithm=algorithm,
            problem_type="regression",
            hyperparameters={"n_estimators": 10.0} if algorithm == "random_forest" else {},
        ).metadata
        assert meta["algorithm"] == algorithm and meta["train_score"] > 0.3


def test_run_train_reads_the_dataset_artifact(cancer, tmp_path):
    d, split = cancer
    data = dsl.Dataset(uri=str(d / "train.parquet"), metadata=dict(split.train_metadata))
    model = dsl.Model(uri=str(tmp_path / "model"))
    run_train(train_data=data, model=model, target_column="", seed=1)
    assert model.metadata["target"] == "target"
    assert model.metadata["class_names"] == ["malignant", "benign"]


@pytest.mark.parametrize(
    ("framework", "version", "image_version"),
    [
        ("sklearn", "1.9.1", "1-5"),
        ("sklearn", "1.2.2", "1-2"),
        ("sklearn", "1.4.0", "1-3"),
        ("sklearn", "0.19.0", "0-20"),
        ("xgboost", "3.2.0", "2-1"),
        ("xgboost", "1.7.6", "1-7"),
    ],
)
def test_prebuilt_image_is_the_newest_not_newer_than_the_version(framework, version, image_version):
    assert prebuilt_image_uri(framework, version) == (
        f"us-docker.pkg.dev/vertex-ai/prediction/{framework}-cpu.{image_version}:latest"
    )


def test_hyperparameters_integral_floats_become_ints():
    assert normalize_hyperparameters({"a": 2.0, "b": 0.5, "c": "x"}) == {"a": 2, "b": 0.5, "c": "x"}


def test_errors_name_the_value(tmp_path):
    pq.write_table(
        pa.table({"f": [1.0, 2.0, 3.0, 4.0], "s": ["a", "b", "a", "b"], "y": [0, 1, 0, 1]}),
        tmp_path / "t.parquet",
    )
    path = str(tmp_path / "t.parquet")
    with pytest.raises(UserError, match="Feature column 's' has type string"):
        train_model(path, str(tmp_path / "m1"), "y")
    with pytest.raises(UserError, match="Unknown framework='torch'"):
        train_model(path, str(tmp_path / "m2"), "y", framework="torch")
    with pytest.raises(UserError, match="Unknown algorithm='svm' for sklearn classification"):
        train_model(path, str(tmp_path / "m3"), "y", algorithm="svm", feature_columns=["f"])
    with pytest.raises(UserError, match="target_column='label' is not a column"):
        train_model(path, str(tmp_path / "m4"), "label")
    with pytest.raises(UserError, match="target_column is required"):
        train_model(path, str(tmp_path / "m5"), "")
