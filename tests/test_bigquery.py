"""BigQuery with the local engine, against bqemulator started by the tests.

Sources through the Storage Read API (streams as splits) and through tabledata.list, Vertex's row
conversion, the three destination forms, column types, errors tables, job-level errors, and a
kfp.local pipeline that reads from and writes to the emulators.
"""

import io
import json
import re

import numpy as np
import pytest
from google.cloud import bigquery
from kfp import dsl
from kfp.dsl import Artifact, Input

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.io import bigquery as bq_io
from batchpredict.kfp_outputs import component_outputs
from tests.cloud_fixtures import *  # noqa: F403 - fixtures
from tests.cloud_fixtures import BQ_PROJECT, gcs_find, gcs_put, gcs_put_dir, gcs_read
from tests.conftest import read_output, write_jsonl

DATASET_RE = re.compile(r"^prediction_my_model_\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z$")

TYPES_SCHEMA = [
    bigquery.SchemaField("s", "STRING"),
    bigquery.SchemaField("i", "INTEGER"),
    bigquery.SchemaField("f", "FLOAT"),
    bigquery.SchemaField("n", "NUMERIC"),
    bigquery.SchemaField("b", "BOOLEAN"),
    bigquery.SchemaField("d", "DATE"),
    bigquery.SchemaField("t", "TIME"),
    bigquery.SchemaField("dt", "DATETIME"),
    bigquery.SchemaField("ts", "TIMESTAMP"),
    bigquery.SchemaField(
        "r",
        "RECORD",
        fields=[bigquery.SchemaField("x", "INTEGER"), bigquery.SchemaField("y", "STRING")],
    ),
    bigquery.SchemaField("arr", "FLOAT", mode="REPEATED"),
]
TYPES_ROWS = [
    {
        "s": "a",
        "i": 7,
        "f": 1.5,
        "n": "1.25",
        "b": True,
        "d": "2018-12-31",
        "t": "23:59:59.999999",
        "dt": "2019-01-01T00:00:00",
        "ts": "2019-01-01 23:59:59.999999 UTC",
        "r": {"x": 1, "y": "z"},
        "arr": [1.0, 2.0],
    },
    {"s": "b", "i": 8, "f": None, "n": None, "b": False, "r": None, "arr": []},
]
# Vertex's conversion of those rows (reference section 2: BigQuery row -> instance).
TYPES_INSTANCES = [
    [
        "a",
        7,
        1.5,
        1.25,
        True,
        "2018-12-31",
        "23:59:59.999999",
        "2019-01-01T00:00:00",
        "2019-01-01 23:59:59.999999+00:00",
        {"x": 1, "y": "z"},
        [1.0, 2.0],
    ],
    ["b", 8, None, None, False, None, None, None, None, None, []],
]

ECHO_PREDICTOR = """
class Echo:
    def load(self, artifacts_uri):
        pass

    def preprocess(self, body):
        return body['instances']

    def predict(self, instances):
        return [0 for _ in instances]

    def postprocess(self, results):
        return {'predictions': results}


class Mirror(Echo):
    '''Predicts the instance itself: what the model received.'''

    def predict(self, instances):
        return list(instances)


class Doubler(Echo):
    '''Doubles the instance's ``f``; fails (code 13) on every fifth ``i``.'''

    def predict(self, instances):
        if any(x['i'] % 5 == 0 for x in instances):
            raise RuntimeError('unlucky row')
        return [x['f'] * 2 for x in instances]
"""


