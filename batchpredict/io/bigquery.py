"""BigQuery input and output for the local engine, as Vertex AI reads and writes them.

Input (``bigquery_source_input_uri``, ``bq://project.dataset.table``, scheme optional):
1. In the main process the table's schema is read and the instance config checked against its
   columns; a Storage Read API session is opened and each of its streams becomes a split.
2. Workers read their streams as Arrow record batches (bounded: one server message at a time),
   convert rows with Vertex's BigQuery type rules (``arrow_rows``) and ``TableConverter``; a
   batch of numeric columns becomes one array without a Python row (``arrow_rows``).
3. Where the Storage Read API cannot be used (not enabled, or an emulator with no gRPC endpoint)
   the splits are row ranges read page by page with ``tabledata.list`` (REST).

Output (``bigquery_destination_output_uri``):
- ``bq://project``: a new dataset ``prediction_<model>_<YYYY_MM_DDThh_mm_ss_sssZ>`` with tables
  ``predictions`` and ``errors``.
- ``bq://project.dataset``: tables ``predictions_<timestamp>_<NNN>`` and
  ``errors_<timestamp>_<NNN>`` (a random 3-digit suffix, as Vertex names them) in that (existing)
  dataset, as Vertex's ``OutputInfo.bigquery_output_table`` describes.
- ``bq://project.dataset.table``: that table (the dataset must exist, the table must not), and
  ``<table>_errors`` for the failed instances.

Predictions rows carry the instance columns (or ``key``) and ``prediction``; errors rows the
instance columns and ``errors`` STRUCT<code INT64, message STRING>. Workers write their rows to
local staging files (bounded memory) and record each column's type; at commit the main process
loads each table with one load job, errors first and predictions last, so a table appears only
complete. Column types come from the input table when it is BigQuery, else from the values.

Credentials come from Application Default Credentials. Emulators: ``BIGQUERY_EMULATOR_HOST``
(REST, ``host:port`` or a URL; google-cloud-bigquery's own variable) and
``BIGQUERY_STORAGE_EMULATOR_HOST`` (the Storage Read API's gRPC ``host:port``); both connect
anonymously.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchpredict import layout
from batchpredict.errors import InstanceError, InternalError, UserError, first_line
from batchpredict.instances import INSTANCE, KEY, InstanceConfig, TableConverter, display_label
from batchpredict.io.base import (
    BIGQUERY_DESTINATION,
    BIGQUERY_SOURCE,
    Batch,
    Destination,
    OutputPlan,
    ShardWriter,
    Source,
    Split,
    listed,
)
from batchpredict.io.encoding import UNENCODABLE, dumps, json_default_or_text, unencodable

log = logging.getLogger(__name__)

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
STORAGE_EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
# Storage Read API streams asked for per CPU core (the service may give fewer).
READ_STREAMS_PER_CPU = 2
# Rows per split, and per page, when reading through tabledata.list (REST fallback).
REST_SPLIT_ROWS = 100_000
REST_PAGE_ROWS = 5_000
# Column names BigQuery accepts; other characters become underscores.
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# BigQuery URIs: [bq://|bigquery://]project[.dataset[.table]]. Ours (parse_uri) takes any
# reference; GCPC's (remote_runner) checks project and dataset names, and decides where the Vertex
# request gets a bq:// scheme added (backends/vertex_request.py).
BQ_SCHEME = "bq://"
_SCHEME = r"(?P<scheme>(?:bq|bigquery)://)?"
_URI = re.compile("^" + _SCHEME + r"(?P<ref>[^/]+)$")
# predictions_<timestamp>_<NNN>: the table names Vertex AI generates in a given dataset.
_GENERATED_TABLE = re.compile(r"predictions_\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z_\d{3}")
GCPC_TABLE_URI = re.compile(
    _SCHEME + r"(?P<project>([a-z0-9.-]+:)?[a-z][a-z0-9-_]{4,28}[a-z0-9])"
    r"([:\.](?P<dataset>[a-zA-Z0-9_]+)"
    r"([:\.](?P<table>[^\.\:]+))?)?"
)
ERRORS_FIELD = {
    "name": "errors",
    "type": "RECORD",
    "mode": "NULLABLE",
    "fields": [
        {"name": "code", "type": "INTEGER", "mode": "NULLABLE"},
        {"name": "message", "type": "STRING", "mode": "NULLABLE"},
    ],
}


# ---- references, clients, errors -------------------------------------------------------------


@dataclass(frozen=True)
class TableRef:
    """A BigQuery reference; ``dataset`` and ``table`` may be empty."""

    project: str
    dataset: str = ""
    table: str = ""

    @property
    def dataset_id(self) -> str:
        """``project.dataset``."""
        return f"{self.project}.{self.dataset}"

    @property
    def table_id(self) -> str:
        """``project.dataset.table``."""
        return f"{self.project}.{self.dataset}.{self.table}"


def parse_uri(uri: str, what: str) -> TableRef:
    """Parses ``bq://project[.dataset[.table]]`` (scheme optional; ``project:dataset`` too).

    Raises:
        UserError: not a BigQuery reference.
    """
    match = _URI.match(uri.strip())
    ref = match.group("ref") if match else ""
    if ":" in ref:
        before, after = ref.split(":", 1)
        if "." in before:  # a domain-scoped project: example.com:project.dataset.table
            project, _, rest = after.partition(".")
            parts = [f"{before}:{project}", *(rest.split(".") if rest else [])]
        else:  # legacy project:dataset.table
            parts = [before, *after.split(".")]
    else:
        parts = ref.split(".")
    if not ref or not all(parts) or len(parts) > 3:
        raise UserError(
            f"{what}={uri!r} is not a BigQuery reference; expected bq://project, "
            "bq://project.dataset or bq://project.dataset.table."
        )
    return TableRef(*parts)


def _emulator_endpoint() -> str:
    host = os.environ.get(EMULATOR_ENV, "")
    if host and "://" not in host:
        host = f"http://{host}"
    return host


def bigquery_client(project: str) -> Any:
    """A BigQuery REST client: the emulator when ``BIGQUERY_EMULATOR_HOST`` is set, else ADC.

    Raises:
        UserError: no Application Default Credentials.
    """
    from google.cloud import bigquery

    endpoint = _emulator_endpoint()
    if endpoint:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
    try:
        return bigquery.Client(project=project or None)
    except Exception as err:  # google.auth.exceptions.DefaultCredentialsError and friends
        raise UserError(
            f"Cannot create a BigQuery client for project {project!r}: {first_line(err)}. Set up "
            "Application Default Credentials (gcloud auth application-default login, or a service "
            "account), or BIGQUERY_EMULATOR_HOST for an emulator."
        ) from err


def read_client() -> Any | None:
    """A Storage Read API client, or None where none can be reached (emulator without gRPC)."""
    from google.cloud import bigquery_storage_v1

    host = os.environ.get(STORAGE_EMULATOR_ENV, "")
    if host:
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(host.split("://", 1)[-1])
        return bigquery_storage_v1.BigQueryReadClient(
            transport=BigQueryReadGrpcTransport(channel=channel)
        )
    if _emulator_endpoint():
        return None
    return bigquery_storage_v1.BigQueryReadClient()


def _user_error(err: Exception, subject: str, fix: str) -> UserError:
    """A UserError for a failed BigQuery call about ``subject``, with the API's reason."""
    from google.api_core import exceptions as api

    if isinstance(err, api.NotFound):
        return UserError(f"{subject} does not exist. {fix}")
    if isinstance(err, (api.Forbidden, api.Unauthorized)):
        return UserError(
            f"Permission denied on {subject}: {getattr(err, 'message', err)}. Check that the "
            "credentials (Application Default Credentials) have the BigQuery roles it needs."
        )
    return UserError(f"BigQuery refused the request on {subject}: {first_line(err)}")


