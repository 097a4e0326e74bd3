"""Reliability under crashes, signals, hangs and leaks: real processes, real signals, real files.

Each test runs a real job (in-process through run_batch_prediction, or the ``batchpredict`` command
in a child process) with a Custom Prediction Routine model written for the case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.engine import SCRATCH_LOCK, SCRATCH_PREFIX, sweep_scratch
from batchpredict.errors import InternalError, UserError
from batchpredict.io.publish import try_lock
from tests.conftest import read_output, write_jsonl

BIN = os.path.join(os.path.dirname(sys.executable), "batchpredict")


def predictor(tmp_path: Path, name: str, predict_body: str, load_body: str = "pass") -> str:
    """Writes a CPR Predictor whose predict runs ``predict_body`` per instance ``i``."""
    module = tmp_path / f"{name}.py"
    indented = "\n".join("            " + line for line in predict_body.splitlines())
    module.write_text(
        "import os, sys, time\n"
        f"class {name}:\n"
        "    def load(self, artifacts_uri):\n"
        f"        {load_body}\n"
        "    def preprocess(self, body):\n"
        "        return body['instances']\n"
        "    def predict(self, instances):\n"
        "        out = []\n"
        "        for i in instances:\n"
        f"{indented}\n"
        "            out.append(i * 2)\n"
        "        return out\n"
        "    def postprocess(self, results):\n"
        "        return {'predictions': results}\n"
    )
    (tmp_path / "model").mkdir(exist_ok=True)
    return f"{module}:{name}"


def job(tmp_path: Path, cls: str, n: int = 40, **kw) -> BatchPredictionJobSpec:
    data = write_jsonl(tmp_path / "in.jsonl", list(range(n)))
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("manual_batch_tuning_parameters_batch_size", 8)
    return BatchPredictionJobSpec(
        job_display_name="rel",
        gcs_source_uris=[data],
        model_uri=str(tmp_path / "model"),
        predictor_class=cls,
        gcs_destination_output_uri_prefix=str(tmp_path / "out"),
        **kw,
    )


def cli_args(spec: BatchPredictionJobSpec) -> list[str]:
    args = [
        "predict",
        "--job-display-name",
        spec.job_display_name,
        "--gcs-source-uris",
        *spec.gcs_source_uris,
        "--model-uri",
        spec.model_uri,
        "--predictor-class",
        spec.predictor_class,
        "--gcs-destination-output-uri-prefix",
        spec.gcs_destination_output_uri_prefix,
        "--workers",
        str(spec.workers),
        "--manual-batch-tuning-parameters-batch-size",
        str(spec.manual_batch_tuning_parameters_batch_size),
        "--no-progress",
    ]
    if spec.output_directory_name:
        args += ["--output-directory-name", spec.output_directory_name]
    return args


def leftovers(prefix: Path) -> list[str]:
    """Hidden temporary directories (and anything else) left under the output prefix."""
    if not prefix.exists():
        return []
    return sorted(n for n in os.listdir(prefix) if n.startswith("."))


def wait_for_workers(proc: subprocess.Popen, count: int, timeout: float = 60) -> list[int]:
    """PIDs of the job's worker processes once ``count`` have loaded the model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        kids = psutil.Process(proc.pid).children(recursive=True)
        workers = [k.pid for k in kids if "resource_tracker" not in " ".join(k.cmdline())]
        if len(workers) >= count:
            time.sleep(1.0)  # let them load the model and start predicting
            return workers
        time.sleep(0.1)
    raise AssertionError("workers did not start")


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def slow(tmp_path: Path) -> str:
    return predictor(tmp_path, "Slow", "time.sleep(0.05)")


# ---- 1. workers never outlive the job ---------------------------------------------------------


