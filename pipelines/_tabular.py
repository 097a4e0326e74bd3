"""The steps both tabular example pipelines share, after training.

prepare instances (with a key) -> ModelBatchPredictOp -> collect -> evaluate. Called inside a
``@dsl.pipeline`` body, so the tasks belong to that pipeline.
"""

from dataclasses import dataclass
from typing import Any

from components.collect_predictions import CollectPredictionsOp
from components.evaluate import EvaluateOp
from components.model_batch_predict import ModelBatchPredictOp
from components.prepare_instances import PrepareInstancesOp


@dataclass
class Steps:
    """The tasks of the shared steps."""

    prepared: Any
    predicted: Any
    collected: Any
    evaluated: Any

    def outputs(self, data: Any, trained: Any) -> dict[str, Any]:
        """Every step's artifacts, by the pipelines' output names (classification adds one)."""
        return {
            "train_data": data.outputs["train_data"],
            "test_data": data.outputs["test_data"],
            "model": trained.outputs["model"],
            "instances": self.prepared.outputs["instances"],
            "batchpredictionjob": self.predicted.outputs["batchpredictionjob"],
            "predictions_directory": self.predicted.outputs["gcs_output_directory"],
            "collected": self.collected.outputs["collected"],
            "metrics": self.evaluated.outputs["metrics"],
            "evaluation_metrics": self.evaluated.outputs["evaluation_metrics"],
            "report": self.evaluated.outputs["report"],
        }


def predict_and_evaluate(
    *,
    job_display_name: str,
    data: Any,
    trained: Any,
    key_column: Any,
    instances_format: Any,
    shards: Any,
    predictions_uri_prefix: Any,
    workers: Any,
    return_probabilities: bool,
    gate_metric: str,
    gate_threshold: Any,
    title: str,
) -> Steps:
    """Adds prepare -> batch predict -> collect -> evaluate for a trained model."""
    prepared = PrepareInstancesOp(
        data=data.outputs["test_data"],
        model=trained.outputs["model"],
        key_column=key_column,
        instances_format=instances_format,
        shards=shards,
    )
    predicted = ModelBatchPredictOp(
        job_display_name=job_display_name,
        model=trained.outputs["model"],
        instances_format=instances_format,
        gcs_source_uris=prepared.outputs["gcs_source_uris"],
        instance_type="array",
        key_field=prepared.outputs["key_field"],
        included_fields=prepared.outputs["included_fields"],
        predictions_format="jsonl",
        # empty: under this step's own directory (<run>/model-batch-predict/prediction-...)
        gcs_destination_output_uri_prefix=predictions_uri_prefix,
        workers=workers,
        return_probabilities=return_probabilities,
    )
    collected = CollectPredictionsOp(
        predictions=predicted.outputs["gcs_output_directory"],
        ground_truth=data.outputs["test_data"],
        model=trained.outputs["model"],
        key_column=key_column,
    )
    evaluated = EvaluateOp(
        predictions=collected.outputs["collected"],
        gate_metric=gate_metric,
        gate_threshold=gate_threshold,
        title=title,
    )
    return Steps(prepared, predicted, collected, evaluated)