# ---- source ------------------------------------------------------------------------------------


class BigQuerySource(Source):
    """``instances_format='bigquery'``: rows of a table, converted as Vertex converts them."""

    format = "bigquery"
    input_field = BIGQUERY_SOURCE
    columnar = True

    @classmethod
    def for_input(cls, location: Any, cfg: InstanceConfig, project: str = "") -> BigQuerySource:
        """The source over ``bq://project.dataset.table``, read by (and billed to) ``project``."""
        return cls(location, cfg, project=project)

    def __init__(self, uri: str, cfg: InstanceConfig, project: str = "") -> None:
        """Parses the table reference; nothing is read until ``splits``.

        Args:
            uri: ``bq://project.dataset.table`` (scheme optional).
            cfg: the instance config.
            project: the project that runs (and pays for) the reads; defaults to the table's.
        """
        super().__init__([uri], cfg)
        self.uri = uri
        self.ref = parse_uri(uri, "bigquery_source_input_uri")
        if not (self.ref.dataset and self.ref.table):
            raise UserError(
                f"bigquery_source_input_uri={uri!r} must name a table: bq://project.dataset.table."
            )
        self.billing_project = project or self.ref.project
        self.schema: list[dict[str, Any]] = []  # the table's fields (API representation)
        self.location = ""  # the table's location (for a BigQuery destination's new dataset)
        self.columns: list[str] = []  # the columns read (all, or included_fields + key_field)
        self.mode = ""  # "storage" or "rest", set by splits()
        self.arrow_schema = b""  # the read session's serialized Arrow schema
        self._clients: dict[str, Any] = {}
        self._clients_pid = os.getpid()
        self._converter: TableConverter | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Clients hold connections and channels: workers make their own."""
        state = dict(self.__dict__)
        state["_clients"] = {}
        state["_converter"] = None
        return state

    def _client(self, kind: str) -> Any:
        """This process's REST (``bq``) or Storage Read (``read``) client, made on first use.

        A forked worker inherits the main process's clients: it makes its own instead, since
        connections and gRPC channels cannot be shared across processes.
        """
        if self._clients_pid != os.getpid():
            self._clients, self._clients_pid = {}, os.getpid()
        if kind not in self._clients:
            self._clients[kind] = (
                bigquery_client(self.billing_project) if kind == "bq" else read_client()
            )
        return self._clients[kind]

    def _bq(self) -> Any:
        return self._client("bq")

    def _table_subject(self) -> str:
        return f"BigQuery table {self.ref.table_id!r} (bigquery_source_input_uri={self.uri!r})"

    def splits(self) -> list[Split]:
        """Reads the schema, checks the instance config and plans the streams (or row ranges).

        Raises:
            UserError: the dataset or table does not exist or cannot be read; a key, included or
                excluded field is not a column.
        """
        client = self._bq()
        try:
            table = client.get_table(self.ref.table_id)
        except Exception as err:
            raise self._not_readable(client, err) from err
        self.schema = [f.to_api_repr() for f in table.schema]
        self.location = table.location or ""
        names = [f["name"] for f in self.schema]
        TableConverter(names, self.cfg, source=self._table_subject())  # validates the fields
        selected: list[str] | None = None
        if self.cfg.included_fields:
            selected = list(self.cfg.included_fields)
            if self.cfg.key_field and self.cfg.key_field not in selected:
                selected.append(self.cfg.key_field)
        splits = self._storage_splits(table, selected)
        if splits is None:
            splits = self._rest_splits(table, selected)
        return splits

    def _not_readable(self, client: Any, err: Exception) -> UserError:
        from google.api_core import exceptions as api

        if isinstance(err, api.NotFound):
            try:
                client.get_dataset(self.ref.dataset_id)
            except api.NotFound:
                return UserError(
                    f"BigQuery dataset {self.ref.dataset_id!r} does not exist "
                    f"(bigquery_source_input_uri={self.uri!r}). Check the project and dataset."
                )
            except Exception:  # noqa: BLE001 - the table error below says enough
                pass
            return UserError(
                f"BigQuery table {self.ref.table_id!r} does not exist "
                f"(bigquery_source_input_uri={self.uri!r}). Check the table name."
            )
        return _user_error(err, self._table_subject(), "")

    def _storage_splits(self, table: Any, selected: list[str] | None) -> list[Split] | None:
        """One split per Storage Read API stream, or None when the API cannot be used."""
        from google.api_core import exceptions as api
        from google.cloud.bigquery_storage_v1 import types

        reader = read_client()
        if reader is None:
            log.info("No Storage Read API endpoint for the emulator; reading with tabledata.list.")
            return None
        session = types.ReadSession(
            table=f"projects/{self.ref.project}/datasets/{self.ref.dataset}/tables/{self.ref.table}",
            data_format=types.DataFormat.ARROW,
            read_options=types.ReadSession.TableReadOptions(selected_fields=selected or []),
        )
        try:
            session = reader.create_read_session(
                parent=f"projects/{self.billing_project}",
                read_session=session,
                max_stream_count=READ_STREAMS_PER_CPU * (os.cpu_count() or 1),
            )
        except (api.GoogleAPICallError, api.RetryError) as err:
            log.warning(
                "The BigQuery Storage Read API is not available for %s (%s); reading with "
                "tabledata.list instead, which is slower.",
                self.ref.table_id,
                first_line(err),
            )
            return None
        finally:  # no open channel while workers are forked; readers open their own
            reader.transport.close()
        self.mode = "storage"
        self.arrow_schema = bytes(session.arrow_schema.serialized_schema)
        self.columns = _arrow_schema(self.arrow_schema).names
        streams = list(session.streams)
        rows = int(table.num_rows or 0)
        weight = rows // len(streams) if streams else 0
        return [Split(s.name, 0, -1, weight) for s in streams]

    def _rest_splits(self, table: Any, selected: list[str] | None) -> list[Split]:
        """Row ranges of REST_SPLIT_ROWS; the last one reads to the end of the table."""
        self.mode = "rest"
        self.columns = selected or [f["name"] for f in self.schema]
        rows = int(table.num_rows or 0)
        starts = list(range(0, rows, REST_SPLIT_ROWS)) or [0]
        out = []
        for i, start in enumerate(starts):
            end = -1 if i == len(starts) - 1 else start + REST_SPLIT_ROWS
            out.append(Split(self.ref.table_id, start, end, (end if end >= 0 else rows) - start))
        return out

    def _conv(self) -> TableConverter:
        if self._converter is None:
            self._converter = TableConverter(self.columns, self.cfg, source=self._table_subject())
        return self._converter

    def batches(self, split: Split, batch_size: int) -> Iterator[Batch]:
        """Reads a stream (or row range) in converted batches of ``batch_size`` rows.

        Storage Read API streams are Arrow: their batches are converted as Parquet's are
        (``arrow_rows.convert_batch``: numeric columns become one array, no Python row).

        Raises:
            UserError: the table went away or reading it was refused.
        """
        conv = self._conv()
        if self.mode == "storage":
            yield from self._arrow_batches(split, batch_size, conv)
            return
        pending: list[list[Any]] = []
        read = 0  # rows of the split before ``pending``
        for chunk in _reading(self._rest_rows(split), self._table_subject()):
            pending.extend(chunk)
            start = 0
            while len(pending) - start >= batch_size:
                head = pending[start : start + batch_size]
                start += batch_size
                yield Batch(conv.convert(head), len(head), self._locator(split, read))
                read += len(head)
            del pending[:start]
        if pending:
            yield Batch(conv.convert(pending), len(pending), self._locator(split, read))

    def _locator(self, split: Split, read: int) -> Callable[[int], dict[str, Any]]:
        """Where a failed row came from: the table and the row's position as it was read.

        tabledata.list: ``row``, its 0-based index in the table's listing (``list_rows`` with
        ``start_index=row`` reads it again while the table is unchanged). Storage Read API:
        ``stream`` (the read session's stream, valid for the session's 6 hours) and ``row``, the
        row's 0-based offset in that stream (``read_rows(stream, offset=row)``); BigQuery has no
        row numbers of its own.
        """
        uri = f"bq://{self.ref.table_id}"
        first = (split.start if self.mode == "rest" else 0) + read
        stream = {"stream": split.uri} if self.mode == "storage" else {}

        def locate(index: int) -> dict[str, Any]:
            return {"uri": uri, **stream, "row": first + index}

        return locate

    def _arrow_batches(
        self, split: Split, batch_size: int, conv: TableConverter
    ) -> Iterator[Batch]:
        """A stream's record batches, regrouped (without copying) into batches of batch_size."""
        import pyarrow as pa

        from batchpredict.io.arrow_rows import convert_batch

        pending: list[Any] = []
        count = read = 0  # rows in ``pending``; rows of the stream before them
        for record_batch in _reading(self._stream_batches(split), self._table_subject()):
            if not record_batch.num_rows:
                continue
            pending.append(record_batch)
            count += record_batch.num_rows
            while count >= batch_size:
                table = pa.Table.from_batches(pending)
                head = convert_batch(table.slice(0, batch_size), conv)
                yield Batch(head, batch_size, self._locator(split, read))
                pending = table.slice(batch_size).to_batches()
                count -= batch_size
                read += batch_size
        if count:
            rest = convert_batch(pa.Table.from_batches(pending), conv)
            yield Batch(rest, count, self._locator(split, read))

    def _stream_batches(self, split: Split) -> Iterator[Any]:
        import pyarrow as pa

        schema = _arrow_schema(self.arrow_schema)
        for message in self._client("read").read_rows(split.uri):
            data = message.arrow_record_batch.serialized_record_batch
            if data:
                yield pa.ipc.read_record_batch(pa.py_buffer(data), schema)

    def _rest_rows(self, split: Split) -> Iterator[list[list[Any]]]:
        from google.cloud import bigquery

        from batchpredict.io.arrow_rows import json_value

        by_name = {f["name"]: f for f in self.schema}
        fields = [bigquery.SchemaField.from_api_repr(by_name[c]) for c in self.columns]
        pages = self._bq().list_rows(
            self.ref.table_id,
            selected_fields=fields,
            start_index=split.start,
            max_results=split.end - split.start if split.end >= 0 else None,
            page_size=REST_PAGE_ROWS,
        )
        for page in pages.pages:
            yield [[json_value(v) for v in row.values()] for row in page]


