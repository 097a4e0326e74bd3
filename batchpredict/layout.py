"""Vertex's output naming for custom-trained models.

``<prefix>/prediction-<model-display-name>-<YYYY_MM_DDTHH_MM_SS_mmmZ>/`` holding
``prediction.results-SSSSS-of-NNNNN`` (5-digit, zero-based),
``prediction.errors_stats-00000-of-00001`` and, from this toolkit,
``prediction.errors-SSSSS-of-NNNNN`` (failed instances with their error) and
``completion_stats.json``.
"""

from __future__ import annotations

import datetime as dt

RESULTS = "results"
ERRORS = "errors"
ERRORS_STATS_FILE = "prediction.errors_stats-00000-of-00001"
COMPLETION_STATS_FILE = "completion_stats.json"
FORMAT_EXTENSIONS = {"jsonl": "", "csv": ".csv", "parquet": ".parquet"}


def timestamp(now: dt.datetime | None = None) -> str:
    """UTC time as Vertex writes it in directory names: ``2021_03_23T12_05_07_282Z``."""
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return now.strftime("%Y_%m_%dT%H_%M_%S_") + f"{now.microsecond // 1000:03d}Z"


def output_directory_name(model_display_name: str, now: dt.datetime | None = None) -> str:
    """``prediction-<model-display-name>-<timestamp>``."""
    return f"prediction-{model_display_name.replace('/', '_')}-{timestamp(now)}"


def shard_name(kind: str, index: int, count: int, predictions_format: str = "jsonl") -> str:
    """``prediction.<kind>-SSSSS-of-NNNNN`` plus the format's extension (none for JSONL)."""
    ext = FORMAT_EXTENSIONS[predictions_format] if kind == RESULTS else ""
    return f"prediction.{kind}-{index:05d}-of-{count:05d}{ext}"


def errors_stats_lines(counts: dict[str, int]) -> str:
    """The errors_stats file: one Python-repr ``(message, count)`` tuple per distinct message."""
    return "".join(f"{(message, count)!r}\n" for message, count in counts.items())
