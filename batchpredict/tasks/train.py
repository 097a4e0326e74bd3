"""Train: fit a scikit-learn or XGBoost model and save it as Vertex's prebuilt containers load it.

The model directory holds ``model.joblib`` (scikit-learn; served with ``model.predict``) or
``model.bst`` (an XGBoost Booster, saved in JSON; served with ``booster.predict(xgb.DMatrix(x))``).
The model is fitted on a plain float array in feature order, the shape in which batch prediction
sends instances, so it never depends on column names at serving time. The metadata says what the
model needs: framework and version, feature names in order, target, class labels, and the
matching prebuilt prediction image (``containerSpec.imageUri``), so the directory can be used as an
``UnmanagedContainerModel`` or uploaded to Vertex AI unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.io.tables import read_table
from batchpredict.tasks.contract import (
    CLASSIFICATION,
    REGRESSION,
    check_problem_type,
    infer_problem_type,
)

SKLEARN = "sklearn"
XGBOOST = "xgboost"
FRAMEWORKS = (SKLEARN, XGBOOST)
SKLEARN_MODEL_FILE = "model.joblib"
XGBOOST_MODEL_FILE = "model.bst"

# Vertex AI's prebuilt prediction images (CPU), newest first:
# https://cloud.google.com/vertex-ai/docs/predictions/pre-built-containers
PREBUILT_IMAGE = "{region}-docker.pkg.dev/vertex-ai/prediction/{framework}-cpu.{version}:latest"
PREBUILT_VERSIONS = {
    SKLEARN: ("1.5", "1.3", "1.2", "1.0", "0.24", "0.23", "0.22", "0.20"),
    XGBOOST: ("2.1", "1.7", "1.6", "1.5", "1.4", "1.3", "1.2", "1.1", "0.90", "0.82"),
}
DEFAULT_IMAGE_REGION = "us"

SKLEARN_ALGORITHMS = {
    CLASSIFICATION: ("logistic_regression", "random_forest", "gradient_boosting"),
    REGRESSION: ("ridge", "linear_regression", "random_forest", "gradient_boosting"),
}
XGBOOST_ALGORITHMS = {CLASSIFICATION: ("gbtree",), REGRESSION: ("gbtree",)}
DEFAULT_XGBOOST_ROUNDS = 200
DEFAULT_XGBOOST_PARAMS = {"max_depth": 3, "eta": 0.1, "subsample": 0.9, "nthread": 1}


@dataclass
class TrainResult:
    """The fitted model's directory and its metadata."""

    model_dir: str
    metadata: dict[str, Any]


def prebuilt_image_uri(framework: str, version: str, region: str = DEFAULT_IMAGE_REGION) -> str:
    """The Vertex prebuilt prediction image for ``framework`` at ``version``.

    Vertex publishes images for some minor versions only: this picks the newest one not newer
    than ``version`` (or the oldest published, for a version older than all of them).
    """
    published = PREBUILT_VERSIONS[framework]
    wanted = _version_tuple(version)
    chosen = next((v for v in published if _version_tuple(v) <= wanted), published[-1])
    return PREBUILT_IMAGE.format(
        region=region, framework=framework, version=chosen.replace(".", "-")
    )


def _version_tuple(version: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def feature_matrix(table: pa.Table, feature_names: list[str]) -> np.ndarray:
    """The features as a float64 array in ``feature_names`` order; non-numeric columns refused."""
    missing = [n for n in feature_names if n not in table.column_names]
    if missing:
        raise UserError(
            f"Feature columns {missing} are not in the table; its columns are {table.column_names}."
        )
    columns = []
    for name in feature_names:
        col = table.column(name)
        if not (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)
        ):
            raise UserError(
                f"Feature column {name!r} has type {col.type}; Train fits numeric features only. "
                "Encode it as numbers, or leave it out with feature_columns."
            )
        columns.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
    return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))


