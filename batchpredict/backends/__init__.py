"""Backends run a BatchPredictionJobSpec: ``local`` (our engine) or ``vertex`` (Vertex AI)."""

from __future__ import annotations

from batchpredict.result import JobResult
from batchpredict.spec import BatchPredictionJobSpec


def run_batch_prediction(
    spec: BatchPredictionJobSpec, gcp_resources_path: str | None = None
) -> JobResult:
    """Validates ``spec`` and runs it on its backend.

    Args:
        spec: the job.
        gcp_resources_path: where to write the ``gcp_resources`` JSON (KFP output); the Vertex
            backend writes it right after creating the job and re-attaches to a job named there.

    Returns:
        The job's result: state, output location and completion stats.
    """
    spec.validate()
    if spec.backend == "vertex":
        from batchpredict.backends.vertex import run_vertex

        return run_vertex(spec, gcp_resources_path=gcp_resources_path)
    from batchpredict.backends.local import run_local

    return run_local(spec, gcp_resources_path=gcp_resources_path)
