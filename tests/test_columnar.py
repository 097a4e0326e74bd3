"""The columnar path: Parquet batches of numeric columns become one array, written from Arrow.

Every output here is compared with the row path's output for the same input (the columnar code
switched off): JSONL and CSV byte for byte, Parquet by schema, values and bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.instances import InstanceConfig, display_label
from batchpredict.io import arrow_rows, formats, sinks
from batchpredict.io.base import listed
from batchpredict.io.sources import read_all

RNG = np.random.default_rng(7)
N = 11  # rows per table: row groups of 4 and batches of 3 give partial batches everywhere

# Floats whose JSON text differs between orjson and json.dumps unless handled (exponents, tiny
# values, NaN, infinities, negative zero), and ordinary ones.
SPECIAL = [1e-05, 1e16, -0.0, float("nan"), 1e300, float("inf"), 123456789.123, 0.1, 2.5, -7.0, 3.0]


def _table(**columns) -> pa.Table:
    return pa.table(columns)


CASES = {
    "float64": (
        lambda: _table(
            a=pa.array(SPECIAL), b=pa.array(RNG.normal(size=N)), c=pa.array(RNG.normal(size=N))
        ),
        InstanceConfig(),
        True,
    ),
    "float32": (
        lambda: _table(
            a=pa.array(RNG.normal(size=N), pa.float32()),
            b=pa.array([0.1] * N, pa.float32()),
        ),
        InstanceConfig(),
        True,
    ),
    "ints": (
        lambda: _table(
            a=pa.array(RNG.integers(-100, 100, N), pa.int8()),
            b=pa.array(RNG.integers(0, 2**31, N), pa.int32()),
            c=pa.array([2**62 + i for i in range(N)], pa.int64()),
            d=pa.array(RNG.integers(0, 2**32, N), pa.uint32()),
        ),
        InstanceConfig(instance_type="array"),
        True,
    ),
    "mixed int and float": (
        lambda: _table(
            a=pa.array(RNG.integers(-5, 5, N), pa.int64()),
            b=pa.array(SPECIAL),
            c=pa.array(RNG.normal(size=N), pa.float32()),
            d=pa.array([2**53 + 1 + i for i in range(N)], pa.int64()),  # rounds as float
        ),
        InstanceConfig(),
        True,
    ),
    "a null in the second row group": (
        lambda: _table(
            a=pa.array([1.5] * 5 + [None] + [2.5] * 5),
            b=pa.array(list(range(N)), pa.int64()),
        ),
        InstanceConfig(),
        None,  # the first row group goes columnar, the one with the null by rows
    ),
    "an int column with a null": (
        lambda: _table(a=pa.array([1, None] + [3] * 9, pa.int64()), b=pa.array([4] * N)),
        InstanceConfig(),
        None,
    ),
    "a string column": (
        lambda: _table(a=pa.array(["x"] * N), b=pa.array(RNG.normal(size=N))),
        InstanceConfig(),
        False,
    ),
    "a bool column": (
        lambda: _table(a=pa.array([True, False] * 5 + [True]), b=pa.array(RNG.normal(size=N))),
        InstanceConfig(),
        False,
    ),
    "a uint64 column": (
        lambda: _table(a=pa.array([2**64 - 1] * N, pa.uint64()), b=pa.array([1] * N)),
        InstanceConfig(),
        False,
    ),
    "string key": (
        lambda: _table(
            id=pa.array([f"r{i}" for i in range(N)]),
            a=pa.array(RNG.normal(size=N)),
            b=pa.array(RNG.integers(0, 9, N)),
        ),
        InstanceConfig(key_field="id"),
        True,
    ),
    "int key and included fields": (
        lambda: _table(
            a=pa.array(RNG.normal(size=N)),
            id=pa.array(list(range(N)), pa.int32()),
            s=pa.array(["unused"] * N),
            b=pa.array(RNG.normal(size=N), pa.float32()),
        ),
        InstanceConfig(key_field="id", included_fields=("b", "a")),
        True,
    ),
    "excluded string id attached": (
        lambda: _table(
            id=pa.array([f"r{i}" for i in range(N)]),
            a=pa.array(RNG.normal(size=N)),
            b=pa.array(RNG.normal(size=N)),
        ),
        InstanceConfig(excluded_fields=("id",)),
        True,
    ),
    "excluded int id attached": (
        lambda: _table(
            id=pa.array(list(range(N)), pa.int64()),
            a=pa.array(RNG.integers(0, 9, N), pa.int16()),
        ),
        InstanceConfig(excluded_fields=("id",)),
        True,
    ),
    "objects": (
        lambda: _table(a=pa.array(RNG.normal(size=N)), b=pa.array(RNG.normal(size=N))),
        InstanceConfig(instance_type="object"),
        False,
    ),
}


def _predictions(kind: str, start: int, n: int):
    """What models return (handlers give lists; a model's array goes to writers as it is)."""
    k = np.arange(start, start + n)
    if kind == "labels":
        return (k % 3).tolist()
    if kind == "scores":
        return (k / 7).tolist()
    if kind == "probabilities":
        return np.stack([k / 7, 1 - k / 7], axis=1).tolist()
    if kind == "int32 array":
        return (k % 3).astype(np.int32)
    if kind == "string array":
        return np.array([f"class {i % 3}" for i in k])
    return (k / 7).astype(np.float32)  # a float32 array


@pytest.fixture
def row_path(monkeypatch):
    """Switches the columnar code off: what the output was before it."""

    def off():
        monkeypatch.setattr(arrow_rows, "numeric_converted", lambda batch, conv: None)
        monkeypatch.setattr(sinks.ParquetShardWriter, "_write_columns", lambda *a: False)

    return off


def _write(path, cfg, fmt, out, predictions) -> tuple[str, list[bool]]:
    """Source -> predictions -> writer as the engine's worker drives them, batches of 3."""
    source = formats.make_source("parquet", [str(path)], cfg)
    os.makedirs(out, exist_ok=True)
    results = os.path.join(out, "results")
    writer = formats.writer_class(fmt)(
        results, os.path.join(out, "errors"), display_label(cfg.keyed)
    )
    columnar, done = [], 0
    for split in source.splits():
        for batch in source.batches(split, 3):
            conv = batch.converted
            columnar.append(isinstance(conv.instances, np.ndarray))
            n = len(conv.instances)
            writer.write(conv.displays, _predictions(predictions, done, n), conv.columns)
            done += n
    writer.close()
    assert done == N
    return results, columnar


@pytest.mark.parametrize(
    "predictions",
    ["labels", "scores", "probabilities", "float32 array", "int32 array", "string array"],
)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("case", list(CASES))
def test_outputs_are_the_row_paths_outputs(tmp_path, row_path, case, fmt, predictions):
    make, cfg, expect_columnar = CASES[case]
    path = tmp_path / "in.parquet"
    pq.write_table(make(), path, row_group_size=6)
    fast, columnar = _write(path, cfg, fmt, tmp_path / "fast", predictions)
    if expect_columnar is None:
        assert any(columnar) and not all(columnar), columnar
    else:
        assert all(c == expect_columnar for c in columnar), columnar
    row_path()
    slow, rows = _write(path, cfg, fmt, tmp_path / "rows", predictions)
    assert not any(rows)
    with open(fast, "rb") as f, open(slow, "rb") as g:
        fast_bytes, slow_bytes = f.read(), g.read()
    if fmt == "parquet":
        got, want = pq.read_table(fast), pq.read_table(slow)
        assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
        assert json.dumps(got.to_pylist()) == json.dumps(want.to_pylist())
    assert fast_bytes == slow_bytes


@pytest.mark.parametrize("case", list(CASES))
def test_instances_are_what_np_asarray_makes_of_the_rows(tmp_path, row_path, case):
    """The model sees the same dtype and values; displays are the row path's, exactly."""
    make, cfg, expect_columnar = CASES[case]
    path = tmp_path / "in.parquet"
    pq.write_table(make(), path, row_group_size=6)
    source = formats.make_source("parquet", [str(path)], cfg)
    fast = [b.converted for s in source.splits() for b in source.batches(s, 3)]
    row_path()
    slow = [b.converted for s in source.splits() for b in source.batches(s, 3)]
    for f, s in zip(fast, slow, strict=True):
        if isinstance(f.instances, np.ndarray):
            want = np.asarray(s.instances)
            assert f.instances.dtype == want.dtype and f.instances.shape == want.shape
            np.testing.assert_array_equal(f.instances, want)  # NaN equals NaN here
        else:
            assert json.dumps(f.instances) == json.dumps(s.instances)
        assert json.dumps(listed(f.displays)) == json.dumps(s.displays)
        assert [type(v) for v in _flat(listed(f.displays))] == [type(v) for v in _flat(s.displays)]
        assert f.columns == s.columns and not f.failures and not s.failures


def _flat(values):
    for v in values:
        if isinstance(v, list):
            yield from _flat(v)
        else:
            yield v


def test_numeric_batches_reach_the_model_as_one_array_and_leave_without_rows(tmp_path, monkeypatch):
    """Fails when the columnar path is not taken: no Python row on either side."""
    path = tmp_path / "in.parquet"
    pq.write_table(_table(a=pa.array(RNG.normal(size=N)), b=pa.array(RNG.normal(size=N))), path)

    def no_rows(*args):
        raise AssertionError("a Python row was made")

    monkeypatch.setattr(arrow_rows, "batch_rows", no_rows)
    monkeypatch.setattr(sinks.ParquetShardWriter, "_write_rows", no_rows)
    results, columnar = _write(path, InstanceConfig(), "parquet", tmp_path / "out", "labels")
    assert columnar and all(columnar)
    assert pq.read_table(results).column_names == ["a", "b", "prediction"]


def test_read_all_gives_rows_of_a_columnar_batch(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(_table(x=pa.array([1.5, 2.5]), n=pa.array([1, 2])), path)
    out = read_all(formats.make_source("parquet", [str(path)], InstanceConfig()))
    assert out.instances == [[1.5, 1.0], [2.5, 2.0]]
    assert [type(v) for v in out.displays[0]] == [float, int]  # shown as the file has them


def test_engine_parquet_in_every_format_out_with_failed_instances(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    """End to end through the workers: a NaN row fails in the model (bisected out of a columnar
    batch), a row group with a null goes by rows; results are the row path's, in order."""
    X, _ = iris
    rows = X[:40].tolist()
    rows[5][2] = float("nan")  # LogisticRegression refuses NaN: that instance fails alone
    columns = {name: [r[i] for r in rows] for i, name in enumerate("abcd")}
    columns["d"][33] = None  # this row group goes by rows; the model fails on its None too
    table = _table(**{k: pa.array(v, pa.float64()) for k, v in columns.items()})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=16)
    ok = [i for i in range(40) if i not in (5, 33)]
    expected = sklearn_model.predict(np.asarray([rows[i] for i in ok])).tolist()
    for fmt in ("jsonl", "csv", "parquet"):
        result = run_batch_prediction(
            BatchPredictionJobSpec(
                job_display_name=f"col-{fmt}",
                model_uri=sklearn_model_dir,
                instances_format="parquet",
                gcs_source_uris=[str(path)],
                gcs_destination_output_uri_prefix=str(tmp_path / fmt),
                predictions_format=fmt,
                manual_batch_tuning_parameters_batch_size=8,
                progress=False,
                workers=1,
            )
        )
        assert result.completion_stats == {
            "successful_count": 38,
            "failed_count": 2,
            "incomplete_count": 0,
        }, fmt
        directory = result.gcs_output_directory
        (shard,) = [p for p in os.listdir(directory) if p.startswith("prediction.results-")]
        shard = os.path.join(directory, shard)
        if fmt == "jsonl":
            with open(shard) as f:
                lines = f.read().splitlines()
            assert lines == [
                json.dumps({"instance": rows[i], "prediction": p}) for i, p in zip(ok, expected)
            ]
        elif fmt == "csv":
            with open(shard) as f:
                lines = f.read().splitlines()
            assert lines[0] == "a,b,c,d,prediction"
            assert lines[1:] == [
                ",".join(map(repr, rows[i])) + f",{p}" for i, p in zip(ok, expected)
            ]
        else:
            got = pq.read_table(shard)
            assert got.schema == pa.schema(
                [(c, pa.float64()) for c in "abcd"] + [("prediction", pa.int64())]
            )
            assert got.to_pylist() == [
                {**dict(zip("abcd", rows[i])), "prediction": p} for i, p in zip(ok, expected)
            ]
        errors = []
        for name in os.listdir(directory):
            if name.startswith("prediction.errors-"):
                with open(os.path.join(directory, name)) as f:
                    errors += [json.loads(line) for line in f]
        assert sorted(json.dumps(e["instance"]) for e in errors) == sorted(
            [json.dumps(rows[5]), json.dumps(rows[33][:3] + [None])]
        ), fmt


def test_parquet_results_are_buffered_into_row_groups(tmp_path, monkeypatch):
    """Batches are gathered into row groups of ROW_GROUP_ROWS; a schema change (int keys, then a
    batch with text) still starts a segment after the buffered rows, merged at close."""
    monkeypatch.setattr(sinks, "ROW_GROUP_ROWS", 7)
    writer = sinks.ParquetShardWriter(str(tmp_path / "r.parquet"), str(tmp_path / "e"), "key")
    keys = [*range(20), *(f"s{i}" for i in range(5))]
    for start in range(0, 25, 3):
        chunk = keys[start : start + 3]
        writer.write(chunk, [0.5] * len(chunk), None)
    writer.close()
    pf = pq.ParquetFile(tmp_path / "r.parquet")
    assert pf.read().column("key").to_pylist() == [str(k) for k in keys]
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [9, 9, 7]
    assert not [p for p in os.listdir(tmp_path) if "segment" in p]


def test_float_result_columns_skip_dictionary_encoding(tmp_path):
    writer = sinks.ParquetShardWriter(str(tmp_path / "r.parquet"), str(tmp_path / "e"), "instance")
    displays = np.column_stack([RNG.normal(size=N), RNG.normal(size=N)])
    writer.write(displays, list(range(N)), ["x", "y"])
    writer.close()
    group = pq.ParquetFile(tmp_path / "r.parquet").metadata.row_group(0)
    dictionary = {
        group.column(i).path_in_schema: "RLE_DICTIONARY" in group.column(i).encodings
        for i in range(group.num_columns)
    }
    assert dictionary == {"x": False, "y": False, "prediction": True}


FOOTER_CASES = {
    "row groups of 7": (
        lambda: _table(a=np.arange(100.0), b=np.arange(100)),
        {"row_group_size": 7},
    ),
    "no rows": (lambda: pa.table({"a": pa.array([], pa.float64())}), {}),
    "nested, maps, structs": (
        lambda: pa.table(
            {
                "a": pa.array([[1, 2], [3]] * 50),
                "s": pa.array([{"x": 1, "y": "z"}] * 100),
                "m": pa.array([[("k", 1)]] * 100, pa.map_(pa.string(), pa.int64())),
            }
        ),
        {"row_group_size": 30},
    ),
    "metadata, page index, statistics, zstd, sorting": (
        lambda: _table(
            a=[f"s{i}" for i in range(1000)], b=RNG.normal(size=1000)
        ).replace_schema_metadata({"k": "v" * 1000}),
        {
            "row_group_size": 333,
            "compression": "zstd",
            "write_page_index": True,
            "sorting_columns": [pq.SortingColumn(0)],
        },
    ),
}


@pytest.mark.parametrize("case", list(FOOTER_CASES))
def test_parquet_footer_reader_gives_pyarrows_row_groups(tmp_path, case):
    from batchpredict.io import parquet_footer

    make, options = FOOTER_CASES[case]
    path = tmp_path / "in.parquet"
    pq.write_table(make(), path, **options)
    meta = pq.ParquetFile(path).metadata
    with open(path, "rb") as f:
        got = parquet_footer.row_group_rows(f)
    assert got == [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def test_parquet_footer_reader_refuses_damaged_footers_and_pyarrow_names_the_problem(tmp_path):
    import io

    from batchpredict.errors import UserError
    from batchpredict.io import parquet_footer

    buf = io.BytesIO()
    pq.write_table(_table(a=np.arange(50.0), s=[str(i) for i in range(50)]), buf, row_group_size=9)
    data = buf.getvalue()
    length = int.from_bytes(data[-8:-4], "little")
    rng = np.random.default_rng(3)
    refused = 0
    for _ in range(500):  # any damage: FooterError, or a reading that parses (never a crash)
        damaged = bytearray(data)
        for at in rng.integers(len(data) - 8 - length, len(data) - 8, 2):
            damaged[at] = int(rng.integers(256))
        try:
            parquet_footer.row_group_rows(io.BytesIO(bytes(damaged)))
        except parquet_footer.FooterError:
            refused += 1
    assert refused
    path = tmp_path / "in.parquet"
    path.write_bytes(b"not a parquet file, but long enough")
    source = formats.make_source("parquet", [str(path)], InstanceConfig())
    with pytest.raises(UserError, match=r"in\.parquet' cannot be read as Parquet \(Parquet magic"):
        source.splits()


def test_planning_parquet_input_leaves_the_main_process_able_to_fork(tmp_path):
    """The splits come from the footer: no pyarrow, NumPy or their threads in the main process,
    so the engine forks its workers instead of spawning fresh interpreters."""
    import subprocess
    import sys

    path = tmp_path / "in.parquet"
    pq.write_table(_table(a=np.arange(100.0)), path, row_group_size=30)
    code = (
        "import sys\n"
        "from batchpredict.instances import InstanceConfig\n"
        "from batchpredict.io import formats\n"
        "from batchpredict import engine\n"
        f"s = formats.make_source('parquet', [{str(path)!r}], InstanceConfig()).splits()\n"
        "print([x.weight for x in s], engine._start_method(), "
        "'pyarrow' in sys.modules, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[30,", "30,", "30,", "10]", "fork", "False", "False"]


def test_a_row_group_is_decoded_in_chunks_of_whole_batches(tmp_path, monkeypatch):
    """One decode and one array serve several batches (their instances are views of it); the
    batches are the same as reading batch by batch."""
    from batchpredict.io import sources

    monkeypatch.setattr(sources, "CHUNK_ROWS", 30)
    path = tmp_path / "in.parquet"
    values = RNG.normal(size=(100, 3))
    pq.write_table(_table(a=values[:, 0], b=values[:, 1], c=values[:, 2]), path)
    decoded = []
    iter_batches = pq.ParquetFile.iter_batches

    def recording(self, batch_size=65536, **kwargs):
        decoded.append(batch_size)
        return iter_batches(self, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording)
    source = formats.make_source("parquet", [str(path)], InstanceConfig())
    (split,) = source.splits()
    batches = [b.converted for b in source.batches(split, 7)]
    assert decoded == [28]  # 4 batches of 7 at a time
    assert [len(b.instances) for b in batches] == [7] * 14 + [2]
    assert batches[0].instances.base is batches[3].instances.base  # views of one array
    assert batches[3].instances.base is not batches[4].instances.base
    np.testing.assert_array_equal(np.concatenate([b.instances for b in batches]), values)


def test_chunks_of_wide_rows_are_capped_by_bytes():
    from batchpredict.io import sources

    class Group:
        num_rows, total_byte_size = 100_000, 100_000 * 8_000  # 1,000 float64 columns

    assert sources._chunk_rows(Group, 64) == (sources.CHUNK_BYTES // 8_000) // 64 * 64
    assert sources._chunk_rows(Group, 5000) == 5000  # never less than one batch
    Group.total_byte_size = 100_000 * 8
    assert sources._chunk_rows(Group, 2048) == sources.CHUNK_ROWS


@pytest.mark.parametrize(
    "make, cfg",
    [
        (CASES["mixed int and float"][0], InstanceConfig()),
        (
            lambda: _table(id=pa.array(list(range(N)), pa.int64()), a=pa.array(SPECIAL)),
            InstanceConfig(excluded_fields=("id",)),
        ),
    ],
    ids=["mixed int and float", "excluded int id attached to float features"],
)
def test_mixed_int_and_float_columns_are_written_to_parquet_without_rows(
    tmp_path, monkeypatch, make, cfg
):
    """Displays that mix integer and float columns stay Arrow columns (ColumnRows) on their way
    to Parquet results: no Python row is made, and the results are the row path's."""
    path = tmp_path / "in.parquet"
    pq.write_table(make(), path, row_group_size=6)

    def no_rows(*args):
        raise AssertionError("a Python row was made")

    with monkeypatch.context() as m:
        m.setattr(arrow_rows, "batch_rows", no_rows)
        m.setattr(arrow_rows, "_rows", no_rows)
        m.setattr(sinks.ParquetShardWriter, "_write_rows", no_rows)
        fast, columnar = _write(path, cfg, "parquet", tmp_path / "fast", "scores")
    assert columnar and all(columnar)
    monkeypatch.setattr(arrow_rows, "numeric_converted", lambda batch, conv: None)
    monkeypatch.setattr(sinks.ParquetShardWriter, "_write_columns", lambda *a: False)
    slow, _ = _write(path, cfg, "parquet", tmp_path / "slow", "scores")
    got, want = pq.read_table(fast), pq.read_table(slow)
    assert got.schema.equals(want.schema, check_metadata=True)
    assert json.dumps(got.to_pylist()) == json.dumps(want.to_pylist())


def test_a_script_without_a_main_guard_runs_a_parquet_job(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    """Forked workers do not re-run the caller's script: with spawned ones (what Parquet input
    got while planning loaded pyarrow) a script without ``if __name__ == "__main__":`` failed
    with multiprocessing's "bootstrapping phase" error."""
    import subprocess
    import sys

    X, _ = iris
    path = tmp_path / "in.parquet"
    pq.write_table(_table(**{c: X[:, i] for i, c in enumerate("abcd")}), path, row_group_size=50)
    script = tmp_path / "job.py"
    script.write_text(
        "from batchpredict import BatchPredictionJobSpec, run_batch_prediction\n"
        "r = run_batch_prediction(BatchPredictionJobSpec(job_display_name='s', "
        f"model_uri={sklearn_model_dir!r}, instances_format='parquet', "
        f"gcs_source_uris=[{str(path)!r}], gcs_destination_output_uri_prefix={str(tmp_path)!r}, "
        "predictions_format='parquet', workers=2, progress=False))\n"
        "print(r.gcs_output_directory)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    directory = out.stdout.strip().splitlines()[-1]
    shards = sorted(p for p in os.listdir(directory) if p.startswith("prediction.results-"))
    predicted = [v for s in shards for v in pq.read_table(os.path.join(directory, s))["prediction"]]
    assert sorted(v.as_py() for v in predicted) == sorted(sklearn_model.predict(X).tolist())


POOL_PROBE = """
class Probe:
    def load(self, artifacts_uri):
        pass
    def preprocess(self, body):
        return body["instances"]
    def predict(self, instances):
        import pyarrow
        return [pyarrow.default_memory_pool().backend_name for _ in instances]
    def postprocess(self, results):
        return {"predictions": results}
"""

POOL_JOB = """
import json, sys
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
data, model, probe, out = sys.argv[1:5]
r = run_batch_prediction(BatchPredictionJobSpec(job_display_name="pool", gcs_source_uris=[data],
    model_uri=model, predictor_class=probe, gcs_destination_output_uri_prefix=out, workers=2,
    progress=False))
print(json.dumps({"main_loaded_pyarrow": "pyarrow" in sys.modules,
                  "directory": r.gcs_output_directory}))
"""


@pytest.mark.parametrize(
    "main, user_pool, expected",
    [
        ("pyarrow loaded", None, "jemalloc"),  # set in the forked worker
        ("without pyarrow", None, "jemalloc"),  # Arrow's variable, read when pyarrow loads
        ("without pyarrow", "system", "system"),  # the user's choice stands
    ],
)
def test_workers_use_jemalloc_for_arrow_unless_the_user_names_a_pool(
    tmp_path, main, user_pool, expected
):
    """mimalloc (Arrow's default) returned each Parquet chunk's memory to the system and faulted
    it in again for the next: 10-15% more CPU on a Parquet->Parquet job (README, Performance)."""
    import subprocess
    import sys

    from tests.conftest import read_output, write_jsonl

    (tmp_path / "pool_probe.py").write_text(POOL_PROBE)
    (tmp_path / "model").mkdir()
    files = [str(tmp_path / f"in{i}.jsonl") for i in range(2)]  # a split for each worker
    for f in files:
        write_jsonl(Path(f), [[1.0, 2.0]] * 5)
    data = str(tmp_path / "in*.jsonl")
    probe = f"{tmp_path / 'pool_probe.py'}:Probe"
    out = str(tmp_path / "out")
    if main == "pyarrow loaded":
        assert "pyarrow" in sys.modules  # this module imports it
        directory = run_batch_prediction(
            BatchPredictionJobSpec(
                job_display_name="pool",
                gcs_source_uris=[data],
                model_uri=str(tmp_path / "model"),
                predictor_class=probe,
                gcs_destination_output_uri_prefix=out,
                workers=2,
                progress=False,
            )
        ).gcs_output_directory
    else:
        env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        if user_pool:
            env["ARROW_DEFAULT_MEMORY_POOL"] = user_pool
        proc = subprocess.run(
            [sys.executable, "-c", POOL_JOB, data, str(tmp_path / "model"), probe, out],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["main_loaded_pyarrow"] is False
        directory = report["directory"]
    results = read_output(directory)["results"]
    assert len(results) == 10
    assert {r["prediction"] for r in results} == {expected}
