"""The format registry: facts on the classes, and one class plus one line makes a new format."""

from __future__ import annotations

import csv
import dataclasses
import os

import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.backends.vertex_request import check_vertex_spec
from batchpredict.errors import UserError
from batchpredict.instances import Converted
from batchpredict.io import base, formats, fs
from batchpredict.io.sinks import CsvShardWriter
from batchpredict.io.sources import LineSource


class TsvSource(LineSource):
    """Tab-separated numbers, one instance (an array) per line: a format Vertex does not have."""

    format = "tsv"
    named_fields = False
    object_instances = False
    instances_are = "arrays of numbers"
    vertex = False

    def convert_lines(self, lines: list[bytes]) -> Converted:
        out = Converted()
        for line in lines:
            values = [float(v) for v in line.decode().split("\t")]
            out.instances.append(values)
            out.displays.append(values)
        return out


class TsvShardWriter(CsvShardWriter):
    """Tab-separated results."""

    format = "tsv"
    extension = ".tsv"
    vertex = False

    def _start(self) -> None:
        self._file = fs.open_file(self.results_uri, "w", newline="")
        self._csv = csv.writer(self._file, delimiter="\t")
        self._csv.writerow(self.header)


@pytest.fixture
def with_tsv(monkeypatch):
    """The registry with the new format added: one line each."""
    monkeypatch.setattr(formats, "SOURCES", (*formats.SOURCES, TsvSource))
    monkeypatch.setattr(formats, "WRITERS", (*formats.WRITERS, TsvShardWriter))


def _spec(tmp_path, **kw) -> BatchPredictionJobSpec:
    values = {
        "job_display_name": "tsv",
        "gcs_source_uris": [str(tmp_path / "in.tsv")],
        "instances_format": "tsv",
        "predictions_format": "tsv",
        "gcs_destination_output_uri_prefix": str(tmp_path / "out"),
        "model_uri": "unused",
        "workers": 1,
        "progress": False,
    }
    return BatchPredictionJobSpec(**{**values, **kw})


def test_every_format_has_one_class_and_a_unique_name():
    for classes in (formats.SOURCES, formats.WRITERS):
        names = [c.format for c in classes]
        assert all(names) and len(set(names)) == len(names)
    assert formats.input_formats() == (
        "jsonl",
        "csv",
        "tf-record",
        "tf-record-gzip",
        "file-list",
        "parquet",
        "bigquery",
    )
    assert formats.output_formats() == ("jsonl", "csv", "parquet", "bigquery")
    assert formats.input_formats(vertex=False) == ("parquet",)
    assert formats.output_formats(base.BIGQUERY_DESTINATION) == ("bigquery",)


def test_the_fields_formats_name_are_the_specs_fields():
    fields = {f.name for f in dataclasses.fields(BatchPredictionJobSpec)}
    for c in formats.SOURCES:
        assert c.input_field in fields
    for c in formats.WRITERS:
        assert c.output_field in fields
    assert set(formats.DESTINATIONS) == {c.output_field for c in formats.WRITERS}


def test_an_unknown_format_names_the_choices(tmp_path):
    with pytest.raises(UserError, match=r"Unknown instances_format='tsv'; expected one of 'jsonl'"):
        _spec(tmp_path, predictions_format="jsonl").validate()


def test_a_new_format_is_one_class_and_one_line(with_tsv, tmp_path, sklearn_model_dir, iris):
    X, _ = iris
    (tmp_path / "in.tsv").write_text("".join("\t".join(map(str, row)) + "\n" for row in X[:7]))
    result = run_batch_prediction(_spec(tmp_path, model_uri=sklearn_model_dir))
    assert result.completion_stats["successful_count"] == 7
    names = sorted(os.listdir(result.gcs_output_directory))
    assert "prediction.results-00000-of-00001.tsv" in names
    with open(
        os.path.join(result.gcs_output_directory, "prediction.results-00000-of-00001.tsv")
    ) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["instance_0", "instance_1", "instance_2", "instance_3", "prediction"]
    assert len(rows) == 8 and float(rows[1][0]) == X[0][0]


def test_validation_asks_the_new_formats_facts(with_tsv, tmp_path):
    _spec(tmp_path).validate()
    with pytest.raises(UserError, match="need named fields, which instances_format='tsv'"):
        _spec(tmp_path, key_field="id").validate()
    with pytest.raises(
        UserError,
        match=r"not supported for instances_format='tsv': its "
        r"instances are arrays of numbers",
    ):
        _spec(tmp_path, instance_type="object").validate()
    with pytest.raises(
        UserError,
        match=r"instances_format='tsv' reads gcs_source_uris, not "
        r"bigquery_source_input_uri.*'bigquery'",
    ):
        _spec(tmp_path, gcs_source_uris=[], bigquery_source_input_uri="bq://p.d.t").validate()


def test_the_vertex_request_builder_asks_the_registry(with_tsv, tmp_path):
    vertex = {"backend": "vertex", "model_uri": "gs://b/model", "container_image_uri": "img"}
    with pytest.raises(
        UserError,
        match=r"instances_format='tsv' is only supported by the local "
        r"engine; Vertex AI batch prediction reads jsonl, csv, tf-record, "
        r"tf-record-gzip, file-list and bigquery and writes jsonl, csv and bigquery",
    ):
        check_vertex_spec(_spec(tmp_path, gcs_source_uris=["gs://b/in.tsv"], **vertex))
    with pytest.raises(UserError, match="predictions_format='tsv' is only supported"):
        check_vertex_spec(
            _spec(tmp_path, instances_format="jsonl", gcs_source_uris=["gs://b/i"], **vertex)
        )


def test_bigquery_output_refuses_key_field_by_its_writers_fact(tmp_path):
    spec = _spec(
        tmp_path,
        instances_format="jsonl",
        predictions_format="bigquery",
        gcs_destination_output_uri_prefix="",
        bigquery_destination_output_uri="bq://project.dataset",
        key_field="id",
    )
    with pytest.raises(
        UserError,
        match=r"key_field='id' cannot be used with predictions_format="
        r"'bigquery', as on Vertex AI; write jsonl/csv/parquet to "
        r"gcs_destination_output_uri_prefix",
    ):
        spec.validate()
