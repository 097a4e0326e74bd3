"""The vertex backend: the job runs as a Vertex AI BatchPredictionJob, awaited like GCPC does it.

1. Check the spec for what Vertex AI cannot run (local paths, local-only formats) and build the
   request exactly as GCPC 2.22.0 builds it (:mod:`batchpredict.backends.vertex_request`).
2. If ``gcp_resources`` already names a BatchPredictionJob (a retried task), re-attach to it;
   otherwise create the job and write ``gcp_resources`` right away, in GCPC's format.
3. Poll until the job reaches a terminal state: every one of them, including
   ``JOB_STATE_EXPIRED`` and ``JOB_STATE_PARTIALLY_SUCCEEDED`` (GCPC polls those forever).
   ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` answers are retried with bounded exponential backoff.
   On SIGTERM (a cancelled pipeline run), ask Vertex AI to cancel the job, then stop.
4. Succeeded (or partially succeeded) jobs return a :class:`JobResult` with Google's URIs and
   completion stats; failed, cancelled, expired or paused ones raise :class:`UserError` (exit 1)
   when the job's error code is the user's (bad argument, not found, permission) and
   :class:`InternalError` (exit 13) otherwise, naming the job and its state.

Knobs are module constants; the poll interval and the first retry delay can also be set through
environment variables read at call time, so tests (and impatient users) can shorten them for a
component running in another process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from batchpredict.backends.vertex_request import build_batch_prediction_job
from batchpredict.errors import InternalError, UserError
from batchpredict.kfp_outputs import gcp_resources_json
from batchpredict.result import VERTEX_RESOURCE_TYPE, JobResult, check_failures
from batchpredict.spec import BatchPredictionJobSpec
from batchpredict.version import __version__

log = logging.getLogger(__name__)

RESOURCE_TYPE = VERTEX_RESOURCE_TYPE
API_ENDPOINT_TEMPLATE = "{location}-aiplatform.googleapis.com"
RESOURCE_URI_TEMPLATE = "https://{location}-aiplatform.googleapis.com/v1/{name}"
CONSOLE_URI_TEMPLATE = (
    "https://console.cloud.google.com/vertex-ai/locations/{location}/batch-predictions/{job_id}"
    "?project={project}"
)
USER_AGENT = f"batchpredict/{__version__}"

# Seconds between two polls of the job's state (GCPC: 20). Override: POLL_INTERVAL_ENV.
POLL_INTERVAL_SECONDS = 20.0
POLL_INTERVAL_ENV = "BATCHPREDICT_VERTEX_POLL_SECONDS"
# Transient API errors: first delay, growth, cap and how many in a row before giving up.
RETRY_INITIAL_SECONDS = 2.0
RETRY_INITIAL_ENV = "BATCHPREDICT_VERTEX_RETRY_SECONDS"
RETRY_MULTIPLIER = 2.0
RETRY_MAX_SECONDS = 60.0
RETRY_ATTEMPTS = 8
# Deadline of one API call. The client's own retries are off (retry=None): _call owns them.
RPC_TIMEOUT_SECONDS = 60.0

# Hosts that get a plaintext channel without credentials (tests, local fakes and emulators).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# Read in this order when the spec has no project; then google.auth's default. Vertex AI sets
# CLOUD_ML_PROJECT_ID in the containers it runs (pipeline tasks included).
PROJECT_ENV_VARS = (
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUD_ML_PROJECT_ID",
)

STATE_SUCCEEDED = "JOB_STATE_SUCCEEDED"
STATE_PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
# Terminal states with output to return.
SUCCESS_STATES = (STATE_SUCCEEDED, STATE_PARTIALLY_SUCCEEDED)
# Terminal states without: the job is over and the step fails.
FAILURE_STATES = (
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PAUSED",
)
TERMINAL_STATES = SUCCESS_STATES + FAILURE_STATES

# google.rpc.Code values that mean the user's input or set-up is wrong (GCPC's list, plus
# UNAUTHENTICATED): such job errors exit 1, every other 13.
USER_ERROR_CODES = {
    3: "INVALID_ARGUMENT",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    9: "FAILED_PRECONDITION",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    16: "UNAUTHENTICATED",
}
# How many of a job's partial failures to quote in an error message.
PARTIAL_FAILURES_SHOWN = 3

_JOB_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/batchPredictionJobs/(?P<id>[^/]+)"
)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Knobs:
    """The timing knobs of one run, read when it starts."""

    poll_interval: float
    retry_initial: float

    @classmethod
    def from_env(cls) -> _Knobs:
        return cls(
            poll_interval=_env_seconds(POLL_INTERVAL_ENV, POLL_INTERVAL_SECONDS),
            retry_initial=_env_seconds(RETRY_INITIAL_ENV, RETRY_INITIAL_SECONDS),
        )


def run_vertex(spec: BatchPredictionJobSpec, gcp_resources_path: str | None = None) -> JobResult:
    """Runs ``spec`` as a Vertex AI BatchPredictionJob and waits for it to end.

    Args:
        spec: the job (already validated by ``run_batch_prediction``).
        gcp_resources_path: the ``gcp_resources`` file: written right after the job is created;
            when it already names a BatchPredictionJob, that job is awaited instead of creating
            a second one.

    Returns:
        The finished job: state, Google's resource URI, output location and completion stats.

    Raises:
        UserError: a mistake in the inputs or set-up (local paths, no project, a job refused or
            failed with a user error code); exits 1.
        InternalError: the job failed, expired or was cancelled for other reasons, the API kept
            failing, or SIGTERM stopped the wait; exits 13.
    """
    knobs = _Knobs.from_env()
    existing = read_job_name(gcp_resources_path) if gcp_resources_path else None
    with _SigtermWatch() as sigterm:
        if existing:
            name = existing
            log.info("gcp_resources names %s: re-attaching to it instead of creating a job.", name)
            client = make_job_client(_location_of(name), spec.vertex_api_endpoint)
        else:
            job = build_batch_prediction_job(spec)
            project = resolve_project(spec)
            parent = f"projects/{project}/locations/{spec.location}"
            client = make_job_client(spec.location, spec.vertex_api_endpoint)
            created = _call(
                lambda: client.create_batch_prediction_job(
                    parent=parent,
                    batch_prediction_job=job,
                    retry=None,
                    timeout=RPC_TIMEOUT_SECONDS,
                ),
                f"create BatchPredictionJob {spec.job_display_name!r} in {parent}",
                knobs,
                # A create that timed out may have created the job: retrying could make two.
                retry_deadline_exceeded=False,
            )
            name = created.name
            log.info("Created %s (%s).", name, console_uri(name))
            if gcp_resources_path:
                write_gcp_resources(gcp_resources_path, name)
        job = _wait(client, name, knobs, sigterm)
    return _result(spec, job)


def resource_uri(name: str) -> str:
    """Google's ``gcp_resources`` URI of a job: ``https://{location}-aiplatform.../v1/<name>``."""
    return RESOURCE_URI_TEMPLATE.format(location=_location_of(name), name=name)


