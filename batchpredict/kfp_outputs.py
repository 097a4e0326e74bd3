"""The component's outputs, in GCPC ModelBatchPredictOp's exact format, from a JobResult.

Plain data (no kfp import): the component body copies these URIs and metadata onto its output
artifacts, so the mapping is unit-testable and shared by both backends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from batchpredict.result import JobResult

# As GCPC's remote_runner: bq://project.dataset, optionally with a `project:` domain prefix.
_BQ_DATASET_URI = re.compile(
    r"(?P<scheme>(bq|bigquery)://)?"
    r"(?P<project>([a-z0-9.-]+:)?[a-z][a-z0-9-_]{4,28}[a-z0-9])"
    r"([:\.](?P<dataset>[a-zA-Z0-9_]+)"
    r"([:\.](?P<table>[^\.\:]+))?)?"
)


@dataclass
class ArtifactOut:
    """The URI and metadata of one output artifact."""

    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComponentOutputs:
    """Everything ModelBatchPredictOp outputs; ``None`` where GCPC produces nothing."""

    gcp_resources: str
    batchpredictionjob: ArtifactOut
    gcs_output_directory: ArtifactOut | None
    bigquery_output_table: ArtifactOut | None


def gcp_resources_json(resource_type: str, resource_uri: str) -> str:
    """The ``gcp_resources`` document, formatted as GCPC's ``MessageToJson`` writes it."""
    doc = {"resources": [{"resourceType": resource_type, "resourceUri": resource_uri}]}
    return json.dumps(doc, indent=2)


def bigquery_table_artifact(dataset_uri: str, table: str) -> ArtifactOut:
    """A ``google.BQTable`` artifact for ``table`` in ``bq://project.dataset``."""
    match = _BQ_DATASET_URI.fullmatch(dataset_uri)
    if not match or not match.group("dataset"):
        raise ValueError(
            f"Invalid BigQuery output dataset {dataset_uri!r}; expected bq://project_id.dataset_id."
        )
    project, dataset = match.group("project"), match.group("dataset")
    return ArtifactOut(
        uri=f"https://www.googleapis.com/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}",
        metadata={"projectId": project, "datasetId": dataset, "tableId": table},
    )


def component_outputs(result: JobResult) -> ComponentOutputs:
    """Maps a finished job onto ModelBatchPredictOp's outputs.

    Args:
        result: the finished job (its backend set its ``resource_type``).

    Returns:
        The outputs; completion stats are added to every artifact's metadata.
    """
    stats = {"completionStats": result.completion_stats, **_camel(result.stats)}
    job = ArtifactOut(
        uri=result.resource_uri,
        metadata={
            "resourceName": result.resource_name,
            "bigqueryOutputTable": result.bigquery_output_table,
            "bigqueryOutputDataset": result.bigquery_output_dataset,
            "gcsOutputDirectory": result.gcs_output_directory,
            **stats,
        },
    )
    gcs = None
    if result.gcs_output_directory:
        gcs = ArtifactOut(uri=result.gcs_output_directory.rstrip("/"), metadata=dict(stats))
    bq = None
    if result.bigquery_output_dataset:
        bq = bigquery_table_artifact(result.bigquery_output_dataset, result.bigquery_output_table)
        bq.metadata.update(stats)
    return ComponentOutputs(
        gcp_resources=gcp_resources_json(result.resource_type, result.resource_uri),
        batchpredictionjob=job,
        gcs_output_directory=gcs,
        bigquery_output_table=bq,
    )


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)

    return {camel(k): v for k, v in d.items()}
