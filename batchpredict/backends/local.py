"""The local backend: a BatchPredictionJobSpec run on this machine by the engine."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sys
import time
from typing import Any

from batchpredict.backends.serving import (
    default_in_flight,
    serve,
    sweep_recorded,
)
from batchpredict.engine import JobPlan, run_job, sigterm_stops_job
from batchpredict.errors import InternalError, environment_error
from batchpredict.instances import InstanceConfig
from batchpredict.io import formats
from batchpredict.io.base import Destination, Source
from batchpredict.models import CONTAINER, handler_class, resolve_model
from batchpredict.result import (
    JOB_STATE_SUCCEEDED,
    LOCAL_RESOURCE_TYPE,
    JobResult,
    check_failures,
)
from batchpredict.spec import CONTAINER_RESOURCE_FIELDS, BatchPredictionJobSpec

log = logging.getLogger(__name__)

# Distinct causes the failure summary on stderr names (errors_stats has them all).
SUMMARY_CAUSES = 3
# Frameworks whose prebuilt containers call predict on arrays (``np.asarray(instances)``).
ARRAY_FRAMEWORKS = ("sklearn", "xgboost")


def instance_config(spec: BatchPredictionJobSpec) -> InstanceConfig:
    """The spec's instance_config."""
    return InstanceConfig(
        instance_type=spec.instance_type,
        key_field=spec.key_field,
        included_fields=tuple(spec.included_fields),
        excluded_fields=tuple(spec.excluded_fields),
    )


def build_source(spec: BatchPredictionJobSpec) -> Source:
    """The source reading the spec's input."""
    location = getattr(spec, formats.source_class(spec.instances_format).input_field)
    return formats.make_source(
        spec.instances_format, location, instance_config(spec), project=spec.project
    )


def build_destination(spec: BatchPredictionJobSpec, started: float) -> Destination:
    """The destination for the spec's output."""
    return formats.make_destination(
        spec.predictions_format,
        getattr(spec, formats.writer_class(spec.predictions_format).output_field),
        model_display_name=spec.display_name_for_output,
        directory_name=spec.output_directory_name,
        project=spec.project,
        started=dt.datetime.fromtimestamp(started, dt.timezone.utc),
        key_mode=instance_config(spec).keyed,
    )


def _abort(destination: Destination) -> None:
    """Removes partial output; a failure to do so is logged, never hides the job's own error."""
    try:
        destination.abort()
    except Exception as err:  # noqa: BLE001
        log.warning("Could not remove partial output under %s: %s", destination.location, err)


def run_local(spec: BatchPredictionJobSpec, gcp_resources_path: str | None = None) -> JobResult:
    """Runs ``spec`` with the local engine; SIGTERM stops it cleanly (see ``_run_local``)."""
    with sigterm_stops_job():
        return _run_local(spec)


