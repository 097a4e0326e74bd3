"""Cost of failure isolation (issue 11 item 18): structurally odd rows are found without bisecting.

When a predict call fails, its instances are grouped by a cheap structural signature before any
split (``engine.signature``): the largest group is predicted in one call, every other group in
one call, and only groups that still fail are split. Isolation stays exact: every instance is
predicted or failed with its own error, and successful + failed == read.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from batchpredict import BatchPredictionJobSpec, engine, run_batch_prediction
from batchpredict.engine import FailureRate, predict_batch, take
from tests.conftest import read_output

MODEL = """
class Numbers:
    def load(self, artifacts_uri):
        pass
    def preprocess(self, body):
        return body["instances"]
    def predict(self, instances):
        for row in instances:  # as scikit-learn's np.asarray(instances, dtype=float) refuses
            if len(row) != 2 or not all(isinstance(v, (int, float)) for v in row):
                raise ValueError(f"row {row[0]}: not two numbers: {row!r}")
        return [row[0] * 2 for row in instances]
    def postprocess(self, results):
        return {"predictions": results}
"""

ODD = [lambda i: [i, "n/a"], lambda i: [i, None], lambda i: [i, 1.0, 2.0]]


def odd_rows(n: int, seed: int = 0) -> tuple[list[list], set[int]]:
    """``n`` rows ``[i, y]``, 2% of them odd: a string, a null, or three values."""
    rng = random.Random(seed)
    bad = {i for i in range(n) if rng.random() < 0.02}
    rows = [ODD[i % 3](i) if i in bad else [i, float(i % 7)] for i in range(n)]
    return rows, bad


def check(rows: list[list]) -> list[int]:
    for row in rows:
        if len(row) != 2 or not all(isinstance(v, (int, float)) for v in row):
            raise ValueError(f"row {row[0]}: not two numbers: {row!r}")
    return [row[0] * 2 for row in rows]


def calls_in_process(rows: list[list], batch: int, screened: bool) -> tuple[int, int]:
    """(predict calls, failures) of predict_batch over ``rows``, with or without the screen."""
    calls = 0

    def model(x: list[list]) -> list[int]:
        nonlocal calls
        calls += 1
        return check(x)

    rate, failed = FailureRate(), 0
    for lo in range(0, len(rows), batch):
        part = rows[lo : lo + batch]
        _, failures = predict_batch(
            lambda r, p=part: model(take(p, r)),
            len(part),
            None,
            rate,
            instances=part if screened else None,
        )
        failed += len(failures)
    return calls, failed


# 2,000 rows in batches of 64: 32 calls for a clean job. The 45 odd rows (in 27 batches) cost one
# more call per failing batch (its good rows again) and one each (its own error): 104. Bisection
# without the screen makes 404 calls here.
ROWS, BATCH, MAX_CALLS = 2000, 64, 120


def test_structural_bad_rows_are_isolated_with_few_calls_in_a_real_job(tmp_path):
    rows, bad = odd_rows(ROWS)
    assert calls_in_process(rows, BATCH, screened=False)[0] > MAX_CALLS  # the bound means it
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "numbers.py").write_text(MODEL)
    (tmp_path / "model").mkdir()
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="odd-rows",
            gcs_source_uris=[str(data)],
            model_uri=str(tmp_path / "model"),
            predictor_class=f"{tmp_path / 'numbers.py'}:Numbers",
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            manual_batch_tuning_parameters_batch_size=BATCH,
            workers=1,
            progress=False,
        )
    )
    assert result.stats["predict_calls"] <= MAX_CALLS, result.stats["predict_calls"]
    stats = result.completion_stats
    assert stats["successful_count"] + stats["failed_count"] == ROWS
    assert stats["failed_count"] == len(bad)
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"][0] for r in out["results"]) == sorted(set(range(ROWS)) - bad)
    assert all(r["prediction"] == r["instance"][0] * 2 for r in out["results"])
    assert sorted(e["instance"][0] for e in out["errors"]) == sorted(bad)
    for e in out["errors"]:  # each error is the instance's own, not a neighbour's
        assert e["error"]["message"].startswith(f"ValueError: row {e['instance'][0]}:"), e
        assert e["error"]["code"] == 3


@pytest.mark.parametrize(
    "good, odd",
    [
        ({"a": 1.0, "b": 2}, {"a": 1.0}),  # a missing key
        ({"a": 1.0, "b": 2}, {"a": 1.0, "b": 2, "c": 3}),  # an extra key
        ({"a": 1.0, "b": 2}, {"a": 1.0, "b": "2"}),  # a value of another type
        (3.5, "3.5"),  # scalars of another type
        ([1.0, 2.0], [1.0, [2.0]]),  # a nested value among numbers
    ],
)
def test_each_kind_of_structural_difference_is_screened(good, odd):
    instances = [good] * 256
    for i in (5, 77, 78, 200):
        instances[i] = odd
    calls = []

    def predict(rows):
        calls.append(rows)
        x = take(instances, rows)
        bad = [v for v in x if v != good]
        if bad:
            raise ValueError(f"odd: {bad[0]!r}")
        return [0] * len(x)

    results, failures = predict_batch(predict, 256, instances=instances)
    assert [i for i, _ in failures] == [5, 77, 78, 200]
    assert sorted(results) == [i for i in range(256) if i not in (5, 77, 78, 200)]
    # the batch, its good rows in one call, then the 4 odd rows one by one
    assert len(calls) == 6, calls


def test_ints_and_floats_are_one_structure():
    assert engine.signature([1, 2.5]) == engine.signature([1.0, 2])
    assert engine.signature({"a": 1}) == engine.signature({"a": 1.5})
    assert engine.signature([1, None]) != engine.signature([1, 2])


def test_value_failures_within_a_group_are_still_bisected_exactly():
    """A group that fails on values (one signature) keeps the adaptive bisection."""
    instances = [[float(i), 1.0] for i in range(256)]
    instances[10] = [10.0, "x"]  # structural
    instances[100][1] = -1.0  # opaque: same structure as the good rows

    def predict(rows):
        x = take(instances, rows)
        for row in x:
            if not isinstance(row[1], float) or row[1] < 0:
                raise ValueError(f"row {row[0]}")
        return [0] * len(x)

    results, failures = predict_batch(predict, 256, instances=instances)
    assert [(i, str(e)) for i, e in failures] == [
        (10, "ValueError: row 10.0"),
        (100, "ValueError: row 100.0"),
    ]
    assert len(results) == 254


def test_the_screen_costs_nothing_on_success_or_for_numeric_arrays(monkeypatch):
    seen = []
    monkeypatch.setattr(engine, "signature", lambda x: seen.append(x) or ("x",))
    instances = [[1.0, 2.0]] * 64
    predict_batch(lambda r: [0] * len(r), 64, instances=instances)
    assert seen == []  # a batch that passes is never screened
    array = np.ones((64, 2))
    array[7, 1] = np.nan

    def predict(rows):
        x = take(array, rows)
        assert isinstance(x, np.ndarray)  # an array stays an array
        if np.isnan(x).any():
            raise ValueError("nan")
        return [0] * len(x)

    _, failures = predict_batch(predict, 64, instances=array)
    assert [i for i, _ in failures] == [7]
    assert seen == []  # a numeric array is one structure by construction


def test_a_row_that_crashes_the_model_in_a_screened_group_is_isolated(tmp_path):
    """A crash (worker death) inside a gathered group is isolated within it by fresh workers."""
    module = tmp_path / "crashy.py"
    module.write_text(
        MODEL.replace("class Numbers", "import os\nclass Crashy").replace(
            "        for row in instances:  #",
            "        if any(row[1] == 'boom' for row in instances):\n"
            "            os.abort()\n"
            "        for row in instances:  #",
        )
    )
    rows = [[i, 1.0] for i in range(64)]
    rows[9] = [9, "n/a"]
    rows[40] = [40, "boom"]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "model").mkdir()
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="crashy",
            gcs_source_uris=[str(data)],
            model_uri=str(tmp_path / "model"),
            predictor_class=f"{module}:Crashy",
            gcs_destination_output_uri_prefix=str(tmp_path / "out"),
            manual_batch_tuning_parameters_batch_size=64,
            workers=1,
            progress=False,
        )
    )
    out = read_output(result.gcs_output_directory)
    errors = {e["instance"][0]: e["error"] for e in out["errors"]}
    assert sorted(errors) == [9, 40]
    assert errors[9]["code"] == 3 and "row 9:" in errors[9]["message"]
    assert errors[40]["code"] == 13 and "SIGABRT" in errors[40]["message"]
    assert sorted(r["instance"][0] for r in out["results"]) == [
        i for i in range(64) if i not in (9, 40)
    ]
