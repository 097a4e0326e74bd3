"""What a finished batch prediction job reports, whichever backend ran it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from batchpredict.errors import UserError

JOB_STATE_SUCCEEDED = "JOB_STATE_SUCCEEDED"
JOB_STATE_FAILED = "JOB_STATE_FAILED"
# The gcp_resources resourceType of each backend's job.
VERTEX_RESOURCE_TYPE = "BatchPredictionJob"
LOCAL_RESOURCE_TYPE = "LocalBatchPredictionJob"


@dataclass
class JobResult:
    """The outcome of one job, in Vertex's terms.

    Attributes:
        state: a Vertex ``JobState`` name, e.g. ``JOB_STATE_SUCCEEDED``.
        resource_name: ``projects/.../batchPredictionJobs/...`` on Vertex; ``local://<output>``
            for a local job.
        resource_uri: the ``gcp_resources`` URI (Vertex REST URL, or the local output directory).
        gcs_output_directory: the directory holding ``prediction.results-*`` ("" if BigQuery).
        bigquery_output_dataset: ``bq://project.dataset`` of BigQuery output ("" if none).
        bigquery_output_table: the predictions table name within that dataset ("" if none).
        completion_stats: ``successful_count``, ``failed_count``, ``incomplete_count``.
        stats: extra figures: ``rows_per_second``, ``elapsed_seconds``, ``read_count`` and more.
        resource_type: the ``gcp_resources`` resourceType of the backend's job.
    """

    state: str
    resource_name: str = ""
    resource_uri: str = ""
    gcs_output_directory: str = ""
    bigquery_output_dataset: str = ""
    bigquery_output_table: str = ""
    completion_stats: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    resource_type: str = VERTEX_RESOURCE_TYPE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)

    @property
    def output_location(self) -> str:
        """The output directory, or ``bq://project.dataset.table`` of the predictions table."""
        if self.gcs_output_directory:
            return self.gcs_output_directory
        if self.bigquery_output_dataset and self.bigquery_output_table:
            return f"{self.bigquery_output_dataset}.{self.bigquery_output_table}"
        return ""

    def predictions(self, project: str = "") -> Any:
        """A reader of this job's output (see ``batchpredict.io.reader``).

        Iterate it for ``(key or instance, prediction)``; ``errors()``, ``to_arrow()``,
        ``to_pandas()`` and ``iter_outputs()`` as documented there.

        Raises:
            UserError: the job reported no output.
        """
        from batchpredict.io.reader import read_predictions

        if not self.output_location:
            raise UserError(f"Job {self.resource_name!r} reported no output to read.")
        return read_predictions(self.output_location, project=project)

    def iter_outputs(self, bq_max_results: int = 100) -> Any:
        """As aiplatform's ``BatchPredictionJob.iter_outputs()``: output files, or table rows."""
        return self.predictions().iter_outputs(bq_max_results=bq_max_results)


def check_max_failed_fraction(value: float) -> None:
    """Refuses a max_failed_fraction outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise UserError(f"max_failed_fraction must be within [0, 1]; got {value}.")


def check_failures(
    failed: int, total: int, max_failed_fraction: float, job: str, errors_location: str
) -> None:
    """The job-level gate of both backends: fails when failed / total > max_failed_fraction.

    Args:
        failed: instances that failed.
        total: instances read (successful + failed).
        max_failed_fraction: the largest failed fraction accepted.
        job: the job, as the message names it.
        errors_location: where the failed instances and their errors are.

    Raises:
        UserError: too many instances failed, naming the counts and where the errors are.
    """
    if total and failed / total > max_failed_fraction:
        raise UserError(
            f"{job}: {failed} of {total} instances failed ({failed / total:.1%}), above "
            f"max_failed_fraction={max_failed_fraction}. Failed instances and their errors: "
            f"{errors_location}."
        )
