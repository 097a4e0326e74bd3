import csv
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from batchpredict.errors import UserError
from batchpredict.tasks.prepare import prepare_instances, run_prepare_instances, shard_bounds

FEATURES = ["b", "a", "c"]


@pytest.fixture
def table_path(tmp_path):
    table = pa.table(
        {
            "a": [1.5, 2.5, 3.5, 4.5, 5.5],
            "target": [0, 1, 0, 1, 1],
            "c": [10, 20, 30, 40, 50],
            "b": ["x", "y", 'q"uote', "z", "w"],
        }
    )
    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    return str(path)


def _lines(files):
    return [json.loads(line) for f in files for line in Path(f).read_text().splitlines()]


def test_jsonl_orders_features_removes_target_adds_key_and_shards(table_path, tmp_path):
    out = tmp_path / "instances"
    prepared = prepare_instances(
        table_path,
        str(out),
        feature_names=FEATURES,
        target_columns=["target"],
        key_column="row_id",
        shards=2,
    )
    names = sorted(os.listdir(out))
    assert names == ["instances-00000-of-00002.jsonl", "instances-00001-of-00002.jsonl"]
    first, second = (_lines([out / n]) for n in names)
    assert (len(first), len(second)) == (3, 2)
    rows = first + second
    assert [list(r) for r in rows] == [["row_id", "b", "a", "c"]] * 5
    assert [r["row_id"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2] == {"row_id": 2, "b": 'q"uote', "a": 3.5, "c": 30}
    assert prepared.included_fields == FEATURES and prepared.key_field == "row_id"
    assert prepared.gcs_source_uris == [f"{out}/instances-*.jsonl"]
    assert prepared.metadata["rows"] == 5 and prepared.metadata["removed_columns"] == ["target"]


def test_existing_key_column_is_kept(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["u1", "u2"], "x": [1.0, 2.0], "y": [0, 1]}), path)
    prepared = prepare_instances(
        str(path), str(tmp_path / "o"), ["x"], ["y"], key_column="id", shards=5
    )
    assert len(prepared.files) == 2  # never more shards than rows
    assert _lines(prepared.files) == [{"id": "u1", "x": 1.0}, {"id": "u2", "x": 2.0}]


def test_csv_has_a_header_and_quotes_strings_only(table_path, tmp_path):
    prepared = prepare_instances(
        table_path,
        str(tmp_path / "o"),
        FEATURES,
        ["target"],
        key_column="row_id",
        instances_format="csv",
    )
    (path,) = prepared.files
    assert path.endswith("instances-00000-of-00001.csv")
    text = Path(path).read_text().splitlines()
    assert text[0] == '"row_id","b","a","c"'
    assert text[1] == '0,"x",1.5,10'
    assert text[3] == '2,"q""uote",3.5,30'
    assert list(csv.reader([text[3]]))[0] == ["2", 'q"uote', "3.5", "30"]


def test_parquet_round_trips(table_path, tmp_path):
    prepared = prepare_instances(
        table_path, str(tmp_path / "o"), FEATURES, ["target"], instances_format="parquet", shards=3
    )
    assert [os.path.basename(f) for f in prepared.files] == [
        f"instances-0000{i}-of-00003.parquet" for i in range(3)
    ]
    table = pa.concat_tables([pq.read_table(f) for f in prepared.files])
    assert table.column_names == FEATURES and table.num_rows == 5


def test_missing_and_extra_features_are_named(table_path, tmp_path):
    with pytest.raises(UserError) as err:
        prepare_instances(table_path, str(tmp_path / "o"), ["a", "b", "d"], ["target"])
    assert "missing feature columns ['d']" in str(err.value)
    assert "extra columns ['c']" in str(err.value)
    with pytest.raises(UserError, match=r"extra columns \['target'\]"):
        prepare_instances(table_path, str(tmp_path / "o"), FEATURES, [])


def test_unknown_format_and_bad_shards(table_path, tmp_path):
    with pytest.raises(UserError, match="Unknown instances_format='tfrecord'"):
        prepare_instances(table_path, str(tmp_path / "o"), instances_format="tfrecord")
    with pytest.raises(UserError, match="shards must be >= 1"):
        prepare_instances(table_path, str(tmp_path / "o"), shards=0)


@pytest.mark.parametrize(
    ("rows", "shards", "bounds"),
    [
        (5, 2, [(0, 3), (3, 5)]),
        (2, 4, [(0, 1), (1, 2)]),
        (0, 3, [(0, 0)]),
        (6, 3, [(0, 2), (2, 4), (4, 6)]),
    ],
)
def test_shard_bounds(rows, shards, bounds):
    assert shard_bounds(rows, shards) == bounds


def test_run_prepare_instances_uses_model_metadata_and_artifact_uris(table_path, tmp_path):
    data = dsl.Dataset(uri=table_path, metadata={"target_column": "target"})
    model = dsl.Model(
        uri=str(tmp_path / "m"), metadata={"feature_names": FEATURES, "target": "target"}
    )
    instances = dsl.Dataset(uri=str(tmp_path / "task" / "instances"))
    prepared, prefix = run_prepare_instances(
        data=data, model=model, instances=instances, key_column="k", shards=2
    )
    assert prepared.included_fields == FEATURES
    assert prepared.gcs_source_uris == [f"{tmp_path}/task/instances/instances-*.jsonl"]
    assert prefix == f"{tmp_path}/task/batch_predictions"
    assert instances.metadata["rows"] == 5 and instances.metadata["key_field"] == "k"
    _, given = run_prepare_instances(
        data=data, model=model, instances=instances, predictions_uri_prefix="gs://b/out"
    )
    assert given == "gs://b/out"