@pytest.fixture
def predictors(tmp_path, monkeypatch) -> str:
    """A model directory for the Custom Prediction Routine predictors above."""
    (tmp_path / "bq_predictors.py").write_text(ECHO_PREDICTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    model_dir = tmp_path / "cpr_model"
    model_dir.mkdir(exist_ok=True)
    return str(model_dir)


def load_table(client, table_id: str, schema, rows) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    config = bigquery.LoadJobConfig(schema=schema, source_format="NEWLINE_DELIMITED_JSON")
    client.load_table_from_file(io.BytesIO(data), table_id, job_config=config).result()


def new_dataset(client, name: str) -> str:
    dataset = f"{BQ_PROJECT}.{name}"
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.create_dataset(dataset)
    return dataset


def rows_of(client, table_id: str) -> list[dict]:
    return [dict(r) for r in client.list_rows(table_id)]


def schema_of(client, table_id: str) -> list[tuple]:
    def field(f):
        return (f.name, f.field_type, f.mode, tuple(field(s) for s in f.fields))

    return [field(f) for f in client.get_table(table_id).schema]


def spec(**kw) -> BatchPredictionJobSpec:
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return BatchPredictionJobSpec(job_display_name=kw.pop("job_display_name", "bq-job"), **kw)


@pytest.fixture
def types_table(bq) -> str:
    dataset = new_dataset(bq, "types_src")
    load_table(bq, f"{dataset}.types", TYPES_SCHEMA, TYPES_ROWS)
    return f"bq://{dataset}.types"


@pytest.mark.parametrize("read_api", ["storage", "rest"])
def test_rows_become_instances_as_vertex_converts_them(
    bq, types_table, predictors, tmp_path, monkeypatch, read_api
):
    if read_api == "rest":  # an emulator without a Storage Read API endpoint: tabledata.list
        monkeypatch.delenv("BIGQUERY_STORAGE_EMULATOR_HOST")
    names = [f.name for f in TYPES_SCHEMA]
    cases = [
        ({}, TYPES_INSTANCES),
        ({"instance_type": "array"}, TYPES_INSTANCES),
        ({"instance_type": "object"}, [dict(zip(names, r)) for r in TYPES_INSTANCES]),
        (
            {"instance_type": "array", "included_fields": ["ts", "s", "arr"]},
            [[r[8], r[0], r[10]] for r in TYPES_INSTANCES],
        ),
        (
            {"instance_type": "object", "excluded_fields": ["r", "arr", "t", "dt", "d", "ts"]},
            [dict(zip(names[:5], r[:5])) for r in TYPES_INSTANCES],
        ),
    ]
    for i, (kw, expected) in enumerate(cases):
        source = types_table if i % 2 else types_table.removeprefix("bq://")  # scheme optional
        result = run_batch_prediction(
            spec(
                instances_format="bigquery",
                bigquery_source_input_uri=source,
                gcs_destination_output_uri_prefix=str(tmp_path / f"out{i}"),
                model_uri=predictors,
                predictor_class="bq_predictors:Mirror",
                **kw,
            )
        )
        out = read_output(result.gcs_output_directory)
        assert sorted((r["prediction"] for r in out["results"]), key=str) == sorted(
            expected, key=str
        ), kw
        # The output's instance: what the model got, or with excluded_fields (and no key_field)
        # the whole row, since Vertex attaches excluded fields to the output.
        shown = (
            [dict(zip(names, r)) for r in TYPES_INSTANCES] if "excluded_fields" in kw else expected
        )
        assert sorted((r["instance"] for r in out["results"]), key=str) == sorted(shown, key=str), (
            kw
        )
    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            bigquery_source_input_uri=types_table,
            gcs_destination_output_uri_prefix=str(tmp_path / "keyed"),
            model_uri=predictors,
            predictor_class="bq_predictors:Echo",
            key_field="s",
            included_fields=["i", "f"],
        )
    )
    keyed = read_output(result.gcs_output_directory)["results"]
    assert sorted(keyed, key=lambda r: r["key"]) == [
        {"key": "a", "prediction": 0},
        {"key": "b", "prediction": 0},
    ]


@pytest.mark.parametrize("read_api", ["storage", "rest"])
def test_bigquery_error_records_say_which_table_and_row(
    bq, predictors, tmp_path, monkeypatch, read_api
):
    if read_api == "rest":  # row ranges of 16 rows: failures in later ranges too
        monkeypatch.delenv("BIGQUERY_STORAGE_EMULATOR_HOST")
        monkeypatch.setattr(bq_io, "REST_SPLIT_ROWS", 16)
    dataset = new_dataset(bq, "located_src")
    schema = [bigquery.SchemaField("i", "INTEGER"), bigquery.SchemaField("f", "FLOAT")]
    load_table(bq, f"{dataset}.src", schema, [{"i": i, "f": i + 0.5} for i in range(1, 41)])
    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            bigquery_source_input_uri=f"bq://{dataset}.src",
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            model_uri=predictors,
            predictor_class="bq_predictors:Doubler",
            instance_type="object",
            manual_batch_tuning_parameters_batch_size=7,
        )
    )
    errors = read_output(result.gcs_output_directory)["errors"]
    assert sorted(e["instance"]["i"] for e in errors) == [5, 10, 15, 20, 25, 30, 35, 40]
    for e in errors:
        where = e["source"]
        assert where["uri"] == f"bq://{dataset}.src"
        if read_api == "rest":  # the row's index in the table's listing
            assert set(where) == {"uri", "row"}
            (row,) = bq.list_rows(f"{dataset}.src", start_index=where["row"], max_results=1)
        else:  # the read stream and the row's offset in it
            assert set(where) == {"uri", "stream", "row"}
            # (the emulator ignores read_rows' offset: the stream is read from its start)
            rows = list(bq_io.read_client().read_rows(where["stream"]).rows())
            row = {k: v.as_py() for k, v in rows[where["row"]].items()}
        assert row["i"] == e["instance"]["i"]


