"""What a finished batch prediction job reports, whichever backend ran it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

JOB_STATE_SUCCEEDED = "JOB_STATE_SUCCEEDED"
JOB_STATE_FAILED = "JOB_STATE_FAILED"


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
    """

    state: str
    resource_name: str = ""
    resource_uri: str = ""
    gcs_output_directory: str = ""
    bigquery_output_dataset: str = ""
    bigquery_output_table: str = ""
    completion_stats: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)
