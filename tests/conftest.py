"""Shared fixtures: small real models and helpers to read a job's output."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import joblib
import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory):
    """Serving-container records of this test run, not the user's (~/.cache) or another run's.

    Every local job removes the containers of recorded jobs that were killed; a shared directory
    would let one test run remove another's orphan before that run's test looks for it.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHPREDICT_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


@pytest.fixture(scope="session")
def sklearn_model_dir(tmp_path_factory, iris) -> str:
    """An iris LogisticRegression saved as model.joblib (Vertex's sklearn layout)."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    d = tmp_path_factory.mktemp("sk_model")
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), d / "model.joblib")
    return str(d)


@pytest.fixture(scope="session")
def sklearn_model(sklearn_model_dir):
    return joblib.load(os.path.join(sklearn_model_dir, "model.joblib"))


def write_jsonl(path: Path, values, raw_lines=()) -> str:
    with open(path, "w") as f:
        for v in values:
            f.write(json.dumps(v) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return str(path)


def read_output(directory: str, result=None) -> dict:
    """Results, error records, errors_stats lines and completion stats of an output directory.

    The stats are not in the directory (it holds only Vertex's files): they come from the job's
    ``result``, else from the completeness marker that Cloud Storage output has beside it.
    """
    results, errors = [], []
    for path in sorted(glob.glob(os.path.join(directory, "prediction.results-*"))):
        with open(path) as f:
            results += [json.loads(line) for line in f]
    for path in sorted(glob.glob(os.path.join(directory, "prediction.errors-*"))):
        with open(path) as f:
            errors += [json.loads(line) for line in f]
    with open(os.path.join(directory, "prediction.errors_stats-00000-of-00001")) as f:
        stats_lines = f.read().splitlines()
    completion = {}
    if result is not None:
        completion = {**result.completion_stats, **result.stats}
    return {"results": results, "errors": errors, "errors_stats": stats_lines, "stats": completion}


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(50, 4)).round(4).tolist()
