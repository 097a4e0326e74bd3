"""Engine benchmark: the engine end to end against hand-written floors and a predict-only ceiling.

Workload (issues 2 and 14): N rows x 28 full-precision float features as JSONL (552 bytes a line),
a scikit-learn HistGradientBoostingClassifier (100 iterations, depth 6). Measured side by side in
one run, each system a whole process timed from start to exit:

- engine:       batchpredict end to end (defaults: a worker per core, batch size 2048);
- floor:        the main reference, what a competent engineer writes in 30 lines: one process,
                orjson parse in batches of 8192, model.predict (OpenMP on every core), orjson
                write of ``{"instance", "prediction"}`` lines;
- floor_json:   the same loop writing with ``json.dumps`` (the output format Vertex's lines have,
                and this benchmark's reference before issue 14);
- ceiling:      model.predict on the preloaded array (every core), nothing else: its rows/s is
                the predict time alone.

The engine's output is checked against a slow reference on a sample (json.dumps of orjson's
values and model.predict's predictions, line for line). Peak memory is the highest summed RSS of
the measured process and its children, sampled every 20 ms. Ratios, not absolute times, are the
result: the machine is shared and noisy.

Usage: python bench/engine_bench.py [--rows 1000000] [--memory-rows 10000000] [--out bench/out]
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
    """``rows`` lines of 28 full-precision floats, as orjson writes them (about 552 bytes each)."""
    import orjson

    rng = np.random.default_rng(1)
    with open(path + ".tmp", "wb") as f:
        for start in range(0, rows, 100_000):
            block = rng.normal(size=(min(100_000, rows - start), FEATURES))
            f.write(b"\n".join(orjson.dumps(r) for r in block.tolist()) + b"\n")
    os.replace(path + ".tmp", path)


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
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # 0: the engine's default
r = run_batch_prediction(BatchPredictionJobSpec(job_display_name="bench", gcs_source_uris=[data],
    gcs_destination_output_uri_prefix=out, model_uri=model, progress=False,
    manual_batch_tuning_parameters_batch_size=batch))
s = time.monotonic() - t
print(json.dumps({"seconds": s, "rows": r.completion_stats["successful_count"],
                  "workers": r.stats["workers"], "batch_size": r.stats["batch_size"]}))
"""

FLOOR = """
import json, sys, time, joblib, numpy as np, orjson
data, model_dir, out = sys.argv[1:4]
model = joblib.load(model_dir + "/model.joblib")
t = time.monotonic(); n = 0
with open(data, "rb") as f, open(out + "/floor.results", "wb") as w:
    while lines := f.readlines(8192 * 560):  # about 8192 lines
        inst = [orjson.loads(line) for line in lines]
        pred = model.predict(np.asarray(inst)).tolist()
        w.write(b"".join(orjson.dumps({"instance": a, "prediction": p}) + b"\\n"
                         for a, p in zip(inst, pred)))
        n += len(inst)
print(json.dumps({"seconds": time.monotonic() - t, "rows": n}))
"""

