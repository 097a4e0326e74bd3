"""One serving container per job, started by Docker under Vertex's custom-container contract.

Steps (``serve``):
1. Remove containers that jobs killed on this machine left behind (their owner process is dead).
   Every local job, in-process ones included, also removes those recorded in this user's state
   directory (``sweep_recorded``): a listing of a directory that is usually empty, so jobs on
   machines without Docker never pay for it.
2. Record the container's name there, then start the image with its ``containerSpec`` (command,
   args, env, ports, predict and health routes), the ``AIP_*`` variables of the contract, the
   model directory mounted read-only as ``AIP_STORAGE_URI``, GPUs when ``accelerator_count`` > 0,
   and a free host port on 127.0.0.1 chosen by Docker.
3. Wait until the health route answers 200 (a deadline; a container that exits or never becomes
   healthy is an error quoting the tail of its log).
4. Hand the job an ``Endpoint``; every worker of the job posts to this one container.
5. Remove the container at the end, on error, on Ctrl-C and on SIGTERM.

One container per job, not one per worker: the image's own server (uvicorn workers, TF Serving
threads) already uses the machine's cores, so several copies would only compete for them and load
the model several times; the workers' HTTP requests are cheap, and ``requests_in_flight`` keeps
the one server busy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from batchpredict.artifacts import container_spec
from batchpredict.errors import InternalError, UserError
from batchpredict.models.container import Endpoint

log = logging.getLogger(__name__)

# Vertex's defaults (custom container requirements): port, and the routes of a deployed model.
DEFAULT_PORT = 8080
LOCAL_ENDPOINT_ID = "1"  # AIP_ENDPOINT_ID / AIP_MODEL_NAME of the local "endpoint"
LOCAL_DEPLOYED_MODEL_ID = "1"  # AIP_DEPLOYED_MODEL_ID / AIP_VERSION_NAME
DEFAULT_HEALTH_ROUTE = f"/v1/endpoints/{LOCAL_ENDPOINT_ID}/deployedModels/{LOCAL_DEPLOYED_MODEL_ID}"
DEFAULT_PREDICT_ROUTE = DEFAULT_HEALTH_ROUTE + ":predict"
# Where the model directory is mounted, read-only (as LocalModel.deploy_to_local_endpoint does).
MODEL_MOUNT = "/tmp_cpr_local_model"
# How long a container may take to answer its health route with 200 (image start + model load).
READY_TIMEOUT_S = 300.0
READY_TIMEOUT_ENV = "BATCHPREDICT_CONTAINER_READY_TIMEOUT_S"
READY_POLL_S = 0.2
# How long a failed job waits for Docker to report a dying container's exit (for the message).
STOP_GRACE_S = 5.0
# Log lines quoted when a container fails.
LOG_TAIL_LINES = 30
# Labels on every container we start: the job, and the owner process (for the sweep).
LABEL_JOB = "batchpredict.job"
LABEL_OWNER = "batchpredict.owner"
# Where each running job records its container (one file per container, removed with it).
STATE_DIR_ENV = "BATCHPREDICT_STATE_DIR"
# Custom Prediction Routine images: uvicorn worker processes. CPR's default is one per core (at
# least 2); uvicorn's supervisor then kills a worker that does not answer its 5 s ping, which a
# worker importing aiplatform and the framework on a loaded machine misses, again and again, so
# the container never becomes healthy. One worker runs no supervisor. The user's containerSpec.env
# wins when it sets any of CPR_WORKER_VARIABLES.
CPR_WORKER_VARIABLES = (
    "VERTEX_CPR_WEB_CONCURRENCY",
    "VERTEX_CPR_WORKERS_PER_CORE",
    "VERTEX_CPR_MAX_WORKERS",
)
DEFAULT_CPR_WEB_CONCURRENCY = "1"


def default_in_flight() -> int:
    """Requests kept in flight by default: two per core, so the server never waits for one."""
    return max(2, 2 * (os.cpu_count() or 1))


def docker_client() -> Any:
    """A Docker SDK client of the engine in the environment (DOCKER_HOST or the local socket).

    Raises:
        UserError: the docker package is missing or no engine answers.
    """
    try:
        import docker
    except ImportError as err:
        raise UserError(
            "Serving a model in its container needs the Docker SDK: pip install docker (or "
            "batchpredict[container]); or run the model in-process (serving_mode='in_process')."
        ) from err
    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:  # docker raises DockerException, requests' errors, OSError
        raise UserError(
            "Serving a model in its container needs a Docker engine, but none answers "
            f"(DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {err}. Start Docker, or "
            "run the model in-process (serving_mode='in_process')."
        ) from err
    return client


# ---- who owns a container -------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing)."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def owner_label(pid: int | None = None) -> str:
    """``<boot id>|<pid namespace>|<pid>|<start ticks>`` of this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    boot = _read("/proc/sys/kernel/random/boot_id") or socket.gethostname()
    return f"{boot}|{_pid_namespace()}|{pid}|{_start_ticks(pid)}"