def test_bigquery_to_new_dataset_keeps_types_and_records_errors(bq, predictors):
    dataset = new_dataset(bq, "roundtrip_src")
    schema = [f for f in TYPES_SCHEMA if f.name != "n"]  # NUMERIC comes back as float
    rows = [{**TYPES_ROWS[0], "i": i, "f": i + 0.5, "s": f"row{i}"} for i in range(1, 41)]
    for r in rows:
        r.pop("n")
    load_table(bq, f"{dataset}.src", schema, rows)
    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            predictions_format="bigquery",
            bigquery_source_input_uri=f"bq://{dataset}.src",
            bigquery_destination_output_uri=f"bq://{BQ_PROJECT}",
            model_uri=predictors,
            predictor_class="bq_predictors:Doubler",
            instance_type="object",
            model_display_name="my-model",
            manual_batch_tuning_parameters_batch_size=7,
        )
    )
    assert result.completion_stats == {
        "successful_count": 32,
        "failed_count": 8,
        "incomplete_count": 0,
    }
    out_dataset = result.bigquery_output_dataset.removeprefix(f"bq://{BQ_PROJECT}.")
    assert DATASET_RE.match(out_dataset), out_dataset
    assert result.bigquery_output_table == "predictions"
    tables = sorted(t.table_id for t in bq.list_tables(f"{BQ_PROJECT}.{out_dataset}"))
    assert tables == ["errors", "predictions"]
    predictions_id = f"{BQ_PROJECT}.{out_dataset}.predictions"
    errors_id = f"{BQ_PROJECT}.{out_dataset}.errors"
    source_schema = schema_of(bq, f"{dataset}.src")
    assert schema_of(bq, predictions_id) == source_schema + [
        ("prediction", "FLOAT", "NULLABLE", ())
    ]
    errors_struct = (("code", "INTEGER", "NULLABLE", ()), ("message", "STRING", "NULLABLE", ()))
    assert schema_of(bq, errors_id) == source_schema + [
        ("errors", "RECORD", "NULLABLE", errors_struct)
    ]
    source_rows = {r["i"]: r for r in rows_of(bq, f"{dataset}.src")}
    predicted = rows_of(bq, predictions_id)
    assert sorted(r["i"] for r in predicted) == [i for i in range(1, 41) if i % 5]
    for row in predicted:
        prediction = row.pop("prediction")
        assert row == source_rows[row["i"]]  # every instance column round trips with its type
        assert prediction == row["f"] * 2
    failed = rows_of(bq, errors_id)
    assert sorted(r["i"] for r in failed) == [5, 10, 15, 20, 25, 30, 35, 40]
    for row in failed:
        assert row["errors"]["code"] == 13
        assert "RuntimeError: unlucky row" in row["errors"]["message"]
        row.pop("errors")
        assert row == source_rows[row["i"]]
    table_out = component_outputs(result).bigquery_output_table
    assert table_out.uri == (
        f"https://www.googleapis.com/bigquery/v2/projects/{BQ_PROJECT}/datasets/{out_dataset}"
        "/tables/predictions"
    )
    assert table_out.metadata["projectId"] == BQ_PROJECT
    assert table_out.metadata["datasetId"] == out_dataset
    assert table_out.metadata["tableId"] == "predictions"


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "spawn"])
def test_storage_read_streams_are_splits_read_by_worker_processes(
    bq, sklearn_model_dir, monkeypatch, fork
):
    from batchpredict import engine

    monkeypatch.setattr(engine, "FORK_WHEN_SINGLE_THREADED", fork)
    dataset = new_dataset(bq, "streams_src")
    rng = np.random.default_rng(0)
    n = 40_000  # > 1 MB: the emulator, like BigQuery, then serves several streams
    features = rng.normal(size=(n, 4)).round(3).tolist()
    schema = [bigquery.SchemaField(c, "FLOAT") for c in "abcd"]
    schema.append(bigquery.SchemaField("id", "INTEGER"))
    rows = [{"a": a, "b": b, "c": c, "d": d, "id": i} for i, (a, b, c, d) in enumerate(features)]
    load_table(bq, f"{dataset}.big", schema, rows)
    source = bq_io.BigQuerySource(
        f"bq://{dataset}.big", bq_io.InstanceConfig(excluded_fields=("id",))
    )
    splits = source.splits()
    assert source.mode == "storage" and len(splits) > 1
    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            predictions_format="bigquery",
            bigquery_source_input_uri=f"bq://{dataset}.big",
            bigquery_destination_output_uri=f"bq://{dataset}.predicted",
            excluded_fields=["id"],
            model_uri=sklearn_model_dir,
            workers=2,
        )
    )
    assert result.completion_stats["successful_count"] == n
    assert result.stats["workers"] == 2
    table = bq.get_table(f"{dataset}.predicted")
    assert table.num_rows == n
    # the excluded id is attached to the output (no key_field), with its BigQuery type
    assert [(f.name, f.field_type) for f in table.schema][4:] == [
        ("id", "INTEGER"),
        ("prediction", "INTEGER"),
    ]
    assert [f.name for f in table.schema][:4] == ["a", "b", "c", "d"]
    assert sorted(r["id"] for r in rows_of(bq, f"{dataset}.predicted")) == list(range(n))
    assert bq.get_table(f"{dataset}.predicted_errors").num_rows == 0


