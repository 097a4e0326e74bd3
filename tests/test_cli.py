"""The batchpredict command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import read_output, write_jsonl

BIN = os.path.join(os.path.dirname(sys.executable), "batchpredict")


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_predict_flags_named_after_the_component_inputs(
    tmp_path, sklearn_model_dir, sklearn_model, iris
):
    X, _ = iris
    names = ["a", "b", "c", "d"]
    rows = [{"id": i, **dict(zip(names, x))} for i, x in enumerate(X[:5].tolist())]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_cli(
        "predict",
        "--job-display-name",
        "cli-job",
        "--gcs-source-uris",
        data,
        "--gcs_destination_output_uri_prefix",
        str(tmp_path / "out"),
        "--model-uri",
        sklearn_model_dir,
        "--key-field",
        "id",
        "--instance-type",
        "array",
        "--included-fields",
        *names,
        "--manual-batch-tuning-parameters-batch-size",
        "2",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["completion_stats"]["successful_count"] == 5
    out = read_output(result["gcs_output_directory"])
    got = {r["key"]: r["prediction"] for r in out["results"]}
    assert got == dict(enumerate(sklearn_model.predict(X[:5]).tolist()))


def test_user_error_exits_1_with_one_clear_message(tmp_path, sklearn_model_dir):
    proc = run_cli(
        "predict",
        "--job-display-name",
        "j",
        "--gcs-source-uris",
        str(tmp_path / "nothing-*.jsonl"),
        "--gcs-destination-output-uri-prefix",
        str(tmp_path / "out"),
        "--model-uri",
        sklearn_model_dir,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("batchpredict: error: No input file matches")
    )
    assert not (tmp_path / "out").exists()


def test_example_command_runs_end_to_end(tmp_path):
    proc = run_cli("example", "--workdir", str(tmp_path), "--rows", "500", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Output directory:" in proc.stdout
    result = json.loads(proc.stdout[proc.stdout.index("\n{\n") :])
    assert result["completion_stats"]["successful_count"] == 500


def test_predict_help_explains_every_flag_with_default_and_choices():
    import dataclasses

    from batchpredict.spec import (
        CONTAINER_RESOURCE_FIELDS,
        VERTEX_ONLY_FIELDS,
        BatchPredictionJobSpec,
        field_docs,
    )

    proc = run_cli("predict", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    docs = field_docs()
    for f in dataclasses.fields(BatchPredictionJobSpec):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(docs[f.name].split()) in text, f.name  # each flag's line, from the spec
    assert "Choices: jsonl, csv, tf-record, tf-record-gzip, file-list, parquet, bigquery." in text
    assert 'Choices: local, vertex. Default: "local".' in text
    assert "Default: 1.0." in text  # max_failed_fraction
    for name in VERTEX_ONLY_FIELDS:
        flag = "--" + name.replace("_", "-")
        after = text[text.rindex(flag + " ") :]
        label = (
            "[Vertex; locally only serving containers use it]"
            if name in CONTAINER_RESOURCE_FIELDS
            else "[Vertex only; recorded locally]"
        )
        assert label in after[:120], name
    assert "examples:" in proc.stdout and "--instance-type array --included-fields" in text
    assert "--gcs_source_uris" not in proc.stdout  # the underscore spelling works, unlisted


def test_headerless_csv_is_warned_about(tmp_path, sklearn_model_dir, iris):
    X, _ = iris
    data = tmp_path / "in.csv"
    data.write_text("".join(",".join(str(v) for v in row) + "\n" for row in X[:6].tolist()))
    proc = run_cli(
        "predict",
        "--job-display-name",
        "csv",
        "--instances-format",
        "csv",
        "--gcs-source-uris",
        str(data),
        "--gcs-destination-output-uri-prefix",
        str(tmp_path / "out"),
        "--model-uri",
        sklearn_model_dir,
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["completion_stats"]["successful_count"] == 5
    assert "looks like data, not a header" in proc.stderr
    assert "Add a header row" in proc.stderr
    data.write_text("a,b,c,d\n" + "1,2,3,4\n")
    proc = run_cli(
        "predict",
        "--job-display-name",
        "csv",
        "--instances-format",
        "csv",
        "--gcs-source-uris",
        str(data),
        "--gcs-destination-output-uri-prefix",
        str(tmp_path / "out2"),
        "--model-uri",
        sklearn_model_dir,
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "looks like data" not in proc.stderr


def test_help_and_the_spec_import_leave_the_format_registry_and_engine_unloaded():
    # small jobs and `--help` start faster: the registry (every source and writer, BigQuery's
    # too) is imported when a spec is validated, the engine when a job runs
    heavy = ("batchpredict.io.formats", "batchpredict.io.bigquery", "batchpredict.engine")
    probe = (
        "import sys, contextlib\n"
        "{code}\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    spec_only = "import batchpredict.spec"
    top_help = (
        "from batchpredict.cli import main\n"
        "with contextlib.redirect_stdout(None), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    predict_help = top_help.replace("'--help'", "'predict', '--help'")
    validated = (
        "from batchpredict.spec import BatchPredictionJobSpec, FIELD_CHOICES\n"
        "assert FIELD_CHOICES['predictions_format'] == ('jsonl', 'csv', 'parquet', 'bigquery')\n"
        "BatchPredictionJobSpec(job_display_name='j', model_uri='m', gcs_source_uris=['a'],\n"
        "    gcs_destination_output_uri_prefix='o').validate()"
    )
    loaded = {}
    for name, code in [
        ("spec", spec_only),
        ("help", top_help),
        ("predict_help", predict_help),
        ("validated", validated),
    ]:
        proc = subprocess.run(
            [sys.executable, "-c", probe.format(code=code)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        loaded[name] = proc.stdout.strip()
    assert loaded == {
        "spec": "",
        "help": "",
        "predict_help": "batchpredict.io.formats,batchpredict.io.bigquery",  # the choices
        "validated": "batchpredict.io.formats,batchpredict.io.bigquery",
    }