def _owner_is_dead(label: str) -> bool:
    """Whether the process named by an owner label is certainly gone.

    Only owners of this boot and this pid namespace are judged (another machine's or container's
    processes cannot be seen from here); a reused pid is told apart by its start time.
    """
    parts = label.split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    boot, namespace, pid, ticks = parts[0], parts[1], int(parts[2]), parts[3]
    here = owner_label().split("|")
    if boot != here[0] or namespace != here[1]:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(ticks) and _start_ticks(pid) != ticks


def sweep_orphans(client: Any) -> list[str]:
    """Removes the containers of jobs whose process died (kill -9); returns their names."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if _owner_is_dead(container.labels.get(LABEL_OWNER, "")):
            with contextlib.suppress(Exception):  # already gone: another run removed it
                container.remove(force=True)
                removed.append(container.name)
    if removed:
        log.info("Removed serving containers left by killed jobs: %s", removed)
    return removed


def state_dir() -> str:
    """Where running jobs record their containers: BATCHPREDICT_STATE_DIR, else the user's cache."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return explicit
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "batchpredict", "serving-containers")


def _record(name: str) -> str | None:
    """Records a container about to start; returns the record's path (None if it cannot)."""
    path = os.path.join(state_dir(), name)
    record = {
        "owner": owner_label(),
        "host": socket.gethostname(),
        "docker_host": os.environ.get("DOCKER_HOST", ""),
    }
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(record, f)
    except OSError as err:  # a read-only home: the label sweep of the next container job remains
        log.debug("Cannot record the serving container in %s: %s", path, err)
        return None
    return path


def _recorded_owner_is_dead(record: dict[str, Any]) -> bool:
    owner = str(record.get("owner", ""))
    if _owner_is_dead(owner):
        return True
    # Recorded on this machine before a reboot: its process is gone with that boot.
    boot = owner.split("|")[0]
    return record.get("host") == socket.gethostname() and boot != owner_label().split("|")[0]


def sweep_recorded() -> list[str]:
    """Removes the containers recorded by jobs of this user that were killed (kill -9).

    Runs at the start of every local job. Without records (no container job was killed here)
    it lists one directory and returns: no Docker import, no engine call. Records for another
    engine (DOCKER_HOST) or of live jobs are left; a record whose container is gone is dropped.
    Never raises: a failure is logged and the record kept for the next run.
    """
    directory = state_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    orphans = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if record.get("docker_host", "") != os.environ.get("DOCKER_HOST", ""):
            continue
        if _recorded_owner_is_dead(record):
            orphans.append((name, path))
    if not orphans:
        return []
    removed = []
    try:
        import docker

        client = docker_client()
        for name, path in orphans:
            try:
                client.containers.get(name).remove(force=True)
                removed.append(name)
            except docker.errors.NotFound:
                pass
            with contextlib.suppress(OSError):
                os.unlink(path)
    except Exception as err:  # noqa: BLE001 - never breaks the job that sweeps
        log.info("Could not remove serving containers left by killed jobs (%s): %s", orphans, err)
    if removed:
        log.info("Removed serving containers left by killed jobs: %s", removed)
    return removed


