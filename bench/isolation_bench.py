"""Cost of failure isolation: predict calls and time for a model failing on 2% of rows.

The model raises on a whole call when any instance in it is bad (as scikit-learn does) and costs
``--overhead-ms`` per call (a model server round trip). Rows are ``[x, y]`` numbers. Two kinds of
bad rows, each 2%:

- opaque: the bad rows look like the good ones (the model fails on values, ``y < 0``); nothing
  but calling the model tells them apart;
- structural: the bad rows hold a string among the numbers (``[x, "n/a"]``), which the model
  rejects as scikit-learn's ``np.asarray(instances, dtype=float)`` does.

Compared, in one run, for each kind:

- before (plain): plain bisection (the engine before issue 11: both halves of every failed call
  are called again, down to single instances);
- before (rate): the engine's isolation before the structural pre-screen (``rate_bisect`` below, as
  it was: chunks sized by the failure rate seen, and a chunk whose siblings passed is known to fail
  without a call, single instances included);
- after: ``batchpredict.engine.predict_batch`` (a failed call's instances grouped by structure
  first, each group predicted in one call, only failing groups split, by rate as before; a single
  instance is always called alone, so its error is its own);
- the engine end to end (a real job with a Custom Prediction Routine model), clean input against
  each kind of 2% bad rows;
- the information bound: a call that fails says only "some instance in it is bad" (one bit), so
  for opaque bad rows any exact isolation needs on average at least ``rows * H(p)`` calls (H the
  binary entropy of the bad fraction p; about 2,900 calls for 20,000 rows at 2%), whatever the
  batch size. Against a clean job's ``rows / batch_size`` calls, no algorithm can bring an opaque
  model's 2%-bad job near a clean job's time when the per-call overhead dominates. Structural bad
  rows are told apart without a call, so the bound does not apply to them: what is left is about
  one call per failing batch (its good rows again) and one per bad row not alone in its batch.

Usage: python bench/isolation_bench.py [--rows 20000] [--batch-size 64 2048] [--bad 0.02]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from batchpredict.engine import FailureRate, _chunks, predict_batch, take  # noqa: E402


def information_bound(bad: list[bool]) -> int:
    """Fewest calls any exact isolation needs on average: rows x the binary entropy of p."""
    p = sum(bad) / len(bad)
    if p in (0.0, 1.0):
        return 0
    return round(len(bad) * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


def make_rows(bad: list[bool], kind: str) -> list[list[Any]]:
    """``[x, y]`` rows; bad ones have ``y < 0`` (opaque) or a string for y (structural)."""
    odd = -1.0 if kind == "opaque" else "n/a"
    return [[float(i), odd if b else 1.0] for i, b in enumerate(bad)]


def check(instances: list[list[Any]]) -> None:
    """What the model rejects: a value that is not a number (as np.asarray(dtype=float)), y < 0."""
    for row in instances:
        if any(not isinstance(v, (int, float)) for v in row):
            raise ValueError(f"could not convert string to float: {row[1]!r}")
        if row[1] < 0:
            raise ValueError(f"negative y: {row[1]}")


def bisect_before(predict, instances: list[Any]) -> None:
    """The isolation of the engine before issue 11 (calls both halves of every failed call)."""
    try:
        predict(instances)
    except ValueError:
        if len(instances) == 1:
            return
        mid = len(instances) // 2
        bisect_before(predict, instances[:mid])
        bisect_before(predict, instances[mid:])


def rate_bisect(predict, n: int, rate: FailureRate) -> int:
    """The engine's isolation before the pre-screen (its predict_batch, less the crash hints).

    Returns the failures.
    """
    failed = 0

    def isolate(lo: int, hi: int, known: Exception | None) -> bool:
        nonlocal failed
        err = known
        if err is None:
            try:
                predict(range(lo, hi))
                return True
            except ValueError as e:
                err = e
        if hi - lo == 1:
            failed += 1
            return False
        chunks = _chunks(lo, hi, rate.expected_bad(hi - lo))
        all_passed = True
        for k, (clo, chi) in enumerate(chunks):
            inferred = err if (k == len(chunks) - 1 and all_passed) else None
            all_passed = isolate(clo, chi, inferred) and all_passed
        return False

    isolate(0, n, None)
    rate.rows += n
    rate.bad += failed
    return failed


def simulate(rows: list[list[Any]], batch_size: int, overhead: float, algorithm: str) -> dict:
    """Runs isolation over ``rows`` in batches; returns calls, seconds, failures."""
    calls = 0

    def model(instances: list[list[Any]]) -> list[int]:
        nonlocal calls
        calls += 1
        time.sleep(overhead)
        check(instances)
        return [0] * len(instances)

    failed = 0
    rate = FailureRate()
    start = time.perf_counter()
    for lo in range(0, len(rows), batch_size):
        batch = rows[lo : lo + batch_size]
        if algorithm == "before (plain)":
            bad = []

            def counting(x: list[Any], bad: list = bad) -> list[int]:
                try:
                    return model(x)
                except ValueError:
                    if len(x) == 1:
                        bad.append(x)
                    raise

            bisect_before(counting, batch)
            failed += len(bad)
        elif algorithm == "before (rate)":
            failed += rate_bisect(lambda r, x=batch: model(take(x, r)), len(batch), rate)
        else:
            _, failures = predict_batch(
                lambda r, x=batch: model(take(x, r)), len(batch), None, rate, instances=batch
            )
            failed += len(failures)
    return {"calls": calls, "seconds": round(time.perf_counter() - start, 2), "failed": failed}


PREDICTOR = """
import time
class Flaky:
    def load(self, artifacts_uri):
        pass
    def preprocess(self, body):
        return body["instances"]
    def predict(self, instances):
        time.sleep({overhead})
        for row in instances:
            if any(not isinstance(v, (int, float)) for v in row):
                raise ValueError(f"could not convert string to float: {{row[1]!r}}")
            if row[1] < 0:
                raise ValueError(f"negative y: {{row[1]}}")
        return [row[0] * 2 for row in instances]
    def postprocess(self, results):
        return {{"predictions": results}}