def _sklearn_estimator(problem_type: str, algorithm: str, params: dict[str, Any], seed: int):
    from sklearn import ensemble, linear_model
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if problem_type == CLASSIFICATION:
        if algorithm == "logistic_regression":
            return make_pipeline(
                StandardScaler(), linear_model.LogisticRegression(max_iter=1000, **params)
            )
        if algorithm == "random_forest":
            return ensemble.RandomForestClassifier(random_state=seed, **params)
        return ensemble.HistGradientBoostingClassifier(random_state=seed, **params)
    if algorithm == "ridge":
        return make_pipeline(StandardScaler(), linear_model.Ridge(**params))
    if algorithm == "linear_regression":
        return linear_model.LinearRegression(**params)
    if algorithm == "random_forest":
        return ensemble.RandomForestRegressor(random_state=seed, **params)
    return ensemble.HistGradientBoostingRegressor(random_state=seed, **params)


def train_model(
    train_path: str,
    model_dir: str,
    target_column: str,
    framework: str = SKLEARN,
    algorithm: str = "",
    problem_type: str = "",
    hyperparameters: dict[str, Any] | None = None,
    feature_columns: list[str] | None = None,
    seed: int = 0,
    dataset_metadata: dict[str, Any] | None = None,
    serving_image_uri: str = "",
) -> TrainResult:
    """Fits a model on the table at ``train_path`` and saves it into ``model_dir``.

    Args:
        train_path: the training table (Parquet or CSV file, or a directory of them).
        model_dir: the model directory to create.
        target_column: the label column.
        framework: ``sklearn`` or ``xgboost``.
        algorithm: scikit-learn: ``logistic_regression`` (default for classification),
            ``random_forest``, ``gradient_boosting``, ``ridge`` (default for regression),
            ``linear_regression``; XGBoost: ``gbtree`` (the default).
        problem_type: ``classification`` or ``regression``; empty: the data set's metadata,
            else inferred from the target column.
        hyperparameters: passed to the estimator (scikit-learn) or to ``xgb.train`` as params
            (XGBoost; ``num_boost_round`` sets the rounds).
        feature_columns: the features, in order; empty: every column but the target.
        seed: the random seed.
        dataset_metadata: the training Dataset's metadata (problem type, label names).
        serving_image_uri: the prediction image to record; empty: the matching Vertex prebuilt
            image.

    Returns:
        The model directory and its metadata.
    """
    dataset_metadata = dataset_metadata or {}
    hyperparameters = normalize_hyperparameters(hyperparameters or {})
    if framework not in FRAMEWORKS:
        raise UserError(f"Unknown framework={framework!r}; expected one of {list(FRAMEWORKS)}.")
    if not target_column:
        raise UserError("target_column is required: name the label column of the training data.")
    table = read_table(train_path)
    if target_column not in table.column_names:
        raise UserError(
            f"target_column={target_column!r} is not a column of the training data; its columns "
            f"are {table.column_names}."
        )
    problem_type = (
        problem_type
        or dataset_metadata.get("problem_type")
        or infer_problem_type(table.column(target_column))
    )
    check_problem_type(problem_type)
    choices = (SKLEARN_ALGORITHMS if framework == SKLEARN else XGBOOST_ALGORITHMS)[problem_type]
    algorithm = algorithm or choices[0]
    if algorithm not in choices:
        raise UserError(
            f"Unknown algorithm={algorithm!r} for {framework} {problem_type}; expected one of "
            f"{list(choices)}."
        )
    features = list(feature_columns or [c for c in table.column_names if c != target_column])
    if target_column in features:
        raise UserError(f"The target {target_column!r} cannot also be a feature: {features}.")
    x = feature_matrix(table, features)
    y_values = table.column(target_column).to_pylist()
    if any(v is None for v in y_values):
        raise UserError(f"The target column {target_column!r} has missing values; drop those rows.")

    os.makedirs(model_dir, exist_ok=True)
    class_labels: list[Any] = []
    if framework == SKLEARN:
        y = np.asarray(y_values, dtype=np.float64 if problem_type == REGRESSION else None)
        estimator = _sklearn_estimator(problem_type, algorithm, hyperparameters, seed)
        try:
            estimator.fit(x, y)
        except TypeError as e:
            raise UserError(
                f"Invalid hyperparameters {hyperparameters} for {algorithm}: {e}"
            ) from e
        if problem_type == CLASSIFICATION:
            class_labels = [_py(v) for v in estimator.classes_]
        train_score = float(estimator.score(x, y))
        import joblib

        model_file = SKLEARN_MODEL_FILE
        joblib.dump(estimator, os.path.join(model_dir, model_file))
        import sklearn

        version = sklearn.__version__
    else:
        import xgboost as xgb

        rounds = int(hyperparameters.pop("num_boost_round", DEFAULT_XGBOOST_ROUNDS))
        params = {**DEFAULT_XGBOOST_PARAMS, "seed": seed, **hyperparameters}
        if problem_type == CLASSIFICATION:
            class_labels = sorted({_py(v) for v in y_values}, key=_label_sort_key)
            index = {label: i for i, label in enumerate(class_labels)}
            y = np.asarray([index[_py(v)] for v in y_values], dtype=np.float64)
            if len(class_labels) == 2:
                params.setdefault("objective", "binary:logistic")
            else:
                params.setdefault("objective", "multi:softprob")
                params.setdefault("num_class", len(class_labels))
        else:
            y = np.asarray(y_values, dtype=np.float64)
            params.setdefault("objective", "reg:squarederror")
        # No feature names in the DMatrix: Vertex's container predicts on an unnamed DMatrix.
        booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=rounds)
        pred = booster.predict(xgb.DMatrix(x))
        if problem_type == CLASSIFICATION:
            picked = (pred >= 0.5).astype(int) if pred.ndim == 1 else pred.argmax(axis=1)
            train_score = float(np.mean(picked == y))
        else:
            train_score = float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
        model_file = XGBOOST_MODEL_FILE
        # Booster.save_model picks the format from the file extension and has none for ".bst";
        # JSON content is what every XGBoost since 1.0 recognises when it loads model.bst.
        with open(os.path.join(model_dir, model_file), "wb") as f:
            f.write(booster.save_raw("json"))
        version = xgb.__version__
        algorithm = f"{algorithm} ({params['objective']}, {rounds} rounds)"

    label_names = dataset_metadata.get("label_names") or {}
    metadata: dict[str, Any] = {
        "framework": framework,
        "framework_version": version,
        "model_file": model_file,
        "algorithm": algorithm,
        "problem_type": problem_type,
        "feature_names": features,
        "target": target_column,
        "class_labels": class_labels,
        "class_names": [label_names.get(str(c), str(c)) for c in class_labels],
        "hyperparameters": hyperparameters,
        "train_rows": table.num_rows,
        "train_score": round(train_score, 6),
        "containerSpec": {"imageUri": serving_image_uri or prebuilt_image_uri(framework, version)},
    }
    return TrainResult(model_dir=model_dir, metadata=metadata)


def normalize_hyperparameters(params: dict[str, Any]) -> dict[str, Any]:
    """Integral floats back to ints (a KFP ``dict`` parameter turns ``2`` into ``2.0``)."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()}


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _label_sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def run_train(
    *,
    train_data: ArtifactLike,
    model: ArtifactLike,
    target_column: str,
    framework: str = SKLEARN,
    algorithm: str = "",
    problem_type: str = "",
    hyperparameters: dict[str, Any] | None = None,
    feature_columns: list[str] | None = None,
    seed: int = 0,
    serving_image_uri: str = "",
) -> TrainResult:
    """The Train component: fits on ``train_data`` and writes the ``model`` directory."""
    result = train_model(
        train_path=train_data.path,
        model_dir=model.path,
        target_column=target_column or (train_data.metadata or {}).get("target_column", ""),
        framework=framework,
        algorithm=algorithm,
        problem_type=problem_type,
        hyperparameters=hyperparameters,
        feature_columns=feature_columns,
        seed=seed,
        dataset_metadata=dict(train_data.metadata or {}),
        serving_image_uri=serving_image_uri,
    )
    model.metadata.update(result.metadata)
    return result
