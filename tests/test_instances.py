"""Vertex's instance conversion rules, one by one, through the real sources."""

from __future__ import annotations

import base64
import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpredict.errors import UserError
from batchpredict.instances import InstanceConfig, TableConverter, convert_json
from batchpredict.io.formats import make_source
from batchpredict.io.sources import read_all
from batchpredict.io.tfrecord import write_record
from tests.conftest import write_jsonl


def test_jsonl_passthrough_keeps_each_line_unchanged(tmp_path):
    values = [[1.0, 2.0], {"a": 1, "b": [2]}, 3, "text", None]
    src = make_source("jsonl", [write_jsonl(tmp_path / "a.jsonl", values)], InstanceConfig())
    out = read_all(src)
    assert out.instances == values
    assert out.displays == values
    assert not out.failures


def test_jsonl_object_with_key_and_excluded_fields():
    cfg = InstanceConfig(instance_type="object", key_field="id", excluded_fields=("noise",))
    out = convert_json([{"id": "k1", "x": 1, "noise": 0, "y": 2}], cfg)
    assert out.instances == [{"x": 1, "y": 2}]
    assert out.displays == ["k1"]


def test_jsonl_array_orders_values_by_included_fields():
    cfg = InstanceConfig(instance_type="array", included_fields=("b", "a"))
    out = convert_json([{"a": 1, "b": 2, "c": 3}], cfg)
    assert out.instances == [[2, 1]]
    assert out.displays == [[2, 1]]


def test_jsonl_array_of_objects_without_included_fields_is_refused():
    with pytest.raises(UserError, match="needs included_fields"):
        convert_json([{"a": 1}], InstanceConfig(instance_type="array"))


def test_jsonl_object_type_rejects_non_object_lines_per_instance():
    out = convert_json([[1, 2], {"a": 1}], InstanceConfig(instance_type="object"))
    assert out.instances == [{"a": 1}]
    assert len(out.failures) == 1
    assert out.failures[0][1].code == 3
    assert "needs a JSON object" in str(out.failures[0][1])


def test_missing_key_field_is_a_per_instance_failure():
    out = convert_json([{"id": 1, "x": 2}, {"x": 3}], InstanceConfig(key_field="id"))
    assert out.instances == [{"x": 2}]
    assert out.displays == [1]
    assert "key_field 'id' is missing" in str(out.failures[0][1])


def test_unset_instance_type_keeps_objects_as_objects_minus_key():
    out = convert_json([{"id": 7, "x": 1}], InstanceConfig(key_field="id"))
    assert out.instances == [{"x": 1}]
    assert out.displays == [7]