def test_workers_die_when_the_main_process_is_sigkilled(tmp_path):
    spec = job(tmp_path, slow(tmp_path), n=4000, workers=2)
    spec.gcs_source_uris = [write_jsonl(tmp_path / "b.jsonl", list(range(4000)))] + list(
        spec.gcs_source_uris
    )
    proc = subprocess.Popen([BIN, *cli_args(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = sigkill_main_once_working(proc, 2)
    assert alive(workers) == [], "workers outlived the main process"


def sigkill_main_once_working(proc: subprocess.Popen, count: int) -> list[int]:
    """SIGKILLs the job's main process once ``count`` workers work; waits up to 5 s for them."""
    workers = wait_for_workers(proc, count)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    return workers


def scratch_dirs(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(SCRATCH_PREFIX))


def test_the_next_job_removes_the_scratch_directory_of_a_sigkilled_one(tmp_path):
    """A killed job cannot remove its temporary files (CPR working directories): the next does."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    spec = job(tmp_path, slow(tmp_path), n=4000, workers=1)
    proc = subprocess.Popen(
        [BIN, *cli_args(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    sigkill_main_once_working(proc, 1)
    (killed,) = scratch_dirs(tmp)
    assert os.listdir(tmp / killed), "the killed job's CPR working directory should be in it"
    (tmp_path / "next").mkdir()
    quick = job(tmp_path / "next", predictor(tmp_path / "next", "Quick", "pass"), n=10)
    done = subprocess.run([BIN, *cli_args(quick)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert scratch_dirs(tmp) == []


def test_scratch_sweep_keeps_running_jobs_and_recent_unlocked_directories(tmp_path):
    running = tmp_path / f"{SCRATCH_PREFIX}running"
    running.mkdir()
    fd = try_lock(str(running / SCRATCH_LOCK))  # as a live job's main process holds it
    recent, old = tmp_path / f"{SCRATCH_PREFIX}recent", tmp_path / f"{SCRATCH_PREFIX}old"
    recent.mkdir()
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    try:
        assert sweep_scratch(str(tmp_path)) == [str(old)]
        assert scratch_dirs(tmp_path) == [f"{SCRATCH_PREFIX}recent", f"{SCRATCH_PREFIX}running"]
    finally:
        os.close(fd)
    assert sweep_scratch(str(tmp_path)) == [str(running)]  # its job is gone


# ---- 2. SIGTERM and Ctrl-C are clean stops ----------------------------------------------------


@pytest.mark.parametrize(
    "sig, code, text", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "interrupted")]
)
def test_sigterm_and_ctrl_c_stop_cleanly(tmp_path, sig, code, text):
    spec = job(tmp_path, slow(tmp_path), n=4000, workers=2)
    spec.gcs_source_uris = [write_jsonl(tmp_path / "b.jsonl", list(range(4000)))] + list(
        spec.gcs_source_uris
    )
    proc = subprocess.Popen(
        [BIN, *cli_args(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers = wait_for_workers(proc, 2)
    assert leftovers(tmp_path / "out"), "the job should be writing its temporary directory"
    started = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground process group
    else:
        os.kill(proc.pid, sig)  # Kubernetes signals the main process only
    out, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 8
    assert proc.returncode == code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err
    assert alive(workers) == []
    assert [n for n in leftovers(tmp_path / "out") if not n.endswith(".lock")] == []
    assert not any(n.startswith("prediction") for n in os.listdir(tmp_path / "out"))


# ---- 3 and 4. crashes in model code: isolated in a fresh worker, never in the main process ----


@pytest.mark.parametrize(
    "crash, reason",
    [
        ("os.abort()", "killed by signal SIGABRT"),
        ("os.kill(os.getpid(), 11)", "killed by signal SIGSEGV"),
        ("sys.exit(3)", "SystemExit: 3"),
        ("raise MemoryError('boom')", "MemoryError: boom"),
    ],
)
def test_an_instance_that_crashes_the_model_is_isolated_and_the_job_goes_on(
    tmp_path, crash, reason
):
    cls = predictor(tmp_path, "Crashy", f"if i == 13:\n    {crash}")
    result = run_batch_prediction(job(tmp_path, cls, n=40))  # one split: was in-process
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"] for r in out["results"]) == [i for i in range(40) if i != 13]
    assert all(r["prediction"] == r["instance"] * 2 for r in out["results"])
    (error,) = out["errors"]
    assert error["instance"] == 13 and error["error"]["code"] == 13
    assert reason in error["error"]["message"]
    assert result.completion_stats == {
        "successful_count": 39,
        "failed_count": 1,
        "incomplete_count": 0,
    }
    assert leftovers(tmp_path / "out") == []


def test_model_runs_in_worker_processes_never_in_the_main_process(tmp_path):
    pids = tmp_path / "pids.txt"
    cls = predictor(
        tmp_path,
        "Where",
        f"open({str(pids)!r}, 'a').write(f'predict {{os.getpid()}}\\n')",
        load_body=f"open({str(pids)!r}, 'a').write(f'load {{os.getpid()}}\\n')",
    )
    run_batch_prediction(job(tmp_path, cls, n=10))
    seen = {int(line.split()[1]) for line in pids.read_text().splitlines()}
    assert seen and os.getpid() not in seen


def test_a_crash_in_load_is_a_clear_internal_error_and_leaves_nothing(tmp_path):
    cls = predictor(tmp_path, "BadLoad", "pass", load_body="os.abort()")
    with pytest.raises(InternalError, match="died while loading the model.*SIGABRT"):
        run_batch_prediction(job(tmp_path, cls, n=10))
    assert leftovers(tmp_path / "out") == []


def test_a_killed_worker_is_noticed_at_once_and_its_work_redone(tmp_path):
    cls = slow(tmp_path)
    spec = job(tmp_path, cls, n=600, workers=2)
    spec.gcs_source_uris.append(write_jsonl(tmp_path / "b.jsonl", list(range(600, 1200))))
    proc = subprocess.Popen(
        [BIN, *cli_args(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers = wait_for_workers(proc, 2)
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["completion_stats"]["successful_count"] == 1200
    got = read_output(result["gcs_output_directory"])
    assert sorted(r["instance"] for r in got["results"]) == list(range(1200))


def test_restarts_are_bounded(tmp_path, monkeypatch):
    from batchpredict import engine

    monkeypatch.setattr(engine, "MAX_WORKER_RESTARTS", 3)
    cls = predictor(tmp_path, "AlwaysCrash", "os.abort()")
    with pytest.raises(InternalError, match="died 4 times"):
        run_batch_prediction(job(tmp_path, cls, n=40))
    assert leftovers(tmp_path / "out") == []


# ---- 5. a hung predict call ends --------------------------------------------------------------


def test_a_hanging_instance_is_stopped_by_the_deadline_and_recorded(tmp_path):
    cls = predictor(tmp_path, "Hang", "if i == 7:\n    time.sleep(3600)")
    started = time.monotonic()
    result = run_batch_prediction(job(tmp_path, cls, n=16, predict_timeout_seconds=1))
    assert time.monotonic() - started < 60
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"] for r in out["results"]) == [i for i in range(16) if i != 7]
    (error,) = out["errors"]
    assert error["instance"] == 7
    assert error["error"]["code"] == 4
    assert "DEADLINE_EXCEEDED" in error["error"]["message"]


def test_a_hanging_load_fails_the_job_at_the_load_deadline(tmp_path):
    """load() that never returns: exit 13 with one line naming the model and the deadline."""
    pids = tmp_path / "pids.txt"
    cls = predictor(
        tmp_path,
        "SlowLoad",
        "pass",
        load_body=f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(3600)",
    )
    spec = job(tmp_path, cls, n=40, workers=2)
    spec.gcs_source_uris.append(write_jsonl(tmp_path / "b.jsonl", list(range(40))))
    started = time.monotonic()
    proc = subprocess.run(
        [BIN, *cli_args(spec), "--load-timeout-seconds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert proc.returncode == 13, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "SlowLoad" in lines[0] and "within 2 s (load_timeout_seconds)" in lines[0], lines
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    deadline = time.monotonic() + 5
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(workers) == []
    assert [n for n in leftovers(tmp_path / "out") if not n.endswith(".lock")] == []
    assert not any(n.startswith("prediction") for n in os.listdir(tmp_path / "out"))


def test_load_timeout_seconds_must_not_be_negative(tmp_path):
    cls = predictor(tmp_path, "Ok", "pass")
    with pytest.raises(UserError, match="load_timeout_seconds must be >= 0"):
        run_batch_prediction(job(tmp_path, cls, n=4, load_timeout_seconds=-1))


def test_progress_is_printed_on_a_timer_during_a_stall(tmp_path, monkeypatch, capsys):
    from batchpredict import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.5)
    cls = predictor(tmp_path, "Stall", "if i == 0:\n    time.sleep(3)")
    run_batch_prediction(job(tmp_path, cls, n=4, progress=True))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("batchpredict:")]
    assert len(lines) >= 3, lines


# ---- 6. leaks and memory pressure -------------------------------------------------------------


def test_workers_are_recycled_after_n_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHPREDICT_WORKER_MAX_BATCHES", "2")
    pids = tmp_path / "pids.txt"
    cls = predictor(tmp_path, "Pids", f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')")
    result = run_batch_prediction(job(tmp_path, cls, n=64))
    assert len(set(pids.read_text().split())) == 4  # 8 batches, 2 per worker process
    out = read_output(result.gcs_output_directory)
    assert sorted(r["instance"] for r in out["results"]) == list(range(64))
    assert result.completion_stats["successful_count"] == 64


def test_a_leaking_model_is_recycled_above_the_rss_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHPREDICT_WORKER_MAX_RSS_MB", "400")
    rss = tmp_path / "rss.txt"
    leak = (
        "globals().setdefault('LEAK', []).append(bytearray(20 * 2**20)) if i == instances[0] "
        "else None\n"
        f"open({str(rss)!r}, 'a').write(open('/proc/self/statm').read().split()[1] + '\\n')"
    )
    cls = predictor(tmp_path, "Leak", leak)
    result = run_batch_prediction(job(tmp_path, cls, n=400))  # 50 calls: 1 GB if never recycled
    peak_mb = max(int(p) for p in rss.read_text().split()) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert peak_mb < 500
    assert result.completion_stats["successful_count"] == 400


def test_memory_error_is_a_worker_failure_not_bad_rows(tmp_path):
    # Every worker process runs out of memory on its third call (a leak): no row is bad.
    cls = predictor(
        tmp_path,
        "Oom",
        "globals()['CALLS'] = globals().get('CALLS', 0) + (i == instances[0])\n"
        "if globals()['CALLS'] >= 3:\n    raise MemoryError()",
    )
    result = run_batch_prediction(job(tmp_path, cls, n=40))
    assert result.completion_stats["failed_count"] == 0
    assert result.completion_stats["successful_count"] == 40


# ---- 7, 8, 9: publishing ----------------------------------------------------------------------


def test_dot_names_are_refused_before_any_work(tmp_path):
    marker = tmp_path / "loaded"
    cls = predictor(tmp_path, "Touch", "pass", load_body=f"open({str(marker)!r}, 'w')")
    for name in (".", "..", " ", "a/b"):
        with pytest.raises(UserError, match="output_directory_name"):
            run_batch_prediction(job(tmp_path, cls, output_directory_name=name))
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_second_job_on_the_same_name_fails_fast_naming_the_conflict(tmp_path):
    spec = job(tmp_path, slow(tmp_path), n=400, output_directory_name="fixed")
    first = subprocess.Popen(
        [BIN, *cli_args(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_workers(first, 1)
    started = time.monotonic()
    second = subprocess.run([BIN, *cli_args(spec)], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 20
    assert second.returncode == 1
    assert "Another batch prediction job is writing" in second.stderr
    assert "fixed" in second.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    got = read_output(str(tmp_path / "out" / "fixed"))
    assert sorted(r["instance"] for r in got["results"]) == list(range(400))


def test_stale_temporary_directories_of_dead_jobs_are_swept(tmp_path):
    cls = predictor(tmp_path, "Ok", "pass")
    out = tmp_path / "out"
    out.mkdir()
    own = out / ".fixed.incomplete-0badc0de"  # this name's own leftover: always stale
    other = out / ".prediction-x-2026_01_01T00_00_00_000Z.incomplete-deadbeef"  # free lock
    old = out / ".prediction-y-2026_01_01T00_00_00_000Z.incomplete-00000000"  # no lock, old
    for d in (own, other, old):
        d.mkdir()
        (d / "prediction.results-00000-of-00001").write_text("x" * 1000)
    (out / ".prediction-x-2026_01_01T00_00_00_000Z.lock").write_text("")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    run_batch_prediction(job(tmp_path, cls, output_directory_name="fixed"))
    assert leftovers(out) == []
    assert sorted(os.listdir(out)) == ["fixed"]


# ---- 14, 15, 16: the environment ---------------------------------------------------------------


def _special_input(tmp_path: Path, kind: str) -> str:
    import socket

    path = tmp_path / "data" / f"{kind}.jsonl"
    path.parent.mkdir(exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "loop":
        os.symlink(path, path)
    return str(path)


@pytest.mark.parametrize(
    "kind, text",
    [
        ("fifo", "is a FIFO"),
        ("socket", "is a socket"),
        ("device", "is a device"),
        ("loop", "symbolic link loop"),
    ],
)
@pytest.mark.parametrize("wildcard", [False, True], ids=["path", "glob"])
def test_special_files_among_inputs_are_refused_before_any_work(tmp_path, kind, text, wildcard):
    marker = tmp_path / "loaded"
    cls = predictor(tmp_path, "Touch", "pass", load_body=f"open({str(marker)!r}, 'w')")
    path = _special_input(tmp_path, kind)
    write_jsonl(tmp_path / "data" / "good.jsonl", [1, 2])
    spec = job(tmp_path, cls)
    spec.gcs_source_uris = [str(tmp_path / "data" / "*.jsonl") if wildcard else path]
    with pytest.raises(UserError, match=text) as info:
        run_batch_prediction(spec)
    assert path in str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_exit_1_and_leaves_no_temporary_output(tmp_path):
    import resource

    cls = predictor(tmp_path, "Ok", "pass")
    spec = job(tmp_path, cls, n=50_000)
    spec.manual_batch_tuning_parameters_batch_size = 1000

    def limit() -> None:  # the output passes 256 KiB: EFBIG, as a full quota would
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    proc = subprocess.run(
        [BIN, *cli_args(spec)], capture_output=True, text=True, timeout=120, preexec_fn=limit
    )
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("batchpredict: error: Disk full"), proc.stderr
    assert "EFBIG" in lines[0]
    assert os.listdir(tmp_path / "out") == []


def test_an_unexpected_exception_is_one_internal_line_with_the_traceback_on_demand(
    tmp_path, monkeypatch, capsys
):
    from batchpredict import backends, cli

    def broken(spec):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(backends, "run_batch_prediction", broken)
    args = ["predict", "--job-display-name", "j", "--gcs-source-uris", "x", "--model-uri", "m"]
    assert cli.main(args) == 13
    err = capsys.readouterr().err
    assert err.startswith(
        "batchpredict: error: internal: RuntimeError: something nobody expected"
    ), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("BATCHPREDICT_DEBUG", "1")
    assert cli.main(args) == 13
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_cpr_working_directories_are_removed_when_the_job_ends(tmp_path, monkeypatch):
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    cls = predictor(tmp_path, "Copies", "pass", load_body="open('copied-artifact', 'w').write('x')")
    run_batch_prediction(job(tmp_path, cls, n=10, workers=2))
    assert os.listdir(tmp) == []


# ---- 7: a fixed output_directory_name is replaced atomically, whatever is killed when ----------

KILLER = """
import os, shutil, signal, sys
from batchpredict.io import publish

point = sys.argv[1]
real_renameat2, real_rmtree = publish.renameat2, shutil.rmtree

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def renameat2(src, dst, flags):
    if point == "before-swap" and flags == publish.RENAME_EXCHANGE:
        die()
    done = real_renameat2(src, dst, flags)
    if point == "after-swap" and flags == publish.RENAME_EXCHANGE:
        die()
    return done

def rmtree(path, *args, **kwargs):
    if point == "mid-delete" and ".incomplete-" in str(path):
        os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))
        die()
    return real_rmtree(path, *args, **kwargs)

publish.renameat2 = renameat2
shutil.rmtree = rmtree
from batchpredict.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _complete_set(directory: Path) -> int:
    """The rows of a complete output set (its errors_stats, written last, is there)."""
    got = read_output(str(directory))
    return len(got["results"])


@pytest.mark.parametrize("point", ["before-swap", "after-swap", "mid-delete"])
def test_a_fixed_name_is_replaced_atomically_whatever_is_killed_when(tmp_path, point):
    from batchpredict.io import publish

    if not publish._libc_renameat2():
        pytest.skip("no renameat2 here")
    cls = predictor(tmp_path, "Ok", "pass")
    first = job(tmp_path, cls, n=30, output_directory_name="fixed")
    run_batch_prediction(first)
    final = tmp_path / "out" / "fixed"
    assert _complete_set(final) == 30
    second = job(tmp_path, cls, n=50, output_directory_name="fixed")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), point, *cli_args(second)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Exactly one complete set is visible under the name: the old one or the new one.
    assert _complete_set(final) == (30 if point == "before-swap" else 50)
    visible = [n for n in os.listdir(tmp_path / "out") if not n.startswith(".")]
    assert visible == ["fixed"]
    run_batch_prediction(job(tmp_path, cls, n=20, output_directory_name="fixed"))
    assert _complete_set(final) == 20
    assert sorted(os.listdir(tmp_path / "out")) == ["fixed"]  # leftovers swept


