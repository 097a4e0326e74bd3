"""The collect step (and every table-reading step) exits 0, never aborting at interpreter exit.

The abort ("terminate called without an active exception", SIGABRT, exit 134, after the outputs
were written) came from handing pyarrow a Python file object: the Parquet reader tears a finished
scan down on a thread-pool thread after ``read_table`` has returned, releasing buffers that hold
Python ``bytes``; when that happens while the interpreter is finalizing, Python ends the thread
(``pthread_exit``) inside a C++ destructor and the process aborts. A core dump showed exactly that
thread (``~PyBuffer`` -> ``PyGILState_Ensure`` -> ``pthread_exit`` -> ``std::terminate``, under
``ExecPlanImpl::~ExecPlanImpl``) while the main thread was in ``Py_FinalizeEx``. Before the fix
these loops aborted in 2 of 150 real collect-step runs and 3 of 150 read-then-exit runs on a loaded
machine. It is a race, so each test runs many real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STEP_RUNS = 30
READ_RUNS = 100


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def _ok(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 0 and "terminate called" not in proc.stderr


def _artifact(name: str, title: str, uri: str, metadata: dict | None = None) -> dict:
    return {
        "artifacts": [
            {"name": name, "type": {"schemaTitle": title}, "uri": uri, "metadata": metadata or {}}
        ]
    }


@pytest.mark.slow
def test_collect_step_exits_cleanly_run_after_run(tmp_path):
    """The compiled component's own command, as kfp.local and Vertex run it, again and again."""
    spec = yaml.safe_load((ROOT / "component_specs" / "collect_predictions.yaml").read_text())
    container = spec["deploymentSpec"]["executors"]["exec-collect-predictions"]["container"]
    n = 150  # small, as in the example pipelines: the step ends soon after its reads
    truth = tmp_path / "truth.parquet"
    pq.write_table(
        pa.table({"f": [float(i) for i in range(n)], "label": [i % 2 for i in range(n)]}), truth
    )
    out = tmp_path / "predictions" / "prediction-m-2026_01_01T00_00_00_000Z"
    out.mkdir(parents=True)
    pq.write_table(
        pa.table({"key": list(range(n)), "prediction": [json.dumps([0.3, 0.7])] * n}),
        out / "prediction.results-00000-of-00001.parquet",
    )
    model_meta = {"target": "label", "problem_type": "classification", "class_labels": [0, 1]}
    failures = []
    for i in range(STEP_RUNS):
        run = tmp_path / f"run{i}"
        executor_input = {
            "inputs": {
                "artifacts": {
                    "predictions": _artifact("predictions", "system.Artifact", str(out.parent)),
                    "ground_truth": _artifact("ground_truth", "system.Dataset", str(truth)),
                    "model": _artifact("model", "system.Artifact", str(tmp_path), model_meta),
                },
                "parameterValues": {"key_column": "row_id"},
            },
            "outputs": {
                "artifacts": {
                    "collected": _artifact("collected", "system.Dataset", str(run / "collected"))
                },
                "outputFile": str(run / "executor_output.json"),
            },
        }
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
        proc = subprocess.run(
            container["command"] + args,
            env=_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if not _ok(proc):
            failures.append((i, proc.returncode, proc.stderr[-500:]))
        else:
            assert (run / "executor_output.json").exists()
            assert (run / "collected" / "predictions.parquet").exists()
    assert not failures, failures


READ_THEN_EXIT = """
import sys
from batchpredict.io import results, tables
table = (tables.read_table if sys.argv[1] == "table" else results.read_table_file)(sys.argv[2])
assert table.num_rows > 0
"""


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["table", "results"])
def test_reading_a_table_then_exiting_at_once_never_aborts(tmp_path, reader):
    """The narrowest window: the interpreter exits right after pyarrow's read returns."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": [str(i) for i in range(50_000)], "x": range(50_000)}), path)
    script = tmp_path / "read.py"
    script.write_text(READ_THEN_EXIT)
    failures = []
    for i in range(READ_RUNS // 2):
        proc = subprocess.run(
            [sys.executable, str(script), reader, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if not _ok(proc):
            failures.append((i, proc.returncode, proc.stderr[-300:]))
    assert not failures, failures


PARQUET_READ_AND_MERGE = """
import sys
from batchpredict.instances import InstanceConfig
from batchpredict.io.sinks import ParquetShardWriter
from batchpredict.io.sources import ParquetSource
source = ParquetSource([sys.argv[1]], InstanceConfig())
rows = sum(b.read_count for s in source.splits() for b in source.batches(s, 4096))
assert rows == 50_000, rows
writer = ParquetShardWriter(sys.argv[2] + ".parquet", sys.argv[2] + ".errors", "key")
writer.write(list(range(100)), [0.5] * 100, None)
writer.write([f"s{i}" for i in range(100)], [0.5] * 100, None)  # a new segment, merged at close
writer.close()
"""


def _parquet_inputs(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"a": [float(i) for i in range(50_000)], "b": [1.0] * 50_000}),
        path,
        row_group_size=20_000,
    )
    script = tmp_path / "read.py"
    script.write_text(PARQUET_READ_AND_MERGE)
    return path, script


def test_parquet_source_and_segment_merge_hand_pyarrow_native_files(tmp_path, monkeypatch):
    """Local Parquet inputs and result segments reach pyarrow as Arrow files, not Python ones."""
    from batchpredict.instances import InstanceConfig
    from batchpredict.io.sinks import ParquetShardWriter
    from batchpredict.io.sources import ParquetSource

    opened = []
    real = pq.ParquetFile

    class Recording(real):
        def __init__(self, source, *args, **kwargs):
            opened.append(type(source))
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Recording)
    path, _ = _parquet_inputs(tmp_path)
    source = ParquetSource([str(path)], InstanceConfig())
    assert sum(b.read_count for s in source.splits() for b in source.batches(s, 4096)) == 50_000
    out = tmp_path / "shard"
    writer = ParquetShardWriter(f"{out}.parquet", f"{out}.errors", "key")
    writer.write(list(range(10)), [0.5] * 10, None)
    writer.write([f"s{i}" for i in range(10)], [0.5] * 10, None)
    writer.close()
    assert pq.read_table(f"{out}.parquet").column("key").to_pylist()[-1] == "s9"
    assert opened and all(issubclass(t, pa.NativeFile) for t in opened), opened


@pytest.mark.slow
def test_parquet_read_and_merge_then_exiting_never_aborts(tmp_path):
    """The engine's own Parquet reads (source splits and batches, segment merge), then exit."""
    path, script = _parquet_inputs(tmp_path)
    failures = []
    for i in range(READ_RUNS // 2):
        proc = subprocess.run(
            [sys.executable, str(script), str(path), str(tmp_path / f"shard{i}")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if not _ok(proc):
            failures.append((i, proc.returncode, proc.stderr[-300:]))
    assert not failures, failures
