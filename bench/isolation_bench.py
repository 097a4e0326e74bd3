"""Cost of failure isolation: predict calls and time for a model failing on 2% of rows.

The model raises on a whole call when any instance in it is bad (as scikit-learn does) and costs
``--overhead-ms`` per call (a model server round trip). Compared, in one run:

- before: plain bisection (the engine before issue 11: both halves of every failed call are
  called again, down to single instances);
- after: ``batchpredict.engine.predict_batch`` (chunks sized by the failure rate seen, and a half
  whose sibling passed is known to fail without a call);
- the engine end to end (``after``, a real job with a Custom Prediction Routine model), clean
  input against 2% bad rows;
- the information bound: a call that fails says only "some instance in it is bad" (one bit), so
  any exact isolation needs on average at least ``rows * H(p)`` calls (H the binary entropy of
  the bad fraction p; about 2,900 calls for 20,000 rows at 2%), whatever the batch size. Against
  a clean job's ``rows / batch_size`` calls, no algorithm can bring an opaque model's 2%-bad job
  near a clean job's time when the per-call overhead dominates.

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

from batchpredict.engine import FailureRate, predict_batch  # noqa: E402


def information_bound(rows: list[bool]) -> int:
    """Fewest calls any exact isolation needs on average: rows x the binary entropy of p."""
    p = sum(rows) / len(rows)
    if p in (0.0, 1.0):
        return 0
    return round(len(rows) * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


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


def simulate(rows: list[bool], batch_size: int, overhead: float, algorithm: str) -> dict:
    """Runs isolation over ``rows`` (True = bad) in batches; returns calls, seconds, failures."""
    calls = 0

    def model(instances: list[bool]) -> list[int]:
        nonlocal calls
        calls += 1
        time.sleep(overhead)
        if any(instances):
            raise ValueError("bad row")
        return [0] * len(instances)

    failed = 0
    rate = FailureRate()
    start = time.perf_counter()
    for lo in range(0, len(rows), batch_size):
        batch = rows[lo : lo + batch_size]
        if algorithm == "before":
            bisect_before(model, batch)
            failed += sum(batch)
        else:
            _, failures = predict_batch(lambda a, b, x=batch: model(x[a:b]), len(batch), None, rate)
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
        if any(i["bad"] for i in instances):
            raise ValueError("bad row")
        return [i["x"] * 2 for i in instances]
    def postprocess(self, results):
        return {{"predictions": results}}
"""


def engine_run(rows: list[bool], batch_size: int, overhead: float, workdir: str) -> dict:
    """A real job over ``rows``; returns its predict calls and elapsed seconds."""
    from batchpredict import BatchPredictionJobSpec, run_batch_prediction

    module = os.path.join(workdir, "flaky.py")
    with open(module, "w") as f:
        f.write(PREDICTOR.format(overhead=overhead))
    data = os.path.join(workdir, f"in-{sum(rows)}.jsonl")
    with open(data, "w") as f:
        for i, bad in enumerate(rows):
            f.write(json.dumps({"x": i, "bad": bad}) + "\n")
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
    clean = [False] * args.rows
    bad = [rng.random() < args.bad for _ in range(args.rows)]
    print(
        f"{args.rows} rows, {sum(bad)} bad ({args.bad:.0%}), {args.overhead_ms:g} ms per call, "
        "one worker"
    )
    print(f"information bound for exact isolation: {information_bound(bad)} calls (any batch size)")
    print(f"{'batch':>6} {'case':<28} {'calls':>7} {'seconds':>8} {'vs clean':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        for batch_size in args.batch_size:
            base = simulate(clean, batch_size, overhead, "after")
            cases = [
                ("clean (isolation only)", base),
                ("2% bad, before", simulate(bad, batch_size, overhead, "before")),
                ("2% bad, after", simulate(bad, batch_size, overhead, "after")),
            ]
            e_clean = engine_run(clean, batch_size, overhead, workdir)
            cases += [
                ("engine, clean", e_clean),
                ("engine, 2% bad (after)", engine_run(bad, batch_size, overhead, workdir)),
            ]
            for name, r in cases:
                ref = e_clean if name.startswith("engine") else base
                ratio = r["seconds"] / ref["seconds"] if ref["seconds"] else 0.0
                print(
                    f"{batch_size:>6} {name:<28} {r['calls']:>7} {r['seconds']:>8.2f} "
                    f"{ratio:>8.1f}x"
                )
                assert r["failed"] == (0 if "clean" in name else sum(bad)), (name, r)


if __name__ == "__main__":
    main()