# ---- containerSpec ---------------------------------------------------------------------------


def _container_port(spec: dict[str, Any]) -> int:
    ports = spec.get("ports") or []
    if not ports:
        return DEFAULT_PORT
    first = ports[0]
    value = (
        first.get("containerPort", first.get("container_port"))
        if isinstance(first, dict)
        else first
    )
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(
            f"containerSpec.ports[0] must be {{'containerPort': <int>}}; got {first!r}."
        ) from None


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes-style ``$(VAR)`` references in command, args and env; ``$$`` escapes ``$``."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REFERENCE.sub(sub, str(value))


def project_number(project: str) -> str:
    """AIP_PROJECT_NUMBER: the job's project when it is a number, else its ID, else "".

    Vertex sets the project *number*. Locally only the ID may be known (finding the number is a
    Resource Manager call, with credentials): the ID is set then, since the Google Cloud clients
    and resource names a server builds from the variable take either. Project IDs never consist
    of digits only, so a number is never mistaken for an ID.
    """
    return (project or os.environ.get("GOOGLE_CLOUD_PROJECT", "")).strip()


def contract_environment(
    spec: dict[str, Any],
    port: int,
    machine_type: str = "",
    accelerator_type: str = "",
    project: str = "",
) -> dict[str, str]:
    """The AIP_* variables Vertex sets in a serving container, then containerSpec.env.

    Every variable of Google's list for custom containers ("Custom container requirements for
    prediction", "Variables set by Vertex AI"): AIP_ACCELERATOR_TYPE (only with accelerators, as
    there), AIP_DEPLOYED_MODEL_ID, AIP_ENDPOINT_ID, AIP_FRAMEWORK, AIP_HEALTH_ROUTE,
    AIP_HTTP_PORT, AIP_MACHINE_TYPE (when machine_type is given: locally there is none),
    AIP_MODE, AIP_MODE_VERSION, AIP_MODEL_NAME, AIP_PREDICT_ROUTE, AIP_PROJECT_NUMBER (see
    ``project_number``; unset when no project is known), AIP_STORAGE_URI (the read-only mount of
    the model directory, as LocalModel.deploy_to_local_endpoint sets it, not a gs:// URI),
    AIP_VERSION_NAME. Then VERTEX_CPR_WEB_CONCURRENCY=1 unless containerSpec.env sets one of
    CPR_WORKER_VARIABLES.
    """
    env = {
        "AIP_MODE": "PREDICTION",
        "AIP_MODE_VERSION": "1.0.0",
        "AIP_FRAMEWORK": "CUSTOM_CONTAINER",
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": spec.get("healthRoute") or DEFAULT_HEALTH_ROUTE,
        "AIP_PREDICT_ROUTE": spec.get("predictRoute") or DEFAULT_PREDICT_ROUTE,
        "AIP_STORAGE_URI": MODEL_MOUNT,
        "AIP_ENDPOINT_ID": LOCAL_ENDPOINT_ID,
        "AIP_MODEL_NAME": LOCAL_ENDPOINT_ID,
        "AIP_DEPLOYED_MODEL_ID": LOCAL_DEPLOYED_MODEL_ID,
        "AIP_VERSION_NAME": LOCAL_DEPLOYED_MODEL_ID,
    }
    if machine_type:
        env["AIP_MACHINE_TYPE"] = machine_type
    if accelerator_type:
        env["AIP_ACCELERATOR_TYPE"] = accelerator_type
    number = project_number(project)
    if number:
        env["AIP_PROJECT_NUMBER"] = number
    for item in spec.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise UserError(
                f"containerSpec.env items must be {{'name': ..., 'value': ...}}; got {item!r}."
            )
        env[str(item["name"])] = expand(str(item.get("value", "")), env)
    if not any(name in env for name in CPR_WORKER_VARIABLES):
        env["VERTEX_CPR_WEB_CONCURRENCY"] = DEFAULT_CPR_WEB_CONCURRENCY
    return env