def test_without_renameat2_a_fixed_name_is_still_replaced(tmp_path, monkeypatch):
    from batchpredict.io import publish

    monkeypatch.setattr(publish, "_renameat2_fn", False)
    cls = predictor(tmp_path, "Ok", "pass")
    run_batch_prediction(job(tmp_path, cls, n=30, output_directory_name="fixed"))
    run_batch_prediction(job(tmp_path, cls, n=10, output_directory_name="fixed"))
    assert _complete_set(tmp_path / "out" / "fixed") == 10
    assert sorted(os.listdir(tmp_path / "out")) == ["fixed"]


# ---- 10-13: one record can only fail itself -----------------------------------------------------


def _raw_job(tmp_path: Path, cls: str, lines: list[str], **kw) -> BatchPredictionJobSpec:
    spec = job(tmp_path, cls, **kw)
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    spec.gcs_source_uris = [str(path)]
    return spec


def test_a_deeply_nested_instance_fails_alone(tmp_path):
    cls = predictor(tmp_path, "Const", "pass").replace("Const", "Const")
    (tmp_path / "Const.py").write_text(
        (tmp_path / "Const.py").read_text().replace("out.append(i * 2)", "out.append(1)")
    )
    deep = "[" * 1000 + "]" * 1000
    result = run_batch_prediction(_raw_job(tmp_path, cls, ["1", deep, "2"]))
    out = read_output(result.gcs_output_directory)
    assert [r["instance"] for r in out["results"]] == [1, 2]
    (error,) = out["errors"]
    assert error["error"]["code"] == 3
    assert error["instance"].startswith("<not JSON-encodable (RecursionError)")
    assert result.completion_stats["failed_count"] == 1


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_unencodable_prediction_fails_its_instance_with_code_13(tmp_path, fmt):
    cls = predictor(tmp_path, "Sets", "pass")
    (tmp_path / "Sets.py").write_text(
        (tmp_path / "Sets.py")
        .read_text()
        .replace("out.append(i * 2)", "out.append({i} if i == 3 else i * 2)")
    )
    result = run_batch_prediction(job(tmp_path, cls, n=10, predictions_format=fmt))
    assert result.completion_stats["successful_count"] == 9
    out_dir = Path(result.gcs_output_directory)
    errors = [json.loads(line) for line in out_dir.glob("prediction.errors-*").__next__().open()]
    assert [(e["instance"], e["error"]["code"]) for e in errors] == [(3, 13)]
    assert "cannot be written" in errors[0]["error"]["message"]


