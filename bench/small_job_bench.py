"""Small-job benchmark: a 1,000-row job through the compiled component under kfp.local.

Issue 14, target 5: the job finishes in under 5 s end to end. Measured here, each in fresh
processes, so the breakdown adds up to what a user waits for:

- pipeline:     the whole kfp.local run of a one-step pipeline (the compiled
                ``component_specs/model_batch_predict.yaml`` fed by an importer), SubprocessRunner;
- interpreter:  ``python -c pass`` (what every process pays to start);
- imports:      importing what the step's process imports (kfp's executor and batchpredict);
- job:          the job inside the step, split by its own stats into model load and work.

Usage: python bench/small_job_bench.py [--rows 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PIPELINE = """
import json, sys, time
t0 = time.monotonic()
from kfp import dsl, local
from kfp.components import load_component_from_file
spec, model_dir, data, out, root = sys.argv[1:6]
predict = load_component_from_file(spec)

@dsl.pipeline(name="small-job")
def small_job(out_prefix: str):
    model = dsl.importer(artifact_uri=model_dir, artifact_class=dsl.Model, reimport=True)
    predict(job_display_name="small", model=model.output, gcs_source_uris=[data],
            gcs_destination_output_uri_prefix=out_prefix)

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
t1 = time.monotonic()
small_job(out_prefix=out)
t2 = time.monotonic()
print(json.dumps({"import_kfp": t1 - t0, "pipeline_run": t2 - t1}))
"""

JOB = """
import json, sys, time
t0 = time.monotonic()
from batchpredict import BatchPredictionJobSpec, run_batch_prediction
t1 = time.monotonic()
model_dir, data, out = sys.argv[1:4]
r = run_batch_prediction(BatchPredictionJobSpec(job_display_name="small", gcs_source_uris=[data],
    gcs_destination_output_uri_prefix=out, model_uri=model_dir, progress=False))
t2 = time.monotonic()
print(json.dumps({"import": t1 - t0, "job": t2 - t1, "rows": r.completion_stats["successful_count"],
                  "workers": r.stats["workers"]}))
"""

IMPORTS = """
import json, time
t0 = time.monotonic()
import kfp.dsl.executor_main, batchpredict.component_entry  # what the step's process imports
t1 = time.monotonic()
import sklearn.ensemble, joblib  # what each worker imports to load the model
t2 = time.monotonic()
print(json.dumps({"kfp_and_batchpredict": t1 - t0, "model_framework": t2 - t1}))
"""

LOAD = """
import json, sys, time
import joblib
t0 = time.monotonic()
joblib.load(sys.argv[1] + "/model.joblib")
print(json.dumps({"model_load": time.monotonic() - t0}))
"""


def child(code: str, *args: str) -> tuple[dict, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        check=False,
    )
    wall = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from engine_bench import make_data, make_model

    work = tempfile.mkdtemp(prefix="bpsmall-")
    model_dir, data = os.path.join(work, "model"), os.path.join(work, "data.jsonl")
    make_model(model_dir)
    make_data(data, args.rows)
    spec = os.path.join(ROOT, "component_specs", "model_batch_predict.yaml")
    runs: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    for i in range(args.repeat):
        r, wall = child(
            PIPELINE,
            spec,
            model_dir,
            data,
            os.path.join(work, f"out{i}"),
            os.path.join(work, f"root{i}"),
        )
        add("pipeline: whole process", wall)
        add("pipeline: kfp.local run", r["pipeline_run"])
        _, wall = child("print({})")
        add("interpreter start", wall)
        r, _ = child(IMPORTS)
        add("imports: kfp executor + batchpredict", r["kfp_and_batchpredict"])
        add("imports: scikit-learn (each worker)", r["model_framework"])
        r, _ = child(LOAD, model_dir)
        add("model load (joblib)", r["model_load"])
        r, wall = child(JOB, model_dir, data, os.path.join(work, f"job{i}"))
        add("job: run_batch_prediction", r["job"])
        add("job: whole process (python API)", wall)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in medians.items():
        print(f"{k:40s} {v:6.2f} s")
    target = medians["pipeline: whole process"]
    print(
        f"{args.rows:,}-row job through the compiled component under kfp.local: {target:.2f} s "
        f"(target < 5 s), load {os.getloadavg()[0]:.1f}"
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "small_job_bench.json"), "w") as f:
        json.dump({"rows": args.rows, "medians": medians, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
