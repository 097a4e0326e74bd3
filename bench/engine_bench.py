"""Engine benchmark: the engine end to end against a hand-written floor and a predict-only ceiling.

Workload (issue 2): N rows x 28 float features as JSONL, a scikit-learn
HistGradientBoostingClassifier (100 iterations, depth 6). Measured side by side in one run:

- engine:  batchpredict end to end (default workers and batch size), in a child process;
- floor:   one process: read lines in batches of 8192, orjson, model.predict, write Vertex lines;
- ceiling: model.predict on the preloaded array, nothing else.

Peak memory is the highest summed RSS of the measured process and its children, sampled every
20 ms. Ratios, not absolute times, are the result: the machine is shared and noisy.

Usage: python bench/engine_bench.py [--rows 1000000] [--memory-rows 5000000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

FEATURES = 28
FLOOR_BATCH = 8192
SAMPLE_SECONDS = 0.02
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_model(model_dir: str) -> None:
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, FEATURES))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=100, max_depth=6, early_stopping=False)
    os.makedirs(model_dir, exist_ok=True)
    joblib.dump(model.fit(X, y), os.path.join(model_dir, "model.joblib"))


def make_data(path: str, rows: int) -> None:
    import orjson

    rng = np.random.default_rng(1)
    with open(path, "wb") as f:
        for start in range(0, rows, 100_000):
            block = rng.normal(size=(min(100_000, rows - start), FEATURES)).round(6)
            f.write(b"\n".join(orjson.dumps(r) for r in block.tolist()) + b"\n")


class PeakRss:
    """Samples the summed RSS of a process tree in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed_child(code: str, *args: str) -> dict:
    """Runs ``code`` in a fresh interpreter; returns its JSON result plus wall time and peak RSS."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env, text=True
    )
    sampler = PeakRss(proc.pid)
    out, _ = proc.communicate()
    peak = sampler.stop()
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {code[:60]}...")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_seconds=time.monotonic() - start, peak_rss_mib=peak / 2**20)
    return result


ENGINE = """
import json, sys, time
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
data, model, out = sys.argv[1:4]
t = time.monotonic()
r = run_batch_prediction(BatchPredictionJobSpec(job_display_name="bench", gcs_source_uris=[data],
    gcs_destination_output_uri_prefix=out, model_uri=model, progress=False))
s = time.monotonic() - t
print(json.dumps({"seconds": s, "rows": r.completion_stats["successful_count"],
                  "workers": r.stats["workers"], "batch_size": r.stats["batch_size"]}))
"""

FLOOR = """
import json, sys, time, joblib, numpy as np, orjson
data, model_dir, out = sys.argv[1:4]
model = joblib.load(model_dir + "/model.joblib")
t = time.monotonic(); n = 0
with open(data, "rb") as f, open(out + "/floor.results", "w") as w:
    while True:
        lines = f.readlines(8192 * 600)  # ~8192 lines
        if not lines:
            break
        for i in range(0, len(lines), 8192):
            inst = [orjson.loads(l) for l in lines[i:i + 8192]]
            pred = model.predict(np.asarray(inst)).tolist()
            w.write("".join(json.dumps({"instance": a, "prediction": p}) + "\\n"
                            for a, p in zip(inst, pred)))
            n += len(inst)
print(json.dumps({"seconds": time.monotonic() - t, "rows": n}))
"""

CEILING = """
import json, sys, time, joblib, numpy as np, orjson
data, model_dir = sys.argv[1:3]
model = joblib.load(model_dir + "/model.joblib")
with open(data, "rb") as f:
    X = np.asarray([orjson.loads(l) for l in f])
t = time.monotonic()
model.predict(X)
print(json.dumps({"seconds": time.monotonic() - t, "rows": len(X)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=5_000_000,
        help="second, larger input for the peak-memory comparison (0 skips)",
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--workdir", default=None, help="where data is generated (temp dir)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = args.workdir or tempfile.mkdtemp(prefix="bpbench-")
    model_dir = os.path.join(work, "model")
    data = os.path.join(work, f"data-{args.rows}.jsonl")
    if not os.path.exists(os.path.join(model_dir, "model.joblib")):
        make_model(model_dir)
    if not os.path.exists(data):
        make_data(data, args.rows)
    results: dict = {"rows": args.rows, "cpus": os.cpu_count()}
    for name, code, extra in (
        ("engine", ENGINE, [os.path.join(work, "out")]),
        ("floor", FLOOR, [work]),
        ("ceiling", CEILING, []),
    ):
        r = timed_child(code, data, model_dir, *extra)
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results[name] = r
        print(
            f"{name:8s} {r['rows_per_second']:>10,.0f} rows/s  {r['seconds']:7.2f} s  "
            f"peak {r['peak_rss_mib']:7.0f} MiB",
            flush=True,
        )
    results["engine_vs_floor"] = (
        results["engine"]["rows_per_second"] / results["floor"]["rows_per_second"]
    )
    results["engine_vs_ceiling"] = (
        results["engine"]["rows_per_second"] / results["ceiling"]["rows_per_second"]
    )
    if args.memory_rows:
        big = os.path.join(work, f"data-{args.memory_rows}.jsonl")
        if not os.path.exists(big):
            make_data(big, args.memory_rows)
        r = timed_child(ENGINE, big, model_dir, os.path.join(work, "out"))
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results["engine_large"] = r
        print(
            f"engine@{args.memory_rows:,}: {r['rows_per_second']:,.0f} rows/s, "
            f"peak {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        results["peak_memory_ratio_large_vs_small"] = (
            r["peak_rss_mib"] / results["engine"]["peak_rss_mib"]
        )
    print(
        f"engine/floor = {results['engine_vs_floor']:.2f}x, "
        f"engine/ceiling = {results['engine_vs_ceiling']:.2f}x"
    )
    with open(os.path.join(args.out, "engine_bench.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
