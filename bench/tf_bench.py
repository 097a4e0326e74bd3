"""TensorFlow benchmark: Google's tutorial CNN on JPEG instances, the engine against a hand loop.

Workload (issue 9): the tutorial's CNN (batchpredict.tasks.train_image, JPEG-bytes
``serving_default``: decode + resize in the graph) on N ``{"bytes_inputs": {"b64": ...}}`` lines
made from scikit-learn's digits as 32x32 JPEGs. Measured side by side in one run, each in a fresh
interpreter, each timed from its first line (TensorFlow's import and the model load included):

- engine: batchpredict end to end (default workers and batch size);
- loop:   a hand-written loop: orjson lines, ``tf.saved_model.load``, the signature called in
          batches of the engine's batch size, the same output lines (``json.dumps``, floats as
          '%.9g');
- parts:  where the loop's time goes, measured alone: the CPU seconds of ``import tensorflow``
          (as the loop imports it, and as the engine's workers do, without Keras), of the model
          load, and per instance of the signature call (JPEG decode + CNN) on preloaded tensors
          and of the loop's Python work (parse, base64, formatting).

Each run reports wall seconds, CPU seconds (the process and its workers) and peak memory of its
process tree sampled every 50 ms, both as summed RSS and as summed PSS (``/proc/PID/smaps_rollup``:
pages shared between processes, such as TensorFlow's libraries mapped by every worker, counted
once in all), plus the process count, the largest single process and the main process. The
loop's and the engine's output lines are compared: the same instances, and the same predictions up
to float32 rounding.
Then the engine runs on ``--memory-rows`` instances to show that memory stays flat. Ratios, not
absolute times, are the result: the machine is shared and noisy.

Usage: python bench/tf_bench.py [--rows 10000] [--memory-rows 100000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_SECONDS = 0.05

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
import orjson
import tensorflow as tf
data, model_dir, out, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
signature = tf.saved_model.load(model_dir).signatures["serving_default"]
n = 0
with open(data, "rb") as f, open(out, "w") as w:
    def flush(batch):
        jpegs = [base64.b64decode(i["bytes_inputs"]["b64"]) for i in batch]
        [probs] = signature(bytes_inputs=tf.constant(jpegs)).values()
        w.write("".join(
            json.dumps({"instance": i, "prediction": [float("%.9g" % v) for v in row]}) + "\\n"
            for i, row in zip(batch, probs.numpy().tolist())))
    batch = []
    for line in f:
        batch.append(orjson.loads(line))
        if len(batch) == batch_size:
            flush(batch); n += len(batch); batch = []
    if batch:
        flush(batch); n += len(batch)
print(json.dumps({"seconds": time.monotonic() - t, "rows": n}))
"""

# Where the loop's time goes, each part alone (CPU seconds; per instance for the batch parts).
PARTS = """
import json, sys, time
cpu = time.process_time
data, model_dir, batch_size, keras_free = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = cpu()
if keras_free == "1":
    from batchpredict.models.tensorflow import _import_tensorflow
    tf = _import_tensorflow()
else:
    import tensorflow as tf
r = {"import_tf_cpu": cpu() - c, "keras_imported": "keras" in sys.modules}
if keras_free != "1":
    import base64, orjson
    c = cpu()
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    r["load_cpu"] = cpu() - c
    with open(data, "rb") as f:
        lines = f.readlines()
    c = cpu()
    rows = [orjson.loads(line) for line in lines]
    chunks = [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
    batches = [tf.constant([base64.b64decode(i["bytes_inputs"]["b64"]) for i in chunk])
               for chunk in chunks]
    r["parse_b64_cpu_per_instance"] = (cpu() - c) / len(rows)
    signature(bytes_inputs=batches[0])  # first call traced out of the timing
    c, t = cpu(), time.monotonic()
    outputs = [next(iter(signature(bytes_inputs=b).values())).numpy() for b in batches]
    r["signature_cpu_per_instance"] = (cpu() - c) / len(rows)
    r["signature_cores"] = (cpu() - c) / (time.monotonic() - t)
    c = cpu()
    for batch, probs in zip(chunks, outputs):
        "".join(json.dumps({"instance": i, "prediction": [float("%.9g" % v) for v in row]}) + "\\n"
                for i, row in zip(batch, probs.tolist()))
    r["format_cpu_per_instance"] = (cpu() - c) / len(rows)
print(json.dumps(r))
"""


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


