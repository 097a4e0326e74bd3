import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from batchpredict.errors import UserError
from batchpredict.tasks.dataset import column_name, load_source, make_splits, run_dataset


def test_breast_cancer_split_is_seeded_stratified_and_complete():
    a = make_splits("breast_cancer", test_fraction=0.2, seed=7)
    b = make_splits("sklearn:breast_cancer", test_fraction=0.2, seed=7)
    c = make_splits("breast_cancer", test_fraction=0.2, seed=8)
    assert (a.train.num_rows, a.test.num_rows) == (455, 114)
    assert a.test.equals(b.test) and a.train.equals(b.train)
    assert not a.test.equals(c.test)
    assert a.train_metadata["stratified"] is True
    # stratified: the class shares of both splits match the whole set's within a row
    y_all = np.concatenate(
        [a.train.column("target").to_numpy(), a.test.column("target").to_numpy()]
    )
    share = y_all.mean()
    assert abs(a.test.column("target").to_numpy().mean() - share) < 1 / 114 + 1e-9
    # no row lost or duplicated: the union is the whole data set
    whole = load_source("breast_cancer").table
    assert a.train.num_rows + a.test.num_rows == whole.num_rows
    rows = {tuple(r.values()) for r in pa.concat_tables([a.train, a.test]).to_pylist()}
    assert rows == {tuple(r.values()) for r in whole.to_pylist()}


def test_bundled_metadata_names_and_types():
    result = make_splits("breast_cancer")
    meta = result.test_metadata
    assert meta["problem_type"] == "classification"
    assert meta["target_column"] == "target"
    assert meta["label_names"] == {"0": "malignant", "1": "benign"}
    assert meta["rows"] == result.test.num_rows and meta["split"] == "test"
    assert "mean_radius" in meta["columns"] and meta["schema"]["target"] == "int64"
    assert all(name == column_name(name) for name in meta["columns"])


def test_diabetes_is_regression_with_float_target():
    result = make_splits("diabetes")
    assert result.train_metadata["problem_type"] == "regression"
    assert result.train.schema.field("target").type == pa.float64()
    assert result.train_metadata["stratified"] is False


def test_user_csv_infers_classification_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "x1": rng.normal(size=60),
            "x2": rng.normal(size=60),
            "label": ["yes", "no", "maybe"] * 20,
        }
    )
    path = tmp_path / "data.csv"
    pacsv.write_csv(table, path)
    result = make_splits(str(path), target_column="label", test_fraction=0.25, seed=1)
    assert result.train_metadata["problem_type"] == "classification"
    assert result.train_metadata["stratified"] is True
    assert result.test.num_rows == 15
    assert sorted(result.test.column("label").to_pylist()) == sorted(["yes", "no", "maybe"] * 5)


def test_user_parquet_directory(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"x": [float(i)] * 10, "y": [1.5 * i] * 10}), d / f"p{i}.parquet")
    result = make_splits(str(d), target_column="y", test_fraction=0.3)
    assert result.train.num_rows + result.test.num_rows == 20
    assert result.test_metadata["problem_type"] == "regression"


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("sklearn:nope", {}, "Unknown bundled data set 'sklearn:nope'"),
        ("breast_cancer", {"test_fraction": 1.5}, "test_fraction must be within (0, 1)"),
        ("breast_cancer", {"test_fraction": 0.0001}, "both splits need at least one row"),
    ],
)
def test_errors_name_the_value(source, kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_splits(source, **kwargs)


def test_missing_target_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    pacsv.write_csv(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]}), path)
    with pytest.raises(UserError, match="target_column='label' is not a column"):
        make_splits(str(path), target_column="label")
    with pytest.raises(UserError, match="No table at"):
        make_splits(str(tmp_path / "missing.csv"), target_column="a")


def test_run_dataset_writes_parquet_artifacts(tmp_path):
    train = dsl.Dataset(uri=str(tmp_path / "train"))
    test = dsl.Dataset(uri=str(tmp_path / "test"))
    run_dataset(train_data=train, test_data=test, source="iris", seed=3)
    assert pq.read_table(train.path).num_rows == train.metadata["rows"] == 120
    assert pq.read_table(test.path).num_rows == test.metadata["rows"] == 30
    assert test.metadata["label_names"] == {"0": "setosa", "1": "versicolor", "2": "virginica"}
