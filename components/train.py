"""Train: a scikit-learn or XGBoost model in the layout of Vertex's prebuilt containers."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    model: Output[Model],
    target_column: str = "",
    framework: str = "sklearn",
    algorithm: str = "",
    problem_type: str = "",
    hyperparameters: Dict = {},
    feature_columns: List[str] = [],
    seed: int = 0,
    serving_image_uri: str = "",
):
    """Fits a model and saves it as Vertex AI's prebuilt prediction containers load it.

    The model directory holds ``model.joblib`` (scikit-learn) or ``model.bst`` (XGBoost
    Booster, saved in JSON), fitted on the features as a float array in the recorded order.

    Args:
        train_data: The training table.
        target_column: The label column; empty: the Dataset's ``target_column``.
        framework: ``sklearn`` or ``xgboost``.
        algorithm: scikit-learn: ``logistic_regression`` (classification default),
            ``random_forest``, ``gradient_boosting``, ``ridge`` (regression default),
            ``linear_regression``; XGBoost: ``gbtree``.
        problem_type: ``classification`` or ``regression``; empty: the Dataset's metadata, else
            inferred from the target.
        hyperparameters: Estimator arguments (scikit-learn) or ``xgb.train`` params (XGBoost;
            ``num_boost_round`` sets the rounds).
        feature_columns: The features in order; empty: every column but the target.
        seed: The random seed.
        serving_image_uri: The prediction image to record; empty: the matching Vertex prebuilt
            image (e.g. ``us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5``).

    Returns:
        model: The model directory; metadata ``framework``, ``framework_version``,
            ``feature_names`` (ordered), ``target``, ``class_labels``, ``class_names``,
            ``problem_type`` and ``containerSpec.imageUri``, so it can serve as an
            UnmanagedContainerModel or be uploaded with ModelUploadOp.
    """
    from batchpredict.tasks.train import run_train

    run_train(
        train_data=train_data,
        model=model,
        target_column=target_column,
        framework=framework,
        algorithm=algorithm,
        problem_type=problem_type,
        hyperparameters=hyperparameters,
        feature_columns=feature_columns,
        seed=seed,
        serving_image_uri=serving_image_uri,
    )


TrainOp = train
