"""Runs an example pipeline locally with kfp.local and prints what came out.

Usage:
    python -m pipelines.run tabular_classification [--cache] [--runner subprocess|docker]
        [--pipeline-root local_outputs] [--param name=value ...] [--verbose]

Prints the metrics, the batch prediction job's completion stats and where every output is. kfp's
step logs go to ``<pipeline_root>/<run>.log`` (``--verbose`` prints them as they come); when a
step fails, its error line, the run directory and the report path are printed and the exit code
is 1. With ``--cache`` (kfp.local's opt-in caching), a rerun with the same arguments reuses every
step's outputs, batch prediction included: each step's inputs are the cached outputs of the steps
before it, so their cache keys match.

A pipeline module may define ``local_arguments(workdir) -> dict``: the default arguments of a local
run, under ``--param`` (``vertex_custom_model`` writes a small model and instances there and runs
its local form). A module that runs on Vertex AI only sets ``VERTEX_ONLY = "<why, and what to run
instead>"``: it is listed apart and refused with that text (``custom_model_training_vertex``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
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
    log_path: str = ""
    failed_instances: list[str] = field(default_factory=list)
    steps_run: list[str] = field(default_factory=list)  # step directories, nested steps too


class PipelineFailed(Exception):
    """A step failed; carries what the runner prints about it."""

    def __init__(self, task: str, error: str, run_directory: str, report: str, log_path: str):
        """Keeps the failing step, its error line and where the run's files are."""
        super().__init__(f"Step {task} failed: {error}")
        self.task = task
        self.error = error
        self.run_directory = run_directory
        self.report = report
        self.log_path = log_path


def _pipeline_modules() -> list[str]:
    """The pipeline modules in pipelines/ (helpers, named ``_*``, and the runner excluded)."""
    return sorted(
        p.stem
        for p in (ROOT / "pipelines").glob("*.py")
        if not p.stem.startswith("_") and p.stem != "run"
    )


