"""Serving containers: any image under Vertex's custom-container contract, reached over HTTP.

The job's backend starts one container (``batchpredict.backends.serving``) and hands workers an
``Endpoint``; this handler posts ``{"instances": [...], "parameters": {...}}`` (parameters only
when non-empty) to its predict route and reads ``{"predictions": [...]}``, as Vertex does. The
engine does not know the model is remote: it batches, isolates failures and writes as for any
handler, and runs ``concurrency`` requests at once per worker.

Failures, as Vertex counts them: HTTP 4xx is bad input (code 3); 5xx and resets are retried
``MAX_RETRIES`` times, then recorded with code 13; a request still unanswered after the job's
``predict_timeout_seconds`` is retried the same way, then recorded with code 4
(DEADLINE_EXCEEDED), the code the in-process path gives a predict call past that deadline; a
response without one prediction per instance fails that request. A server that no longer accepts
connections stops the job (``ModelServerError``) instead of failing every remaining instance.

Connections are kept alive, one per thread (bench/container_bench.py's probe: 1.5 ms per request
of 64 instances to a Custom Prediction Routine server, against 2.9 ms with a new connection each),
with TCP_NODELAY, as urllib3 sets it: http.client writes a request's headers and body separately,
the pattern where Nagle's algorithm and the server's delayed ACK can hold the body about 40 ms.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from batchpredict.errors import (
    CODE_DEADLINE_EXCEEDED,
    CODE_INTERNAL,
    CODE_INVALID_ARGUMENT,
    InstanceError,
    ModelServerError,
)
from batchpredict.models.base import ModelHandler

FRAMEWORK = "container"
# Instances per request when the user leaves batch size at 0: Vertex's default.
DEFAULT_CONTAINER_BATCH_SIZE = 64
# Vertex retries a failing request 3 times (troubleshooting docs: "retry=3").
MAX_RETRIES = 3
# First pause before a retry; doubled each time (0.1 s, 0.2 s, 0.4 s).
RETRY_BACKOFF_S = 0.1
# Longest wait for one response when none is given: Vertex's limit for a prediction request.
# The backend passes the job's predict_timeout_seconds (0: no limit).
REQUEST_TIMEOUT_S = 600.0
# Wait for the health route when a request failed (is the server still there?).
HEALTH_TIMEOUT_S = 10.0
# Longest error body quoted in an error record.
MAX_ERROR_BODY = 300


@dataclass(frozen=True)
class Endpoint:
    """Where a started serving container answers, and how hard to drive it."""

    host: str
    port: int
    predict_route: str
    health_route: str
    container_name: str
    image: str
    in_flight: int = 1  # requests one worker keeps in flight
    request_timeout_s: float | None = REQUEST_TIMEOUT_S  # per request; None: no limit

    @property
    def url(self) -> str:
        """The base URL, for messages."""
        return f"http://{self.host}:{self.port}"


class BadRequestError(ValueError):
    """The server answered 4xx: the instances are bad input (code 3)."""


class ServerError(RuntimeError):
    """The server answered 5xx, reset or timed out after every retry (code 13)."""


class DeadlineExceededError(InstanceError):
    """No answer within the request timeout, after every retry (code 4, DEADLINE_EXCEEDED).

    Recorded with its message as is, as the in-process path records a call past the deadline.
    """

    def __init__(self, message: str) -> None:
        """A code-4 instance error."""
        super().__init__(message, CODE_DEADLINE_EXCEEDED)


class PredictionCountError(RuntimeError):
    """The response had no ``predictions`` list with one prediction per instance (code 13)."""


# Transport failures worth a retry (a reset, a refused or dropped connection, a timeout).
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class ContainerHandler(ModelHandler):
    """Predicts through a serving container's HTTP predict route."""

    framework = FRAMEWORK
    default_batch_size = DEFAULT_CONTAINER_BATCH_SIZE

    def load(self) -> None:
        """Checks the endpoint; connections are opened by the threads that post."""
        endpoint = self.ref.endpoint
        if endpoint is None:  # resolve_model + the backend always set it
            raise ModelServerError(
                "The container framework needs a started serving container (ModelRef.endpoint)."
            )
        self.endpoint: Endpoint = endpoint
        self._local = threading.local()  # this thread's kept-alive connection

    def close(self) -> None:
        """Closes this thread's connection (the predict threads' close when they end)."""
        local = getattr(self, "_local", None)
        conn = getattr(local, "conn", None)
        if conn is not None:
            conn.close()
            local.conn = None

    @property
    def concurrency(self) -> int:
        """Requests the engine may keep in flight in one worker."""
        return max(1, self.endpoint.in_flight)

    def predict(self, instances: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """One POST of the batch; the predictions, one per instance, in order."""
        body: dict[str, Any] = {"instances": instances}
        if parameters:
            body["parameters"] = parameters
        try:
            payload = orjson.dumps(body)
        except TypeError:  # e.g. an integer beyond 64 bits: the standard encoder takes it
            payload = json.dumps(body).encode()
        status, data = self._post(payload)
        route = self.endpoint.predict_route
        if 400 <= status < 500:
            raise BadRequestError(f"HTTP {status} from {route}: {_quote(data)}")
        if not 200 <= status < 300:
            raise ServerError(f"HTTP {status} from {route}: {_quote(data)}")
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            try:
                answer = json.loads(data)
            except ValueError:
                raise PredictionCountError(
                    f"The response of {route} is not JSON: {_quote(data)}"
                ) from None
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(instances):
            got = len(predictions) if isinstance(predictions, list) else "no"
            raise PredictionCountError(
                f"The response of {route} has {got} predictions for {len(instances)} instances; "
                'a server must answer {"predictions": [...]} with one per instance, in order.'
            )
        return predictions

    def classify_error(self, err: BaseException) -> int:
        """4xx answers are bad input (3); everything else is the model server's (13)."""
        return CODE_INVALID_ARGUMENT if isinstance(err, BadRequestError) else CODE_INTERNAL

    # ---- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, route: str, payload: bytes | None) -> tuple[int, bytes]:
        """One request on this thread's kept-alive connection (opened when there is none).

        A kept connection the server has closed meanwhile (idle timeout) fails at once: the
        request is then sent again on a new connection, once, without counting as a retry.
        """
        local = self._local
        conn = getattr(local, "conn", None)
        reused = conn is not None
        if conn is None:
            conn = local.conn = _Connection(
                self.endpoint.host, self.endpoint.port, timeout=self.endpoint.request_timeout_s
            )
        try:
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, route, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except _TRANSPORT_ERRORS as err:
            conn.close()
            local.conn = None
            if reused and not isinstance(err, TimeoutError):
                return self._request(method, route, payload)
            raise
        if resp.will_close:
            conn.close()
            local.conn = None
        return resp.status, data

    def _post(self, payload: bytes) -> tuple[int, bytes]:
        """POSTs with up to MAX_RETRIES retries of 5xx answers, transport failures and timeouts."""
        route = self.endpoint.predict_route
        last = ""
        timed_out = False
        for attempt in range(MAX_RETRIES + 1):
            if attempt:
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            try:
                status, data = self._request("POST", route, payload)
            except TimeoutError:  # the server took the request and did not answer in time
                timed_out = True
                last = f"no answer within {self.endpoint.request_timeout_s:g} s"
                continue
            except _TRANSPORT_ERRORS as err:
                timed_out = False
                last = f"{type(err).__name__}: {err}"
                if not self._answers():
                    raise ModelServerError(
                        f"The serving container {self.endpoint.container_name} "
                        f"({self.endpoint.image}) stopped answering at {self.endpoint.url}: "
                        f"{last}."
                    ) from err
                continue
            if status < 500:
                return status, data
            timed_out = False
            last = f"HTTP {status}: {_quote(data)}"
        if timed_out:
            raise DeadlineExceededError(
                f"DEADLINE_EXCEEDED: {route} did not answer within "
                f"{self.endpoint.request_timeout_s:g} s (predict_timeout_seconds), "
                f"{MAX_RETRIES} retries."
            )
        raise ServerError(
            f"Post request fails after {MAX_RETRIES} retries. Cannot get predictions from "
            f"{route}. Error: {last}"
        )

    def _answers(self) -> bool:
        """Whether the server still accepts connections (any answer on the health route)."""
        try:
            conn = http.client.HTTPConnection(
                self.endpoint.host, self.endpoint.port, timeout=HEALTH_TIMEOUT_S
            )
            try:
                conn.request("GET", self.endpoint.health_route)
                conn.getresponse().read()
            finally:
                conn.close()
        except _TRANSPORT_ERRORS:
            return False
        return True


class _Connection(http.client.HTTPConnection):
    """An HTTP connection with TCP_NODELAY (see the module's docstring)."""

    def connect(self) -> None:
        """Connects, then turns Nagle's algorithm off."""
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quote(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= MAX_ERROR_BODY else text[:MAX_ERROR_BODY] + "..."
