"""A small end-to-end example: a scikit-learn model and a JSONL data set, made on the spot.

Nothing is downloaded: the data is scikit-learn's bundled breast cancer set, resampled with a
little noise to the number of rows asked for.
"""

from __future__ import annotations

import os

from batchpredict.result import JobResult
from batchpredict.spec import BatchPredictionJobSpec

EXAMPLE_SEED = 0


def make_example_inputs(workdir: str, rows: int) -> tuple[str, str, list[str]]:
    """Writes ``model/model.joblib`` and ``instances.jsonl`` (objects keyed by ``id``).

    Returns:
        (model directory, instances file, feature names in the model's order).
    """
    import joblib
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    from batchpredict.io.encoding import dumps

    data = load_breast_cancer()
    X, y = data.data, data.target
    names = [n.replace(" ", "_") for n in data.feature_names]
    model_dir = os.path.join(workdir, "model")
    os.makedirs(model_dir, exist_ok=True)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=EXAMPLE_SEED).fit(X, y)
    joblib.dump(model, os.path.join(model_dir, "model.joblib"))
    rng = np.random.default_rng(EXAMPLE_SEED)
    sample = X[rng.integers(0, len(X), rows)] * rng.normal(1.0, 0.01, (rows, X.shape[1]))
    instances = os.path.join(workdir, "instances.jsonl")
    with open(instances, "w") as f:
        for i, row in enumerate(sample.round(4).tolist()):
            f.write(dumps({"id": f"row-{i}", **dict(zip(names, row))}) + "\n")
    return model_dir, instances, names


def run_example(workdir: str, rows: int = 20000) -> JobResult:
    """Runs a keyed batch prediction over the example and prints where the output is."""
    from batchpredict.backends import run_batch_prediction

    model_dir, instances, features = make_example_inputs(workdir, rows)
    spec = BatchPredictionJobSpec(
        job_display_name="example",
        model_display_name="breast_cancer_hgb",
        gcs_source_uris=[instances],
        gcs_destination_output_uri_prefix=os.path.join(workdir, "output"),
        model_uri=model_dir,
        key_field="id",
        instance_type="array",
        included_fields=features,
    )
    result = run_batch_prediction(spec)
    print(f"Output directory: {result.gcs_output_directory}")
    print(f"Completion stats: {result.completion_stats}")
    print(f"Throughput: {result.stats['rows_per_second']:,.0f} rows/s")
    return result