def test_csv_quoted_strings_unquoted_floats_header_skipped(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('name,x,y\n"alice",1,2.5\n"bob",3,-4\n')
    out = read_all(make_source("csv", [str(path)], InstanceConfig()))
    assert out.instances == [["alice", 1.0, 2.5], ["bob", 3.0, -4.0]]
    assert all(isinstance(v, float) for v in out.instances[0][1:])


def test_csv_key_field_and_included_fields(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('id,x,y,z\n"r1",1,2,3\n')
    src = make_source(
        "csv", [str(path)], InstanceConfig(key_field="id", included_fields=("z", "x"))
    )
    out = read_all(src)
    assert out.instances == [[3.0, 1.0]]
    assert out.displays == ["r1"]


def test_csv_bad_rows_fail_alone(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,y\n1,2\nabc,2\n1,2,3\n,5\n4,5\n")
    out = read_all(make_source("csv", [str(path)], InstanceConfig()))
    assert out.instances == [[1.0, 2.0], [4.0, 5.0]]
    messages = [str(e) for _, e in out.failures]
    assert len(messages) == 3
    assert any("an unquoted value is not a number" in m for m in messages)
    assert not any("abc" in m for m in messages)  # the row goes to the errors file, not stats
    assert any("has 3 values; the header has 2" in m for m in messages)


def test_csv_unknown_included_field_is_a_job_error(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match=r"included_fields \['nope'\] not found"):
        read_all(make_source("csv", [str(path)], InstanceConfig(included_fields=("nope",))))


def test_csv_without_header_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("")
    with pytest.raises(UserError, match="no header row"):
        read_all(make_source("csv", [str(path)], InstanceConfig()))


@pytest.mark.parametrize("compressed", [False, True])
def test_tfrecord_records_become_b64(tmp_path, compressed):
    path = tmp_path / ("a.tfrecord.gz" if compressed else "a.tfrecord")
    opener = gzip.open if compressed else open
    with opener(path, "wb") as f:
        for payload in (b"first", b"\x00\xffbinary"):
            write_record(f, payload)
    fmt = "tf-record-gzip" if compressed else "tf-record"
    out = read_all(make_source(fmt, [str(path)], InstanceConfig()))
    assert out.instances == [
        {"b64": base64.b64encode(b"first").decode()},
        {"b64": base64.b64encode(b"\x00\xffbinary").decode()},
    ]


def test_tfrecord_crc_mismatch_is_reported_not_ignored(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with open(path, "wb") as f:
        write_record(f, b"good")
        write_record(f, b"corrupted")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # flip a byte inside the second record's data
    path.write_bytes(bytes(data))
    out = read_all(make_source("tf-record", [str(path)], InstanceConfig()))
    assert len(out.instances) == 1
    assert len(out.failures) == 1
    assert "CRC mismatch" in str(out.failures[0][1])


def test_file_list_sends_content_and_shows_uri(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"AAA")
    b.write_bytes(b"BB")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a}\n{b}\n{tmp_path / 'missing.bin'}\n")
    out = read_all(make_source("file-list", [str(listing)], InstanceConfig()))
    assert out.instances == [{"b64": "QUFB"}, {"b64": "QkI="}]
    assert out.displays == [str(a), str(b)]
    assert len(out.failures) == 1 and "missing.bin" in out.failures[0][0]


def test_parquet_rows_as_arrays_and_objects(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "x": [1.5, 2.5], "n": [1, 2]}), path)
    arrays = read_all(make_source("parquet", [str(path)], InstanceConfig(key_field="id")))
    assert arrays.instances == [[1.5, 1], [2.5, 2]]
    assert arrays.displays == ["a", "b"]
    objects = read_all(make_source("parquet", [str(path)], InstanceConfig(instance_type="object")))
    assert objects.instances == [{"id": "a", "x": 1.5, "n": 1}, {"id": "b", "x": 2.5, "n": 2}]


def test_parquet_dates_and_timestamps_convert_as_vertex_does(tmp_path):
    import datetime as dt

    path = tmp_path / "t.parquet"
    ts = dt.datetime(2019, 1, 1, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    table = pa.table(
        {
            "ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
            "d": pa.array([dt.date(2018, 12, 31)]),
            "t": pa.array([dt.time(23, 59, 59, 999999)]),
            "dt": pa.array([dt.datetime(2019, 1, 1)], pa.timestamp("us")),
        }
    )
    pq.write_table(table, path)
    out = read_all(make_source("parquet", [str(path)], InstanceConfig()))
    assert out.instances == [
        ["2019-01-01 23:59:59.999999+00:00", "2018-12-31", "23:59:59.999999", "2019-01-01T00:00:00"]
    ]


def test_table_converter_identity_shares_rows():
    conv = TableConverter(["a", "b"], InstanceConfig())
    rows = [[1, 2]]
    assert conv.convert(rows).instances is rows


def test_csv_quoted_empty_string_is_kept(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('s,x\n"",1\n')
    out = read_all(make_source("csv", [str(path)], InstanceConfig()))
    assert out.instances == [["", 1.0]]


def test_jsonl_objects_as_arrays_name_their_values():
    cfg = InstanceConfig(instance_type="array", key_field="id", included_fields=("id", "b", "a"))
    out = convert_json([{"id": 1, "a": 2, "b": 3}], cfg)
    assert out.instances == [[3, 2]]
    assert out.columns == ["b", "a"]


def test_per_instance_messages_name_the_cause_without_instance_values():
    cfg = InstanceConfig(key_field="id", included_fields=("a", "zz"), instance_type="array")
    values = [{"a": i, "secret": f"v{i}"} for i in range(50)]  # no id, no zz
    out = convert_json(values + [[1, 2], "text"], cfg)
    messages = {str(e) for _, e in out.failures}
    # 52 failures, 2 causes: a message never embeds the instance, so errors_stats groups them
    assert len(out.failures) == 52
    assert messages == {
        "key_field 'id' is missing from the instance.",
        "key_field, included_fields and excluded_fields need a JSON object on each line; "
        "got a JSON array.",
        "key_field, included_fields and excluded_fields need a JSON object on each line; "
        "got a JSON string.",
    }
    out = convert_json([{"id": i, "a": 1} for i in range(5)], cfg)
    assert {str(e) for _, e in out.failures} == {
        "included_fields ['zz'] missing from the instance."
    }


def test_excluded_fields_are_attached_to_the_output_without_key_field():
    cfg = InstanceConfig(excluded_fields=("id",))
    out = convert_json([{"id": "k1", "x": 1, "y": 2}], cfg)
    assert out.instances == [{"x": 1, "y": 2}]  # not sent to the model...
    assert out.displays == [{"id": "k1", "x": 1, "y": 2}]  # ...but attached to the output
    keyed = convert_json(
        [{"id": "k1", "x": 1, "noise": 0}],
        InstanceConfig(key_field="id", excluded_fields=("noise",)),
    )
    assert keyed.displays == ["k1"]  # with key_field the output carries the key alone


def test_excluded_table_columns_are_attached_to_the_output_rows():
    conv = TableConverter(["id", "x", "y"], InstanceConfig(excluded_fields=("id",)))
    out = conv.convert([["k1", 1.0, 2.0]])
    assert out.instances == [[1.0, 2.0]]
    assert out.displays == [["k1", 1.0, 2.0]] and out.columns == ["id", "x", "y"]
    conv = TableConverter(
        ["id", "x"], InstanceConfig(instance_type="object", excluded_fields=("id",))
    )
    out = conv.convert([["k1", 1.0]])
    assert out.instances == [{"x": 1.0}] and out.displays == [{"id": "k1", "x": 1.0}]
