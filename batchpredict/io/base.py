"""The interfaces the engine sees: what a source plans and reads, what a destination writes.

Every format module implements these and imports only this module, the filesystem layer
(``io/fs.py``) and the JSON encoder (``io/encoding.py``). The engine imports nothing else of
``io/``.

A source plans its input as splits (picklable units of work: a byte range of a line file, a
Parquet row group, a whole TFRecord file) in the main process; a worker then reads a split in
batches of at most ``batch_size`` records, each already converted by Vertex's instance rules.
A destination lives in the main process: it picks the output location, hands each worker a
ShardWriter for its shard, and at the end writes the summaries and publishes the output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from batchpredict.errors import InstanceError
from batchpredict.instances import Converted, InstanceConfig
from batchpredict.io import fs

# The job inputs a format reads from or writes to (BatchPredictionJobSpec field names).
GCS_SOURCE = "gcs_source_uris"
BIGQUERY_SOURCE = "bigquery_source_input_uri"
GCS_DESTINATION = "gcs_destination_output_uri_prefix"
BIGQUERY_DESTINATION = "bigquery_destination_output_uri"


@dataclass(frozen=True)
class Split:
    """A unit of work: part of one input file.

    Attributes:
        uri: the file.
        start: first byte (line files) or row group (Parquet).
        end: end byte, exclusive (line files); -1 for the whole file.
        weight: its size in progress units (bytes, or rows for Parquet).
    """

    uri: str
    start: int = 0
    end: int = -1
    weight: int = 0


@dataclass
class Batch:
    """Converted records from one split, and the progress units they consumed.

    ``locate``, where the source can tell, maps a record's position in the batch to where it came
    from (``{"uri": ..., "line": N}``; ``"row"`` or ``"record"`` for formats without lines); it is
    called only for failed instances.
    """

    converted: Converted
    work: int = 0
    locate: Callable[[int], dict[str, Any]] | None = None

    @property
    def read_count(self) -> int:
        """Records read: instances plus failures."""
        return len(self.converted.instances) + len(self.converted.failures)

    def locate_failures(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Sets each predict failure's ``source`` from its position among the instances."""
        if self.locate is None or not failures:
            return
        conv = self.converted
        records = conv.instance_records(len(conv.instances) + len(conv.failures))
        for _, err in failures:
            if 0 <= err.row < len(records):
                err.source = self.locate(records[err.row])