def console_uri(name: str) -> str:
    """The Cloud console page of a job."""
    match = _JOB_NAME.fullmatch(name)
    if not match:
        return name
    return CONSOLE_URI_TEMPLATE.format(
        location=match["location"], job_id=match["id"], project=match["project"]
    )


def write_gcp_resources(path: str, name: str) -> None:
    """Writes ``gcp_resources`` for job ``name`` atomically, in GCPC's format."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(gcp_resources_json(RESOURCE_TYPE, resource_uri(name)))
    os.replace(tmp, path)


def read_job_name(path: str) -> str | None:
    """The BatchPredictionJob named in an existing ``gcp_resources`` file, else None.

    Raises:
        InternalError: the file names a BatchPredictionJob in a form that cannot be read.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        text = f.read()
    try:
        resources = json.loads(text).get("resources", [])
    except (json.JSONDecodeError, AttributeError) as err:
        raise InternalError(
            f"gcp_resources at {path} is not the JSON GCPC writes: {err}; content: {text!r}."
        ) from err
    jobs = [r for r in resources if r.get("resourceType") == RESOURCE_TYPE]
    if not jobs:
        log.info("gcp_resources at %s names no BatchPredictionJob; creating one.", path)
        return None
    match = _JOB_NAME.search(jobs[0].get("resourceUri", ""))
    if len(jobs) != 1 or not match:
        raise InternalError(
            f"gcp_resources at {path} should name one BatchPredictionJob as "
            f"https://LOCATION-aiplatform.googleapis.com/v1/projects/P/locations/L/"
            f"batchPredictionJobs/ID; got {text!r}."
        )
    return match.group(0)


def resolve_project(spec: BatchPredictionJobSpec) -> str:
    """The job's project: ``spec.project``, else the environment's default.

    Raises:
        UserError: no project is given and the environment has none.
    """
    if spec.project:
        return spec.project
    for var in PROJECT_ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        project = None
    if project:
        return project
    raise UserError(
        f"No Google Cloud project for Vertex AI job {spec.job_display_name!r}: set the "
        "component's project input (CLI: --project), or GOOGLE_CLOUD_PROJECT, or a default "
        "with `gcloud config set project PROJECT_ID`."
    )


