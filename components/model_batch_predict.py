"""ModelBatchPredictOp: GCPC's batch prediction component, run locally or on Vertex AI."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Input, Output, OutputPath

from batchpredict.image import component_image
from batchpredict.kfp_artifacts import BQTable, UnmanagedContainerModel, VertexBatchPredictionJob


@dsl.component(base_image=component_image(), install_kfp_package=False)
def model_batch_predict(
    job_display_name: str,
    gcp_resources: OutputPath(str),
    batchpredictionjob: Output[VertexBatchPredictionJob],
    bigquery_output_table: Output[BQTable],
    gcs_output_directory: Output[Artifact],
    model: Input[Artifact] = None,
    unmanaged_container_model: Input[UnmanagedContainerModel] = None,
    location: str = "us-central1",
    instances_format: str = "jsonl",
    predictions_format: str = "jsonl",
    gcs_source_uris: List[str] = [],
    bigquery_source_input_uri: str = "",
    instance_type: str = "",
    key_field: str = "",
    included_fields: List[str] = [],
    excluded_fields: List[str] = [],
    model_parameters: Dict[str, str] = {},
    gcs_destination_output_uri_prefix: str = "",
    bigquery_destination_output_uri: str = "",
    machine_type: str = "",
    accelerator_type: str = "",
    accelerator_count: int = 0,
    starting_replica_count: int = 0,
    max_replica_count: int = 0,
    service_account: str = "",
    manual_batch_tuning_parameters_batch_size: int = 0,
    generate_explanation: bool = False,
    explanation_metadata: Dict[str, str] = {},
    explanation_parameters: Dict[str, str] = {},
    labels: Dict[str, str] = {},
    encryption_spec_key_name: str = "",
    project: str = "",
    backend: str = "local",
    workers: int = 0,
    output_directory_name: str = "",
    max_failed_fraction: float = 1.0,
    predict_timeout_seconds: float = 600.0,
    load_timeout_seconds: float = 1800.0,
    return_probabilities: bool = False,
    predictor_class: str = "",
    serving_mode: str = "auto",
    requests_in_flight: int = 0,
    model_display_name: str = "",
    vertex_api_endpoint: str = "",
):
    """Runs a Vertex AI-style batch prediction job, locally or as a Vertex AI BatchPredictionJob.

    Accepts every input of google-cloud-pipeline-components' ModelBatchPredictOp with the same
    name and default. With ``backend='local'`` (the default) the job runs in this step's container
    on batchpredict's engine and writes output in Vertex's layout; with ``backend='vertex'`` the
    same job is submitted to Vertex AI and awaited. See
    https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.batchPredictionJobs.

    Args:
        job_display_name: The user-defined name of this BatchPredictionJob.
        model: The model: a ``google.VertexModel`` (metadata ``resourceName``, vertex backend) or
            a local model artifact such as ``system.Model`` whose URI is a model directory in the
            layout of Vertex's prebuilt containers (local backend).
        unmanaged_container_model: A model directory (URI) with metadata
            ``containerSpec.imageUri``, for models not uploaded to Vertex. Either this or
            ``model`` must be given.
        location: Location for creating the BatchPredictionJob.
        instances_format: ``jsonl``, ``csv``, ``tf-record``, ``tf-record-gzip``, ``file-list``,
            ``bigquery``; locally also ``parquet``.
        predictions_format: ``jsonl``, ``csv``, ``bigquery``; locally also ``parquet``.
        gcs_source_uris: URIs of the instances (``gs://``, ``/gcs/`` or local paths); wildcards
            allowed.
        bigquery_source_input_uri: BigQuery table to read instances from,
            ``bq://project.dataset.table`` (scheme optional).
        instance_type: ``object``, ``array`` or empty: the shape of each instance sent to the
            model.
        key_field: A field whose value identifies each instance in the output (as ``key``) and is
            not sent to the model.
        included_fields: Fields sent to the model, in this order. Exclusive with
            ``excluded_fields``.
        excluded_fields: Fields not sent to the model.
        model_parameters: Sent as ``parameters`` with every predict request.
        gcs_destination_output_uri_prefix: Where the output directory
            ``prediction-<model>-<timestamp>`` is created. Empty, with no BigQuery
            destination either: this step's own output directory.
        bigquery_destination_output_uri: ``bq://project`` (a new dataset) or
            ``bq://project.dataset.table`` (a new table).
        machine_type: Vertex only (recorded locally).
        accelerator_type: Vertex only (recorded locally).
        accelerator_count: Vertex only (recorded locally).
        starting_replica_count: Vertex only (recorded locally).
        max_replica_count: Vertex only (recorded locally).
        service_account: Vertex only (recorded locally).
        manual_batch_tuning_parameters_batch_size: Instances per predict call; 0 picks the
            backend's default (Vertex: 64; local: 64 to a serving container, 8192 for
            scikit-learn and XGBoost reading Parquet or BigQuery, 2048 otherwise).
        generate_explanation: Vertex only; locally it is refused with a clear error.
        explanation_metadata: Vertex only.
        explanation_parameters: Vertex only.
        labels: Labels of the job (recorded locally).
        encryption_spec_key_name: Vertex only (recorded locally).
        project: Project of the job (vertex backend); empty means the environment's default.
        backend: ``local`` (this machine) or ``vertex`` (Vertex AI).
        workers: Local worker processes; 0 means one per CPU core (one for TensorFlow models
            and serving containers, which use every core themselves).
        output_directory_name: A fixed output directory name instead of
            ``prediction-<model>-<timestamp>`` (local backend): the path is known in advance.
        max_failed_fraction: Fail the step when more than this fraction of instances failed.
        predict_timeout_seconds: A predict call running longer is stopped and the instance that
            hangs is recorded as failed (code 4, DEADLINE_EXCEEDED); 0 disables it (local
            backend; Vertex allows 600 s per request).
        load_timeout_seconds: A worker whose model load() has not returned after this many
            seconds fails the step (exit 13, naming the model); 0 disables it (local backend).
        return_probabilities: Classifiers return class probabilities instead of labels.
        predictor_class: ``module:Class`` of a Custom Prediction Routine ``Predictor``.
        serving_mode: ``auto`` (in-process when batchpredict runs the serving image's framework,
            else the image in its container through the host's Docker engine), ``in_process``,
            or ``container`` (the serving image, under Vertex's custom-container contract).
        requests_in_flight: Serving container: predict requests sent at once; 0 means two per
            CPU core.
        model_display_name: Model name used in the output directory; defaults to the job's.
        vertex_api_endpoint: Overrides ``{location}-aiplatform.googleapis.com``.

    Returns:
        gcp_resources: The job's resource, in GCPC's ``gcp_resources`` format.
        batchpredictionjob: The job (``resourceName``, ``gcsOutputDirectory``,
            ``bigqueryOutputDataset``, ``bigqueryOutputTable``, completion stats).
        gcs_output_directory: The output directory (``gcs_destination_output_uri_prefix`` only).
        bigquery_output_table: The output table (``bigquery_destination_output_uri`` only).
    """
    from batchpredict.component_entry import model_batch_predict as run

    run(
        model=model,
        unmanaged_container_model=unmanaged_container_model,
        gcp_resources=gcp_resources,
        batchpredictionjob=batchpredictionjob,
        gcs_output_directory=gcs_output_directory,
        bigquery_output_table=bigquery_output_table,
        job_display_name=job_display_name,
        location=location,
        instances_format=instances_format,
        predictions_format=predictions_format,
        gcs_source_uris=gcs_source_uris,
        bigquery_source_input_uri=bigquery_source_input_uri,
        instance_type=instance_type,
        key_field=key_field,
        included_fields=included_fields,
        excluded_fields=excluded_fields,
        model_parameters=model_parameters,
        gcs_destination_output_uri_prefix=gcs_destination_output_uri_prefix,
        bigquery_destination_output_uri=bigquery_destination_output_uri,
        machine_type=machine_type,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        starting_replica_count=starting_replica_count,
        max_replica_count=max_replica_count,
        service_account=service_account,
        manual_batch_tuning_parameters_batch_size=manual_batch_tuning_parameters_batch_size,
        generate_explanation=generate_explanation,
        explanation_metadata=explanation_metadata,
        explanation_parameters=explanation_parameters,
        labels=labels,
        encryption_spec_key_name=encryption_spec_key_name,
        project=project,
        backend=backend,
        workers=workers,
        output_directory_name=output_directory_name,
        max_failed_fraction=max_failed_fraction,
        predict_timeout_seconds=predict_timeout_seconds,
        load_timeout_seconds=load_timeout_seconds,
        return_probabilities=return_probabilities,
        predictor_class=predictor_class,
        serving_mode=serving_mode,
        requests_in_flight=requests_in_flight,
        model_display_name=model_display_name,
        vertex_api_endpoint=vertex_api_endpoint,
    )


ModelBatchPredictOp = model_batch_predict
