"""The batch prediction job: every input of GCPC's ModelBatchPredictOp, plus this toolkit's own.

One dataclass is shared by the CLI, the Python API, the KFP component and both backends, so that a
job means the same thing wherever it is started. Field names are ModelBatchPredictOp's input names.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from batchpredict.errors import UserError
from batchpredict.io.base import BIGQUERY_DESTINATION, BIGQUERY_SOURCE, GCS_DESTINATION, GCS_SOURCE
from batchpredict.result import check_max_failed_fraction

# The formats and what each can do are stated on their classes (batchpredict/io/formats.py). The
# registry imports every source and writer (BigQuery's too), so it is imported when first needed
# (validate, field_choices), not with this module: ``INSTANCES_FORMATS``,
# ``PREDICTIONS_FORMATS`` and ``FIELD_CHOICES`` are computed on first access (``__getattr__``).
INSTANCE_TYPES = ("", "object", "array")
BACKENDS = ("local", "vertex")
# How the local backend serves the model (batchpredict.models.SERVING_MODES).
SERVING_MODES = ("auto", "in_process", "container")

# Our default instances per predict call when the user leaves batch size at 0, for frameworks that
# do not set their own (ModelHandler.default_batch_size and columnar_batch_size: a serving
# container takes Vertex's 64; scikit-learn and XGBoost 8192 from Parquet or BigQuery). A user's
# value is always respected exactly.
DEFAULT_BATCH_SIZE = 2048


def field_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of the fields that have a fixed set (formats from the registry)."""
    from batchpredict.io import formats

    return {
        "instances_format": formats.input_formats(),
        "predictions_format": formats.output_formats(),
        "instance_type": INSTANCE_TYPES,
        "backend": BACKENDS,
        "serving_mode": SERVING_MODES,
    }