def _reading(rows: Iterator[list[list[Any]]], subject: str) -> Iterator[list[list[Any]]]:
    """``rows``, with a missing table or a refused read turned into a UserError."""
    from google.api_core import exceptions as api

    try:
        yield from rows
    except (api.NotFound, api.Forbidden, api.Unauthorized) as err:
        raise _user_error(err, subject, "It was readable when the job started.") from err


def _arrow_schema(serialized: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(serialized))


# ---- destination -------------------------------------------------------------------------------


def errors_table_name(predictions_table: str) -> str:
    """The errors table beside ``predictions_table``, as Vertex AI and this toolkit name it.

    ``predictions`` -> ``errors`` and ``predictions_<suffix>`` -> ``errors_<suffix>`` (the tables
    of a new dataset, or of a dataset given without a table); a table the user named ``T`` gets
    ``T_errors``.
    """
    if predictions_table == "predictions" or _GENERATED_TABLE.fullmatch(predictions_table):
        return "errors" + predictions_table[len("predictions") :]
    return f"{predictions_table}_errors"


def dataset_name(model_display_name: str, now: dt.datetime | None = None) -> str:
    """``prediction_<model>_<YYYY_MM_DDThh_mm_ss_sssZ>``, the model name made dataset-safe."""
    model = re.sub(r"[^A-Za-z0-9_]", "_", model_display_name)
    return f"prediction_{model}_{layout.timestamp(now)}"