class TreeMemory:
    """Samples a process tree's memory in a thread: peak summed RSS and PSS, processes, largest."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = {"rss": 0, "pss": 0, "processes": 0, "largest_process_rss": 0, "root_rss": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = pss = largest = root = 0
                for p in procs:
                    with contextlib.suppress(OSError):
                        r, q = _rollup(p.pid)
                        rss, pss, largest = rss + r, pss + q, max(largest, r)
                        root = r if p is self.proc else root
                peak = self.peak
                peak["root_rss"] = max(peak["root_rss"], root)
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
                peak["processes"] = max(peak["processes"], len(procs))
                peak["largest_process_rss"] = max(peak["largest_process_rss"], largest)
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed_child(code: str, *args: str) -> dict:
    """Runs ``code`` in a fresh interpreter: its JSON result, wall and CPU seconds, peak memory.

    CPU seconds are the child's and its waited-for descendants' (the engine's workers).
    """
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env, text=True
    )
    memory = TreeMemory(proc.pid)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    peak = memory.stop()
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {code[:60]}...")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=peak["rss"] / 2**20,
        peak_pss_mib=peak["pss"] / 2**20,
        processes=peak["processes"],
        largest_process_rss_mib=peak["largest_process_rss"] / 2**20,
        main_process_rss_mib=peak["root_rss"] / 2**20,
    )
    return result


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


def _line(name: str, r: dict) -> str:
    return (
        f"{name:10s} {r['rows_per_second']:>7,.0f} rows/s {r['seconds']:7.2f} s  "
        f"CPU {r['cpu_seconds']:6.2f} s  peak RSS {r['peak_rss_mib']:5.0f} MiB, "
        f"PSS {r['peak_pss_mib']:5.0f} MiB ({r['processes']} process(es), largest "
        f"{r['largest_process_rss_mib']:.0f} MiB, main {r['main_process_rss_mib']:.0f} MiB)"
    )


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
    results: dict = {"rows": args.rows, "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    engine = timed_child(ENGINE, data, model_dir, os.path.join(work, "out"))
    batch_size = str(engine["batch_size"])
    loop = timed_child(LOOP, data, model_dir, os.path.join(work, "loop.results"), batch_size)
    for name, r in (("engine", engine), ("loop", loop)):
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results[name] = r
        print(_line(name, r), flush=True)
    engine_files = glob.glob(os.path.join(work, "out", "engine", "prediction.results-*"))
    same = compare(engine_files, os.path.join(work, "loop.results"))
    results["same_output"] = same
    results["engine_vs_loop"] = engine["rows_per_second"] / loop["rows_per_second"]
    results["engine_vs_loop_cpu"] = loop["cpu_seconds"] / engine["cpu_seconds"]
    print(
        f"engine / loop = {results['engine_vs_loop']:.2f}x (CPU seconds: loop / engine = "
        f"{results['engine_vs_loop_cpu']:.2f}x); same instances: {same['same_instances']}, "
        f"max |diff| {same['max_abs_diff']:.1e}, identical lines "
        f"{same['identical_lines_fraction']:.1%}",
        flush=True,
    )
    parts = timed_child(PARTS, data, model_dir, batch_size, "0")
    parts["import_tf_cpu_without_keras"] = timed_child(PARTS, data, model_dir, batch_size, "1")[
        "import_tf_cpu"
    ]
    n = args.rows
    signature = parts["signature_cpu_per_instance"] * n
    python = (parts["parse_b64_cpu_per_instance"] + parts["format_cpu_per_instance"]) * n
    parts["loop_cpu_accounted"] = parts["import_tf_cpu"] + parts["load_cpu"] + signature + python
    # The least CPU any engine can spend: TensorFlow's import (without Keras), the load and the
    # signature calls; nothing else. Two cores cannot make the import faster, only the calls.
    parts["engine_cpu_floor"] = parts["import_tf_cpu_without_keras"] + parts["load_cpu"] + signature
    parts["best_cpu_ratio"] = loop["cpu_seconds"] / parts["engine_cpu_floor"]
    results["parts"] = parts
    print(
        f"parts: import tensorflow {parts['import_tf_cpu']:.2f} s CPU "
        f"({parts['import_tf_cpu_without_keras']:.2f} s without Keras), load "
        f"{parts['load_cpu']:.2f} s, signature {parts['signature_cpu_per_instance'] * 1e6:.0f} us "
        f"CPU per instance ({signature:.2f} s for {n:,}; {parts['signature_cores']:.2f} cores "
        f"busy during the calls), parse+base64 "
        f"{parts['parse_b64_cpu_per_instance'] * 1e6:.1f} us, formatting "
        f"{parts['format_cpu_per_instance'] * 1e6:.1f} us per instance",
        flush=True,
    )
    print(
        f"signature = {signature / loop['cpu_seconds']:.0%} of the loop's CPU, import + load "
        f"{(parts['import_tf_cpu'] + parts['load_cpu']) / loop['cpu_seconds']:.0%}; an engine "
        f"spending only import (without Keras) + load + signature would use "
        f"{parts['engine_cpu_floor']:.2f} s CPU: at most {parts['best_cpu_ratio']:.2f}x the "
        f"loop's {loop['cpu_seconds']:.2f} s",
        flush=True,
    )
    if args.memory_rows:
        big = os.path.join(work, f"data-{args.memory_rows}.jsonl")
        if not os.path.exists(big):
            make_data(big, args.memory_rows)
        r = timed_child(ENGINE, big, model_dir, os.path.join(work, "out"))
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results["engine_large"] = r
        results["peak_pss_ratio_large_vs_small"] = r["peak_pss_mib"] / engine["peak_pss_mib"]
        results["largest_process_ratio_large_vs_small"] = (
            r["largest_process_rss_mib"] / engine["largest_process_rss_mib"]
        )
        print(_line(f"engine@{args.memory_rows:,}", r), flush=True)
        print(
            f"peak PSS {results['peak_pss_ratio_large_vs_small']:.2f}x and largest process "
            f"{results['largest_process_ratio_large_vs_small']:.2f}x the {args.rows:,}-instance "
            f"run's ({engine['workers']} vs {r['workers']} workers)",
            flush=True,
        )
    results["load_after"] = os.getloadavg()
    path = os.path.join(args.out, "tf_bench.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