def _run_local(spec: BatchPredictionJobSpec) -> JobResult:
    """Runs ``spec`` with the local engine.

    Args:
        spec: the job (validated by the caller).

    Returns:
        The result, with the output location and completion stats.

    Raises:
        UserError: bad input, model or arguments; or more failures than max_failed_fraction.
        InternalError: a worker died.
    """
    started = time.time()
    sweep_recorded()  # containers of killed container jobs; a directory listing when none
    source = build_source(spec)
    model = resolve_model(
        spec.model_uri,
        container_image_uri=spec.container_image_uri,
        predictor_class=spec.predictor_class,
        return_probabilities=spec.return_probabilities,
        serving_mode=spec.serving_mode,
    )
    in_container = model.framework == CONTAINER
    ignored = spec.vertex_only_settings()
    # A serving container gets the machine as AIP_MACHINE_TYPE / AIP_ACCELERATOR_TYPE and GPUs.
    used = {k: ignored.pop(k) for k in CONTAINER_RESOURCE_FIELDS if in_container and k in ignored}
    if ignored:
        log.warning("Recorded but not used by the local backend (Vertex only): %s", ignored)
    splits = source.splits()
    destination = build_destination(spec, started)
    destination.use_source(source)
    # Through a container, one worker process with requests in flight is the default: the
    # server does the work; more client processes only take cores from it. A framework whose
    # predict uses every core itself (TensorFlow) also gets one worker unless the user sets more.
    handler = handler_class(model)
    one_process = in_container or handler.uses_every_core
    workers = spec.worker_count if spec.workers > 0 or not one_process else 1
    plan = JobPlan(
        source=source,
        destination=destination,
        model=model,
        batch_size=spec.manual_batch_tuning_parameters_batch_size
        or (source.columnar and handler.columnar_batch_size)
        or handler.default_batch_size,
        parameters=dict(spec.model_parameters),
        splits=splits,
        workers=max(1, min(workers, len(splits))),
        # A serving container's requests carry the deadline themselves (with Vertex's retries).
        predict_timeout=0 if in_container else spec.predict_timeout_seconds,
        load_timeout=spec.load_timeout_seconds,
    )
    try:
        with contextlib.ExitStack() as stack:
            if in_container:
                in_flight = spec.requests_in_flight or default_in_flight()
                endpoint = stack.enter_context(
                    serve(
                        model.image_uri,
                        model.local_dir,
                        spec.model_metadata,
                        job_name=spec.job_display_name,
                        in_flight=-(-in_flight // plan.workers),  # per worker, rounded up
                        machine_type=spec.machine_type,
                        accelerator_type=spec.accelerator_type,
                        accelerator_count=spec.accelerator_count,
                        project=spec.project,
                        request_timeout_s=spec.predict_timeout_seconds or None,
                    )
                )
                plan.model = dataclasses.replace(model, endpoint=endpoint)
            destination.prepare()
            try:
                counts, elapsed = run_job(plan, show_progress=spec.progress)
            except BaseException:
                _abort(destination)
                raise
    finally:
        model.cleanup()
    if counts.successful + counts.failed != counts.read:  # never expected: fail loudly
        _abort(destination)
        raise InternalError(
            f"Count mismatch: read {counts.read}, successful {counts.successful}, "
            f"failed {counts.failed}."
        )
    completion = {
        "successful_count": counts.successful,
        "failed_count": counts.failed,
        "incomplete_count": 0,
    }
    stats: dict[str, Any] = {
        "read_count": counts.read,
        "elapsed_seconds": round(elapsed, 3),
        "rows_per_second": round(counts.read / elapsed, 1) if elapsed > 0 else 0.0,
        "workers": plan.workers,
        "batch_size": plan.batch_size,
        "model_framework": counts.framework or model.framework,
        "vertex_only_settings": ignored,
        "predict_calls": counts.predict_calls,
    }
    if in_container:
        stats["serving_image"] = model.image_uri
        stats["requests_in_flight"] = spec.requests_in_flight or default_in_flight()
        stats["serving_resources"] = used
    try:
        destination.commit(
            dict(counts.errors),
            {**completion, **stats, "job_display_name": spec.job_display_name},
        )
    except BaseException as err:
        _abort(destination)  # e.g. the disk filled up writing the summaries: leave nothing
        env = environment_error(err)
        if env is not None:
            raise env from err
        raise
    location = destination.location
    if counts.failed:
        print(failure_summary(spec, counts, destination), file=sys.stderr, flush=True)
    result = JobResult(
        state=JOB_STATE_SUCCEEDED,
        resource_name=f"local://{location}",
        resource_uri=location,
        gcs_output_directory=location if spec.gcs_destination_output_uri_prefix else "",
        bigquery_output_dataset=destination.dataset_uri,
        bigquery_output_table=destination.table_name,
        completion_stats=completion,
        stats=stats,
        resource_type=LOCAL_RESOURCE_TYPE,
    )
    check_failures(
        counts.failed,
        counts.read,
        spec.max_failed_fraction,
        f"Job {spec.job_display_name!r}",
        destination.errors_location,
    )
    return result


def failure_summary(spec: BatchPredictionJobSpec, counts: Any, destination: Destination) -> str:
    """What a job with failed instances prints on stderr (and so in a pipeline step's log).

    The count, the most frequent causes, where the failed instances are, and, when every instance
    failed the same way after JSON objects went to a model that takes arrays, the settings that
    send arrays instead.
    """
    share = counts.failed / counts.read if counts.read else 1.0
    lines = [
        f"batchpredict: {counts.failed} of {counts.read} instances failed ({share:.1%}); "
        f"job {spec.job_display_name!r}. Most frequent causes:"
    ]
    for message, n in counts.errors.most_common(SUMMARY_CAUSES):
        lines.append(f"  {n} x {message}")
    if len(counts.errors) > SUMMARY_CAUSES:
        lines.append(f"  ... {len(counts.errors) - SUMMARY_CAUSES} more distinct causes")
    lines.append(f"Failed instances with their errors: {destination.errors_location}")
    framework = counts.framework
    if (
        counts.successful == 0
        and len(counts.errors) == 1
        and counts.object_instances
        and spec.instance_type != "array"
        and framework in ARRAY_FRAMEWORKS
    ):
        lines.append(
            f"Hint: the {framework} model received JSON objects, but it predicts on arrays "
            "(numpy.asarray(instances)). Send arrays: instance_type='array' with "
            "included_fields=[the model's features, in training order]"
            + (f" (key_field={spec.key_field!r} stays out of them)." if spec.key_field else ".")
        )
    return "\n".join(lines)
