"""A local fake of Vertex AI's JobService for BatchPredictionJobs, for tests.

A real gRPC server on 127.0.0.1 serving ``google.cloud.aiplatform.v1.JobService``'s
CreateBatchPredictionJob, GetBatchPredictionJob and CancelBatchPredictionJob with the real
protobuf types (through a generic handler, so no generated servicer is needed). Clients are the
real ``aiplatform_v1.JobServiceClient`` over an insecure channel.

Each job follows a script: the states it reports on successive Get calls (the last one sticks),
and what it carries when it ends (completion stats, an error, output info). Errors can be injected
per method (``fail_next``). Every request received is recorded.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
from collections import defaultdict, deque
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.aiplatform_v1 import types
from google.protobuf import empty_pb2

SERVICE = "google.cloud.aiplatform.v1.JobService"
CREATE = "CreateBatchPredictionJob"
GET = "GetBatchPredictionJob"
CANCEL = "CancelBatchPredictionJob"

TERMINAL = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_PAUSED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
}
OUTPUT_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
FIXED_TIME = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc)


@dataclass
class Script:
    """What a job reports: its states on successive Gets, and its end.

    Attributes:
        states: the state of each Get (the last one repeats), e.g.
            ``["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]``.
        completion_stats: successful/failed/incomplete counts reported once the job ends.
        error: ``(code, message)`` of a failed job.
        partial_failures: messages of ``partial_failures``.
        replica_hours: ``resources_consumed.replica_hours``.
    """

    states: list[str] = field(default_factory=lambda: ["JOB_STATE_SUCCEEDED"])
    completion_stats: dict[str, int] = field(default_factory=dict)
    error: tuple[int, str] | None = None
    partial_failures: list[str] = field(default_factory=list)
    replica_hours: float = 0.0


@dataclass
class _Job:
    message: types.BatchPredictionJob
    script: Script
    gets: int = 0
    cancel_requested: bool = False
    cancel_gets: int = 0


class FakeJobService:
    """The fake JobService. Use as a context manager, or ``start()`` and ``stop()``.

    Attributes:
        endpoint: ``127.0.0.1:<port>`` once started.
        requests: ``(method, request)`` for every call received, in order.
        jobs: the jobs by resource name.
    """

    def __init__(self) -> None:
        self.endpoint = ""
        self.requests: list[tuple[str, Any]] = []
        self.jobs: dict[str, _Job] = {}
        self._scripts: deque[Script] = deque()
        self._failures: dict[str, deque[grpc.StatusCode]] = defaultdict(deque)
        self._ids = itertools.count(1234567890123456789)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    # --- scripting -------------------------------------------------------------------------

    def script_next_job(self, script: Script) -> None:
        """The next created job follows ``script`` (default: succeeds on the first Get)."""
        self._scripts.append(script)

    def add_job(self, name: str, job: types.BatchPredictionJob, script: Script) -> None:
        """Adds an existing job (as if created by an earlier attempt)."""
        job.name = name
        job.state = types.JobState.JOB_STATE_RUNNING
        self.jobs[name] = _Job(message=job, script=script)

    def fail_next(self, method: str, code: grpc.StatusCode, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` fail with ``code`` before doing anything."""
        self._failures[method].extend([code] * times)

    def calls(self, method: str) -> list[Any]:
        """The requests received for ``method``."""
        return [r for m, r in self.requests if m == method]

    # --- server ----------------------------------------------------------------------------

    def start(self) -> FakeJobService:
        handlers = {
            CREATE: grpc.unary_unary_rpc_method_handler(
                self._create,
                request_deserializer=types.CreateBatchPredictionJobRequest.deserialize,
                response_serializer=types.BatchPredictionJob.serialize,
            ),
            GET: grpc.unary_unary_rpc_method_handler(
                self._get,
                request_deserializer=types.GetBatchPredictionJobRequest.deserialize,
                response_serializer=types.BatchPredictionJob.serialize,
            ),
            CANCEL: grpc.unary_unary_rpc_method_handler(
                self._cancel,
                request_deserializer=types.CancelBatchPredictionJobRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
        }
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> FakeJobService:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- handlers --------------------------------------------------------------------------

    def _record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.requests.append((method, request))
            failures = self._failures[method]
            code = failures.popleft() if failures else None
        if code is not None:
            context.abort(code, f"fake {method}: injected {code.name}")

    def _create(self, request: Any, context: grpc.ServicerContext) -> types.BatchPredictionJob:
        self._record(CREATE, request, context)
        parent = request.parent
        parts = parent.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid parent: {parent!r}")
        job = types.BatchPredictionJob(request.batch_prediction_job)
        if not job.display_name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "display_name is required.")
        if not job.model and not job.unmanaged_container_model.artifact_uri:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Either model or unmanaged_container_model."
            )
        if not job.input_config.instances_format or not job.output_config.predictions_format:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input_config and output_config.")
        with self._lock:
            name = f"{parent}/batchPredictionJobs/{next(self._ids)}"
            script = self._scripts.popleft() if self._scripts else Script()
            job.name = name
            job.state = types.JobState.JOB_STATE_PENDING
            job.create_time = FIXED_TIME
            self.jobs[name] = _Job(message=job, script=script)
            return types.BatchPredictionJob(job)

    def _get(self, request: Any, context: grpc.ServicerContext) -> types.BatchPredictionJob:
        self._record(GET, request, context)
        with self._lock:
            entry = self.jobs.get(request.name)
            if entry is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            self._advance(entry)
            return types.BatchPredictionJob(entry.message)

    def _cancel(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._record(CANCEL, request, context)
        with self._lock:
            entry = self.jobs.get(request.name)
            if entry is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            if entry.message.state.name in TERMINAL:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "job already ended")
            entry.cancel_requested = True
            entry.message.state = types.JobState.JOB_STATE_CANCELLING
        return empty_pb2.Empty()

    def _advance(self, entry: _Job) -> None:
        job = entry.message
        if entry.cancel_requested:
            entry.cancel_gets += 1
            if entry.cancel_gets > 1 and job.state.name != "JOB_STATE_CANCELLED":
                job.state = types.JobState.JOB_STATE_CANCELLED
                job.error = {"code": 1, "message": "Job was cancelled."}
                job.end_time = FIXED_TIME + dt.timedelta(seconds=60)
            return
        states = entry.script.states
        state = states[min(entry.gets, len(states) - 1)]
        entry.gets += 1
        job.state = types.JobState[state]
        if state != "JOB_STATE_PENDING" and not job.start_time:
            job.start_time = FIXED_TIME + dt.timedelta(seconds=10)
        if state in TERMINAL and not job.end_time:
            self._finish(entry, state)

    def _finish(self, entry: _Job, state: str) -> None:
        job, script = entry.message, entry.script
        job.end_time = FIXED_TIME + dt.timedelta(seconds=130)
        if script.completion_stats:
            job.completion_stats = script.completion_stats
        if script.error:
            job.error = {"code": script.error[0], "message": script.error[1]}
        job.partial_failures = [{"code": 3, "message": m} for m in script.partial_failures]
        job.resources_consumed = {"replica_hours": script.replica_hours}
        if state in OUTPUT_STATES:
            job.output_info = output_info_for(job)


def output_info_for(job: types.BatchPredictionJob) -> dict[str, str]:
    """The ``output_info`` Vertex AI reports for a job's output config."""
    stamp = FIXED_TIME.strftime("%Y_%m_%dT%H_%M_%S_") + f"{FIXED_TIME.microsecond // 1000:03d}Z"
    model = job.display_name
    prefix = job.output_config.gcs_destination.output_uri_prefix
    if prefix:
        return {"gcs_output_directory": f"{prefix.rstrip('/')}/prediction-{model}-{stamp}"}
    uri = job.output_config.bigquery_destination.output_uri.removeprefix("bq://")
    parts = uri.split(".")
    if len(parts) == 1:
        dataset = re.sub(r"[^A-Za-z0-9_]", "_", f"prediction_{model}_{stamp}")
        return {
            "bigquery_output_dataset": f"bq://{parts[0]}.{dataset}",
            "bigquery_output_table": "predictions",
        }
    return {
        "bigquery_output_dataset": f"bq://{parts[0]}.{parts[1]}",
        "bigquery_output_table": parts[2] if len(parts) > 2 else "predictions",
    }
