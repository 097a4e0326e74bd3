"""Compiled YAML (component_specs/, pipelines/*.yaml) is what compiling the code gives now."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compiled_specs_are_not_stale():
    env = {k: v for k, v in os.environ.items() if k != "BATCHPREDICT_IMAGE_REGISTRY"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "compile.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_component_module_has_a_committed_spec():
    modules = {
        f[:-3]
        for f in os.listdir(os.path.join(ROOT, "components"))
        if f.endswith(".py") and not f.startswith("_")
    }
    specs = {
        f[:-5] for f in os.listdir(os.path.join(ROOT, "component_specs")) if f.endswith(".yaml")
    }
    assert modules == specs