# ---- the container ---------------------------------------------------------------------------


def log_tail(container: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a container's log (stdout and stderr), indented for a message."""
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace").rstrip()
    except Exception as err:  # the container may be gone
        return f"    (no log: {err})"
    return "\n".join("    " + line for line in text.splitlines()) or "    (empty log)"


def device_requests(
    runtimes: list[str], accelerator_count: int, accelerator_type: str = ""
) -> list | None:
    """The Docker device requests for ``accelerator_count`` GPUs (``docker run --gpus N``).

    Raises:
        UserError: GPUs asked for and the engine has no NVIDIA runtime (``runtimes``).
    """
    if accelerator_count <= 0:
        return None
    import docker

    if "nvidia" not in runtimes:
        raise UserError(
            f"accelerator_count={accelerator_count} (accelerator_type={accelerator_type!r}) asks "
            f"the serving container for GPUs, but this Docker engine has no NVIDIA runtime "
            f"(runtimes: {sorted(runtimes)}). Install the NVIDIA Container Toolkit and restart "
            "Docker, or set accelerator_count=0."
        )
    return [docker.types.DeviceRequest(count=accelerator_count, capabilities=[["gpu"]])]


def _device_requests(client: Any, accelerator_count: int, accelerator_type: str) -> list | None:
    if accelerator_count <= 0:
        return None
    runtimes = list((client.info().get("Runtimes") or {}).keys())
    return device_requests(runtimes, accelerator_count, accelerator_type)


def _health_status(host: str, port: int, route: str) -> int | None:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", route)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None


def ready_timeout() -> float:
    """READY_TIMEOUT_S, or the BATCHPREDICT_CONTAINER_READY_TIMEOUT_S environment variable."""
    raw = os.environ.get(READY_TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else READY_TIMEOUT_S
    except ValueError:
        raise UserError(f"{READY_TIMEOUT_ENV} must be a number of seconds; got {raw!r}.") from None


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While serving, SIGTERM unwinds the job like Ctrl-C, so the container is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def serve(
    image: str,
    model_dir: str,
    metadata: dict[str, Any],
    job_name: str,
    in_flight: int,
    machine_type: str = "",
    accelerator_type: str = "",
    accelerator_count: int = 0,
    project: str = "",
    request_timeout_s: float | None = None,
) -> Iterator[Endpoint]:
    """Runs ``image`` for the duration of the ``with`` block; yields where it answers.

    ``request_timeout_s`` bounds each predict request (the job's predict_timeout_seconds; None:
    no limit); ``project`` gives AIP_PROJECT_NUMBER.

    Raises:
        UserError: no Docker, an image that is not here and cannot be pulled, a bad
            containerSpec, GPUs without an NVIDIA runtime, a container that exits or never
            becomes healthy (with its log tail).
        InternalError: the job failed while the container had stopped (with its log tail).
    """
    client = docker_client()
    sweep_orphans(client)
    raw = (metadata or {}).get("containerSpec", (metadata or {}).get("container_spec"))
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"model_metadata containerSpec must be an object; got {raw!r}.")
    spec = container_spec(metadata)
    port = _container_port(spec)
    env = contract_environment(spec, port, machine_type, accelerator_type, project)
    command = [expand(c, env) for c in spec.get("command") or []]
    args = [expand(a, env) for a in spec.get("args") or []]
    devices = _device_requests(client, accelerator_count, accelerator_type)
    _ensure_image(client, image)
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", job_name).strip("-.")[:40] or "job"
    name = f"batchpredict-{slug}-{os.getpid()}-{secrets.token_hex(3)}"
    with _sigterm_raises():
        record = _record(name)  # before the container exists: a kill -9 now leaves a record
        try:
            container = client.containers.run(
                image,
                command=args or None,
                entrypoint=command or None,
                environment=env,
                ports={f"{port}/tcp": ("127.0.0.1", None)},
                volumes={os.path.abspath(model_dir): {"bind": MODEL_MOUNT, "mode": "ro"}},
                labels={LABEL_JOB: job_name, LABEL_OWNER: owner_label()},
                device_requests=devices,
                name=name,
                detach=True,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # created, then failed to start
                client.containers.get(name).remove(force=True)
            _forget(record)
            raise
        try:
            host_port = _wait_ready(container, port, env["AIP_HEALTH_ROUTE"], image)
            endpoint = Endpoint(
                host="127.0.0.1",
                port=host_port,
                predict_route=env["AIP_PREDICT_ROUTE"],
                health_route=env["AIP_HEALTH_ROUTE"],
                container_name=name,
                image=image,
                in_flight=in_flight,
                request_timeout_s=request_timeout_s,
            )
            log.info("Serving container %s (%s) answers at %s", name, image, endpoint.url)
            try:
                yield endpoint
            except InternalError as err:
                raise _with_container_state(err, container) from err
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            _forget(record)


def _forget(record: str | None) -> None:
    if record:
        with contextlib.suppress(OSError):
            os.unlink(record)


def _ensure_image(client: Any, image: str) -> None:
    import docker

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    log.info("Pulling the serving image %s", image)
    try:
        client.images.pull(image)
    except Exception as err:
        raise UserError(
            f"The serving image {image!r} is not on this Docker engine and pulling it failed: "
            f"{err}. Pull or build it first (docker pull / docker build -t {image} ...), or run "
            "the model in-process (serving_mode='in_process') when its framework has a handler."
        ) from err


def _wait_ready(container: Any, port: int, health_route: str, image: str) -> int:
    """The host port once the health route answers 200; errors with the log tail otherwise."""
    timeout = ready_timeout()
    deadline = time.monotonic() + timeout
    host_port = None
    last = "no answer"
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise UserError(
                f"The serving container {container.name} ({image}) exited with code {code} "
                f"before answering {health_route}. Its last log lines:\n{log_tail(container)}"
            )
        if host_port is None:
            bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{port}/tcp"
            )
            if bindings:
                host_port = int(bindings[0]["HostPort"])
        if host_port is not None:
            status = _health_status("127.0.0.1", host_port, health_route)
            if status == 200:
                return host_port
            last = f"HTTP {status}" if status is not None else "no answer"
        if time.monotonic() > deadline:
            raise UserError(
                f"The serving container {container.name} ({image}) did not become healthy within "
                f"{timeout:g} s: GET {health_route} on port {port} gave {last}. The server must "
                f"listen on 0.0.0.0:$AIP_HTTP_PORT and answer $AIP_HEALTH_ROUTE with 200 once "
                f"the model is loaded ({READY_TIMEOUT_ENV} sets the wait). Its last log "
                f"lines:\n{log_tail(container)}"
            )
        time.sleep(READY_POLL_S)


def _with_container_state(err: InternalError, container: Any) -> InternalError:
    """The job's internal error, with the container's exit code and log tail if it stopped."""
    deadline = time.monotonic() + STOP_GRACE_S  # the engine may not have seen the exit yet
    while True:
        try:
            container.reload()
            status = container.status
            code = container.attrs.get("State", {}).get("ExitCode")
        except Exception:
            status, code = "removed", None
        if status != "running" or time.monotonic() > deadline:
            break
        time.sleep(READY_POLL_S)
    if status == "running":
        return err
    return InternalError(
        f"{err} The serving container {container.name} is {status} (exit code {code}). Its last "
        f"log lines:\n{log_tail(container)}"
    )
