"""Vertex's output naming for custom-trained models.

``<prefix>/prediction-<model-display-name>-<YYYY_MM_DDTHH_MM_SS_mmmZ>/`` holding exactly what
Vertex's holds for a custom model, ``prediction.results-SSSSS-of-NNNNN`` (5-digit, zero-based) and
``prediction.errors_stats-00000-of-00001`` (empty on success), plus, from this toolkit and only when
instances failed, ``prediction.errors-SSSSS-of-NNNNN`` (failed instances with their error).

The completion stats are not in that directory: they are in the job's result and artifacts. On
Cloud Storage, where a directory cannot appear at once, the completeness marker
``<prefix>/.batchpredict/<directory name>.completion_stats.json`` (the stats again) is written once
the directory is complete: its presence says so. A local directory appears at once (a rename).

AutoML models write ``predictions_N.jsonl`` / ``predictions_N.csv`` and ``errors_N.jsonl`` instead;
``io/results.py`` reads both layouts by the names defined here.
"""

from __future__ import annotations

import datetime as dt

RESULTS = "results"
ERRORS = "errors"
ERRORS_STATS = "errors_stats"
ERRORS_STATS_FILE = f"prediction.{ERRORS_STATS}-00000-of-00001"
PREDICTION_DIR_PREFIX = "prediction-"
# AutoML's output files (tabular, image, text models).
AUTOML_RESULTS_GLOBS = ("predictions_*.jsonl", "predictions_*.csv")
AUTOML_ERRORS_GLOBS = ("errors_*.jsonl",)
COMPLETION_STATS_FILE = "completion_stats.json"
# errors_stats: lines for the most frequent causes, then one line counting the other failures.
MAX_ERRORS_STATS_LINES = 100
OTHER_ERRORS_CAUSE = "Other errors (less frequent causes than the lines above)"
# Beside the output directories, hidden: ``<prefix>/.batchpredict/<dir>.completion_stats.json``.
MARKER_DIR = ".batchpredict"
MARKER_SUFFIX = ".completion_stats.json"


def timestamp(now: dt.datetime | None = None) -> str:
    """UTC time as Vertex writes it in directory names: ``2021_03_23T12_05_07_282Z``."""
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return now.strftime("%Y_%m_%dT%H_%M_%S_") + f"{now.microsecond // 1000:03d}Z"


def output_directory_name(model_display_name: str, now: dt.datetime | None = None) -> str:
    """``prediction-<model-display-name>-<timestamp>``."""
    return f"{PREDICTION_DIR_PREFIX}{model_display_name.replace('/', '_')}-{timestamp(now)}"


def shard_name(kind: str, index: int, count: int, extension: str = "") -> str:
    """``prediction.<kind>-SSSSS-of-NNNNN`` plus ``extension``.

    ``extension`` is the results format's (e.g. ``.csv``); none for JSONL, and none for the errors
    shards, which are JSONL whatever the results format.
    """
    return f"prediction.{kind}-{index:05d}-of-{count:05d}{extension}"


def shard_glob(kind: str) -> str:
    """``prediction.<kind>-*``: every shard of ``kind``, whatever its count and extension."""
    return f"prediction.{kind}-*"


def completion_marker(prefix: str, dir_name: str) -> str:
    """The completeness marker of ``<prefix>/<dir_name>``, outside that directory.

    Outside, so the directory holds only Vertex's files: consumers that read every
    ``prediction*`` file in it as results keep working.
    """
    return f"{prefix.rstrip('/')}/{MARKER_DIR}/{dir_name}{MARKER_SUFFIX}"


def errors_stats_lines(counts: dict[str, int], limit: int | None = None) -> str:
    """The errors_stats file: one Python-repr ``(message, count)`` tuple per distinct cause.

    Most frequent first, then by message: workers finish in any order, and the file must not
    depend on which one counted first. At most ``limit`` (MAX_ERRORS_STATS_LINES) causes get
    a line; the failures of the others are counted on one last line, OTHER_ERRORS_CAUSE, so the
    file stays small however many instances failed.
    """
    limit = MAX_ERRORS_STATS_LINES if limit is None else limit
    other = counts.get(OTHER_ERRORS_CAUSE, 0)
    ordered = sorted(
        ((m, n) for m, n in counts.items() if m != OTHER_ERRORS_CAUSE),
        key=lambda item: (-item[1], item[0]),
    )
    other += sum(n for _, n in ordered[limit:])
    lines = ordered[:limit] + ([(OTHER_ERRORS_CAUSE, other)] if other else [])
    return "".join(f"{(message, count)!r}\n" for message, count in lines)