"""


def engine_run(rows: list[list[Any]], batch_size: int, overhead: float, workdir: str) -> dict:
    """A real job over ``rows``; returns its predict calls and elapsed seconds."""
    from batchpredict import BatchPredictionJobSpec, run_batch_prediction

    module = os.path.join(workdir, "flaky.py")
    with open(module, "w") as f:
        f.write(PREDICTOR.format(overhead=overhead))
    data = os.path.join(workdir, "in.jsonl")
    with open(data, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.makedirs(os.path.join(workdir, "model"), exist_ok=True)
    start = time.perf_counter()
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="isolation-bench",
            gcs_source_uris=[data],
            model_uri=os.path.join(workdir, "model"),
            predictor_class=f"{module}:Flaky",
            gcs_destination_output_uri_prefix=os.path.join(workdir, "out"),
            manual_batch_tuning_parameters_batch_size=batch_size,
            workers=1,
            progress=False,
        )
    )
    return {
        "calls": result.stats["predict_calls"],
        "seconds": round(time.perf_counter() - start, 2),
        "failed": result.completion_stats["failed_count"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 2048])
    parser.add_argument("--bad", type=float, default=0.02)
    parser.add_argument("--overhead-ms", type=float, default=10.0)
    args = parser.parse_args()
    overhead = args.overhead_ms / 1000
    rng = random.Random(0)
    clean_mask = [False] * args.rows
    bad_mask = [rng.random() < args.bad for _ in range(args.rows)]
    n_bad = sum(bad_mask)
    clean = make_rows(clean_mask, "opaque")
    print(
        f"{args.rows} rows, {n_bad} bad ({args.bad:.0%}), {args.overhead_ms:g} ms per call, "
        "one worker"
    )
    print(
        f"information bound for exact isolation of opaque bad rows: {information_bound(bad_mask)} "
        "calls (any batch size)"
    )
    print(f"{'batch':>6} {'case':<36} {'calls':>7} {'seconds':>8} {'vs clean':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        for batch_size in args.batch_size:
            base = simulate(clean, batch_size, overhead, "after")
            cases = [("clean (isolation only)", base)]
            for kind in ("opaque", "structural"):
                rows = make_rows(bad_mask, kind)
                for algorithm in ("before (plain)", "before (rate)", "after"):
                    cases.append(
                        (f"{kind}, {algorithm}", simulate(rows, batch_size, overhead, algorithm))
                    )
            e_clean = engine_run(clean, batch_size, overhead, workdir)
            cases.append(("engine, clean", e_clean))
            for kind in ("opaque", "structural"):
                rows = make_rows(bad_mask, kind)
                cases.append(
                    (f"engine, {kind} (after)", engine_run(rows, batch_size, overhead, workdir))
                )
            for name, r in cases:
                ref = e_clean if name.startswith("engine") else base
                ratio = r["seconds"] / ref["seconds"] if ref["seconds"] else 0.0
                print(
                    f"{batch_size:>6} {name:<36} {r['calls']:>7} {r['seconds']:>8.2f} "
                    f"{ratio:>8.1f}x"
                )
                assert r["failed"] == (0 if "clean" in name else n_bad), (name, r)


if __name__ == "__main__":
    main()
