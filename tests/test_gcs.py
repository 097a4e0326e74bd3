"""Cloud Storage with the local engine, against gcp-storage-emulator started by the tests.

gs:// inputs with wildcards, a model directory on gs://, gs:// output that appears only when
complete, /gcs/ FUSE paths without a mount, and errors that name the URI.
"""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.io import fs
from tests.cloud_fixtures import *  # noqa: F403 - fixtures
from tests.cloud_fixtures import gcs_find, gcs_put, gcs_put_dir, gcs_read

# A clean run's directory: exactly Vertex's files (no errors files when nothing failed).
LAYOUT = [
    "prediction.errors_stats-00000-of-00001",
    "prediction.results-00000-of-00002",
    "prediction.results-00001-of-00002",
]


def spec(**kw) -> BatchPredictionJobSpec:
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return BatchPredictionJobSpec(job_display_name=kw.pop("job_display_name", "gcs-job"), **kw)


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def read_lines(uri: str) -> list:
    return [json.loads(line) for line in gcs_read(uri).decode().splitlines()]


@pytest.fixture
def gcs_model(bucket, sklearn_model_dir) -> str:
    gcs_put_dir(sklearn_model_dir, f"{bucket}/models/iris")
    return f"{bucket}/models/iris"


def test_wildcards_model_and_output_on_gcs(
    bucket, gcs_model, sklearn_model, iris, tmp_path, monkeypatch
):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the model is staged
    X, _ = iris
    rows = X[:90].tolist()
    for i in range(3):
        gcs_put(f"{bucket}/in/part-{i}.jsonl", jsonl(rows[i * 30 : (i + 1) * 30]))
    gcs_put(f"{bucket}/in/other.csv", "not,matched\n")
    result = run_batch_prediction(
        spec(
            gcs_source_uris=[f"{bucket}/in/part-*.jsonl"],
            model_uri=gcs_model,
            gcs_destination_output_uri_prefix=f"{bucket}/out",
            model_display_name="iris",
            workers=2,
        )
    )
    out = result.gcs_output_directory
    assert out.startswith(f"{bucket}/out/prediction-iris-")
    assert gcs_find(out) == LAYOUT
    name = out.rsplit("/", 1)[1]
    # beside the directory, only its completeness marker (written last, with the stats)
    marker = f".batchpredict/{name}.completion_stats.json"
    assert [p for p in gcs_find(f"{bucket}/out") if not p.startswith(name)] == [marker]
    results = read_lines(f"{out}/prediction.results-00000-of-00002")
    results += read_lines(f"{out}/prediction.results-00001-of-00002")
    expected = dict(zip(map(tuple, rows), sklearn_model.predict(np.asarray(rows)).tolist()))
    assert len(results) == 90
    assert {tuple(r["instance"]): r["prediction"] for r in results} == expected
    stats = json.loads(gcs_read(f"{bucket}/out/{marker}"))
    assert stats["successful_count"] == 90 and stats["read_count"] == 90
    assert stats["output_directory"] == out
    assert gcs_read(f"{out}/prediction.errors_stats-00000-of-00001") == b""
    assert list(tmp_path.glob("batchpredict-model-*")) == []  # the staged copy is removed


def test_csv_with_key_to_parquet_on_gcs(bucket, gcs_model, sklearn_model, iris):
    X, _ = iris
    header = "id,a,b,c,d\n"
    body = "".join(f'"k{i}",' + ",".join(map(str, r)) + "\n" for i, r in enumerate(X[:20]))
    gcs_put(f"{bucket}/csv/in.csv", header + body + '"bad",1,2\n')
    result = run_batch_prediction(
        spec(
            instances_format="csv",
            predictions_format="parquet",
            gcs_source_uris=[f"{bucket}/csv/in.csv"],
            key_field="id",
            model_uri=gcs_model,
            gcs_destination_output_uri_prefix=f"{bucket}/csv-out",
        )
    )
    out = result.gcs_output_directory
    with fs.open_file(f"{out}/prediction.results-00000-of-00001.parquet") as f:
        table = pq.read_table(f).to_pylist()
    expected = sklearn_model.predict(X[:20]).tolist()
    assert {r["key"]: r["prediction"] for r in table} == {
        f"k{i}": p for i, p in enumerate(expected)
    }
    (error,) = read_lines(f"{out}/prediction.errors-00000-of-00001")
    assert error["error"]["code"] == 3 and "header has 5" in error["error"]["message"]


