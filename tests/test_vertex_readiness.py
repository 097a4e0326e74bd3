"""Every compiled spec is ready for Vertex AI Pipelines and still runs locally.

Parametrized over the files found, so a new pipeline or component spec is covered by itself:
* every pipeline YAML under pipelines/ (and every component spec, which is a pipeline spec too)
  loads into google.cloud.aiplatform.PipelineJob without submitting;
* every image reference in every spec is pinned (a tag other than ``latest``, or a digest), and
  our own steps use component_image() exactly;
* nothing in a spec needs a placeholder that only Vertex resolves (kfp.local crashes on them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchpredict.image import IMAGE_NAME, component_image

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_FILES = sorted((ROOT / "pipelines").glob("*.yaml"))
COMPONENT_FILES = sorted((ROOT / "component_specs").glob("*.yaml"))
SPEC_FILES = PIPELINE_FILES + COMPONENT_FILES


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a compiled spec: the PipelineSpec, then any platform spec."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree (keys included), with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}/{key}", str(key)
            yield from _strings(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


# ---- PipelineJob ----------------------------------------------------------------------------


_DUMMY_BY_TYPE = {
    "STRING": "x",
    "NUMBER_INTEGER": 1,
    "NUMBER_DOUBLE": 1.0,
    "BOOLEAN": True,
    "LIST": [],
    "STRUCT": {},
}


def _required_parameter_values(spec: dict[str, Any]) -> dict[str, Any]:
    """Stand-in values for the root's parameters that have no default."""
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {
        name: _DUMMY_BY_TYPE[p["parameterType"]]
        for name, p in params.items()
        if "defaultValue" not in p and not p.get("isOptional")
    }


@pytest.mark.parametrize("path", SPEC_FILES, ids=_ids(SPEC_FILES))
def test_spec_loads_into_vertex_pipeline_job(path: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    spec = _documents(path)[0]
    job = aiplatform.PipelineJob(
        display_name=f"readiness-{path.stem}",
        template_path=str(path),
        pipeline_root="gs://bucket/root",
        project="p",
        location="us-central1",
        parameter_values=_required_parameter_values(spec),
        credentials=AnonymousCredentials(),  # builds the request; never calls the API
        enable_caching=False,
    )
    request = job._gca_resource  # what submit() would send
    assert request.runtime_config.gcs_output_directory == "gs://bucket/root"
    assert request.pipeline_spec["pipelineInfo"]["name"] == spec["pipelineInfo"]["name"]
    assert job.job_id.startswith(spec["pipelineInfo"]["name"])


def test_every_pipeline_module_has_its_compiled_yaml() -> None:
    # A pipeline without its YAML would escape the checks here; `make compile` writes it.
    import importlib

    from kfp.dsl.graph_component import GraphComponent

    missing = []
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"pipelines.{path.stem}")
        defines_pipeline = any(
            isinstance(v, GraphComponent) and v.pipeline_func.__module__ == module.__name__
            for v in vars(module).values()
        )
        if defines_pipeline and not path.with_suffix(".yaml").exists():
            missing.append(path.name)
    assert not missing, f"pipelines without compiled YAML (run `make compile`): {missing}"


# ---- images ---------------------------------------------------------------------------------


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _image_problem(ref: str) -> str | None:
    """Why ``ref`` is not pinned, or None."""
    if _DIGEST.search(ref):
        return None
    last = ref.rsplit("/", 1)[-1]  # a registry host may carry a port: host:5000/name:tag
    if ":" not in last:
        return "has no tag (it means :latest)"
    tag = last.split(":", 1)[1]
    if tag == "latest":
        return "uses :latest"
    if "{{" in ref:
        return "is computed at run time"
    return None


def _images(path: Path) -> list[tuple[str, str]]:
    spec = _documents(path)[0]
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return [
        (name, executor["container"]["image"])
        for name, executor in executors.items()
        if "container" in executor
    ]


# Vertex AI's prebuilt prediction images (a model's serving container, not a pipeline step) are
# published under :latest only, with the framework version in the name (sklearn-cpu.1-3); a spec
# may name one as a model's serving image. Nothing else may say :latest.
_PREBUILT_SERVING = re.compile(
    r"^([a-z0-9-]+-)?docker\.pkg\.dev/vertex-ai/prediction/[\w.-]+:latest$"
)
_LATEST = re.compile(r"[\w./-]+:latest\b")


@pytest.mark.parametrize("path", SPEC_FILES, ids=_ids(SPEC_FILES))
def test_every_image_is_pinned(path: Path) -> None:
    problems = [
        f"step {name}: {image} {why}"
        for name, image in _images(path)
        if (why := _image_problem(image))
    ]
    for doc in _documents(path):
        for where, text in _strings(doc):
            for ref in _LATEST.findall(text):
                if not _PREBUILT_SERVING.match(ref.strip("`'\"")):
                    problems.append(f"{where}: {ref} uses :latest")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", SPEC_FILES, ids=_ids(SPEC_FILES))
