"""The BatchPredictionJob request, built as GCPC 2.22.0's ModelBatchPredictOp builds it.

GCPC builds its request in five steps, followed here one to one:

1. The component renders a JSON payload from its inputs (a ``ConcatPlaceholder`` in
   ``v1/batch_predict_job/component.py``): every field, empty or not (:func:`gcpc_payload`).
2. The launcher inserts the ``unmanaged_container_model`` input artifact: its metadata with
   camelCase keys turned to snake_case, plus ``artifact_uri`` (``remote_runner.py``).
3. It merges the pipeline's system labels from ``VERTEX_AI_PIPELINES_RUN_LABELS``; the user's
   labels win on conflicts (``gcp_labels_util.py``).
4. It strips every empty value (``""``, ``0``, ``False``, ``{}``, ``[]``) until none is left, so
   that service defaults apply (``json_util.recursive_remove_empty``).
5. It adds ``bq://`` to BigQuery URIs that lack it, parses ``explanation_spec.metadata`` as an
   ``ExplanationMetadata`` and ``model_parameters`` as a ``google.protobuf.Value``.

``tests/test_vertex_request.py`` runs Google's own code on the same arguments and compares the
requests field by field. Deliberate differences, each a GCPC bug not copied:

- ``model_parameters`` is sent as given: GCPC's step 4 also removes falsy values *inside* it, so
  ``{"threshold": 0}`` reached the model as ``{}``.
- Metadata keys of the model artifact that are not ``UnmanagedContainerModel`` fields (a training
  component's ``framework`` or ``featureNames``) are left out with a warning; GCPC fails the create
  call with "Unknown field".
- ``/gcs/bucket/...`` paths (Vertex AI Pipelines' Cloud Storage FUSE mount) become
  ``gs://bucket/...``; GCPC sends them as they are and Vertex AI refuses them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from typing import Any

from batchpredict.artifacts import container_image_uri
from batchpredict.errors import UserError
from batchpredict.io import formats, fs
from batchpredict.io.bigquery import BQ_SCHEME, GCPC_TABLE_URI
from batchpredict.spec import BatchPredictionJobSpec

log = logging.getLogger(__name__)

# Set by Vertex AI Pipelines in every task's container; GCPC merges it into the job's labels.
SYSTEM_LABELS_ENV = "VERTEX_AI_PIPELINES_RUN_LABELS"

# The fields of google.cloud.aiplatform.v1.UnmanagedContainerModel (snake_case).
UNMANAGED_CONTAINER_MODEL_FIELDS = ("artifact_uri", "predict_schemata", "container_spec")


def gcs_uri(value: str, name: str) -> str:
    """Returns ``value`` as a ``gs://`` URI, translating ``/gcs/`` FUSE paths.

    Args:
        value: a ``gs://`` URI or a ``/gcs/bucket/...`` path.
        name: the input's name, for the error message.

    Raises:
        UserError: ``value`` is a local path, which Vertex AI cannot read.
    """
    translated = fs.gcs_uri(value)
    if translated.startswith(fs.GCS_SCHEME):
        return translated
    raise UserError(
        f"{name}={value!r} is not in Cloud Storage, and Vertex AI only reads and writes gs:// "
        f"URIs. Copy it to a bucket (`gcloud storage cp -r {value} gs://BUCKET/...`) and pass "
        "the gs:// URI, or run with backend='local' to use local files."
    )


def check_vertex_spec(spec: BatchPredictionJobSpec) -> None:
    """Refuses what Vertex AI cannot run, before anything is sent, naming the value and the fix.

    Raises:
        UserError: a local model or data path, a format only the local engine has, or a model
            without a serving image.
    """
    for name, cls in (
        ("instances_format", formats.source_class(spec.instances_format)),
        ("predictions_format", formats.writer_class(spec.predictions_format)),
    ):
        if not cls.vertex:
            raise UserError(
                f"{name}={cls.format!r} is only supported by the local engine; Vertex AI batch "
                f"prediction reads {_listed(formats.input_formats(vertex=True))} and writes "
                f"{_listed(formats.output_formats(vertex=True))}. Pick one of those, or run with "
                "backend='local'."
            )
    if not spec.model_resource_name and not spec.model_uri:
        raise UserError(
            "backend='vertex' needs a model: a google.VertexModel artifact (model, metadata "
            "resourceName, e.g. from ModelUploadOp) or an UnmanagedContainerModel artifact "
            "(unmanaged_container_model: a gs:// model directory plus containerSpec.imageUri)."
        )
    if spec.model_uri and not spec.model_resource_name:
        if spec.model_uri.startswith(("https://", "http://")):
            raise UserError(
                f"The model artifact's URI {spec.model_uri!r} is a URL, not a model directory, "
                "and its metadata has no resourceName. For a model registered in Vertex AI, pass "
                "a google.VertexModel artifact with metadata {'resourceName': "
                "'projects/P/locations/L/models/ID'} (ModelUploadOp's output has it)."
            )
        if not fs.gcs_uri(spec.model_uri).startswith(fs.GCS_SCHEME):
            raise UserError(
                f"The model directory {spec.model_uri!r} is local, and Vertex AI loads model "
                "artifacts from Cloud Storage. Copy it to a bucket "
                f"(`gcloud storage cp -r {spec.model_uri} gs://BUCKET/model`) and import that "
                "URI (dsl.importer(artifact_uri='gs://BUCKET/model', "
                "artifact_class=UnmanagedContainerModel, metadata={'containerSpec': "
                "{'imageUri': ...}})), or run with backend='local'."
            )
        if not _image_uri(spec):
            raise UserError(
                f"The model directory {spec.model_uri!r} has no serving image, which Vertex AI "
                "needs to run it: set the artifact's metadata containerSpec.imageUri (e.g. "
                "'us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest') or "
                "container_image_uri."
            )
    for uri in spec.gcs_source_uris:
        gcs_uri(uri, "gcs_source_uris")
    if spec.gcs_destination_output_uri_prefix:
        gcs_uri(spec.gcs_destination_output_uri_prefix, "gcs_destination_output_uri_prefix")


def _listed(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def gcpc_payload(spec: BatchPredictionJobSpec) -> dict[str, Any]:
    """Step 1: the payload GCPC's component renders from its inputs, empty values included."""
    instance_config: dict[str, Any] = {
        "instance_type": spec.instance_type,
        "key_field": spec.key_field,
        "included_fields": list(spec.included_fields),
        "excluded_fields": list(spec.excluded_fields),
    }
    payload: dict[str, Any] = {"display_name": spec.job_display_name}
    if spec.model_resource_name:
        payload["model"] = spec.model_resource_name
    payload.update(
        {
            "input_config": {
                "instances_format": spec.instances_format,
                "gcs_source": {
                    "uris": [gcs_uri(u, "gcs_source_uris") for u in spec.gcs_source_uris]
                },
                "bigquery_source": {"input_uri": spec.bigquery_source_input_uri},
            },
            "instance_config": instance_config,
            "model_parameters": copy.deepcopy(spec.model_parameters),
            "output_config": {
                "predictions_format": spec.predictions_format,
                "gcs_destination": {
                    "output_uri_prefix": (
                        gcs_uri(
                            spec.gcs_destination_output_uri_prefix,
                            "gcs_destination_output_uri_prefix",
                        )
                        if spec.gcs_destination_output_uri_prefix
                        else ""
                    )
                },
                "bigquery_destination": {"output_uri": spec.bigquery_destination_output_uri},
            },
            "dedicated_resources": {
                "machine_spec": {
                    "machine_type": spec.machine_type,
                    "accelerator_type": spec.accelerator_type,
                    "accelerator_count": spec.accelerator_count,
                },
                "starting_replica_count": spec.starting_replica_count,
                "max_replica_count": spec.max_replica_count,
            },
            "service_account": spec.service_account,
            "manual_batch_tuning_parameters": {
                "batch_size": spec.manual_batch_tuning_parameters_batch_size
            },
            "generate_explanation": spec.generate_explanation,
            "explanation_spec": {
                "parameters": copy.deepcopy(spec.explanation_parameters),
                "metadata": copy.deepcopy(spec.explanation_metadata),
            },
            "labels": dict(spec.labels),
            "encryption_spec": {"kms_key_name": spec.encryption_spec_key_name},
        }
    )
    return payload