def test_parquet_keys_of_mixed_types_widen_the_column(tmp_path):
    import pyarrow.parquet as pq

    cls = predictor(tmp_path, "Ok", "pass")
    (tmp_path / "Ok.py").write_text(
        (tmp_path / "Ok.py").read_text().replace("out.append(i * 2)", "out.append(i['x'] * 2)")
    )
    lines = [json.dumps({"id": i, "x": i}) for i in range(8)]
    lines += [json.dumps({"id": f"s{i}", "x": i}) for i in range(8)]
    spec = _raw_job(tmp_path, cls, lines, key_field="id", predictions_format="parquet")
    result = run_batch_prediction(spec)
    (shard,) = Path(result.gcs_output_directory).glob("prediction.results-*")
    table = pq.read_table(shard)
    assert table.column("key").to_pylist() == [str(i) for i in range(8)] + [
        f"s{i}" for i in range(8)
    ]
    assert table.column("prediction").to_pylist() == [i * 2 for i in range(8)] * 2
    assert result.completion_stats["successful_count"] == 16


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_later_objects_with_extra_fields_widen_the_table(tmp_path, fmt):
    import pyarrow.parquet as pq

    cls = predictor(tmp_path, "Ok", "pass")
    (tmp_path / "Ok.py").write_text(
        (tmp_path / "Ok.py").read_text().replace("out.append(i * 2)", "out.append(len(i))")
    )
    lines = [json.dumps({"a": i}) for i in range(8)] + [json.dumps({"a": 9, "b": "late"})]
    spec = _raw_job(tmp_path, cls, lines, instance_type="object", predictions_format=fmt)
    result = run_batch_prediction(spec)
    (shard,) = Path(result.gcs_output_directory).glob("prediction.results-*")
    if fmt == "csv":
        rows = shard.read_text().splitlines()
        assert rows[0] == "a,b,prediction"
        assert rows[1] == "0,,1" and rows[-1] == "9,late,2"
    else:
        table = pq.read_table(shard)
        assert table.column_names == ["a", "b", "prediction"]
        assert table.column("b").to_pylist() == [None] * 8 + ["late"]
        assert table.column("prediction").to_pylist() == [1] * 8 + [2]