class Source(ABC):
    """Plans and reads one input format.

    A subclass states what its format can do in its class attributes; ``io/formats.py`` lists the
    classes, and validation and the Vertex request builder ask it.
    """

    #: The ``instances_format`` it reads.
    format: ClassVar[str] = ""
    #: The job input it reads: files (``gcs_source_uris``) or a table
    #: (``bigquery_source_input_uri``).
    input_field: ClassVar[str] = GCS_SOURCE
    #: Records have named fields, so key_field, included_fields and excluded_fields apply.
    named_fields: ClassVar[bool] = True
    #: instance_type='object' can be honoured.
    object_instances: ClassVar[bool] = True
    #: What its instances are when they cannot be objects (named in the refusal).
    instances_are: ClassVar[str] = "objects"
    #: Vertex AI batch prediction reads it too.
    vertex: ClassVar[bool] = True
    #: Batches are Arrow record batches (Parquet, BigQuery's Storage Read API): numeric columns
    #: reach a model that takes arrays as one 2-D array, with no Python object per value.
    columnar: ClassVar[bool] = False

    @classmethod
    def for_input(cls, location: Any, cfg: InstanceConfig, project: str = "") -> Source:
        """The source over a job's input: ``location`` is the value of its ``input_field``.

        Files: the URIs, wildcards expanded (each must match a file).
        """
        return cls(fs.expand_uris(location), cfg)

    def __init__(self, uris: list[str], cfg: InstanceConfig) -> None:
        """Keeps the (already expanded) input files and the instance config."""
        self.uris = uris
        self.cfg = cfg

    @abstractmethod
    def splits(self) -> list[Split]:
        """The units of work, planned in the main process."""

    @abstractmethod
    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Reads ``split`` in converted batches of at most ``batch_size`` records."""


def listed(values: Any) -> list[Any]:
    """A batch's displays or predictions as a list.

    A NumPy array (rows read in bulk) becomes its rows, as ``tolist()`` gives them; a list stays.
    """
    return values.tolist() if hasattr(values, "tolist") else values


class ShardWriter(ABC):
    """Writes one worker's results and failed instances.

    A subclass states what its format can do in its class attributes (see ``io/formats.py``).
    """

    #: The ``predictions_format`` it writes.
    format: ClassVar[str] = ""
    #: The job input naming the destination: a directory (``gcs_destination_output_uri_prefix``)
    #: or BigQuery (``bigquery_destination_output_uri``).
    output_field: ClassVar[str] = GCS_DESTINATION
    #: What its results files' names end with in an output directory (none for JSONL).
    extension: ClassVar[str] = ""
    #: Rows can carry ``key`` (key_field) instead of the instance.
    keys: ClassVar[bool] = True
    #: Vertex AI batch prediction writes it too.
    vertex: ClassVar[bool] = True

    @abstractmethod
    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """Writes successful results: each display (instance or key) with its prediction.

        Either may be a NumPy array (rows read in bulk, a model's output); ``listed`` gives its
        rows for writers that go row by row.
        """

    @abstractmethod
    def write_errors(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Writes failed instances with their ``error: {code, message}``."""

    @abstractmethod
    def close(self) -> None:
        """Flushes and closes the shard."""


@dataclass(frozen=True)
class OutputPlan:
    """What a job says about its output, for a Destination to plan it.

    Attributes:
        uri: the value of the writer's ``output_field`` (a prefix, or a BigQuery URI).
        writer: the ShardWriter class of the job's ``predictions_format``.
        model_display_name: names the output (directory or dataset).
        directory_name: a fixed output directory name ("" = Vertex's timestamped name).
        project: the project that runs (and pays for) the writes.
        started: the job's start time (names the output).
        key_mode: rows carry ``key`` instead of the instance.
    """

    uri: str
    writer: type[ShardWriter]
    model_display_name: str
    directory_name: str = ""
    project: str = ""
    started: dt.datetime = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc)
    )
    key_mode: bool = False


class Destination(ABC):
    """Where a job's output goes."""

    @classmethod
    @abstractmethod
    def for_output(cls, plan: OutputPlan) -> Destination:
        """The destination of a job's output."""

    def use_source(self, source: Source) -> None:
        """Learns what it needs from the job's planned source (called after ``splits``).

        Default: nothing. A BigQuery destination keeps a BigQuery source's column types.
        """
        return None

    @abstractmethod
    def prepare(self) -> None:
        """Creates what workers write into (main process, before work starts)."""

    @abstractmethod
    def shard_writer(self, index: int, count: int) -> ShardWriter:
        """The writer of part ``index`` (unique in the job; ``count``: the workers, a hint).

        Called in a worker process, once per process; parts become the shards at commit.
        """

    @abstractmethod
    def discard_shard(self, index: int) -> None:
        """Deletes what part ``index`` wrote (its worker died; its work is redone)."""

    @abstractmethod
    def commit(self, errors_stats: dict[str, int], completion_stats: dict[str, Any]) -> None:
        """Writes the summaries and publishes the output."""

    @abstractmethod
    def abort(self) -> None:
        """Removes partial output after a job-level failure."""

    @property
    @abstractmethod
    def location(self) -> str:
        """The final output location (directory URI)."""

    @property
    def errors_location(self) -> str:
        """Where failed instances are written, for messages (a file pattern or a table)."""
        return self.location

    @property
    def dataset_uri(self) -> str:
        """``bq://project.dataset`` of BigQuery output; empty for other destinations."""
        return ""

    @property
    def table_name(self) -> str:
        """The predictions table of BigQuery output; empty for other destinations."""
        return ""


__all__ = ["Batch", "Destination", "OutputPlan", "ShardWriter", "Source", "Split"]