def unmanaged_container_model(spec: BatchPredictionJobSpec) -> dict[str, Any] | None:
    """Step 2: the ``unmanaged_container_model`` GCPC inserts, or None for a Vertex model.

    The artifact's metadata (``spec.model_metadata``) with snake_case keys, its URI as
    ``artifact_uri``, and ``container_spec.image_uri`` from ``spec.container_image_uri`` when set.
    """
    if spec.model_resource_name or not spec.model_uri:
        return None
    model = camel_to_snake_recursive(copy.deepcopy(spec.model_metadata or {}))
    unknown = sorted(k for k in model if k not in UNMANAGED_CONTAINER_MODEL_FIELDS)
    if unknown:
        log.warning(
            "Not sending model metadata keys %s to Vertex AI: UnmanagedContainerModel has only "
            "containerSpec and predictSchemata.",
            unknown,
        )
    model = {k: v for k, v in model.items() if k in UNMANAGED_CONTAINER_MODEL_FIELDS}
    if spec.container_image_uri:
        container_spec = model.get("container_spec") or {}
        container_spec["image_uri"] = spec.container_image_uri
        model["container_spec"] = container_spec
    model["artifact_uri"] = gcs_uri(spec.model_uri, "model")
    return model


def attach_system_labels(labels: dict[str, str]) -> dict[str, str]:
    """Step 3: the pipeline's system labels merged under the user's, as GCPC's gcp_labels_util."""
    raw = os.environ.get(SYSTEM_LABELS_ENV)
    if raw is None:
        return labels
    try:
        system = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("Ignoring %s: not JSON: %r", SYSTEM_LABELS_ENV, raw)
        return labels
    if not isinstance(system, dict):
        log.warning("Ignoring %s: not a JSON object: %r", SYSTEM_LABELS_ENV, raw)
        return labels
    system.update(labels)
    return system