def test_our_steps_use_the_component_image(path: Path) -> None:
    ours = [image for _, image in _images(path) if image.rsplit("/", 1)[-1].startswith(IMAGE_NAME)]
    expected = component_image(registry="").rsplit("/", 1)[-1]
    wrong = [image for image in ours if image.rsplit("/", 1)[-1] != expected]
    assert not wrong, f"expected {expected} (run `make compile`), got {wrong}"


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("batchpredict:0.1.0", True),
        ("us-central1-docker.pkg.dev/p/r/batchpredict:0.1.0", True),
        ("localhost:5000/batchpredict:0.1.0", True),
        ("python@sha256:" + "a" * 64, True),
        ("batchpredict", False),
        ("localhost:5000/batchpredict", False),
        ("python:latest", False),
        ("gcr.io/p/img:latest", False),
    ],
)
def test_image_pinning_rule(ref: str, pinned: bool) -> None:
    assert (_image_problem(ref) is None) == pinned


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest", True),
        ("e.g. ``europe-docker.pkg.dev/vertex-ai/prediction/xgboost-cpu.1-7:latest``", True),
        ("python:latest", False),
        ("us-docker.pkg.dev/my-project/repo/batchpredict:latest", False),
    ],
)
def test_latest_rule_allows_only_vertex_prebuilt_serving_images(text: str, allowed: bool) -> None:
    refs = _LATEST.findall(text)
    assert refs
    assert all(_PREBUILT_SERVING.match(r.strip("`'\"")) for r in refs) == allowed


# ---- placeholders ---------------------------------------------------------------------------


def _local_placeholders() -> set[str]:
    """The run-level placeholders kfp.local resolves (kfp/local/placeholder_utils.py)."""
    from kfp import dsl

    return {
        dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        dsl.PIPELINE_TASK_ID_PLACEHOLDER,
        dsl.PIPELINE_ROOT_PLACEHOLDER,
        dsl.WORKSPACE_PATH_PLACEHOLDER,
    }


# {{$.name}}: run-level placeholders. {{$}}, {{$.inputs...}}, {{$.outputs...}} and
# {{$.outputMetadataUri}} are task I/O, which kfp.local resolves.
_RUN_PLACEHOLDER = re.compile(r"\{\{\$\.(?!inputs\b|outputs\b|outputMetadataUri\b)[A-Za-z_]\w*\}\}")


def _vertex_only(text: str) -> list[str]:
    return [p for p in _RUN_PLACEHOLDER.findall(text) if p not in _local_placeholders()]


def _vertex_only_uses(spec: dict[str, Any]) -> list[str]:
    """Where a spec would hand kfp.local a placeholder only Vertex resolves.

    A component input's default counts only when a task of that component leaves the input
    unset (a default that every caller overrides is never used), and a standalone component
    spec, whose root is the component, always counts.
    """
    problems = []
    components = spec.get("components", {})
    defaults: dict[tuple[str, str], list[str]] = {}
    default_paths = set()
    for comp_name, comp in [("root", spec.get("root", {})), *components.items()]:
        params = comp.get("inputDefinitions", {}).get("parameters", {})
        for name, param in params.items():
            found = _vertex_only(str(param.get("defaultValue", "")))
            if found:
                defaults[(comp_name, name)] = found
                default_paths.add((comp_name, name))
    for (comp_name, name), found in defaults.items():
        if comp_name == "root":
            problems.append(f"pipeline parameter {name!r} defaults to {found}")
            continue
        for dag_name, dag_owner in [("root", spec.get("root", {})), *components.items()]:
            for task_name, task in dag_owner.get("dag", {}).get("tasks", {}).items():
                if task.get("componentRef", {}).get("name") != comp_name:
                    continue
                if name not in task.get("inputs", {}).get("parameters", {}):
                    problems.append(
                        f"task {task_name!r} in {dag_name} leaves {name!r} at its default {found}"
                    )

    def is_default(where: str) -> bool:
        return any(
            where == f"/components/{c}/inputDefinitions/parameters/{n}/defaultValue"
            or where == f"/root/inputDefinitions/parameters/{n}/defaultValue"
            for c, n in default_paths
        )

    for where, text in _strings(spec):
        found = _vertex_only(text)
        if found and not is_default(where):
            problems.append(f"{where}: {found}")
    return problems


@pytest.mark.parametrize("path", SPEC_FILES, ids=_ids(SPEC_FILES))
def test_no_placeholder_only_vertex_resolves(path: Path) -> None:
    problems = [p for doc in _documents(path) for p in _vertex_only_uses(doc)]
    assert not problems, "\n".join(problems)


def test_placeholder_rule_catches_what_kfp_local_cannot_resolve() -> None:
    project = "{{$.pipeline_google_cloud_project_id}}"
    comp = {"inputDefinitions": {"parameters": {"project": {"defaultValue": project}}}}

    def pipeline(task_inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "components": {"comp-upload": comp},
            "root": {
                "dag": {
                    "tasks": {
                        "upload": {
                            "componentRef": {"name": "comp-upload"},
                            "inputs": {"parameters": task_inputs},
                        }
                    }
                }
            },
        }

    # the default is used: flagged; the caller passes project: fine
    assert _vertex_only_uses(pipeline({}))
    assert not _vertex_only_uses(pipeline({"project": {"runtimeValue": {"constant": "p"}}}))
    # a standalone component spec: its root has the default
    assert _vertex_only_uses({"root": comp})
    # anywhere else (an argument, a constant): flagged
    created = "{{$.pipeline_job_create_time_utc}}"
    assert _vertex_only_uses({"deploymentSpec": {"executors": {"e": {"args": [created]}}}})
    # what kfp.local resolves is fine
    assert not _vertex_only_uses(
        {"args": ["{{$}}", "{{$.pipeline_job_name}}", "{{$.inputs.parameters['x']}}"]}
    )
