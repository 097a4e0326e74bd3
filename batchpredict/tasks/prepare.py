"""Prepare instances: turn a table into batch prediction input.

Removes the target column(s) (as Google's TargetFieldDataRemoverOp does), orders the features as
the model expects them, adds a key column when asked (so that results can be joined back, since
batch prediction does not keep the input order), and writes N shards in jsonl, csv or parquet.

A key column that is not in the table is generated as the row's position (0, 1, ...), by the rule
in ``contract.ensure_key_column`` that Collect applies to the ground truth.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from batchpredict.artifacts import ArtifactLike
from batchpredict.errors import UserError
from batchpredict.io.tables import read_table, write_csv, write_jsonl, write_parquet
from batchpredict.tasks.contract import ensure_key_column

INSTANCES_FORMATS = ("jsonl", "csv", "parquet")
FILE_EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
SHARD_NAME = "instances-{index:05d}-of-{count:05d}.{ext}"
SHARD_GLOB = "instances-*.{ext}"
# Where predictions go by default, beside the prepared instances.
PREDICTIONS_DIR_NAME = "batch_predictions"


@dataclass
class PreparedInstances:
    """What Prepare wrote and what batch prediction needs to read it."""

    files: list[str]
    gcs_source_uris: list[str]
    included_fields: list[str]
    key_field: str
    rows: int
    metadata: dict[str, Any] = field(default_factory=dict)


def order_columns(
    table: pa.Table,
    feature_names: list[str],
    target_columns: list[str],
    key_column: str = "",
) -> pa.Table:
    """Drops the targets and returns ``[key] + features`` in the model's order.

    Raises:
        UserError: a feature is missing, or a column is neither a feature, a target nor the key.
    """
    present_targets = [c for c in target_columns if c in table.column_names]
    columns = [c for c in table.column_names if c not in present_targets and c != key_column]
    if not feature_names:
        feature_names = columns
    missing = [c for c in feature_names if c not in table.column_names]
    extra = [c for c in columns if c not in feature_names]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing feature columns {missing}")
        if extra:
            problems.append(f"extra columns {extra} that the model does not take")
        raise UserError(
            "The table does not match the model's features: " + "; ".join(problems) + ". "
            f"The model expects {feature_names}"
            + (f" (targets {target_columns} are removed)" if target_columns else "")
            + ". Fix the table, or list the targets to remove in target_columns."
        )
    ordered = ([key_column] if key_column else []) + list(feature_names)
    return table.select(ordered)


def shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of ``shards`` near-equal contiguous shards (at least one)."""
    shards = max(1, min(shards, rows)) if rows else 1
    base, extra = divmod(rows, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def write_instances(
    table: pa.Table, output_dir: str, instances_format: str, shards: int
) -> list[str]:
    """Writes ``table`` into ``shards`` files in ``output_dir``; returns their paths."""
    if instances_format not in INSTANCES_FORMATS:
        raise UserError(
            f"Unknown instances_format={instances_format!r}; expected one of "
            f"{list(INSTANCES_FORMATS)}."
        )
    if shards < 1:
        raise UserError(f"shards must be >= 1; got {shards}.")
    os.makedirs(output_dir, exist_ok=True)
    ext = FILE_EXTENSIONS[instances_format]
    bounds = shard_bounds(table.num_rows, shards)
    files = []
    for i, (start, stop) in enumerate(bounds):
        path = os.path.join(output_dir, SHARD_NAME.format(index=i, count=len(bounds), ext=ext))
        part = table.slice(start, stop - start)
        if instances_format == "jsonl":
            write_jsonl(part, path)
        elif instances_format == "csv":
            write_csv(part, path)
        else:
            write_parquet(part, path)
        files.append(path)
    return files


def prepare_instances(
    table_path: str,
    output_dir: str,
    feature_names: list[str] | None = None,
    target_columns: list[str] | None = None,
    key_column: str = "",
    instances_format: str = "jsonl",
    shards: int = 1,
    output_uri: str = "",
) -> PreparedInstances:
    """Writes batch prediction instances from the table at ``table_path``.

    Args:
        table_path: the table (Parquet or CSV file, or a directory of them).
        output_dir: the local directory to write the shards into.
        feature_names: the model's features, in order; empty: every column but the targets and
            the key, in table order.
        target_columns: columns to remove (labels); absent ones are ignored.
        key_column: a column to carry as the instance key; generated from the row position when
            the table lacks it. Empty: no key.
        instances_format: ``jsonl`` (one JSON object per line), ``csv`` (header, strings
            quoted) or ``parquet``.
        shards: the number of files (fewer when the table has fewer rows).
        output_uri: the same directory as batch prediction will read it (``gs://...`` on Vertex);
            defaults to ``output_dir``.

    Returns:
        The files, the ``gcs_source_uris`` wildcard, the ``included_fields`` (the feature order,
        to pass with ``instance_type='array'``) and the metadata.
    """
    targets = list(target_columns or [])
    table = read_table(table_path)
    removed = [c for c in targets if c in table.column_names]
    if key_column in targets:
        raise UserError(f"key_column={key_column!r} is also a target column {targets}.")
    table = ensure_key_column(table, key_column)
    table = order_columns(table, list(feature_names or []), targets, key_column)
    features = [c for c in table.column_names if c != key_column]
    files = write_instances(table, output_dir, instances_format, shards)
    base_uri = (output_uri or output_dir).rstrip("/")
    pattern = posixpath.join(base_uri, SHARD_GLOB.format(ext=FILE_EXTENSIONS[instances_format]))
    metadata = {
        "format": instances_format,
        "instances_format": instances_format,
        "rows": table.num_rows,
        "shards": len(files),
        "files": [os.path.basename(f) for f in files],
        "key_field": key_column,
        "included_fields": features,
        "removed_columns": removed,
    }
    return PreparedInstances(
        files=files,
        gcs_source_uris=[pattern],
        included_fields=features,
        key_field=key_column,
        rows=table.num_rows,
        metadata=metadata,
    )


def default_predictions_prefix(instances_uri: str) -> str:
    """Where batch prediction output goes by default: beside the instances directory."""
    return posixpath.join(posixpath.dirname(instances_uri.rstrip("/")), PREDICTIONS_DIR_NAME)


def run_prepare_instances(
    *,
    data: ArtifactLike,
    model: ArtifactLike,
    instances: ArtifactLike,
    key_column: str = "",
    instances_format: str = "jsonl",
    shards: int = 1,
    target_columns: list[str] | None = None,
    predictions_uri_prefix: str = "",
) -> tuple[PreparedInstances, str]:
    """The Prepare instances component.

    Features and target come from the model's metadata (``feature_names``, ``target``), and
    ``target_columns`` adds more columns to remove.

    Returns:
        What was written, and the batch prediction output prefix: ``predictions_uri_prefix``, or
        by default a ``batch_predictions`` directory beside the instances.
    """
    model_meta = model.metadata or {}
    targets = list(target_columns or [])
    model_target = model_meta.get("target") or (data.metadata or {}).get("target_column")
    if model_target and model_target not in targets:
        targets.insert(0, model_target)
    prepared = prepare_instances(
        table_path=data.path,
        output_dir=instances.path,
        output_uri=instances.uri,
        feature_names=list(model_meta.get("feature_names") or []),
        target_columns=targets,
        key_column=key_column,
        instances_format=instances_format,
        shards=shards,
    )
    instances.metadata.update(prepared.metadata)
    prefix = predictions_uri_prefix or default_predictions_prefix(instances.uri)
    return prepared, prefix