def test_gcs_fuse_paths_without_a_mount_use_gcs(bucket, gcs_model, iris):
    name = bucket.removeprefix("gs://")
    gcs_put(f"{bucket}/fuse/in.jsonl", jsonl(iris[0][:10].tolist()))
    result = run_batch_prediction(
        spec(
            gcs_source_uris=[f"/gcs/{name}/fuse/*.jsonl"],
            model_uri=f"/gcs/{name}/models/iris",
            gcs_destination_output_uri_prefix=f"/gcs/{name}/fuse-out",
        )
    )
    assert result.gcs_output_directory.startswith(f"gs://{name}/fuse-out/prediction-gcs-job-")
    assert len(read_lines(f"{result.gcs_output_directory}/prediction.results-00000-of-00001")) == 10


PEEKING_PREDICTOR = """
from batchpredict.io import fs


class Peek:
    '''Predicts how many result files are visible under the output prefix while the job runs.'''

    def load(self, artifacts_uri):
        with open(artifacts_uri + '/prefix.txt') as f:
            self.prefix = f.read()

    def preprocess(self, body):
        return body['instances']

    def predict(self, instances):
        gcs, path = fs.filesystem(self.prefix)
        gcs.invalidate_cache()
        names = [p[len(path) + 1 :] for p in gcs.find(path)]
        shown = sorted(n for n in names if '/prediction.results-' in n and '.incomplete-' not in n)
        return [shown for _ in instances]

    def postprocess(self, results):
        return {'predictions': results}
"""


