"""JSONL lines of flat numeric arrays read in bulk: the same values, types and output text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpredict.instances import InstanceConfig
from batchpredict.io import numeric_lines, sources
from batchpredict.io.encoding import dumps_many
from batchpredict.io.numeric_lines import numeric_rows
from batchpredict.io.sources import JsonlSource
from tests.conftest import write_jsonl

floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
writers = {
    "orjson": orjson.dumps,
    "json.dumps": lambda v: json.dumps(v).encode(),
    "spaced": lambda v: ("[ " + " , ".join(map(repr, v)) + " ]").encode(),
    "trailing zeros": lambda v: (
        "["
        + ",".join(f"{x!r}0" if "." in repr(x) and "e" not in repr(x) else repr(x) for x in v)
        + "]"
    ).encode(),
}


def general_path(lines: list[bytes]):
    values = [orjson.loads(line) for line in lines]
    return values, [json.dumps(v).encode() for v in values]


@pytest.fixture(autouse=True)
def every_batch_size(monkeypatch):
    monkeypatch.setattr(numeric_lines, "MIN_LINES", 1)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(floats, ints).flatmap(
        lambda first: st.lists(
            st.lists(floats if isinstance(first, float) else ints, min_size=3, max_size=3),
            min_size=1,
            max_size=12,
        )
    ),
    st.sampled_from(sorted(writers)),
)
def test_bulk_rows_equal_the_general_path_or_are_refused(rows, writer):
    lines = [writers[writer](row) for row in rows]
    values, text = general_path(lines)
    bulk = numeric_rows(lines)
    if bulk is None:  # refused: the general path reads the batch
        return
    array, displays = bulk
    got = array.tolist()
    assert got == values
    assert [[type(x) for x in row] for row in got] == [[type(x) for x in row] for row in values]
    assert displays.encoded() == text


@pytest.mark.parametrize(
    "lines",
    [
        [b"[1, 2.5]", b"[3, 4.5]"],  # integers beside floats: their types kept on the general path
        [b"[1.0, 2.0]", b"[3.0]"],  # rows of different lengths
        [b"[true, 2.0]", b"[3.0, 4.0]"],
        [b"[1.50, 2.0]", b"[3.0, 4.0]"],  # not the canonical text of its values
        [b"[1.0,2.0]", b"[3.0, 4.0]"],  # separators of both kinds
        [b"[ 1.0, 2.0 ]", b"[3.0, 4.0]"],
        [b'["a", 2]', b"[3, 4]"],
        [b'{"a": 1}', b'{"a": 2}'],
        [b"[[1, 2]]", b"[[3, 4]]"],
        [b"[]", b"[]"],
        [b"1.5", b"2.5"],
        [b"[null, 1.0]", b"[1.0, 2.0]"],
        [b"[9223372036854775808, 1]", b"[1, 2]"],  # beyond int64: Python ints on the general path
        [b"[1.0, 2.0]", b"[3.0, 4.0], [5.0, 6.0]"],  # two values on a line
        [b"[1.0, 2.0, 3.0]", b"[3.0, 4.0, 5.0]\n"],  # a line with its newline
        [b"[1.0, 2.0]", b"[1e400, 2.0]"],  # out of float64's range
    ],
)
def test_what_the_bulk_path_refuses(lines):
    assert numeric_rows(lines) is None


@pytest.mark.parametrize("writer", [orjson.dumps, lambda v: json.dumps(v).encode()])
def test_values_written_differently_by_orjson_and_json_dumps(writer):
    values = [[1e-5, 2.0], [1e16, 9.9e-5], [1e-7, -0.0], [0.1, 5e-324]]
    lines = [writer(v) for v in values]
    bulk = numeric_rows(lines)
    if writer is orjson.dumps:  # json.dumps lines with 1e-05 are not orjson's text: refused
        array, displays = bulk
        assert displays.encoded() == [json.dumps(v).encode() for v in values]
        assert array.dtype.name == "float64"


def test_a_jsonl_source_hands_over_one_array_and_keeps_failures_on_the_general_path(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [[float(i), 0.5] for i in range(10)])
    source = JsonlSource([path], InstanceConfig())
    (batch,) = source.batches(source.splits()[0], 100)
    assert batch.converted.instances.shape == (10, 2)
    bad = write_jsonl(tmp_path / "bad.jsonl", [[1.0, 0.5]], raw_lines=["[1.0, oops]"])
    source = JsonlSource([bad], InstanceConfig())
    (batch,) = source.batches(source.splits()[0], 100)
    assert isinstance(batch.converted.instances, list)
    assert len(batch.converted.failures) == 1


SPY = """
import sys
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.models.sklearn import SklearnHandler

predict = SklearnHandler.predict

def spy(self, instances, parameters):
    with open(calls, "a") as f:  # the engine keeps workers off stdout
        f.write(f"{type(instances).__name__} {len(instances)}\\n")
    return predict(self, instances, parameters)

SklearnHandler.predict = spy
calls, model, out, *files = sys.argv[1:]
result = run_batch_prediction(BatchPredictionJobSpec(
    job_display_name="j", gcs_source_uris=files, model_uri=model,
    gcs_destination_output_uri_prefix=out, workers=2, progress=False,
    manual_batch_tuning_parameters_batch_size=2048))  # b.jsonl: a full batch and a partial one