def make_job_client(location: str, endpoint_override: str = "") -> Any:
    """A ``google.cloud.aiplatform_v1`` JobServiceClient for ``location``.

    Args:
        location: the region; the endpoint is ``{location}-aiplatform.googleapis.com``.
        endpoint_override: another ``host[:port]`` (a private endpoint); a loopback host gets a
            plaintext channel without credentials (tests, local fakes).

    Raises:
        UserError: no credentials are available for a Google endpoint.
    """
    from google.api_core.client_options import ClientOptions
    from google.api_core.gapic_v1.client_info import ClientInfo
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.aiplatform_v1.services.job_service import JobServiceClient

    endpoint = endpoint_override or API_ENDPOINT_TEMPLATE.format(location=location)
    client_info = ClientInfo(user_agent=USER_AGENT)
    if _is_loopback(endpoint):
        import grpc
        from google.cloud.aiplatform_v1.services.job_service.transports import (
            JobServiceGrpcTransport,
        )

        transport = JobServiceGrpcTransport(
            host=endpoint, channel=grpc.insecure_channel(endpoint), client_info=client_info
        )
        return JobServiceClient(transport=transport)
    try:
        return JobServiceClient(
            client_options=ClientOptions(api_endpoint=endpoint), client_info=client_info
        )
    except DefaultCredentialsError as err:
        raise UserError(
            f"No Google Cloud credentials to call Vertex AI at {endpoint}: run `gcloud auth "
            "application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service "
            f"account key file ({err})."
        ) from err


def _wait(client: Any, name: str, knobs: _Knobs, sigterm: _SigtermWatch) -> Any:
    """Polls job ``name`` until a terminal state; cancels it and stops on SIGTERM."""
    last_state = None
    while True:
        if sigterm.received:
            _cancel(client, name, knobs)
        job = _get_job(client, name, knobs)
        state = job.state.name
        if state in TERMINAL_STATES:
            log.info("%s ended in %s.", name, state)
            return job
        if state != last_state:
            log.info("%s is %s; polling every %ss.", name, state, knobs.poll_interval)
            last_state = state
        sigterm.sleep(knobs.poll_interval)


def _get_job(client: Any, name: str, knobs: _Knobs) -> Any:
    """The job resource ``name``, with the loop's retries."""
    return _call(
        lambda: client.get_batch_prediction_job(name=name, retry=None, timeout=RPC_TIMEOUT_SECONDS),
        f"get {name}",
        knobs,
    )


def _cancel(client: Any, name: str, knobs: _Knobs) -> None:
    """Asks Vertex AI to cancel job ``name`` and raises: the step was stopped."""
    log.warning("SIGTERM received: cancelling %s.", name)
    state = "unknown"
    try:
        _call(
            lambda: client.cancel_batch_prediction_job(
                name=name, retry=None, timeout=RPC_TIMEOUT_SECONDS
            ),
            f"cancel {name}",
            knobs,
        )
        job = _get_job(client, name, knobs)
        state = job.state.name
    except (UserError, InternalError) as err:
        raise InternalError(
            f"SIGTERM received, and cancelling Vertex AI BatchPredictionJob {name} failed: "
            f"{err} Cancel it in the console: {console_uri(name)}"
        ) from err
    raise InternalError(
        f"SIGTERM received: asked Vertex AI to cancel BatchPredictionJob {name}; its state is "
        f"now {state}."
    )


def _call(
    fn: Callable[[], T], what: str, knobs: _Knobs, *, retry_deadline_exceeded: bool = True
) -> T:
    """Calls the API, retrying UNAVAILABLE (and DEADLINE_EXCEEDED) with bounded backoff.

    Raises:
        UserError: the API refused the call with a user error code.
        InternalError: any other API error, or transient errors ``RETRY_ATTEMPTS`` times in a row.
    """
    from google.api_core import exceptions

    transient: tuple[type[Exception], ...] = (exceptions.ServiceUnavailable,)
    if retry_deadline_exceeded:
        transient += (exceptions.DeadlineExceeded,)
    delay = knobs.retry_initial
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return fn()
        except transient as err:
            if attempt == RETRY_ATTEMPTS:
                raise InternalError(
                    f"Vertex AI API: could not {what}: {RETRY_ATTEMPTS} attempts in a row "
                    f"failed, the last with {_describe(err)}."
                ) from err
            log.warning(
                "Vertex AI API: %s failed with %s; retry %d/%d in %.1fs.",
                what,
                _describe(err),
                attempt,
                RETRY_ATTEMPTS - 1,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * RETRY_MULTIPLIER, RETRY_MAX_SECONDS)
        except exceptions.GoogleAPICallError as err:
            code = _rpc_code(err)
            cls = UserError if code in USER_ERROR_CODES else InternalError
            hint = " (a timed-out create may still have created the job)" if code == 4 else ""
            raise cls(f"Vertex AI API: could not {what}: {_describe(err)}{hint}.") from err
    raise AssertionError("unreachable")  # pragma: no cover


