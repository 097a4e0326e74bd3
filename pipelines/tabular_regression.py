"""Tabular regression: diabetes, XGBoost, batch prediction, evaluation.

dataset -> train -> prepare instances (with a key) -> ModelBatchPredictOp -> collect -> evaluate.
Run it locally with ``python -m pipelines.run tabular_regression``.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from batchpredict.kfp_artifacts import VertexBatchPredictionJob
from components.dataset import DatasetOp
from components.train import TrainOp
from pipelines._tabular import predict_and_evaluate

PIPELINE_NAME = "tabular-regression"
# xgb.train params for the diabetes data (num_boost_round sets the rounds). A constant, not a
# pipeline parameter: a dict default would compile in an unstable key order.
HYPERPARAMETERS = {"max_depth": 2, "eta": 0.05, "num_boost_round": 100}


class Outputs(NamedTuple):
    """The pipeline's outputs: every step's artifacts, for local runs to print."""

    train_data: Dataset
    test_data: Dataset
    model: Model
    instances: Dataset
    batchpredictionjob: VertexBatchPredictionJob
    predictions_directory: Artifact
    collected: Dataset
    metrics: Metrics
    evaluation_metrics: Artifact
    report: HTML


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Trains an XGBoost regressor, batch predicts the held-out rows and evaluates "
    "the predictions.",
)
def tabular_regression(
    source: str = "diabetes",
    target_column: str = "target",
    test_fraction: float = 0.2,
    seed: int = 42,
    key_column: str = "row_id",
    instances_format: str = "jsonl",
    shards: int = 2,
    predictions_uri_prefix: str = "",
    workers: int = 1,
    min_r2: float = 0.3,
) -> Outputs:
    """Diabetes (or any regression table) through train, batch predict and evaluate.

    Args:
        source: A bundled scikit-learn data set or a CSV / Parquet path.
        target_column: The label column.
        test_fraction: The held-out share, predicted in batch and evaluated.
        seed: The split and training seed.
        key_column: The key that joins predictions back to the labels.
        instances_format: ``jsonl``, ``csv`` or ``parquet``.
        shards: Instance files to write.
        predictions_uri_prefix: Where batch prediction writes; empty: the batch-predict step's own
            directory.
        workers: Local batch prediction worker processes (0: one per core); one suits a few
            hundred rows, where starting a process costs more than predicting.
        min_r2: The quality gate on held-out R2.
    """
    data = DatasetOp(
        source=source, target_column=target_column, test_fraction=test_fraction, seed=seed
    )
    trained = TrainOp(
        train_data=data.outputs["train_data"],
        target_column=target_column,
        framework="xgboost",
        problem_type="regression",
        hyperparameters=HYPERPARAMETERS,
        seed=seed,
    )
    steps = predict_and_evaluate(
        job_display_name=PIPELINE_NAME,
        data=data,
        trained=trained,
        key_column=key_column,
        instances_format=instances_format,
        shards=shards,
        predictions_uri_prefix=predictions_uri_prefix,
        workers=workers,
        return_probabilities=False,
        gate_metric="r2",
        gate_threshold=min_r2,
        title="Tabular regression: held-out batch predictions",
    )
    return Outputs(**steps.outputs(data, trained))
