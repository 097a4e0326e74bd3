"""KFP artifact types with Google's schema titles (``google.VertexModel`` and friends).

They match google-cloud-pipeline-components' ``types.artifact_types`` by schema title and version,
so artifacts flow between Google's components and ours, without depending on GCPC in the image.
This is the one runtime module that imports kfp; only component definitions import it.
"""

from kfp import dsl


class VertexModel(dsl.Artifact):
    """A Vertex AI Model; metadata ``resourceName``."""

    schema_title = "google.VertexModel"
    schema_version = "0.0.1"


class UnmanagedContainerModel(dsl.Artifact):
    """A model directory and its serving image; metadata ``containerSpec``, ``predictSchemata``."""

    schema_title = "google.UnmanagedContainerModel"
    schema_version = "0.0.1"


class VertexBatchPredictionJob(dsl.Artifact):
    """A BatchPredictionJob; metadata ``resourceName``, ``gcsOutputDirectory``, BigQuery fields."""

    schema_title = "google.VertexBatchPredictionJob"
    schema_version = "0.0.1"


class BQTable(dsl.Artifact):
    """A BigQuery table; metadata ``projectId``, ``datasetId``, ``tableId``."""

    schema_title = "google.BQTable"
    schema_version = "0.0.1"