def column_name(name: str) -> str:
    """``name`` as a BigQuery column name (other characters become underscores)."""
    if _COLUMN_NAME.fullmatch(name):
        return name
    safe = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    return safe if safe[:1].isalpha() or safe[:1] == "_" else f"_{safe}"


@functools.lru_cache(maxsize=1024)
def column_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Instance column names as distinct BigQuery column names.

    BigQuery compares names case-insensitively, and ``prediction`` / ``errors`` are the output's
    own: a clash gets a ``_2``, ``_3``... suffix, so that no value overwrites another.
    """
    taken = {"prediction", "errors"}
    out = []
    for name in names:
        base = candidate = column_name(name)
        n = 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate.lower())
        out.append(candidate)
    return tuple(out)


class BigQueryDestination(Destination):
    """``bigquery_destination_output_uri``: predictions and errors tables, loaded at commit."""

    def __init__(
        self,
        uri: str,
        model_display_name: str,
        project: str = "",
        now: dt.datetime | None = None,
        key_mode: bool = False,
    ) -> None:
        """Plans the dataset and tables; nothing is created until ``prepare``.

        Args:
            uri: ``bq://project``, ``bq://project.dataset`` or ``bq://project.dataset.table``.
            model_display_name: names a new dataset.
            project: the project that runs the load jobs; defaults to the URI's.
            now: the job's start time (names a new dataset or tables).
            key_mode: rows carry ``key`` instead of the instance columns.
        """
        self.uri = uri
        ref = parse_uri(uri, "bigquery_destination_output_uri")
        self.job_project = project or ref.project
        self.key_mode = key_mode
        self.create_dataset = not ref.dataset
        stamp = layout.timestamp(now)
        if self.create_dataset:
            ref = TableRef(ref.project, dataset_name(model_display_name, now))
            self.predictions_table = "predictions"
        elif not ref.table:  # Vertex: predictions_<timestamp>_<NNN>, a 3-digit suffix
            self.predictions_table = f"predictions_{stamp}_{secrets.randbelow(1000):03d}"
        else:
            self.predictions_table = ref.table
        self.errors_table = errors_table_name(self.predictions_table)
        self.ref = TableRef(ref.project, ref.dataset)
        self.dataset_location = ""  # a new dataset's location ("" = BigQuery's default)
        self.instance_schema: list[dict[str, Any]] = []  # known column types (API repr)
        self.staging_dir = ""
        self._created: list[str] = []  # tables this job created (removed by abort)
        self._dataset_created = False
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """The client stays in the main process."""
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def dataset_uri(self) -> str:
        """``bq://project.dataset`` (Vertex's ``bigqueryOutputDataset``)."""
        return f"bq://{self.ref.dataset_id}"

    @property
    def table_name(self) -> str:
        """The predictions table (Vertex's ``bigqueryOutputTable``)."""
        return self.predictions_table

    @property
    def location(self) -> str:
        """``bq://project.dataset.table`` of the predictions table."""
        return f"bq://{self.ref.dataset_id}.{self.predictions_table}"

    @property
    def errors_location(self) -> str:
        """``bq://project.dataset.table`` of the errors table."""
        return f"bq://{self.ref.dataset_id}.{self.errors_table}"

    @classmethod
    def for_output(cls, plan: OutputPlan) -> BigQueryDestination:
        """The dataset and tables of ``plan.uri`` (``directory_name`` does not apply)."""
        return cls(
            plan.uri,
            model_display_name=plan.model_display_name,
            project=plan.project,
            now=plan.started,
            key_mode=plan.key_mode,
        )

    def use_source(self, source: Source) -> None:
        """Keeps a BigQuery input table's types for the instance columns, and its location."""
        if not isinstance(source, BigQuerySource):
            return
        self.dataset_location = source.location
        if self.key_mode:
            return
        by_name = {f["name"]: f for f in source.schema}
        shown = TableConverter(source.columns, source.cfg, source=source.uri).keep_names
        self.instance_schema = [by_name[n] for n in shown if n in by_name]

    def _bq(self) -> Any:
        if self._client is None:  # main process only: workers write local staging files
            self._client = bigquery_client(self.job_project)
        return self._client

    def _subject(self, name: str = "") -> str:
        target = f"{self.ref.dataset_id}.{name}" if name else self.ref.dataset_id
        kind = "table" if name else "dataset"
        return f"BigQuery {kind} {target!r} (bigquery_destination_output_uri={self.uri!r})"

    def prepare(self) -> None:
        """Creates the new dataset, or checks the existing one; makes the staging directory.

        Raises:
            UserError: the dataset is missing (or cannot be created), or a table already exists.
        """
        from google.api_core import exceptions as api
        from google.cloud import bigquery

        client = self._bq()
        if self.create_dataset:
            dataset = bigquery.Dataset(self.ref.dataset_id)
            if self.dataset_location:
                dataset.location = self.dataset_location
            try:
                client.create_dataset(dataset)
            except Exception as err:
                raise _user_error(
                    err,
                    f"BigQuery project {self.ref.project!r} "
                    f"(bigquery_destination_output_uri={self.uri!r})",
                    "Check the project id.",
                ) from err
            self._dataset_created = True
        else:
            try:
                found = client.get_dataset(self.ref.dataset_id)
            except Exception as err:
                raise _user_error(
                    err,
                    self._subject(),
                    f"Create it first, or pass bq://{self.ref.project} to create a new dataset.",
                ) from err
            self.dataset_location = found.location or ""
            for name in (self.predictions_table, self.errors_table):
                try:
                    client.get_table(f"{self.ref.dataset_id}.{name}")
                except api.NotFound:
                    continue
                except Exception as err:
                    raise _user_error(err, self._subject(name), "") from err
                raise UserError(
                    f"{self._subject(name)} already exists; batch prediction writes a new table. "
                    "Name a table that does not exist, or delete it first."
                )
        self.staging_dir = tempfile.mkdtemp(prefix="batchpredict-bq-")

    def shard_writer(self, index: int, count: int) -> ShardWriter:
        """A writer for this shard's staging files."""
        return BigQueryShardWriter(self.staging_dir, index, display_label(self.key_mode))

    def discard_shard(self, index: int) -> None:
        """Deletes the part's staging files (a part without its types file is never loaded)."""
        for suffix in (".types.json", ".pred.jsonl", ".errors.jsonl"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.staging_dir, f"{index:05d}{suffix}"))

    def commit(self, errors_stats: dict[str, int], completion_stats: dict[str, Any]) -> None:
        """Loads the errors table, then the predictions table, each with one load job."""
        try:
            description = "Batch prediction output (batchpredict): " + json.dumps(
                {k: completion_stats[k] for k in completion_stats if k.endswith("_count")}
            )
            for table, kind in ((self.errors_table, "errors"), (self.predictions_table, "pred")):
                self._load(table, kind, description)
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def abort(self) -> None:
        """Removes what this job created: its tables, a new dataset, the staging files."""
        client = self._bq()
        try:
            if self._dataset_created:
                client.delete_dataset(self.ref.dataset_id, delete_contents=True, not_found_ok=True)
            else:
                for name in self._created:
                    client.delete_table(f"{self.ref.dataset_id}.{name}", not_found_ok=True)
        except Exception as err:  # noqa: BLE001 - keep the job's own error
            log.warning("Could not remove partial BigQuery output %s: %s", self.location, err)
        if self.staging_dir:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def _load(self, table: str, kind: str, description: str) -> None:
        from google.cloud import bigquery

        files, types, rows = _staged(self.staging_dir, kind)
        other = _staged(self.staging_dir, "errors" if kind == "pred" else "pred")[1]
        schema, as_json = _table_schema(types, other, self.instance_schema, kind)
        if as_json:  # columns whose values BigQuery cannot type: JSON text instead
            files = [_rewrite_as_json(path, as_json) for path in files]
        table_id = f"{self.ref.dataset_id}.{table}"
        fields = [bigquery.SchemaField.from_api_repr(f) for f in schema]
        client = self._bq()
        try:
            if not rows:  # a load job of nothing is refused by some servers: create it empty
                client.create_table(bigquery.Table(table_id, schema=fields))
                self._created.append(table)
                return
            config = bigquery.LoadJobConfig(
                schema=fields,
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
                write_disposition=bigquery.WriteDisposition.WRITE_EMPTY,
                destination_table_description=description if kind == "pred" else None,
            )
            # No size: always a resumable upload, read in bounded chunks (a multipart upload
            # holds the file in memory, and the emulator refuses the client's multipart form).
            with _ConcatFile(files) as data:
                job = client.load_table_from_file(
                    data, table_id, job_config=config, location=self.dataset_location or None
                )
                job.result()
            self._created.append(table)  # a load job is atomic: a failed one created nothing
        except UserError:
            raise
        except Exception as err:
            raise InternalError(
                f"Loading {rows} rows into BigQuery table {table_id!r} failed: "
                f"{first_line(err)}"
                + "".join(f"; {e.get('message', e)}" for e in (getattr(err, "errors", None) or []))
            ) from err