def _vertex_only_reason(name: str) -> str:
    """The module's ``VERTEX_ONLY`` text ("" when it runs locally), read without importing it."""
    tree = ast.parse((ROOT / "pipelines" / f"{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "VERTEX_ONLY" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return ""


def available_pipelines() -> list[str]:
    """The pipelines this runner runs locally (Vertex-only ones excluded)."""
    return [name for name in _pipeline_modules() if not _vertex_only_reason(name)]


def vertex_only_pipelines() -> dict[str, str]:
    """The pipelines that run on Vertex AI only: name -> why, and what to run instead."""
    reasons = {name: _vertex_only_reason(name) for name in _pipeline_modules()}
    return {name: why for name, why in reasons.items() if why}


def load_pipeline(name: str):
    """The ``@dsl.pipeline`` defined in ``pipelines/<name>.py``."""
    from kfp.dsl.graph_component import GraphComponent

    vertex_only = vertex_only_pipelines()
    if name in vertex_only:
        raise SystemExit(
            f"Pipeline {name!r} runs on Vertex AI only, not locally: {vertex_only[name]}"
        )
    if name not in available_pipelines():
        raise SystemExit(f"No pipeline {name!r}; available: {', '.join(available_pipelines())}.")
    module = importlib.import_module(f"pipelines.{name}")
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
    verbose: bool = True,
) -> RunSummary:
    """Runs pipeline ``name`` under kfp.local and returns its outputs and what ran.

    Args:
        name: the module name in pipelines/.
        params: pipeline arguments, over the module's ``local_arguments(workdir)`` when it has
            one.
        cache: enable kfp.local caching (entries under ``<pipeline_root>/.kfp_cache``).
        runner: ``subprocess`` (this interpreter, ``use_venv=False``) or ``docker`` (the
            component image).
        pipeline_root: where kfp.local writes the run's outputs.
        verbose: print kfp's step logs as they come; else they go to
            ``<pipeline_root>/<run>.log`` only.

    Returns:
        The outputs and, from the run directory, which tasks executed (the others hit the cache).

    Raises:
        PipelineFailed: a step failed (its error line, the run directory, the report path).
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
    make_arguments = getattr(importlib.import_module(f"pipelines.{name}"), "local_arguments", None)
    if make_arguments is not None:  # its local defaults, under what the caller gave
        params = {**make_arguments(os.path.join(root, f"{name}_inputs")), **(params or {})}
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
    log = _Tee(sys.stdout if verbose else None)
    task, failure = None, None
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # type: ignore[type-var]
        try:
            task = pipeline(**(params or {}))
        except RuntimeError as err:  # kfp.local: "Task 'x' finished with status FAILURE"
            failure = err
    wall = time.monotonic() - started
    new_runs = sorted(d for d in set(os.listdir(root)) - before if d.startswith(run_prefix))
    run_dir = os.path.join(root, new_runs[-1]) if new_runs else ""
    log_path = f"{run_dir or os.path.join(root, run_prefix + 'run')}.log"
    with open(log_path, "w") as f:
        f.write(log.getvalue())
    text = log.getvalue()
    if failure is not None:
        task_name = _failed_task(str(failure), text)
        raise PipelineFailed(
            task_name,
            _error_line(text, task_name) or str(failure).strip().splitlines()[-1],
            run_dir,
            _report_path(run_dir),
            log_path,
        ) from failure
    executed = sorted(os.listdir(run_dir)) if run_dir else []
    tasks = sorted(pipeline.pipeline_spec.root.dag.tasks)
    outputs = dict(task.outputs) if task is not None else {}
    return RunSummary(
        pipeline=name,
        outputs=outputs,
        tasks=tasks,
        executed=[t for t in tasks if t in executed],
        cached=[t for t in tasks if t not in executed] if cache else [],
        steps_run=[d for d in executed if os.path.isdir(os.path.join(run_dir, d))],
        run_directory=run_dir,
        wall_seconds=wall,
        log_path=log_path,
        failed_instances=_failed_instance_blocks(text),
    )


class _Tee(io.StringIO):
    """Keeps everything written; also passes it on to ``echo`` when given (--verbose)."""

    def __init__(self, echo: Any = None) -> None:
        super().__init__()
        self.echo = echo

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
            self.echo.flush()
        return super().write(text)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a Python traceback: "package.module.ErrorType: message".
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*?:\s*\S")


def _failed_task(message: str, log: str) -> str:
    """The failed step: kfp's "Inner task failed: 'x'", else the log's FAILURE line."""
    found = re.search(r"Inner task failed: '([\w-]+)'", _ANSI.sub("", message))
    found = found or re.search(r"Task '([\w-]+)' finished with status FAILURE", _ANSI.sub("", log))
    return found.group(1) if found else "(unknown)"


def _error_line(log: str, task: str) -> str:
    """The failing step's error: the last exception line it printed."""
    lines = _ANSI.sub("", log).splitlines()
    start = max((i for i, ln in enumerate(lines) if f"Executing task '{task}'" in ln), default=0)
    errors = [ln.strip() for ln in lines[start:] if _EXCEPTION_LINE.match(ln.strip())]
    return errors[-1] if errors else ""


def _failed_instance_blocks(log: str) -> list[str]:
    """The batch prediction steps' failed-instance summaries (see backends/local.py)."""
    blocks, current = [], None
    for line in _ANSI.sub("", log).splitlines():
        stripped = line.strip()
        if re.match(r"batchpredict: \d+ of \d+ instances failed", stripped):
            current = [stripped]
            blocks.append(current)
        elif (
            current is not None
            and stripped
            and (
                line.startswith(("  ", "\t"))
                or stripped.startswith(("Failed instances", "Hint:", "..."))
            )
        ):
            current.append(stripped)
        else:
            current = None
    return ["\n".join(b) for b in blocks]


def _report_path(run_dir: str) -> str:
    """The run's HTML report, when the evaluate step wrote one."""
    if not run_dir:
        return ""
    for dirpath, _, files in os.walk(run_dir):
        for f in files:
            if f.endswith(".html"):
                return os.path.join(dirpath, f)
    return ""


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


def _batch_prediction_jobs(summary: RunSummary) -> list[dict[str, Any]]:
    """The batchpredictionjob metadata of every step that ran, from its executor_output.json."""
    found = []
    for step in summary.steps_run:
        path = os.path.join(summary.run_directory, step, "executor_output.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            artifacts = json.load(f).get("artifacts", {})
        for artifact in artifacts.get("batchpredictionjob", {}).get("artifacts", []):
            found.append(artifact.get("metadata", {}))
    return found


def report(summary: RunSummary) -> str:
    """The text printed after a run: metrics, batch prediction stats, output locations."""
    lines = [f"\nPipeline {summary.pipeline} finished in {summary.wall_seconds:.1f} s."]
    nested = [s for s in summary.steps_run if s not in summary.tasks]
    if nested:  # steps inside conditions: name what ran
        lines.append(f"Steps executed: {', '.join(summary.steps_run)}")
    else:
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
    jobs = [job.metadata] if job is not None else []
    if not jobs:  # not a pipeline output: read it from the steps that ran
        jobs = _batch_prediction_jobs(summary)
    for meta in jobs:
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
        if meta.get("gcsOutputDirectory") and "batchpredictionjob" not in summary.outputs:
            lines.append(f"  output directory {meta['gcsOutputDirectory']}")
    if summary.outputs:
        lines.append("\nOutputs:")
    for name in _output_order(summary.pipeline, summary.outputs):
        artifact = summary.outputs[name]
        uri = getattr(artifact, "uri", None)
        lines.append(f"  {name:<24} {uri if uri is not None else artifact}")
    for block in summary.failed_instances:
        lines.append("\n" + block)
    if summary.run_directory:
        lines.append(f"\nRun directory: {summary.run_directory}")
    html = summary.outputs.get("report")
    if html is not None:
        lines.append(f"Report: file://{html.uri}")
    if summary.log_path:
        lines.append(f"Step logs: {summary.log_path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parses the command line, runs the pipeline and prints the summary; 1 when a step failed."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run",
        description=__doc__.splitlines()[0],
        epilog="examples:\n"
        "  python -m pipelines.run tabular_classification\n"
        "  python -m pipelines.run tabular_regression --param algorithm=xgboost --verbose\n"
        "  python -m pipelines.run vertex_custom_model   # its local form, on a generated model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "pipeline",
        metavar="PIPELINE",
        help=f"module name in pipelines/: {', '.join(available_pipelines())} (on Vertex AI only, "
        f"not run here: {', '.join(vertex_only_pipelines())})",
    )
    parser.add_argument("--cache", action="store_true", help="enable kfp.local caching")
    parser.add_argument("--runner", choices=RUNNERS, default="subprocess")
    parser.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT)
    parser.add_argument(
        "--verbose", action="store_true", help="print kfp's step logs (else only to the run's log)"
    )
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
    try:
        summary = run_pipeline(
            args.pipeline,
            params=params,
            cache=args.cache,
            runner=args.runner,
            pipeline_root=args.pipeline_root,
            verbose=args.verbose,
        )
    except PipelineFailed as failed:
        print(f"\nPipeline {args.pipeline} failed at step {failed.task}:", file=sys.stderr)
        print(f"  {failed.error}", file=sys.stderr)
        print(f"Run directory: {failed.run_directory or '(none created)'}", file=sys.stderr)
        if failed.report:
            print(f"Report: file://{failed.report}", file=sys.stderr)
        print(f"Full log: {failed.log_path}", file=sys.stderr)
        return 1
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
