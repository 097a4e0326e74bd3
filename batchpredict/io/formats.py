"""The formats this toolkit reads and writes: one registry of source and writer classes.

What a format can do (named fields, object instances, where it reads or writes, whether Vertex AI
has it) is stated on its class; validation (``spec.validate``), the Vertex request builder and the
local backend ask this module. A new format is one class and one line here.
"""

from __future__ import annotations

from typing import Any

from batchpredict.errors import UserError
from batchpredict.instances import InstanceConfig
from batchpredict.io.base import (
    BIGQUERY_DESTINATION,
    GCS_DESTINATION,
    Destination,
    OutputPlan,
    ShardWriter,
    Source,
)
from batchpredict.io.bigquery import BigQueryDestination, BigQueryShardWriter, BigQuerySource
from batchpredict.io.sinks import (
    CsvShardWriter,
    DirectoryDestination,
    JsonlShardWriter,
    ParquetShardWriter,
)
from batchpredict.io.sources import (
    CsvSource,
    FileListSource,
    JsonlSource,
    ParquetSource,
    TFRecordGzipSource,
    TFRecordSource,
)

# instances_format -> the class reading it, in the order messages list them.
SOURCES: tuple[type[Source], ...] = (
    JsonlSource,
    CsvSource,
    TFRecordSource,
    TFRecordGzipSource,
    FileListSource,
    ParquetSource,
    BigQuerySource,
)
# predictions_format -> the class writing it.
WRITERS: tuple[type[ShardWriter], ...] = (
    JsonlShardWriter,
    CsvShardWriter,
    ParquetShardWriter,
    BigQueryShardWriter,
)
# A writer's output_field -> the destination that hands out its shards and publishes them.
DESTINATIONS: dict[str, type[Destination]] = {
    GCS_DESTINATION: DirectoryDestination,
    BIGQUERY_DESTINATION: BigQueryDestination,
}


def _matching(classes: tuple[type[Any], ...], **facts: Any) -> tuple[str, ...]:
    return tuple(
        c.format
        for c in classes
        if all(value is None or getattr(c, name) == value for name, value in facts.items())
    )


def input_formats(input_field: str | None = None, vertex: bool | None = None) -> tuple[str, ...]:
    """The ``instances_format`` names, optionally only those with the given facts."""
    return _matching(SOURCES, input_field=input_field, vertex=vertex)


def output_formats(
    output_field: str | None = None, vertex: bool | None = None, keys: bool | None = None
) -> tuple[str, ...]:
    """The ``predictions_format`` names, optionally only those with the given facts."""
    return _matching(WRITERS, output_field=output_field, vertex=vertex, keys=keys)


def _lookup(classes: tuple[type[Any], ...], name: str, value: str) -> Any:
    for c in classes:
        if c.format == value:
            return c
    shown = ", ".join(repr(c.format) for c in classes)
    raise UserError(f"Unknown {name}={value!r}; expected one of {shown}.")


def source_class(instances_format: str) -> type[Source]:
    """The class reading ``instances_format``.

    Raises:
        UserError: no such format, naming the choices.
    """
    return _lookup(SOURCES, "instances_format", instances_format)


def writer_class(predictions_format: str) -> type[ShardWriter]:
    """The class writing ``predictions_format``.

    Raises:
        UserError: no such format, naming the choices.
    """
    return _lookup(WRITERS, "predictions_format", predictions_format)


def make_source(
    instances_format: str, location: Any, cfg: InstanceConfig, project: str = ""
) -> Source:
    """The source of ``instances_format`` over a job's input (files, or a table reference)."""
    return source_class(instances_format).for_input(location, cfg, project)


def make_destination(predictions_format: str, uri: str, **plan: Any) -> Destination:
    """The destination writing ``predictions_format`` to ``uri`` (a prefix or a BigQuery URI).

    ``plan``: the other fields of :class:`~batchpredict.io.base.OutputPlan`.
    """
    writer = writer_class(predictions_format)
    return DESTINATIONS[writer.output_field].for_output(OutputPlan(uri, writer, **plan))


__all__ = [
    "DESTINATIONS",
    "SOURCES",
    "WRITERS",
    "input_formats",
    "make_destination",
    "make_source",
    "output_formats",
    "source_class",
    "writer_class",
]