# ---- staging: shard files and their column types ----------------------------------------------


class BigQueryShardWriter(ShardWriter):
    """Writes one worker's rows as newline-delimited JSON and records each column's type.

    The rows are loaded into the predictions and errors tables at commit. As on Vertex AI, rows
    carry the instance, never a key (googleapis/python-aiplatform#4514).
    """

    format = "bigquery"
    output_field = BIGQUERY_DESTINATION
    keys = False

    def __init__(self, staging_dir: str, index: int, label: str) -> None:
        """Opens the shard's predictions and errors files."""
        self.label = label
        self.base = os.path.join(staging_dir, f"{index:05d}")
        self._files = {
            "pred": open(f"{self.base}.pred.jsonl", "wb"),  # noqa: SIM115 - closed in close()
            "errors": open(f"{self.base}.errors.jsonl", "wb"),  # noqa: SIM115
        }
        self._types: dict[str, dict[str, Any]] = {"pred": {}, "errors": {}}
        self._rows = {"pred": 0, "errors": 0}
        self._columns: list[str] | None = None  # the source's column names, once seen

    def _instance_columns(self, displays: list[Any], columns: list[str] | None) -> list[dict]:
        if self.label == KEY:
            return [{KEY: d} for d in displays]
        names = column_names(tuple(columns)) if columns else None
        out = []
        for d in displays:
            if isinstance(d, dict):
                out.append(dict(zip(column_names(tuple(d)), d.values())))
            elif isinstance(d, list) and names and len(names) == len(d):
                out.append(dict(zip(names, d)))
            else:
                out.append({INSTANCE: d})
        return out

    def write(self, displays: list[Any], predictions: list[Any], columns: list[str] | None) -> None:
        """Rows of instance columns (or ``key``) and ``prediction``."""
        displays, predictions = listed(displays), listed(predictions)
        self._columns = columns or self._columns
        rows = self._instance_columns(displays, columns)
        for row, prediction in zip(rows, predictions):
            row["prediction"] = prediction
        self._append("pred", rows)

    def write_errors(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Rows of instance columns (or ``key``) and ``errors: {code, message}``.

        As in file output, an instance that cannot be written (nested too deep, not JSON) is
        shown shortened, as text: its error row is written whatever its instance holds.
        """
        # The engine writes a batch's results before the model's failures in it, so the
        # source's column names are known for those.
        try:
            self._append("errors", self._error_rows(failures))
        except UNENCODABLE:
            for display, err in failures:
                try:
                    self._append("errors", self._error_rows([(display, err)]))
                except UNENCODABLE as why:
                    label = KEY if self.label == KEY else INSTANCE
                    row = {label: unencodable(display, why)}
                    self._append("errors", [{**row, "errors": self._error(err)}])

    def _error_rows(self, failures: list[tuple[Any, InstanceError]]) -> list[dict[str, Any]]:
        rows = self._instance_columns([d for d, _ in failures], self._columns)
        for row, (_, err) in zip(rows, failures):
            row["errors"] = self._error(err)
        return rows

    @staticmethod
    def _error(err: InstanceError) -> dict[str, Any]:
        return {"code": err.code, "message": str(err)}

    def _append(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Writes ``rows`` and merges their column types, or (raising) nothing of either."""
        if not rows:
            return
        types = dict(self._types[kind])
        for name in {k: None for row in rows for k in row}:
            values = [row.get(name) for row in rows]
            types[name] = merge_types(types.get(name), column_type(values))
        opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        data = b"".join(orjson.dumps(r, default=json_default_or_text, option=opts) for r in rows)
        self._files[kind].write(data)
        self._types[kind] = types
        self._rows[kind] += len(rows)

    def close(self) -> None:
        """Closes the files and writes the shard's column types beside them."""
        for f in self._files.values():
            f.close()
        with open(f"{self.base}.types.json", "w") as f:
            json.dump({"types": self._types, "rows": self._rows}, f)


def _staged(staging_dir: str, kind: str) -> tuple[list[str], dict[str, Any], int]:
    """The shard files of ``kind``, their merged column types (in first-seen order) and rows."""
    files, types, rows = [], {}, 0
    for name in sorted(os.listdir(staging_dir)):
        if not name.endswith(".types.json"):
            continue
        with open(os.path.join(staging_dir, name)) as f:
            info = json.load(f)
        for column, t in info["types"][kind].items():
            types[column] = merge_types(types.get(column), t)
        rows += info["rows"][kind]
        files.append(os.path.join(staging_dir, name.replace(".types.json", f".{kind}.jsonl")))
    return files, types, rows


# Column types, inferred from values: None (only nulls), a BigQuery scalar type name, "JSON"
# (no BigQuery type fits: written as JSON text), ["REPEATED", element] or {"RECORD": fields}.
_SCALARS = {bool: "BOOLEAN", int: "INTEGER", float: "FLOAT", str: "STRING"}


# BigQuery nests RECORD (STRUCT) columns at most this deep; deeper values are written as JSON text.
MAX_RECORD_DEPTH = 15


def value_type(value: Any, depth: int = 0) -> Any:
    """The BigQuery type of one JSON-ready value (``depth``: the RECORDs it is inside)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):  # numpy scalars and arrays from a custom predictor
        value = value.tolist()
    scalar = _SCALARS.get(type(value))
    if scalar:
        return scalar
    if isinstance(value, dict):
        if depth >= MAX_RECORD_DEPTH:
            return "JSON"
        if not value or not all(isinstance(k, str) and _COLUMN_NAME.fullmatch(k) for k in value):
            return "JSON"
        fields = {k: value_type(v, depth + 1) for k, v in value.items()}
        # a field BigQuery cannot type makes the whole value JSON text (as merge_types does)
        return "JSON" if "JSON" in fields.values() else {"RECORD": fields}
    if isinstance(value, (list, tuple)):
        element: Any = None
        for v in value:
            if v is None or isinstance(v, (list, tuple)):  # BigQuery arrays hold no NULL/array
                return "JSON"
            element = merge_types(element, value_type(v, depth))
        return "JSON" if element == "JSON" else ["REPEATED", element]
    return "STRING"


def column_type(values: list[Any]) -> Any:
    """The merged type of a column's values (fast for columns of one scalar type)."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return None
    if kinds <= {int, float} or len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
        return "FLOAT" if float in kinds else _SCALARS[next(iter(kinds))]
    merged: Any = None
    for v in values:
        merged = merge_types(merged, value_type(v))
        if merged == "JSON":
            break
    return merged


def merge_types(a: Any, b: Any) -> Any:
    """The type holding values of types ``a`` and ``b``."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    if isinstance(a, str) and isinstance(b, str) and {a, b} == {"INTEGER", "FLOAT"}:
        return "FLOAT"
    if isinstance(a, list) and isinstance(b, list):
        element = merge_types(a[1], b[1])
        return "JSON" if element == "JSON" else ["REPEATED", element]
    if isinstance(a, dict) and isinstance(b, dict):
        fields = dict(a["RECORD"])
        for k, t in b["RECORD"].items():
            fields[k] = merge_types(fields.get(k), t)
        if any(t == "JSON" for t in fields.values()):
            return "JSON"
        return {"RECORD": fields}
    return "JSON"


def _field(name: str, t: Any) -> dict[str, Any]:
    """A schema field (API representation) for an inferred type."""
    if isinstance(t, list):
        inner = _field(name, t[1])
        return {**inner, "mode": "REPEATED"}
    if isinstance(t, dict):
        fields = [_field(k, v) for k, v in t["RECORD"].items()]
        return {"name": name, "type": "RECORD", "mode": "NULLABLE", "fields": fields}
    return {"name": name, "type": "STRING" if t in (None, "JSON") else t, "mode": "NULLABLE"}


def _nullable(field: dict[str, Any]) -> dict[str, Any]:
    out = dict(field)
    out.pop("description", None)
    out.pop("policyTags", None)
    if out.get("mode", "NULLABLE") == "REQUIRED":
        out["mode"] = "NULLABLE"
    if "fields" in out:
        out["fields"] = [_nullable(f) for f in out["fields"]]
    return out


def _table_schema(
    types: dict[str, Any],
    other_types: dict[str, Any],
    instance_schema: list[dict[str, Any]],
    kind: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The table's fields, and the columns to write as JSON text.

    Instance columns found in ``instance_schema`` (the input table) keep their type; others get
    the type inferred from their values. ``prediction`` is last in predictions, ``errors`` in
    errors. A table with no rows takes its instance columns from the other table, else from the
    input table, else one ``instance`` column.
    """
    last = "prediction" if kind == "pred" else "errors"
    known = {f["name"]: f for f in instance_schema}
    if not types:
        types = {n: t for n, t in other_types.items() if n not in ("prediction", "errors")}
        if not types:
            types = {f["name"]: None for f in instance_schema} or {"instance": None}
    schema, as_json = [], []
    for name, t in types.items():
        if name == last:
            continue
        if name in known:
            schema.append(_nullable(known[name]))
            continue
        if t == "JSON":
            as_json.append(name)
        schema.append(_field(name, t))
    if kind == "pred":
        t = types.get("prediction")
        if t == "JSON":
            as_json.append("prediction")
        schema.append(_field("prediction", t))
    else:
        schema.append(dict(ERRORS_FIELD))
    return schema, as_json


def _rewrite_as_json(path: str, columns: list[str]) -> str:
    """Rewrites a staging file with ``columns`` as JSON text; returns the new file."""
    out = f"{path}.as_json"
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            row = orjson.loads(line)
            for c in columns:
                if row.get(c) is not None:
                    row[c] = dumps(row[c])
            dst.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return out


class _ConcatFile(io.RawIOBase):
    """Several local files read as one seekable stream (one load job for all shards)."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = [p for p in paths if os.path.getsize(p)]
        self.sizes = [os.path.getsize(p) for p in self.paths]
        self.size = sum(self.sizes)
        self.mode = "rb"
        self._pos = 0
        self._index = 0
        self._file: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, min(base + offset, self.size))
        if self._file is not None:
            self._file.close()
            self._file = None
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index, start = self._locate(self._pos)
            if self._file is None or self._index != index:
                if self._file is not None:
                    self._file.close()
                self._file = open(self.paths[index], "rb")  # noqa: SIM115 - closed in close()
                self._index = index
            self._file.seek(start)
            n = self._file.readinto(view[done:])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def _locate(self, pos: int) -> tuple[int, int]:
        for i, size in enumerate(self.sizes):
            if pos < size:
                return i, pos
            pos -= size
        raise EOFError(pos)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


__all__ = [
    "BigQueryDestination",
    "BigQueryShardWriter",
    "BigQuerySource",
    "TableRef",
    "bigquery_client",
    "dataset_name",
    "parse_uri",
]