def _result(spec: BatchPredictionJobSpec, job: Any) -> JobResult:
    """Maps a job in a terminal state onto a JobResult, or raises for a failed one."""
    state = job.state.name
    name = job.name
    if state in FAILURE_STATES:
        code = job.error.code
        message = job.error.message or "no error message"
        failures = [f.message for f in job.partial_failures[:PARTIAL_FAILURES_SHOWN] if f.message]
        detail = f"; partial failures: {failures}" if failures else ""
        cls = UserError if code in USER_ERROR_CODES else InternalError
        raise cls(
            f"Vertex AI BatchPredictionJob {name} ({job.display_name!r}) ended in {state}: "
            f"{message} (code {code}{' ' + USER_ERROR_CODES[code] if cls is UserError else ''})"
            f"{detail}. Details: {console_uri(name)}"
        )
    stats = job.completion_stats
    completion = {
        "successful_count": int(stats.successful_count),
        "failed_count": int(stats.failed_count),
        "incomplete_count": int(stats.incomplete_count),
    }
    if state == STATE_PARTIALLY_SUCCEEDED:
        log.warning(
            "%s ended in %s: the output holds the predictions that succeeded (%s).",
            name,
            state,
            completion,
        )
    done = completion["successful_count"] + completion["failed_count"]
    check_failures(
        completion["failed_count"],
        done,
        spec.max_failed_fraction,
        f"Vertex AI BatchPredictionJob {name} ended in {state}",
        job.output_info.gcs_output_directory or job.output_info.bigquery_output_dataset,
    )
    elapsed = _elapsed_seconds(job)
    return JobResult(
        state=state,
        resource_name=name,
        resource_uri=resource_uri(name),
        gcs_output_directory=job.output_info.gcs_output_directory,
        bigquery_output_dataset=job.output_info.bigquery_output_dataset,
        bigquery_output_table=job.output_info.bigquery_output_table,
        completion_stats=completion,
        stats={
            "elapsed_seconds": elapsed,
            "rows_per_second": round(done / elapsed, 3) if elapsed else 0.0,
            "replica_hours": float(job.resources_consumed.replica_hours),
            "console_uri": console_uri(name),
        },
    )


def _elapsed_seconds(job: Any) -> float:
    start = job.start_time or job.create_time
    if not start or not job.end_time:
        return 0.0
    return round(max((job.end_time - start).total_seconds(), 0.0), 3)


class _SigtermWatch:
    """Notes SIGTERM while active (main thread only) and wakes :meth:`sleep` early.

    The handler only sets a flag, so no exception is raised inside an API call; the polling loop
    sees the flag and cancels the job.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: Any = None
        self._installed = False

    @property
    def received(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)

    def __enter__(self) -> _SigtermWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        else:
            log.info("Not in the main thread: SIGTERM will not cancel the Vertex AI job.")
        return self

    def __exit__(self, *_: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self._event.set()


def _describe(err: Exception) -> str:
    status = getattr(err, "grpc_status_code", None)
    label = status.name if status is not None else type(err).__name__
    return f"{label}: {getattr(err, 'message', None) or err}"


def _rpc_code(err: Exception) -> int | None:
    status = getattr(err, "grpc_status_code", None)
    if status is not None:
        return status.value[0]
    return None


def _location_of(name: str) -> str:
    match = _JOB_NAME.fullmatch(name)
    if not match:
        raise InternalError(f"Not a BatchPredictionJob resource name: {name!r}.")
    return match["location"]


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    if endpoint.startswith("[") and "]:" in endpoint:
        host = endpoint.split("]:")[0] + "]"
    return host in LOOPBACK_HOSTS


def _env_seconds(var: str, default: float) -> float:
    raw = os.environ.get(var, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise UserError(f"{var}={raw!r} is not a number of seconds; unset it or fix it.") from err
    if value < 0:
        raise UserError(f"{var}={raw!r} must be >= 0 seconds.")
    return value