print(result.completion_stats["successful_count"])
"""


def test_a_job_on_numeric_lines_predicts_arrays_and_writes_what_json_dumps_would(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    """End to end, in workers: the model gets arrays; each line is json.dumps of the slow path."""
    X, _ = iris
    rows = (X * 1.1).tolist() * 31  # 4,650 rows
    files = [
        write_jsonl(tmp_path / "a.jsonl", rows[:2000]),  # floats: one batch
        write_jsonl(tmp_path / "b.jsonl", [[int(v) for v in r] for r in rows[2000:4500]]),
        write_jsonl(tmp_path / "c.jsonl", rows[4500:]),  # too few lines: the general path
    ]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", SPY, str(tmp_path / "calls"), sklearn_model_dir, str(out), *files],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(len(rows))]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert sorted(calls) == ["list 150", "ndarray 2000", "ndarray 2048", "ndarray 452"], calls
    (directory,) = [p for p in out.iterdir() if p.is_dir()]
    got = sorted(
        line
        for name in os.listdir(directory)
        if name.startswith("prediction.results")
        for line in (directory / name).read_text().splitlines()
    )
    slow = []
    for path in files:
        with open(path, "rb") as f:
            values = [orjson.loads(line) for line in f]
        predictions = sklearn_model.predict(np.asarray(values)).tolist()
        slow += [json.dumps({"instance": v, "prediction": p}) for v, p in zip(values, predictions)]
    assert got == sorted(slow)


def test_a_failing_instance_in_a_bulk_batch_is_isolated_and_shown_as_read(tmp_path):
    """Handlers that take lists get the array's rows; a failure shows its row and line."""
    lines = [orjson.dumps([float(i), 1e-5]) for i in range(600)]
    assert numeric_rows(lines) is not None
    from batchpredict import BatchPredictionJobSpec, run_batch_prediction

    module = tmp_path / "flaky_rows.py"
    module.write_text(
        "class Flaky:\n"
        "    def load(self, artifacts_uri):\n"
        "        pass\n"
        "    def preprocess(self, body):\n"
        "        return body['instances']\n"
        "    def predict(self, instances):\n"
        "        assert all(type(v) is float for row in instances for v in row)\n"
        "        if any(row[0] == 13.0 for row in instances):\n"
        "            raise RuntimeError('unlucky')\n"
        "        return [row[0] * 2 for row in instances]\n"
        "    def postprocess(self, results):\n"
        "        return {'predictions': results}\n"
    )
    model_dir = tmp_path / "cpr"
    model_dir.mkdir()
    rows = [[float(i), 1e-5] for i in range(600)]  # 1e-05: json.dumps and orjson differ
    data = str(tmp_path / "in.jsonl")
    with open(data, "wb") as f:  # compact, as orjson writes: read in bulk
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="j",
            gcs_source_uris=[data],
            model_uri=str(model_dir),
            predictor_class=f"{module}:Flaky",
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            workers=1,
            progress=False,
        )
    )
    directory = result.gcs_output_directory
    with open(os.path.join(directory, "prediction.results-00000-of-00001")) as f:
        lines = f.read().splitlines()
    expected = [json.dumps({"instance": r, "prediction": r[0] * 2}) for r in rows if r[0] != 13.0]
    assert lines == expected
    with open(os.path.join(directory, "prediction.errors-00000-of-00001")) as f:
        (error,) = [json.loads(line) for line in f]
    assert error["instance"] == [13.0, 1e-5]
    assert error["source"] == {"uri": data, "line": 14}


def test_without_simdjson_every_batch_takes_the_general_path_with_the_same_text(monkeypatch):
    lines = [orjson.dumps([float(i), 0.5, 1e-5]) for i in range(300)]
    assert numeric_rows(lines) is not None
    source = JsonlSource(["unused"], InstanceConfig())
    bulk = source.convert_lines(lines)
    monkeypatch.setattr(numeric_lines, "simdjson", None)
    assert numeric_rows(lines) is None
    general = source.convert_lines(lines)
    assert isinstance(general.instances, list)
    assert general.instances == bulk.instances.tolist()
    assert dumps_many(general.displays) == dumps_many(bulk.displays)


def test_the_last_line_of_a_split_reads_like_the_others(tmp_path, monkeypatch):
    """Its newline is not kept: a batch ending a split is read in bulk like the rest."""
    monkeypatch.setattr(sources, "SPLIT_BYTES", 4096)  # splits end inside lines
    path = write_jsonl(tmp_path / "in.jsonl", [[i + 0.25, 0.5] for i in range(2000)])
    source = JsonlSource([path], InstanceConfig())
    batches = [b for split in source.splits() for b in source.batches(split, 100)]
    assert len(source.splits()) > 5
    assert all(isinstance(b.converted.instances, np.ndarray) for b in batches)
    assert np.concatenate([b.converted.instances for b in batches])[:, 0].tolist() == [
        i + 0.25 for i in range(2000)
    ]
