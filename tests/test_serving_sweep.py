"""The sweep every local job starts with costs nothing where no container job was killed.

No Docker mark: this is about machines without Docker (tests/test_serving_container.py has the
kill -9 tests with a real engine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batchpredict.backends import serving
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def test_jobs_without_docker_pay_nothing_for_the_sweep(tmp_path, sklearn_model_dir):
    """No record: Docker is never imported. A record the engine cannot reach: the job runs."""
    state = tmp_path / "state"
    data = write_jsonl(tmp_path / "in.jsonl", [[5.1, 3.5, 1.4, 0.2]])
    code = (
        "import sys\n"
        "from batchpredict import BatchPredictionJobSpec, run_batch_prediction\n"
        "r = run_batch_prediction(BatchPredictionJobSpec(job_display_name='j', "
        f"gcs_source_uris=[{data!r}], gcs_destination_output_uri_prefix=sys.argv[1], "
        f"model_uri={sklearn_model_dir!r}, workers=1, progress=False))\n"
        "print(r.completion_stats['successful_count'], 'docker' in sys.modules)\n"
    )
    env = {
        **os.environ,
        serving.STATE_DIR_ENV: str(state),
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
    }

    def job(out: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert job("a") == ["1", "False"]
    # A killed job's record (its process is gone) on an engine that does not answer: kept.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.mkdir()
    record = {
        "owner": serving.owner_label(os.getpid()).rsplit("|", 2)[0] + f"|{dead.pid}|1",
        "host": os.uname().nodename,
        "docker_host": env["DOCKER_HOST"],
    }
    (state / "batchpredict-gone-1").write_text(json.dumps(record))
    assert job("b") == ["1", "True"]
    assert os.listdir(state) == ["batchpredict-gone-1"]
