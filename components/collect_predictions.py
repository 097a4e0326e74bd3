"""Collect predictions: a batch prediction output read into one table (postprocessing)."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def collect_predictions(
    predictions: Input[Artifact],
    ground_truth: Input[Dataset],
    model: Input[Artifact],
    collected: Output[Dataset],
    key_column: str = "",
    target_column: str = "",
    problem_type: str = "",
    class_labels: List = [],
    max_failed_fraction: float = 0.0,
):
    """Reads a batch prediction output, flattens it and joins it with the ground truth by key.

    Reads ours and Vertex AI's layouts: custom models (``prediction.results-*``, JSONL, CSV or
    Parquet, with ``prediction.errors-*`` and ``prediction.errors_stats-*``) and AutoML
    (``predictions_*.jsonl`` / ``.csv``, ``errors_*.jsonl``). Scalars, score lists and
    ``{classes, scores}`` dicts become a ``predicted`` column plus one ``score_<label>`` column
    per class.

    Args:
        predictions: The output directory (ModelBatchPredictOp's ``gcs_output_directory``).
        ground_truth: The labelled table the instances were prepared from.
        model: The model; its metadata gives the target, problem type and class labels.
        key_column: The key shared by the predictions (``key``) and the ground truth (generated
            from row positions, as Prepare instances does, when the table lacks it).
        target_column: The label column; empty: the model's ``target``.
        problem_type: ``classification`` or ``regression``; empty: the model's.
        class_labels: The classes in score order; empty: the model's ``class_labels``.
        max_failed_fraction: Fail when a larger fraction of the rows has no prediction (failed
            instances or ground-truth rows missing from the output).

    Returns:
        collected: A directory with ``predictions.parquet``, ``predictions.csv``, ``errors.csv``
            and ``summary.json``; metadata ``successful_count``, ``failed_count``,
            ``unpredicted_rows``, ``failed_fraction``, ``class_labels``, ``score_columns``.
    """
    from batchpredict.tasks.collect import run_collect_predictions

    run_collect_predictions(
        predictions=predictions,
        ground_truth=ground_truth,
        model=model,
        collected=collected,
        key_column=key_column,
        target_column=target_column,
        problem_type=problem_type,
        class_labels=class_labels,
        max_failed_fraction=max_failed_fraction,
    )


CollectPredictionsOp = collect_predictions
