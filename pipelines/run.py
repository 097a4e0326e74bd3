"""Runs an example pipeline locally with kfp.local and prints what came out.

Usage:
    python -m pipelines.run tabular_classification [--cache] [--runner subprocess|docker]
        [--pipeline-root local_outputs] [--param name=value ...]

Prints the metrics, the batch prediction job's completion stats and where every output is. With
``--cache`` (kfp.local's opt-in caching), a rerun with the same arguments reuses every step's
outputs, batch prediction included: each step's inputs are the cached outputs of the steps before
it, so their cache keys match.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PIPELINE_ROOT = "local_outputs"
RUNNERS = ("subprocess", "docker")


@dataclass
class RunSummary:
    """One local pipeline run."""

    pipeline: str
    outputs: dict[str, Any]
    tasks: list[str]
    executed: list[str]
    run_directory: str
    wall_seconds: float
    cached: list[str] = field(default_factory=list)


def load_pipeline(name: str):
    """The ``@dsl.pipeline`` defined in ``pipelines/<name>.py``."""
    from kfp.dsl.graph_component import GraphComponent

    try:
        module = importlib.import_module(f"pipelines.{name}")
    except ModuleNotFoundError as e:
        available = sorted(
            p.stem for p in (ROOT / "pipelines").glob("*.py") if p.stem not in ("__init__", "run")
        )
        raise SystemExit(f"No pipeline {name!r}; available: {', '.join(available)}.") from e
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, GraphComponent) and v.pipeline_func.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise SystemExit(f"pipelines/{name}.py should define one pipeline; found {len(found)}.")
    return found[0]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_pipeline(
    name: str,
    params: dict[str, Any] | None = None,
    cache: bool = False,
    runner: str = "subprocess",
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
) -> RunSummary:
    """Runs pipeline ``name`` under kfp.local and returns its outputs and what ran.

    Args:
        name: the module name in pipelines/.
        params: pipeline arguments.
        cache: enable kfp.local caching (entries under ``<pipeline_root>/.kfp_cache``).
        runner: ``subprocess`` (this interpreter, ``use_venv=False``) or ``docker`` (the
            component image).
        pipeline_root: where kfp.local writes the run's outputs.

    Returns:
        The outputs and, from the run directory, which tasks executed (the others hit the cache).
    """
    from kfp import local

    from batchpredict.image import component_image, docker_runner

    if runner == "subprocess":
        # kfp.local warns for every step whose image name lacks "python"; our steps run in this
        # environment, which has the image's own packages installed, so the warning is noise.
        warnings.filterwarnings(
            "ignore",
            message=f'.*custom or non-Python base image "{re.escape(component_image())}"',
            category=RuntimeWarning,
        )
    if runner not in RUNNERS:
        raise SystemExit(f"Unknown runner {runner!r}; expected one of {', '.join(RUNNERS)}.")
    pipeline = load_pipeline(name)
    root = os.path.abspath(pipeline_root)
    os.makedirs(root, exist_ok=True)
    local.init(
        # docker_runner lets the image's non-root user write to the mounted pipeline root.
        runner=local.SubprocessRunner(use_venv=False)
        if runner == "subprocess"
        else docker_runner(root),
        pipeline_root=root,
        enable_caching=cache,
        raise_on_error=True,
    )
    run_prefix = pipeline.pipeline_spec.pipeline_info.name + "-"
    before = set(os.listdir(root))
    started = time.monotonic()
    task = pipeline(**(params or {}))
    wall = time.monotonic() - started
    new_runs = sorted(d for d in set(os.listdir(root)) - before if d.startswith(run_prefix))
    run_dir = os.path.join(root, new_runs[-1]) if new_runs else ""
    executed = sorted(os.listdir(run_dir)) if run_dir else []
    tasks = sorted(pipeline.pipeline_spec.root.dag.tasks)
    outputs = dict(task.outputs) if task is not None else {}
    return RunSummary(
        pipeline=name,
        outputs=outputs,
        tasks=tasks,
        executed=[t for t in tasks if t in executed],
        cached=[t for t in tasks if t not in executed],
        run_directory=run_dir,
        wall_seconds=wall,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4f}"
    return str(value)


def _metric_order(names: list[str]) -> list[str]:
    from batchpredict.tasks.report import METRIC_LABELS

    known = [n for n in METRIC_LABELS if n in names]
    return known + sorted(n for n in names if n not in known)


def _output_order(pipeline_name: str, outputs: dict[str, Any]) -> list[str]:
    annotation = getattr(load_pipeline(pipeline_name).pipeline_func, "__annotations__", {})
    fields = list(getattr(annotation.get("return"), "_fields", ()))
    return [n for n in fields if n in outputs] + sorted(n for n in outputs if n not in fields)


def report(summary: RunSummary) -> str:
    """The text printed after a run: metrics, batch prediction stats, output locations."""
    lines = [f"\nPipeline {summary.pipeline} finished in {summary.wall_seconds:.1f} s."]
    lines.append(
        f"Steps executed: {len(summary.executed)}/{len(summary.tasks)}"
        + (f"; from cache: {', '.join(summary.cached)}" if summary.cached else "")
    )
    metrics = summary.outputs.get("metrics")
    if metrics is not None:
        lines.append("\nMetrics:")
        lines.extend(
            f"  {k:<18} {_fmt(metrics.metadata[k])}" for k in _metric_order(list(metrics.metadata))
        )
    job = summary.outputs.get("batchpredictionjob")
    if job is not None:
        meta = job.metadata
        stats = meta.get("completionStats", {})
        lines.append("\nBatch prediction:")
        lines.append(
            "  "
            + ", ".join(
                f"{k.replace('_count', '')} {_fmt(stats.get(k))}"
                for k in ("successful_count", "failed_count", "incomplete_count")
            )
        )
        extra = {
            k: meta[k]
            for k in ("readCount", "rowsPerSecond", "elapsedSeconds", "workers", "batchSize")
            if k in meta
        }
        if extra:
            lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in extra.items()))
    lines.append("\nOutputs:")
    for name in _output_order(summary.pipeline, summary.outputs):
        artifact = summary.outputs[name]
        uri = getattr(artifact, "uri", None)
        lines.append(f"  {name:<24} {uri if uri is not None else artifact}")
    if summary.run_directory:
        lines.append(f"\nRun directory: {summary.run_directory}")
    html = summary.outputs.get("report")
    if html is not None:
        lines.append(f"Report: file://{html.uri}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parses the command line, runs the pipeline and prints the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="module name in pipelines/, e.g. tabular_classification")
    parser.add_argument("--cache", action="store_true", help="enable kfp.local caching")
    parser.add_argument("--runner", choices=RUNNERS, default="subprocess")
    parser.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline argument (VALUE parsed as JSON when it is JSON); repeatable",
    )
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param needs NAME=VALUE; got {item!r}")
        params[name] = _parse_value(value)
    summary = run_pipeline(
        args.pipeline,
        params=params,
        cache=args.cache,
        runner=args.runner,
        pipeline_root=args.pipeline_root,
    )
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