def test_rest_fallback_reads_row_ranges(bq, sklearn_model_dir, sklearn_model, monkeypatch):
    monkeypatch.delenv("BIGQUERY_STORAGE_EMULATOR_HOST")
    monkeypatch.setattr(bq_io, "REST_SPLIT_ROWS", 40)
    dataset = new_dataset(bq, "rest_src")
    features = np.random.default_rng(1).normal(size=(150, 4)).round(3).tolist()
    rows = [{"id": i, **dict(zip("abcd", f))} for i, f in enumerate(features)]
    schema = [bigquery.SchemaField("id", "INTEGER")]
    schema += [bigquery.SchemaField(c, "FLOAT") for c in "abcd"]
    load_table(bq, f"{dataset}.t", schema, rows)
    source = bq_io.BigQuerySource(f"{dataset}.t", bq_io.InstanceConfig())
    splits = source.splits()
    assert source.mode == "rest"
    assert [(s.start, s.end) for s in splits] == [(0, 40), (40, 80), (80, 120), (120, -1)]
    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            bigquery_source_input_uri=f"bq://{dataset}.t",
            predictions_format="bigquery",
            bigquery_destination_output_uri=f"bq://{dataset}",
            included_fields=["a", "b", "c", "d"],
            model_uri=sklearn_model_dir,
            manual_batch_tuning_parameters_batch_size=32,
        )
    )
    stamp = r"\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z"
    # Vertex's names: predictions_<timestamp>_<NNN> and errors_<timestamp>_<NNN>
    assert re.fullmatch(f"predictions_{stamp}_\\d{{3}}", result.bigquery_output_table)
    predicted = rows_of(bq, f"{dataset}.{result.bigquery_output_table}")
    expected = sklearn_model.predict(np.asarray(features)).tolist()
    assert sorted((r["a"], r["b"], r["c"], r["d"], r["prediction"]) for r in predicted) == sorted(
        (*f, p) for f, p in zip(features, expected)
    )
    errors_table = result.bigquery_output_table.replace("predictions_", "errors_")
    assert bq.get_table(f"{dataset}.{errors_table}").num_rows == 0


