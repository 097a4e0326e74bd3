"""Serving-container benchmark: the engine's container path against what a user does today.

Workload (issue 10): N rows (default 100,000) x 4 floats as JSONL, an iris LogisticRegression in
``model.joblib``, served by a Custom Prediction Routine image made as
``LocalModel.build_cpr_model`` makes one (tests/serving/cpr_image.py: aiplatform's own
``SklearnPredictor`` behind its uvicorn/FastAPI model server). Measured side by side in one run,
wall time including container start and model load, same image, same batch size (64, Vertex's):

- engine:   ``run_batch_prediction(serving_mode="container")``: one container, requests in flight;
- sdk loop: ``LocalModel(...).deploy_to_local_endpoint()`` and a loop of ``endpoint.predict`` on
            batches of 64, writing the same result lines (what a user writes today);
- in-process: the same model and job with ``serving_mode="in_process"`` (default batch size and
            workers): the container path's overhead.

The three outputs must agree (same predictions for the same instances). Then, on one CPR container
(``batchpredict.backends.serving.serve``), ``--probe-requests`` sequential requests of 64 instances
each way the client can connect: a new connection per request, one kept-alive connection as
``http.client`` sends by default (headers and body in two writes: Nagle + delayed ACK), and one
kept-alive connection with TCP_NODELAY (the engine's). Ratios, not absolute times, are the result:
the machine is shared and noisy. Needs Docker and the component image
(``make image`` with ``BASE_IMAGE=local`` where no registry is reachable).

Usage: python bench/container_bench.py [--rows 100000] [--probe-requests 200] [--out bench/out]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SDK_BATCH = 64  # Vertex's default batch size


def component_image() -> str:
    from batchpredict.image import component_image as name

    image = name(registry="")
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    if found.returncode != 0:
        env = {**os.environ, "BASE_IMAGE": os.environ.get("BASE_IMAGE", "local")}
        env.pop("BATCHPREDICT_IMAGE_REGISTRY", None)
        subprocess.run([os.path.join(ROOT, "containers", "build_image.sh")], env=env, check=True)
    return image


def make_model(model_dir: str) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    os.makedirs(model_dir, exist_ok=True)
    joblib.dump(
        LogisticRegression(max_iter=1000).fit(X, y), os.path.join(model_dir, "model.joblib")
    )


def make_data(path: str, rows: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(rows, 4)).round(2)
    with open(path, "w") as f:
        for row in data.tolist():
            f.write(json.dumps(row) + "\n")


def run_engine(data: str, model_dir: str, out: str, **kw) -> tuple[float, dict]:
    from batchpredict import BatchPredictionJobSpec, run_batch_prediction

    start = time.perf_counter()
    result = run_batch_prediction(
        BatchPredictionJobSpec(
            job_display_name="container-bench",
            gcs_source_uris=[data],
            gcs_destination_output_uri_prefix=out,
            output_directory_name="predictions",
            model_uri=model_dir,
            progress=False,
            **kw,
        )
    )
    return time.perf_counter() - start, result.stats


def run_sdk_loop(data: str, model_dir: str, image: str, out: str) -> tuple[float, float]:
    from google.cloud.aiplatform.prediction import LocalModel

    from tests.serving.cpr_image import CONTAINER_SPEC

    start = time.perf_counter()
    model = LocalModel(
        serving_container_image_uri=image,
        serving_container_predict_route=CONTAINER_SPEC["predictRoute"],
        serving_container_health_route=CONTAINER_SPEC["healthRoute"],
    )
    os.makedirs(out, exist_ok=True)
    with (
        model.deploy_to_local_endpoint(artifact_uri=model_dir) as endpoint,
        open(data) as f,
        open(os.path.join(out, "prediction.results-00000-of-00001"), "w") as w,
    ):
        ready = time.perf_counter()
        batch: list = []
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == SDK_BATCH:
                _predict(endpoint, batch, w)
                batch = []
        if batch:
            _predict(endpoint, batch, w)
        done = time.perf_counter()
    elapsed = time.perf_counter() - start
    # LocalEndpoint stops its container but leaves it on the engine: remove it (not timed).
    if endpoint.container is not None:
        endpoint.container.remove(force=True)
    return elapsed, done - ready


def _predict(endpoint, batch: list, w) -> None:
    resp = endpoint.predict(
        request=json.dumps({"instances": batch}), headers={"Content-Type": "application/json"}
    )
    resp.raise_for_status()
    for instance, prediction in zip(batch, resp.json()["predictions"], strict=True):
        w.write(json.dumps({"instance": instance, "prediction": prediction}) + "\n")


def probe_connections(image: str, model_dir: str, requests: int) -> dict[str, float]:
    """Milliseconds per sequential request of 64 instances, per way of connecting."""
    from batchpredict.backends.serving import serve
    from tests.serving.cpr_image import CONTAINER_SPEC

    rng = np.random.default_rng(1)
    body = json.dumps({"instances": rng.uniform(1, 7, size=(SDK_BATCH, 4)).round(2).tolist()})
    headers = {"Content-Type": "application/json"}
    metadata = {"containerSpec": {"imageUri": image, **CONTAINER_SPEC}}
    results = {}
    with serve(image, model_dir, metadata, job_name="container-bench-probe", in_flight=1) as ep:

        def post(conn: http.client.HTTPConnection) -> None:
            conn.request("POST", ep.predict_route, body=body, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()

        def timed(label: str, run) -> None:
            start = time.perf_counter()
            run()
            results[label] = (time.perf_counter() - start) / requests * 1000

        def new_each() -> None:
            for _ in range(requests):
                conn = http.client.HTTPConnection(ep.host, ep.port, timeout=60)
                post(conn)
                conn.close()

        def kept(nodelay: bool) -> None:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=60)
            conn.connect()
            if nodelay:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(requests):
                post(conn)
            conn.close()

        post(http.client.HTTPConnection(ep.host, ep.port, timeout=60))  # warm up
        timed("new connection per request", new_each)
        timed("one kept-alive connection (http.client default)", lambda: kept(False))
        timed("one kept-alive connection, TCP_NODELAY (the engine)", lambda: kept(True))
    return results


def read_lines(directory: str) -> list[str]:
    lines: list[str] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("prediction.results-"):
            with open(os.path.join(directory, name)) as f:
                lines += f.read().splitlines()
    return sorted(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--probe-requests", type=int, default=200)
    parser.add_argument("--out", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    from tests.serving.cpr_image import CONTAINER_SPEC, build_cpr_image

    work = args.out or tempfile.mkdtemp(prefix="container-bench-")
    os.makedirs(work, exist_ok=True)
    model_dir, data = os.path.join(work, "model"), os.path.join(work, "in.jsonl")
    make_model(model_dir)
    make_data(data, args.rows)
    image = build_cpr_image(component_image(), __import__("pathlib").Path(work) / "images")
    print(f"{args.rows:,} instances; image {image}; {os.cpu_count()} cores (shared machine)")

    metadata = {"containerSpec": {"imageUri": image, **CONTAINER_SPEC}}
    engine_s, engine_stats = run_engine(
        data,
        model_dir,
        os.path.join(work, "engine"),
        serving_mode="container",
        container_image_uri=image,
        model_metadata=metadata,
    )
    sdk_s, sdk_predict_s = run_sdk_loop(data, model_dir, image, os.path.join(work, "sdk"))
    local_s, local_stats = run_engine(
        data, model_dir, os.path.join(work, "local"), serving_mode="in_process"
    )

    engine_lines = read_lines(os.path.join(work, "engine", "predictions"))
    assert engine_lines == read_lines(os.path.join(work, "sdk")), "engine and sdk loop differ"
    assert engine_lines == read_lines(os.path.join(work, "local", "predictions")), "in-process"
    assert len(engine_lines) == args.rows

    rows = args.rows
    engine_predict_s = engine_stats["elapsed_seconds"]
    local_predict_s = local_stats["elapsed_seconds"]
    print("| path | wall s (start + predict) | predict s | rows/s (predict) |")
    print("|---|---|---|---|")
    in_flight = engine_stats["requests_in_flight"]
    for name, secs, predict_s in (
        (f"engine, container (batch 64, {in_flight} in flight)", engine_s, engine_predict_s),
        ("LocalModel.deploy_to_local_endpoint + predict loop (batch 64)", sdk_s, sdk_predict_s),
        ("engine, in-process (default batch and workers)", local_s, local_predict_s),
    ):
        print(f"| {name} | {secs:.1f} | {predict_s:.1f} | {rows / predict_s:,.0f} |")
    print(
        f"engine container path vs SDK loop: {sdk_s / engine_s:.2f}x (wall), "
        f"{sdk_predict_s / engine_predict_s:.2f}x (predicting)"
    )
    print(
        f"container path vs in-process: {engine_s / local_s:.1f}x the wall time, "
        f"{engine_predict_s / local_predict_s:.1f}x the predict time"
    )
    probe = probe_connections(image, model_dir, args.probe_requests)
    print(
        f"\n{args.probe_requests} sequential requests of {SDK_BATCH} instances, one CPR container:"
    )
    print("| client connection | ms per request |")
    print("|---|---|")
    for label, ms in probe.items():
        print(f"| {label} | {ms:.1f} |")


if __name__ == "__main__":
    main()