def test_a_wrong_number_of_predictions_is_a_model_error(tmp_path):
    cls = predictor(tmp_path, "Short", "pass")
    (tmp_path / "Short.py").write_text(
        (tmp_path / "Short.py").read_text().replace("return out", "return out[:-1]")
    )
    result = run_batch_prediction(job(tmp_path, cls, n=8))
    out = read_output(result.gcs_output_directory)
    assert len(out["errors"]) == 8  # even alone, each call returns one prediction too few
    assert {e["error"]["code"] for e in out["errors"]} == {13}
    assert "returned 0 predictions for 1 instances" in out["errors"][0]["error"]["message"]


def test_a_job_where_every_instance_failed_says_so(tmp_path, capfd):
    cls = predictor(tmp_path, "Fail", "raise ValueError('bad')")
    result = run_batch_prediction(job(tmp_path, cls, n=8))
    assert result.completion_stats["successful_count"] == 0
    assert "8 of 8 instances failed (100.0%)" in capfd.readouterr().err


def test_nan_and_infinity_predictions_are_read_back_by_the_collect_step(tmp_path):
    from batchpredict.io.results import read_records

    cls = predictor(tmp_path, "Nan", "pass")
    (tmp_path / "Nan.py").write_text(
        (tmp_path / "Nan.py")
        .read_text()
        .replace("out.append(i * 2)", "out.append([float('nan'), float('inf'), -float('inf')][i])")
    )
    result = run_batch_prediction(job(tmp_path, cls, n=3))
    (shard,) = Path(result.gcs_output_directory).glob("prediction.results-*")
    assert shard.read_text().splitlines() == [
        json.dumps({"instance": 0, "prediction": float("nan")}),
        json.dumps({"instance": 1, "prediction": float("inf")}),
        json.dumps({"instance": 2, "prediction": -float("inf")}),
    ]
    predictions = [r.prediction for r in read_records(str(shard))]
    assert str(predictions) == "[nan, inf, -inf]"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path, fmt):
    cls = predictor(tmp_path, "Ok", "pass")
    path = tmp_path / f"bom.{fmt}"
    body = "[1]\n[2]\n" if fmt == "jsonl" else "a\n1\n2\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    if fmt == "csv":
        (tmp_path / "Ok.py").write_text(
            (tmp_path / "Ok.py").read_text().replace("out.append(i * 2)", "out.append(i[0])")
        )
    else:
        (tmp_path / "Ok.py").write_text(
            (tmp_path / "Ok.py").read_text().replace("out.append(i * 2)", "out.append(i[0])")
        )
    spec = job(tmp_path, cls, instances_format=fmt)
    spec.gcs_source_uris = [str(path)]
    result = run_batch_prediction(spec)
    assert result.completion_stats == {
        "successful_count": 2,
        "failed_count": 0,
        "incomplete_count": 0,
    }


def test_a_gzip_file_named_jsonl_is_named_as_gzip(tmp_path):
    import gzip

    cls = predictor(tmp_path, "Ok", "pass")
    path = tmp_path / "gz.jsonl"
    path.write_bytes(gzip.compress(b"[1]\n[2]\n"))
    spec = job(tmp_path, cls)
    spec.gcs_source_uris = [str(path)]
    with pytest.raises(UserError, match="is gzip-compressed"):
        run_batch_prediction(spec)
    assert leftovers(tmp_path / "out") == []