def test_output_appears_only_when_complete_and_replaces_a_fixed_name(bucket, tmp_path, monkeypatch):
    module = tmp_path / "peek_predictor.py"
    module.write_text(PEEKING_PREDICTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    model_dir = tmp_path / "peek_model"
    model_dir.mkdir()
    (model_dir / "prefix.txt").write_text(f"{bucket}/atomic")
    gcs_put(f"{bucket}/atomic-in/in.jsonl", jsonl(list(range(40))))
    gcs_put(f"{bucket}/atomic/fixed/prediction.results-00000-of-00003", "stale\n")

    def run(batch_size: int):
        return run_batch_prediction(
            spec(
                gcs_source_uris=[f"{bucket}/atomic-in/in.jsonl"],
                model_uri=str(model_dir),
                predictor_class="peek_predictor:Peek",
                gcs_destination_output_uri_prefix=f"{bucket}/atomic",
                output_directory_name="fixed",
                manual_batch_tuning_parameters_batch_size=batch_size,
            )
        )

    result = run(batch_size=10)
    out = result.gcs_output_directory
    assert out == f"{bucket}/atomic/fixed"
    seen = [r["prediction"] for r in read_lines(f"{out}/prediction.results-00000-of-00001")]
    # While predicting, only the last run's results are under the final name, none of ours.
    assert seen == [["fixed/prediction.results-00000-of-00003"]] * 40
    assert gcs_find(out) == [
        "prediction.errors_stats-00000-of-00001",
        "prediction.results-00000-of-00001",
    ]
    assert gcs_find(f"{bucket}/atomic") == [".batchpredict/fixed.completion_stats.json"] + [
        f"fixed/{n}" for n in gcs_find(out)
    ]


def test_missing_buckets_are_named_and_never_created(gcs_env, bucket, gcs_model):
    gcs_put(f"{bucket}/in/a.jsonl", "[1, 2, 3, 4]\n")
    missing = "gs://no-such-bucket-for-batchpredict"
    cases = [
        (dict(gcs_source_uris=[f"{missing}/in/*.jsonl"]), f"{missing}/in/*.jsonl"),
        (dict(gcs_destination_output_uri_prefix=f"{missing}/out"), f"{missing}/out"),
        (dict(model_uri=f"{missing}/model"), f"{missing}/model"),
    ]
    for override, uri in cases:
        kw = dict(
            gcs_source_uris=[f"{bucket}/in/*.jsonl"],
            model_uri=gcs_model,
            gcs_destination_output_uri_prefix=f"{bucket}/out",
        )
        kw.update(override)
        with pytest.raises(UserError, match="does not exist") as info:
            run_batch_prediction(spec(**kw))
        assert uri in str(info.value)
    with pytest.raises(UserError, match="No input file matches"):
        run_batch_prediction(
            spec(
                gcs_source_uris=[f"{bucket}/nothing/*.jsonl"],
                model_uri=gcs_model,
                gcs_destination_output_uri_prefix=f"{bucket}/out",
            )
        )
    gcs, _ = fs.filesystem(missing)
    gcs.invalidate_cache()
    assert not gcs.exists(missing.removeprefix("gs://"))
    assert gcs_find(bucket) == ["in/a.jsonl", "models/iris/model.joblib"]


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """Answers every Cloud Storage call as a bucket without permission does."""

    def _deny(self):
        body = json.dumps(
            {"error": {"code": 403, "message": "caller does not have storage.objects.list"}}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _deny

    def log_message(self, *args):
        pass


def test_permission_errors_name_the_uri(monkeypatch, tmp_path, sklearn_model_dir):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(UserError, match="Forbidden") as info:
            fs.expand_uris(["gs://locked/in/*.jsonl"])
        assert "gs://locked/in/*.jsonl" in str(info.value)
        (tmp_path / "in.jsonl").write_text("[1, 2, 3, 4]\n")
        with pytest.raises(UserError, match="Forbidden") as info:
            run_batch_prediction(
                spec(
                    gcs_source_uris=[str(tmp_path / "in.jsonl")],
                    model_uri=sklearn_model_dir,
                    gcs_destination_output_uri_prefix="gs://locked/out",
                )
            )
        assert "gs://locked/out" in str(info.value)
    finally:
        server.shutdown()


def test_tables_on_gcs_are_read_into_arrow_memory(bucket, monkeypatch):
    """gs:// tables reach pyarrow as an Arrow buffer (fs.arrow_file), Parquet and CSV alike."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from batchpredict.io import results, tables

    table = pa.table({"key": ["a", "b", "c"], "x": [1, 2, 3]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    gcs_put(f"{bucket}/tables/t.parquet", sink.getvalue())
    gcs_put(f"{bucket}/tables/t.csv", "key,x\na,1\nb,2\nc,3\n")
    monkeypatch.setattr(fs, "ARROW_COPY_CHUNK_BYTES", 7)  # copied in many pieces
    with fs.arrow_file(f"{bucket}/tables/t.parquet") as f:
        assert isinstance(f, pa.BufferReader)
    assert tables.read_table(f"{bucket}/tables/t.parquet").equals(table)
    assert results.read_table_file(f"{bucket}/tables/t.csv").equals(table)
    assert tables.read_table(f"{bucket}/tables").equals(table)  # the directory's Parquet file
    assert pacsv.read_csv(fs.arrow_file(f"{bucket}/tables/t.csv")).num_rows == 3


def test_parquet_source_and_segment_merge_on_gcs(bucket):
    """gs:// Parquet inputs are read by row group, and result segments merge, on Cloud Storage."""
    import io

    import pyarrow as pa

    from batchpredict.instances import InstanceConfig
    from batchpredict.io.sinks import ParquetShardWriter
    from batchpredict.io.sources import ParquetSource

    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [float(i) for i in range(30)]}), sink, row_group_size=10)
    gcs_put(f"{bucket}/pq/in.parquet", sink.getvalue())
    source = ParquetSource([f"{bucket}/pq/in.parquet"], InstanceConfig())
    splits = source.splits()
    assert len(splits) == 3
    assert sum(b.read_count for s in splits for b in source.batches(s, 4)) == 30
    writer = ParquetShardWriter(f"{bucket}/pq/r.parquet", f"{bucket}/pq/r.errors", "key")
    writer.write(list(range(5)), [0.5] * 5, None)
    writer.write([f"s{i}" for i in range(5)], [0.5] * 5, None)  # a segment, merged at close
    writer.close()
    table = pq.read_table(io.BytesIO(gcs_read(f"{bucket}/pq/r.parquet")))
    assert table.column("key").to_pylist() == [str(i) for i in range(5)] + [
        f"s{i}" for i in range(5)
    ]
    assert not any("segment" in p for p in gcs_find(f"{bucket}/pq"))