FLOOR_JSON = """
import json, sys, time, joblib, numpy as np, orjson
data, model_dir, out = sys.argv[1:4]
model = joblib.load(model_dir + "/model.joblib")
t = time.monotonic(); n = 0
with open(data, "rb") as f, open(out + "/floor_json.results", "w") as w:
    while lines := f.readlines(8192 * 560):  # about 8192 lines
        inst = [orjson.loads(line) for line in lines]
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


def check_sample(data: str, model_dir: str, out_dir: str, sample: int = 2000) -> int:
    """Checks the engine's lines for the first ``sample`` inputs against a slow reference.

    The reference is ``json.dumps({"instance": orjson.loads(line), "prediction": p})`` with p from
    model.predict on those values; every reference line must be among the engine's output lines.
    Returns how many were checked.
    """
    import glob
    import itertools

    import joblib
    import orjson

    with open(data, "rb") as f:
        values = [orjson.loads(line) for line in itertools.islice(f, sample)]
    model = joblib.load(os.path.join(model_dir, "model.joblib"))
    predictions = model.predict(np.asarray(values)).tolist()
    expected = {json.dumps({"instance": v, "prediction": p}) for v, p in zip(values, predictions)}
    for path in glob.glob(os.path.join(out_dir, "*", "prediction.results-*")):
        with open(path) as f:
            expected.difference_update(line.rstrip("\n") for line in f)
    if expected:
        raise SystemExit(f"{len(expected)} of {sample} reference lines are not in the output")
    return sample


def run_engine(data: str, model_dir: str, work: str, batch_size: int = 0) -> dict:
    import shutil

    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    r = timed_child(ENGINE, data, model_dir, out, str(batch_size))
    r["sample_checked"] = check_sample(data, model_dir, out)
    shutil.rmtree(out, ignore_errors=True)
    return r


def report(name: str, r: dict) -> None:
    r["rows_per_second"] = r["rows"] / r["wall_seconds"]  # the whole process, start to exit
    r["rows_per_second_inside"] = r["rows"] / r["seconds"]  # after imports and set-up
    print(
        f"{name:11s} {r['rows_per_second']:>10,.0f} rows/s  {r['wall_seconds']:7.2f} s  "
        f"(inside {r['rows_per_second_inside']:>10,.0f} rows/s)  peak {r['peak_rss_mib']:6.0f} MiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=10_000_000,
        help="second, larger input for the memory and scaling comparison (0 skips)",
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--workdir", default=None, help="where data is generated (temp dir)")
    parser.add_argument(
        "--batch-sizes",
        default="",
        help="comma-separated batch sizes to run the engine at as well, on --rows (e.g. 8192)",
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = args.workdir or tempfile.mkdtemp(prefix="bpbench-")
    model_dir = os.path.join(work, "model")
    data = os.path.join(work, f"data-{args.rows}.jsonl")
    if not os.path.exists(os.path.join(model_dir, "model.joblib")):
        make_model(model_dir)
    if not os.path.exists(data):
        make_data(data, args.rows)
    results: dict = {"rows": args.rows, "cpus": os.cpu_count(), "load": os.getloadavg()}
    for name, code, extra in (
        ("engine", None, []),
        ("floor", FLOOR, [work]),
        ("floor_json", FLOOR_JSON, [work]),
        ("ceiling", CEILING, []),
    ):
        r = (
            run_engine(data, model_dir, work)
            if code is None
            else timed_child(code, data, model_dir, *extra)
        )
        report(name, r)
        results[name] = r
    engine = results["engine"]["rows_per_second"]
    for ref in ("floor", "floor_json", "ceiling"):
        results[f"engine_vs_{ref}"] = engine / results[ref]["rows_per_second"]
    print(
        "engine/floor = {engine_vs_floor:.2f}x (orjson floor, the main reference), "
        "engine/floor_json = {engine_vs_floor_json:.2f}x, "
        "engine/ceiling = {engine_vs_ceiling:.2f}x".format(**results)
    )
    for size in filter(None, args.batch_sizes.split(",")):
        r = run_engine(data, model_dir, work, int(size))
        report(f"batch {size}", r)
        r["vs_default"] = r["rows_per_second"] / engine
        results[f"engine_batch_{size}"] = r
        print(f"engine at batch {size} / engine at its default: {r['vs_default']:.2f}x")
    if args.memory_rows:
        big = os.path.join(work, f"data-{args.memory_rows}.jsonl")
        if not os.path.exists(big):
            make_data(big, args.memory_rows)
        r = run_engine(big, model_dir, work)
        report(f"engine@{args.memory_rows:,}", r)
        results["engine_large"] = r
        results["peak_memory_ratio_large_vs_small"] = (
            r["peak_rss_mib"] / results["engine"]["peak_rss_mib"]
        )
        results["rows_per_second_ratio_large_vs_small"] = r["rows_per_second"] / engine
        print(
            f"{args.memory_rows:,} vs {args.rows:,} rows: peak memory "
            f"{results['peak_memory_ratio_large_vs_small']:.2f}x, rows/s "
            f"{results['rows_per_second_ratio_large_vs_small']:.2f}x"
        )
    results["load_after"] = os.getloadavg()
    with open(os.path.join(args.out, "engine_bench.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
