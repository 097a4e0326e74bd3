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

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchpredict.errors import InstanceError
from batchpredict.instances import Converted, InstanceConfig


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
    """Converted records from one split, and the progress units they consumed."""

    converted: Converted
    work: int = 0

    @property
    def read_count(self) -> int:
        """Records read: instances plus failures."""
        return len(self.converted.instances) + len(self.converted.failures)


class Source(ABC):
    """Plans and reads one input format."""

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


class ShardWriter(ABC):
    """Writes one worker's results and failed instances."""

    @abstractmethod
    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """Writes successful results: each display (instance or key) with its prediction."""

    @abstractmethod
    def write_errors(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Writes failed instances with their ``error: {code, message}``."""

    @abstractmethod
    def close(self) -> None:
        """Flushes and closes the shard."""


class Destination(ABC):
    """Where a job's output goes."""

    @abstractmethod
    def prepare(self) -> None:
        """Creates what workers write into (main process, before work starts)."""

    @abstractmethod
    def shard_writer(self, index: int, count: int) -> ShardWriter:
        """The writer for shard ``index`` of ``count`` (called in the worker)."""

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


__all__ = ["Batch", "Destination", "ShardWriter", "Source", "Split"]
