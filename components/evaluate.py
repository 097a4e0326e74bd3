"""Evaluate: classification or regression metrics, an HTML report and a quality gate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def evaluate(
    predictions: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation_metrics: Output[Artifact],
    report: Output[HTML],
    target_column: str = "",
    problem_type: str = "",
    gate_metric: str = "",
    gate_threshold: float = 0.0,
    title: str = "",
):
    """Evaluates collected predictions against the ground truth.

    Classification: accuracy, precision, recall, F1 (macro and per class), log loss, ROC AUC and
    PR AUC when scores exist, confusion matrix and ROC curve. Regression: RMSE, MAE, MAPE, R2,
    RMSLE.

    Args:
        predictions: Collect predictions' output.
        target_column: The label column; empty: the one Collect recorded.
        problem_type: ``classification`` or ``regression``; empty: the one Collect recorded.
        gate_metric: A metric the step must pass, e.g. ``accuracy`` or ``rmse``; empty: no gate.
        gate_threshold: Scores must reach it; errors (``rmse``, ``mae``, ``mape``, ``rmsle``,
            ``log_loss``) must stay at or below it.
        title: The report's title.

    Returns:
        metrics: The metrics by name (KFP ``Metrics``).
        classification_metrics: Confusion matrix and ROC curve (classification only).
        evaluation_metrics: ``metrics.json`` with the keys of Google's
            ``google.ClassificationMetrics`` / ``google.RegressionMetrics``; the same in metadata.
        report: A self-contained HTML report with the metrics and plots.
    """
    from batchpredict.tasks.evaluate import run_evaluate

    run_evaluate(
        predictions=predictions,
        metrics=metrics,
        classification_metrics=classification_metrics,
        evaluation_metrics=evaluation_metrics,
        report=report,
        target_column=target_column,
        problem_type=problem_type,
        gate_metric=gate_metric,
        gate_threshold=gate_threshold,
        title=title,
    )


EvaluateOp = evaluate