def strip_empty(payload: dict[str, Any]) -> dict[str, Any]:
    """Step 4: GCPC's ``recursive_remove_empty``: drops empty values until none is left.

    Inside lists, primitive values are kept even when empty (``""``, ``0``). An empty
    ``explanation_spec.metadata.outputs`` is kept, as GCPC does. ``model_parameters`` is taken
    out before and put back as given when not empty (a GCPC bug not copied: see module docs).
    """
    payload = dict(payload)
    model_parameters = payload.pop("model_parameters", None)
    outputs = payload.get("explanation_spec", {}).get("metadata", {}).get("outputs")
    while True:
        stripped = _remove_empty(payload)
        if json.dumps(stripped) == json.dumps(payload):
            break
        payload = stripped
    if outputs is not None:
        payload.setdefault("explanation_spec", {}).setdefault("metadata", {})["outputs"] = outputs
    if model_parameters:
        payload["model_parameters"] = model_parameters
    return payload


def _remove_empty(value: Any) -> Any:
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, (int, float, str, bool)):
                kept.append(item)
            elif _remove_empty(item):
                kept.append(_remove_empty(item))
        return kept
    if isinstance(value, dict):
        return {k: _remove_empty(v) for k, v in value.items() if v}
    return value


def add_bigquery_scheme(payload: dict[str, Any]) -> dict[str, Any]:
    """Step 5a: ``bq://`` added to BigQuery URIs without a scheme, exactly where GCPC adds it."""
    source = payload.get("input_config", {}).get("bigquery_source", {})
    if "input_uri" in source:
        match = GCPC_TABLE_URI.fullmatch(source["input_uri"])
        if match and match.group("scheme") is None:
            source["input_uri"] = BQ_SCHEME + source["input_uri"]
    destination = payload.get("output_config", {}).get("bigquery_destination", {})
    if "output_uri" in destination:
        # GCPC matches the destination's prefix only (re.match), the source in full.
        match = GCPC_TABLE_URI.match(destination["output_uri"])
        if match and match.group("scheme") is None:
            destination["output_uri"] = BQ_SCHEME + destination["output_uri"]
    return payload


def job_payload(spec: BatchPredictionJobSpec) -> dict[str, Any]:
    """Steps 1 to 4 and 5a: the JSON-ready job, before protobuf conversion."""
    payload = gcpc_payload(spec)
    model = unmanaged_container_model(spec)
    if model is not None:
        payload["unmanaged_container_model"] = model
    payload["labels"] = attach_system_labels(payload.get("labels", {}))
    payload = strip_empty(payload)
    return add_bigquery_scheme(payload)


def build_batch_prediction_job(spec: BatchPredictionJobSpec) -> Any:
    """The ``google.cloud.aiplatform_v1.BatchPredictionJob`` GCPC would send for ``spec``.

    The JSON-ready job is parsed with protobuf's JSON parser, which reads
    ``explanation_spec.metadata`` as GCPC's ``ExplanationMetadata.from_json`` does and
    ``model_parameters`` as a ``google.protobuf.Value``; it also takes whole numbers that arrive
    as floats (artifact metadata passes through a protobuf Struct: ``containerPort: 8080.0``).

    Args:
        spec: the job; checked with :func:`check_vertex_spec` first.

    Returns:
        The job message (proto-plus).

    Raises:
        UserError: an input Vertex AI cannot take, or a value the API's types refuse (an unknown
            field in explanation metadata, a non-string label).
    """
    from google.cloud.aiplatform_v1 import types
    from google.protobuf import json_format

    check_vertex_spec(spec)
    payload = job_payload(spec)
    try:
        message = json_format.ParseDict(payload, types.BatchPredictionJob.pb()())
    except json_format.ParseError as err:
        raise UserError(
            f"Cannot build the Vertex AI BatchPredictionJob for job {spec.job_display_name!r}: "
            f"{err}. Check explanation_metadata, explanation_parameters, labels (string values) "
            "and the model artifact's metadata (containerSpec, predictSchemata) against "
            "https://cloud.google.com/vertex-ai/docs/reference/rest/v1/"
            "projects.locations.batchPredictionJobs."
        ) from err
    return types.BatchPredictionJob.wrap(message)


def camel_to_snake_recursive(value: Any) -> Any:
    """Turns every dict key from camelCase to snake_case, as GCPC's json_util."""
    if isinstance(value, list):
        return [camel_to_snake_recursive(v) for v in value]
    if isinstance(value, dict):
        return {_snake(k): camel_to_snake_recursive(v) for k, v in value.items()}
    return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _image_uri(spec: BatchPredictionJobSpec) -> str:
    return spec.container_image_uri or container_image_uri(spec.model_metadata)