def __getattr__(name: str) -> Any:  # the registry's facts, imported on first use
    if name == "FIELD_CHOICES":
        return field_choices()
    if name == "INSTANCES_FORMATS":
        return field_choices()["instances_format"]
    if name == "PREDICTIONS_FORMATS":
        return field_choices()["predictions_format"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Inputs that only mean something on Vertex AI. The local backend accepts and records them.
VERTEX_ONLY_FIELDS = (
    "machine_type",
    "accelerator_type",
    "accelerator_count",
    "starting_replica_count",
    "max_replica_count",
    "service_account",
    "encryption_spec_key_name",
    "labels",
)
# Vertex-only inputs a local serving container does use: AIP_MACHINE_TYPE, AIP_ACCELERATOR_TYPE,
# GPUs from Docker.
CONTAINER_RESOURCE_FIELDS = ("machine_type", "accelerator_type", "accelerator_count")
# Inputs used only by the vertex backend (besides VERTEX_ONLY_FIELDS), marked so in the CLI.
VERTEX_BACKEND_FIELDS = (
    "generate_explanation",
    "explanation_metadata",
    "explanation_parameters",
    "model_resource_name",
    "vertex_api_endpoint",
)


def field_docs() -> dict[str, str]:
    """Each field's description, from BatchPredictionJobSpec's ``Attributes:`` docstring."""
    import inspect

    docs: dict[str, str] = {}
    current = ""
    lines = inspect.cleandoc(BatchPredictionJobSpec.__doc__ or "").splitlines()
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside or not line.strip():
            continue
        if line.startswith("    ") and not line.startswith("        ") and ": " in line:
            current, _, text = line.strip().partition(": ")
            docs[current] = text
        elif current:
            docs[current] += " " + line.strip()
    return docs


@dataclass
class BatchPredictionJobSpec:
    """A batch prediction job, named as GCPC's ModelBatchPredictOp names its inputs.

    Each attribute's line below is also its ``batchpredict predict --help`` text.

    Attributes:
        job_display_name: the job's name; also names the output directory unless
            model_display_name is set.
        location: the Vertex AI region of the job.
        instances_format: the input's format (parquet: local backend only).
        predictions_format: the output's format (parquet: local backend only).
        gcs_source_uris: input files: local paths, gs:// or /gcs/ URIs; wildcards allowed.
        bigquery_source_input_uri: an input table, bq://project.dataset.table.
        instance_type: the shape sent to the model: object, array, or empty (as read).
        key_field: a field that identifies each instance in the output (as key); it is not sent
            to the model.
        included_fields: the fields sent to the model, in this order (arrays for
            instance_type=array).
        excluded_fields: fields not sent to the model.
        model_parameters: sent as parameters with every predict call (a JSON object).
        gcs_destination_output_uri_prefix: where the directory prediction-<model>-<timestamp> is
            created (local path, gs:// or /gcs/).
        bigquery_destination_output_uri: bq://project (a new dataset), bq://project.dataset (new
            tables) or bq://project.dataset.table (a new table).
        machine_type: the machine type of Vertex's prediction workers; a local serving
            container sees it as AIP_MACHINE_TYPE.
        accelerator_type: the accelerator of Vertex's prediction workers; a local serving
            container sees it as AIP_ACCELERATOR_TYPE.
        accelerator_count: accelerators per Vertex worker; a local serving container gets that
            many GPUs from Docker (NVIDIA runtime needed).
        starting_replica_count: Vertex workers at the start.
        max_replica_count: Vertex workers at most.
        service_account: the service account the Vertex job runs as.
        manual_batch_tuning_parameters_batch_size: instances per predict call; 0 picks the
            backend's default (Vertex: 64; local: 64 to a serving container, 8192 for
            scikit-learn and XGBoost reading Parquet or BigQuery, 2048 otherwise).
        generate_explanation: ask Vertex for explanations (refused by the local backend).
        explanation_metadata: Vertex explanation metadata (a JSON object).
        explanation_parameters: Vertex explanation parameters (a JSON object).
        labels: labels of the Vertex job (a JSON object).
        encryption_spec_key_name: the Cloud KMS key of the Vertex job's resources.
        project: the Google Cloud project; empty: GOOGLE_CLOUD_PROJECT or the ADC default.
        backend: local (this machine) or vertex (a Vertex AI BatchPredictionJob).
        model_uri: the model directory (local path, gs:// or /gcs/) holding model.joblib,
            model.pkl, model.bst, ... (an UnmanagedContainerModel's or system.Model's URI).
        model_resource_name: a Vertex model, projects/.../locations/.../models/....
        container_image_uri: the model's serving image; picks the framework of a local model
            (.../sklearn-cpu.1-3:latest) and is sent as is to Vertex.
        model_metadata: the model artifact's metadata, e.g. containerSpec and predictSchemata (a
            JSON object); the vertex backend sends it as GCPC does.
        model_display_name: the model name in the output directory's name; default:
            job_display_name.
        workers: local worker processes; 0: one per CPU core (one for TensorFlow models and
            serving containers, which use every core themselves).
        return_probabilities: classifiers return class probabilities instead of labels.
        predictor_class: a Custom Prediction Routine Predictor, module:Class or
            path/file.py:Class.
        serving_mode: local backend: auto (in-process when batchpredict runs the serving image's
            framework, else the image in its container, through Docker), in_process, or
            container (always the image, under Vertex's custom-container contract).
        requests_in_flight: serving container: predict requests sent at once; 0: two per CPU
            core.
        max_failed_fraction: fail the job when failed / read is above this fraction.
        output_directory_name: a fixed output directory name instead of
            prediction-<model>-<timestamp>: the path is known in advance, reruns replace it.
        predict_timeout_seconds: a predict call still running after this many seconds is
            stopped (its worker is killed) and the instance that hangs is recorded as failed
            (code 4, DEADLINE_EXCEEDED); 0 disables it. Vertex allows 600 s per request.
        load_timeout_seconds: a worker whose model ``load()`` has not returned after this many
            seconds fails the job (exit 13, naming the model); 0 disables it.
        progress: print a live progress line.
        vertex_api_endpoint: overrides {location}-aiplatform.googleapis.com (private endpoints,
            tests).
    """

    job_display_name: str
    location: str = "us-central1"
    instances_format: str = "jsonl"
    predictions_format: str = "jsonl"
    gcs_source_uris: list[str] = field(default_factory=list)
    bigquery_source_input_uri: str = ""
    instance_type: str = ""
    key_field: str = ""
    included_fields: list[str] = field(default_factory=list)
    excluded_fields: list[str] = field(default_factory=list)
    model_parameters: dict[str, Any] = field(default_factory=dict)
    gcs_destination_output_uri_prefix: str = ""
    bigquery_destination_output_uri: str = ""
    machine_type: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    starting_replica_count: int = 0
    max_replica_count: int = 0
    service_account: str = ""
    manual_batch_tuning_parameters_batch_size: int = 0
    generate_explanation: bool = False
    explanation_metadata: dict[str, Any] = field(default_factory=dict)
    explanation_parameters: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    encryption_spec_key_name: str = ""
    project: str = ""
    # --- this toolkit's own ---
    backend: str = "local"
    model_uri: str = ""
    model_resource_name: str = ""
    container_image_uri: str = ""
    model_metadata: dict[str, Any] = field(default_factory=dict)
    model_display_name: str = ""
    workers: int = 0
    return_probabilities: bool = False
    predictor_class: str = ""
    serving_mode: str = "auto"
    requests_in_flight: int = 0
    max_failed_fraction: float = 1.0
    output_directory_name: str = ""
    predict_timeout_seconds: float = 600.0
    load_timeout_seconds: float = 1800.0
    progress: bool = True
    vertex_api_endpoint: str = ""

    @property
    def worker_count(self) -> int:
        """Local worker processes to start."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @property
    def display_name_for_output(self) -> str:
        """The model name that goes into ``prediction-<model>-<timestamp>``."""
        return self.model_display_name or self.job_display_name

    def vertex_only_settings(self) -> dict[str, Any]:
        """The Vertex-only inputs a user set (non-default), for recording by the local backend."""
        defaults = {f.name: _default_of(f) for f in dataclasses.fields(self)}
        return {
            name: getattr(self, name)
            for name in VERTEX_ONLY_FIELDS
            if getattr(self, name) != defaults[name]
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Refuse invalid inputs and combinations before any work, naming the values and the fix."""
        from batchpredict.io import formats

        source = formats.source_class(self.instances_format)
        writer = formats.writer_class(self.predictions_format)
        _check_choice("instance_type", self.instance_type, INSTANCE_TYPES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("serving_mode", self.serving_mode, SERVING_MODES)
        if not self.job_display_name:
            raise UserError("job_display_name is required; got an empty string.")
        has_gcs = bool(self.gcs_source_uris)
        has_bq = bool(self.bigquery_source_input_uri)
        if has_gcs == has_bq:
            raise UserError(
                "Give exactly one input source: gcs_source_uris or bigquery_source_input_uri; got "
                f"gcs_source_uris={self.gcs_source_uris!r} and "
                f"bigquery_source_input_uri={self.bigquery_source_input_uri!r}."
            )
        given = BIGQUERY_SOURCE if has_bq else GCS_SOURCE
        if source.input_field != given:
            readers = " or ".join(repr(f) for f in formats.input_formats(given))
            raise UserError(
                f"instances_format={self.instances_format!r} reads {source.input_field}, not "
                f"{given}; got {given}={getattr(self, given)!r}. Set instances_format to a "
                f"format that reads {given}: {readers}."
            )
        has_gcs_out = bool(self.gcs_destination_output_uri_prefix)
        has_bq_out = bool(self.bigquery_destination_output_uri)
        if has_gcs_out == has_bq_out:
            raise UserError(
                "Give exactly one output destination: gcs_destination_output_uri_prefix or "
                "bigquery_destination_output_uri; got "
                f"gcs_destination_output_uri_prefix={self.gcs_destination_output_uri_prefix!r} and "
                f"bigquery_destination_output_uri={self.bigquery_destination_output_uri!r}."
            )
        given_out = BIGQUERY_DESTINATION if has_bq_out else GCS_DESTINATION
        if writer.output_field != given_out:
            writers = " or ".join(repr(f) for f in formats.output_formats(given_out))
            raise UserError(
                f"predictions_format={self.predictions_format!r} writes to "
                f"{writer.output_field}, not {given_out}; got "
                f"{given_out}={getattr(self, given_out)!r}. Set predictions_format to a format "
                f"that writes to {given_out}: {writers}."
            )
        if self.included_fields and self.excluded_fields:
            raise UserError(
                "included_fields and excluded_fields are mutually exclusive; got "
                f"included_fields={self.included_fields!r} and "
                f"excluded_fields={self.excluded_fields!r}. Keep one of them."
            )
        if self.instance_type == "object" and not source.object_instances:
            raise UserError(
                f"instance_type='object' is not supported for instances_format="
                f"{self.instances_format!r}: its instances are {source.instances_are}. Use "
                "instance_type='' or 'array'."
            )
        if not source.named_fields and (
            self.key_field or self.included_fields or self.excluded_fields
        ):
            raise UserError(
                f"key_field, included_fields and excluded_fields need named fields, which "
                f"instances_format={self.instances_format!r} does not have; got "
                f"key_field={self.key_field!r}, included_fields={self.included_fields!r}, "
                f"excluded_fields={self.excluded_fields!r}."
            )
        if self.key_field and not writer.keys:
            # Vertex rejects key_field with BigQuery output too (googleapis/python-aiplatform#4514).
            keyed = "/".join(formats.output_formats(GCS_DESTINATION, keys=True))
            raise UserError(
                f"key_field={self.key_field!r} cannot be used with predictions_format="
                f"{self.predictions_format!r}, as on Vertex AI; write {keyed} to "
                f"{GCS_DESTINATION} instead."
            )
        if self.manual_batch_tuning_parameters_batch_size < 0:
            raise UserError(
                "manual_batch_tuning_parameters_batch_size must be >= 0 (0 picks the model "
                f"framework's default); got {self.manual_batch_tuning_parameters_batch_size}."
            )
        if self.requests_in_flight < 0:
            raise UserError(
                "requests_in_flight must be >= 0 (0 = two per CPU core); got "
                f"{self.requests_in_flight}."
            )
        if self.workers < 0:
            raise UserError(f"workers must be >= 0 (0 = one per core); got {self.workers}.")
        if self.predict_timeout_seconds < 0:
            raise UserError(
                "predict_timeout_seconds must be >= 0 (0 disables the deadline); got "
                f"{self.predict_timeout_seconds}."
            )
        if self.load_timeout_seconds < 0:
            raise UserError(
                "load_timeout_seconds must be >= 0 (0 disables the deadline); got "
                f"{self.load_timeout_seconds}."
            )
        check_max_failed_fraction(self.max_failed_fraction)
        if self.output_directory_name and ("/" in self.output_directory_name):
            raise UserError(
                "output_directory_name is one directory name, without '/'; got "
                f"{self.output_directory_name!r}."
            )
        if self.backend == "local":
            if self.generate_explanation:
                raise UserError(
                    "generate_explanation=True is not supported locally yet; set it to False, or "
                    "run with backend='vertex'."
                )
            if not self.model_uri:
                raise UserError(
                    "The local backend needs a model directory: pass a Model or "
                    "UnmanagedContainerModel artifact (model_uri). A Vertex model resource "
                    f"({self.model_resource_name or 'none given'}) only runs with backend='vertex'."
                )


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise UserError(f"Unknown {name}={value!r}; expected one of {shown}.")
