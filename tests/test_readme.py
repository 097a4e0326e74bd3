"""The README's code snippets do what the README says they do."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")


def python_block(after_heading: str) -> str:
    """The first ```python block after a heading line of the README."""
    text = README.read_text()
    start = text.index(after_heading)
    found = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert found, after_heading
    return found.group(1)


def test_pipeline_snippet_predicts_every_keyed_instance(tmp_path, iris, sklearn_model_dir, capfd):
    from kfp import local

    namespace: dict = {}
    code = compile(
        python_block("### ModelBatchPredictOp in a pipeline"), "README", "exec", dont_inherit=True
    )
    exec(code, namespace)
    X, _ = iris
    names = ["f1", "f2", "f3", "f4"]
    instances = tmp_path / "instances.jsonl"
    instances.write_text(
        "".join(json.dumps({"id": i, **dict(zip(names, r))}) + "\n" for i, r in enumerate(X))
    )
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    namespace["predict"](
        model_dir=sklearn_model_dir,
        instances=str(instances),
        out=str(tmp_path / "out"),
        features=names,
    )
    (out_dir,) = os.listdir(tmp_path / "out")
    lines = []
    for p in sorted((tmp_path / "out" / out_dir).glob("prediction.results-*")):
        lines += [json.loads(line) for line in p.read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == list(range(150))
    assert "instances failed" not in capfd.readouterr().err