def test_files_to_a_new_table_infer_column_types(bq, tmp_path, sklearn_model_dir, iris):
    dataset = new_dataset(bq, "from_files")
    X, _ = iris
    header = '"sepal length","sepal width","petal length","petal width"\n'
    body = "".join(",".join(map(str, r)) + "\n" for r in X[:12].tolist())
    (tmp_path / "in.csv").write_text(header + body + "1.0,2.0\n" + '"x",1.0,2.0,3.0\n')
    job = dict(
        instances_format="csv",
        gcs_source_uris=[str(tmp_path / "in.csv")],
        predictions_format="bigquery",
        bigquery_destination_output_uri=f"bq://{dataset}.scored",
        model_uri=sklearn_model_dir,
        return_probabilities=True,
    )
    result = run_batch_prediction(spec(**job))
    assert result.bigquery_output_dataset == f"bq://{dataset}"
    assert result.bigquery_output_table == "scored"
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert schema_of(bq, f"{dataset}.scored") == [
        *[(c, "FLOAT", "NULLABLE", ()) for c in columns],
        ("prediction", "FLOAT", "REPEATED", ()),
    ]
    scored = rows_of(bq, f"{dataset}.scored")
    assert sorted([r[c] for c in columns] for r in scored) == sorted(X[:12].tolist())
    assert all(len(r["prediction"]) == 3 and abs(sum(r["prediction"]) - 1) < 1e-6 for r in scored)
    failed = sorted(rows_of(bq, f"{dataset}.scored_errors"), key=lambda r: r["instance"] or "")
    # A row the model refused keeps its columns; a line that is no row is one ``instance``.
    assert [r["sepal_length"] for r in failed] == ["x", None]
    assert [r["petal_width"] for r in failed] == [3.0, None]
    assert [r["instance"] for r in failed] == [None, "1.0,2.0"]
    assert [r["errors"]["code"] for r in failed] == [3, 3]
    with pytest.raises(UserError, match="already exists"):
        run_batch_prediction(spec(**job))

    # JSONL arrays have no column names: one repeated ``instance`` column.
    data = write_jsonl(tmp_path / "in.jsonl", X[:5].tolist())
    result = run_batch_prediction(
        spec(
            gcs_source_uris=[data],
            predictions_format="bigquery",
            bigquery_destination_output_uri=f"bq://{dataset}.from_jsonl",
            model_uri=sklearn_model_dir,
        )
    )
    assert schema_of(bq, f"{dataset}.from_jsonl") == [
        ("instance", "FLOAT", "REPEATED", ()),
        ("prediction", "INTEGER", "NULLABLE", ()),
    ]
    assert sorted(r["instance"] for r in rows_of(bq, f"{dataset}.from_jsonl")) == sorted(
        X[:5].tolist()
    )


def test_missing_dataset_table_and_bad_fields_are_named(bq, sklearn_model_dir, tmp_path):
    dataset = new_dataset(bq, "errors_src")
    load_table(bq, f"{dataset}.t", [bigquery.SchemaField("a", "FLOAT")], [{"a": 1.0}])
    data = write_jsonl(tmp_path / "in.jsonl", [[1.0, 2.0, 3.0, 4.0]])
    bq_in = dict(instances_format="bigquery", gcs_destination_output_uri_prefix=str(tmp_path))
    cases = [
        (
            dict(bigquery_source_input_uri=f"bq://{BQ_PROJECT}.no_such_dataset.t", **bq_in),
            f"dataset '{BQ_PROJECT}.no_such_dataset' does not exist",
        ),
        (
            dict(bigquery_source_input_uri=f"bq://{dataset}.no_such_table", **bq_in),
            f"table '{dataset}.no_such_table' does not exist",
        ),
        (
            dict(bigquery_source_input_uri=f"bq://{dataset}.t", included_fields=["zz"], **bq_in),
            r"included_fields \['zz'\] not found",
        ),
        (
            dict(
                gcs_source_uris=[data],
                predictions_format="bigquery",
                bigquery_destination_output_uri=f"bq://{BQ_PROJECT}.no_such_dataset.out",
            ),
            f"dataset '{BQ_PROJECT}.no_such_dataset'.* does not exist",
        ),
        (
            dict(
                gcs_source_uris=[data],
                predictions_format="bigquery",
                bigquery_destination_output_uri=f"bq://{dataset}.t",
            ),
            f"table '{dataset}.t'.* already exists",
        ),
        (
            dict(
                gcs_source_uris=[data],
                predictions_format="bigquery",
                bigquery_destination_output_uri="bq://",
            ),
            "not a BigQuery reference",
        ),
    ]
    for kw, message in cases:
        with pytest.raises(UserError, match=message):
            run_batch_prediction(spec(model_uri=sklearn_model_dir, **kw))


