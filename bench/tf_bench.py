"""TensorFlow benchmark: Google's tutorial CNN on JPEG instances, the engine against a hand loop.

Workload (issue 9): the tutorial's CNN (batchpredict.tasks.train_image, JPEG-bytes
``serving_default``: decode + resize in the graph) on N ``{"bytes_inputs": {"b64": ...}}`` lines
made from scikit-learn's digits as 32x32 JPEGs. Measured side by side in one run, each in a fresh
interpreter, each timed from its first line (TensorFlow's import and the model load included):

- engine: batchpredict end to end (default workers and batch size);
- loop:   a hand-written loop: json lines, ``tf.saved_model.load``, the signature called in batches
          of the engine's batch size, the same output lines (``json.dumps``, floats as '%.9g').

The loop's and the engine's output lines are compared: the same instances, and the same
predictions up to float32 rounding (TensorFlow's CPU kernels may round the last digit differently
for another batch composition). Then the engine runs on
``--memory-rows`` instances to show that peak memory (summed RSS of the process tree) stays flat.
Ratios, not absolute times, are the result: the machine is shared and noisy.

Usage: python bench/tf_bench.py [--rows 10000] [--memory-rows 100000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_bench import ROOT, timed_child  # noqa: E402

ENGINE = """
import json, sys, time
t = time.monotonic()
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
data, model, out = sys.argv[1:4]
r = run_batch_prediction(BatchPredictionJobSpec(job_display_name="bench", gcs_source_uris=[data],
    gcs_destination_output_uri_prefix=out, model_uri=model, output_directory_name="engine",
    progress=False))
s = time.monotonic() - t
print(json.dumps({"seconds": s, "rows": r.completion_stats["successful_count"],
                  "workers": r.stats["workers"], "batch_size": r.stats["batch_size"]}))
"""

LOOP = """
import json, sys, time
t = time.monotonic()
import base64
import tensorflow as tf
data, model_dir, out, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
signature = tf.saved_model.load(model_dir).signatures["serving_default"]
n = 0
with open(data) as f, open(out, "w") as w:
    def flush(batch):
        jpegs = [base64.b64decode(i["bytes_inputs"]["b64"]) for i in batch]
        [probs] = signature(bytes_inputs=tf.constant(jpegs)).values()
        w.write("".join(
            json.dumps({"instance": i, "prediction": [float("%.9g" % v) for v in row]}) + "\\n"
            for i, row in zip(batch, probs.numpy())))
    batch = []
    for line in f:
        batch.append(json.loads(line))
        if len(batch) == batch_size:
            flush(batch); n += len(batch); batch = []
    if batch:
        flush(batch); n += len(batch)
print(json.dumps({"seconds": time.monotonic() - t, "rows": n}))
"""


def make_model(model_dir: str) -> None:
    """The tutorial's CNN with its JPEG serving signature (weights untrained: same cost)."""
    from batchpredict.tasks.train_image import build_model, export_saved_model

    export_saved_model(build_model(), model_dir)


def make_data(path: str, rows: int) -> None:
    from batchpredict.tasks.train_image import digit_images, encode_jpegs

    images, _ = digit_images()
    lines = [
        json.dumps({"bytes_inputs": {"b64": base64.b64encode(j).decode("ascii")}}) + "\n"
        for j in encode_jpegs(images)
    ]
    with open(path, "w") as f:
        for i in range(rows):
            f.write(lines[i % len(lines)])


def _predictions(paths: list[str]) -> dict[str, list]:
    """Each distinct instance's predictions (the data repeats its images)."""
    out: dict[str, list] = {}
    for p in paths:
        with open(p) as f:
            for line in f:
                row = json.loads(line)
                out.setdefault(row["instance"]["bytes_inputs"]["b64"], []).append(row["prediction"])
    return out


def compare(engine_paths: list[str], loop_path: str) -> dict:
    """Same instances, same predictions up to float32 rounding.

    TensorFlow's CPU kernels may round the last float32 digit differently for another batch
    composition (the engine's workers batch other rows together than the loop), so the lines are
    compared as numbers: the largest absolute difference of any probability, and the share of
    lines that are identical text.
    """
    engine, loop = _predictions(engine_paths), _predictions([loop_path])
    same_instances = sorted((k, len(v)) for k, v in engine.items()) == sorted(
        (k, len(v)) for k, v in loop.items()
    )
    max_diff, identical, total = 0.0, 0, 0
    for key, rows in engine.items():
        reference = loop.get(key, [])
        for row in rows:
            total += 1
            identical += any(row == r for r in reference)
            diffs = [max(abs(a - b) for a, b in zip(row, r)) for r in reference] or [1.0]
            max_diff = max(max_diff, min(diffs))
    return {
        "same_instances": same_instances,
        "max_abs_diff": max_diff,
        "identical_lines_fraction": identical / total if total else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--memory-rows", type=int, default=100_000, help="0 skips")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--workdir", default=None, help="where data is generated (temp dir)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = args.workdir or tempfile.mkdtemp(prefix="bptfbench-")
    model_dir = os.path.join(work, "model")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        make_model(model_dir)
    data = os.path.join(work, f"data-{args.rows}.jsonl")
    if not os.path.exists(data):
        make_data(data, args.rows)
    results: dict = {"rows": args.rows, "cpus": os.cpu_count(), "load": os.getloadavg()}
    engine = timed_child(ENGINE, data, model_dir, os.path.join(work, "out"))
    batch_size = str(engine["batch_size"])
    loop = timed_child(LOOP, data, model_dir, os.path.join(work, "loop.results"), batch_size)
    for name, r in (("engine", engine), ("loop", loop)):
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results[name] = r
        print(
            f"{name:8s} {r['rows_per_second']:>8,.0f} rows/s  {r['seconds']:7.2f} s  "
            f"peak {r['peak_rss_mib']:6.0f} MiB",
            flush=True,
        )
    engine_files = glob.glob(os.path.join(work, "out", "engine", "prediction.results-*"))
    same = compare(engine_files, os.path.join(work, "loop.results"))
    results["same_output"] = same
    results["engine_vs_loop"] = engine["rows_per_second"] / loop["rows_per_second"]
    print(
        f"engine / loop = {results['engine_vs_loop']:.2f}x; same instances: "
        f"{same['same_instances']}, max |diff| {same['max_abs_diff']:.1e}, identical lines "
        f"{same['identical_lines_fraction']:.1%}",
        flush=True,
    )
    if args.memory_rows:
        big = os.path.join(work, f"data-{args.memory_rows}.jsonl")
        if not os.path.exists(big):
            make_data(big, args.memory_rows)
        r = timed_child(ENGINE, big, model_dir, os.path.join(work, "out"))
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results["engine_large"] = r
        results["peak_ratio_large_vs_small"] = r["peak_rss_mib"] / engine["peak_rss_mib"]
        print(
            f"engine@{args.memory_rows:,}: {r['rows_per_second']:,.0f} rows/s, peak "
            f"{r['peak_rss_mib']:.0f} MiB ({results['peak_ratio_large_vs_small']:.2f}x the "
            f"{args.rows:,}-instance run)",
            flush=True,
        )
    path = os.path.join(args.out, "tf_bench.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