def test_a_failed_job_leaves_no_output_dataset(bq, tmp_path):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a model")
    data = write_jsonl(tmp_path / "in.jsonl", [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(UserError, match="Cannot load"):
        run_batch_prediction(
            spec(
                gcs_source_uris=[data],
                predictions_format="bigquery",
                bigquery_destination_output_uri=f"bq://{BQ_PROJECT}",
                model_uri=str(broken),
                model_display_name="broken_model",
            )
        )
    left = [d.dataset_id for d in bq.list_datasets() if "broken_model" in d.dataset_id]
    assert left == []


def test_uri_forms():
    assert bq_io.parse_uri("bq://p-1.d.t", "x") == bq_io.TableRef("p-1", "d", "t")
    assert bq_io.parse_uri("p-1.d.t", "x") == bq_io.TableRef("p-1", "d", "t")
    assert bq_io.parse_uri("bq://p-1", "x") == bq_io.TableRef("p-1")
    assert bq_io.parse_uri("p-1:d.t", "x") == bq_io.TableRef("p-1", "d", "t")
    assert bq_io.parse_uri("bq://example.com:p.d.t", "x") == bq_io.TableRef(
        "example.com:p", "d", "t"
    )
    for bad in ("", "bq://", "gs://b/x", "a.b.c.d", "p..t"):
        with pytest.raises(UserError):
            bq_io.parse_uri(bad, "x")
    assert bq_io.dataset_name("my-model v2").startswith("prediction_my_model_v2_")
    assert bq_io.column_name("petal length (cm)") == "petal_length__cm_"
    assert bq_io.column_name("1st") == "_1st"
    assert bq_io.column_names(("a b", "a_b", "A_B", "prediction")) == (
        "a_b",
        "a_b_2",
        "A_B_3",
        "prediction_2",
    )


def test_column_types_merge():
    ct = bq_io.column_type
    assert ct([1, 2, None]) == "INTEGER"
    assert ct([1, 2.5]) == "FLOAT"
    assert ct([True, None]) == "BOOLEAN"
    assert ct([[1.0, 2.0], [3]]) == ["REPEATED", "FLOAT"]
    assert ct([{"x": 1}, {"x": 2.0, "y": "a"}]) == {"RECORD": {"x": "FLOAT", "y": "STRING"}}
    assert ct(["a", 1]) == "JSON"
    assert ct([[1, None]]) == "JSON"  # BigQuery arrays hold no NULLs
    assert ct([[[1]]]) == "JSON"  # nor arrays
    assert ct([np.float32(1.5)]) == "FLOAT"


# ---- a pipeline under kfp.local ----------------------------------------------------------------


@dsl.component
def describe(table: Input[Artifact], directory: Input[Artifact]) -> str:
    """The output table's URI and metadata, and the output directory's URI, as JSON."""
    import json

    return json.dumps({"table": [table.uri, table.metadata], "directory": directory.uri})


def test_pipeline_under_kfp_local_reads_and_writes_the_emulators(
    bq, bucket, sklearn_model_dir, sklearn_model, iris, tmp_path
):
    from kfp import local

    from components.model_batch_predict import ModelBatchPredictOp

    X, _ = iris
    dataset = new_dataset(bq, "pipeline_src")
    schema = [bigquery.SchemaField("id", "INTEGER")]
    schema += [bigquery.SchemaField(c, "FLOAT") for c in "abcd"]
    load_table(
        bq,
        f"{dataset}.iris",
        schema,
        [{"id": i, **dict(zip("abcd", r))} for i, r in enumerate(X.tolist())],
    )
    gcs_put_dir(sklearn_model_dir, f"{bucket}/model")
    gcs_put(f"{bucket}/in/part-0.jsonl", "".join(json.dumps(r) + "\n" for r in X[:70].tolist()))
    gcs_put(f"{bucket}/in/part-1.jsonl", "".join(json.dumps(r) + "\n" for r in X[70:].tolist()))

    @dsl.pipeline(name="cloud-emulators")
    def cloud_pipeline(bq_table: str, bq_project: str, gcs_prefix: str, gcs_inputs: list) -> str:
        model = dsl.importer(artifact_uri=f"{bucket}/model", artifact_class=dsl.Model)
        from_bq = ModelBatchPredictOp(
            job_display_name="bq-to-gcs",
            model=model.output,
            instances_format="bigquery",
            bigquery_source_input_uri=bq_table,
            key_field="id",
            gcs_destination_output_uri_prefix=gcs_prefix,
            workers=1,
        )
        to_bq = ModelBatchPredictOp(
            job_display_name="gcs-to-bq",
            model=model.output,
            gcs_source_uris=gcs_inputs,
            predictions_format="bigquery",
            bigquery_destination_output_uri=bq_project,
            workers=1,
        )
        return describe(
            table=to_bq.outputs["bigquery_output_table"],
            directory=from_bq.outputs["gcs_output_directory"],
        ).output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = cloud_pipeline(
        bq_table=f"bq://{dataset}.iris",
        bq_project=f"bq://{BQ_PROJECT}",
        gcs_prefix=f"{bucket}/out",
        gcs_inputs=[f"{bucket}/in/part-*.jsonl"],
    )
    described = json.loads(task.output)
    expected = sklearn_model.predict(X).tolist()

    directory = described["directory"]
    assert directory.startswith(f"{bucket}/out/prediction-bq-to-gcs-")
    lines = gcs_read(f"{directory}/prediction.results-00000-of-00001").decode().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == list(range(150))
    assert all(json.loads(x)["prediction"] == expected[json.loads(x)["key"]] for x in lines)
    assert gcs_find(directory) == [
        "prediction.errors_stats-00000-of-00001",
        "prediction.results-00000-of-00001",
    ]
    marker = f"{directory.rsplit('/', 1)[0]}/.batchpredict/{directory.rsplit('/', 1)[1]}"
    assert json.loads(gcs_read(f"{marker}.completion_stats.json"))["successful_count"] == 150

    uri, metadata = described["table"]
    out_dataset = metadata["datasetId"]
    assert out_dataset.startswith("prediction_gcs-to-bq_".replace("-", "_"))
    assert metadata["projectId"] == BQ_PROJECT and metadata["tableId"] == "predictions"
    assert uri.endswith(f"/projects/{BQ_PROJECT}/datasets/{out_dataset}/tables/predictions")
    assert metadata["completionStats"]["successful_count"] == 150
    predicted = rows_of(bq, f"{BQ_PROJECT}.{out_dataset}.predictions")
    assert sorted(r["prediction"] for r in predicted) == sorted(expected)


def test_storage_read_numeric_columns_reach_the_model_as_one_array(
    bq, sklearn_model_dir, sklearn_model, tmp_path
):
    """Storage Read API batches of numeric columns go columnar: regrouped to batch_size rows
    without a Python row, read as the rows they hold; the results are the row path's lines."""
    dataset = new_dataset(bq, "columnar_src")
    rng = np.random.default_rng(5)
    features = rng.normal(size=(50, 3)).round(4).tolist()
    schema = [bigquery.SchemaField(c, "FLOAT") for c in "abc"]
    schema.append(bigquery.SchemaField("n", "INTEGER"))
    rows = [{"a": a, "b": b, "c": c, "n": i % 4} for i, (a, b, c) in enumerate(features)]
    load_table(bq, f"{dataset}.numbers", schema, rows)
    source = bq_io.BigQuerySource(f"bq://{dataset}.numbers", bq_io.InstanceConfig())
    (split,) = source.splits()
    assert source.mode == "storage"
    batches = [b.converted for b in source.batches(split, 7)]
    assert [len(b.instances) for b in batches] == [7] * 7 + [1]
    assert all(isinstance(b.instances, np.ndarray) for b in batches)
    got = [r for b in batches for r in b.instances.tolist()]
    assert sorted(got) == sorted([[r["a"], r["b"], r["c"], float(r["n"])] for r in rows])
    shown = [r for b in batches for r in b.displays]  # mixed float and int: the row path's
    assert sorted(json.dumps(r) for r in shown) == sorted(
        json.dumps([r["a"], r["b"], r["c"], r["n"]]) for r in rows
    )

    result = run_batch_prediction(
        spec(
            instances_format="bigquery",
            bigquery_source_input_uri=f"bq://{dataset}.numbers",
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            model_uri=sklearn_model_dir,
            manual_batch_tuning_parameters_batch_size=16,
        )
    )
    lines = []
    for path in sorted((tmp_path / "out").glob("*/prediction.results-*")):
        lines += path.read_text().splitlines()
    instances = [[r["a"], r["b"], r["c"], r["n"]] for r in rows]
    predicted = sklearn_model.predict(np.asarray(instances)).tolist()
    assert sorted(lines) == sorted(
        json.dumps({"instance": i, "prediction": p}) for i, p in zip(instances, predicted)
    )
    assert result.completion_stats["successful_count"] == 50


ODD_RECORDS_PREDICTOR = """
class Odd:
    def load(self, artifacts_uri):
        pass

    def preprocess(self, body):
        return body['instances']

    def predict(self, instances):
        out = []
        for i in instances:
            if i == 3:
                out.append(2**70)  # beyond BigQuery's INT64 (and orjson's 64 bits)
            elif i == 5:
                deep = 1
                for _ in range(20):  # deeper than BigQuery's 15 levels of RECORD
                    deep = {'a': deep}
                out.append(deep)
            else:
                out.append(i * 2 if isinstance(i, int) else 0)
        return out

    def postprocess(self, results):
        return {'predictions': results}
"""


def test_a_record_that_cannot_be_written_to_bigquery_fails_alone(bq, tmp_path, monkeypatch):
    """As with file output: such a record becomes its instance's error row, never a job failure."""
    (tmp_path / "odd_predictor.py").write_text(ODD_RECORDS_PREDICTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "m").mkdir()
    dataset = new_dataset(bq, "odd_records")
    deep = "[" * 1000 + "]" * 1000  # orjson reads it; no JSON writer writes it back
    (tmp_path / "in.jsonl").write_text("".join(f"{x}\n" for x in ["1", "3", deep, "5", "7"]))
    result = run_batch_prediction(
        spec(
            gcs_source_uris=[str(tmp_path / "in.jsonl")],
            model_uri=str(tmp_path / "m"),
            predictor_class="odd_predictor:Odd",
            predictions_format="bigquery",
            bigquery_destination_output_uri=f"bq://{dataset}.out",
        )
    )
    assert result.completion_stats["successful_count"] == 3
    assert result.completion_stats["failed_count"] == 2
    # numbers and a value nested too deep for RECORDs in one column: JSON text
    assert ("prediction", "STRING", "NULLABLE", ()) in schema_of(bq, f"{dataset}.out")
    rows = {r["instance"]: json.loads(r["prediction"]) for r in rows_of(bq, f"{dataset}.out")}
    assert rows == {1: 2, 5: _nested(20), 7: 14}
    errors = {e["errors"]["code"]: e for e in rows_of(bq, f"{dataset}.out_errors")}
    assert sorted(errors) == [3, 13]
    # an int and a text in one column: JSON text
    assert json.loads(errors[13]["instance"]) == 3
    assert "prediction cannot be written" in errors[13]["errors"]["message"]
    assert json.loads(errors[3]["instance"]).startswith("<not JSON-encodable (TypeError)")
    assert "instance cannot be written" in errors[3]["errors"]["message"]


def _nested(levels: int) -> dict:
    deep: object = 1
    for _ in range(levels):
        deep = {"a": deep}
    return deep  # type: ignore[return-value]


def test_record_types_bigquery_cannot_hold_become_json():
    assert bq_io.value_type(_nested(15))["RECORD"]["a"]  # 15 levels of RECORD: allowed
    assert bq_io.value_type(_nested(16)) == "JSON"
    # a field with a null in an array cannot be typed: the whole value is JSON text
    assert bq_io.value_type({"s": [0.1, None]}) == "JSON"


def test_a_batch_that_cannot_be_staged_leaves_nothing_behind(tmp_path):
    """The engine retries a failed batch record by record: the failed write must leave no row
    and no column type (its text and int would otherwise have made the column JSON)."""
    writer = bq_io.BigQueryShardWriter(str(tmp_path), 0, "instance")
    with pytest.raises(TypeError):
        writer.write([1, 2], ["x", 2**70], None)  # text beside a number: JSON, if kept
    writer.write([1], [1.5], None)
    writer.close()
    info = json.loads((tmp_path / "00000.types.json").read_text())
    assert info["rows"]["pred"] == 1
    assert info["types"]["pred"]["prediction"] == "FLOAT"
    assert len((tmp_path / "00000.pred.jsonl").read_text().splitlines()) == 1
