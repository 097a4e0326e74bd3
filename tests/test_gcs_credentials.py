"""Cloud Storage without credentials or network fails in seconds, in one line, and says why.

These are the checks that run before gcsfs is asked anything; the emulator stands in for a public
bucket read anonymously.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from batchpredict import BatchPredictionJobSpec, run_batch_prediction
from batchpredict.errors import UserError
from batchpredict.io import fs
from tests.cloud_fixtures import *  # noqa: F403 - fixtures
from tests.cloud_fixtures import gcs_put

BIN = os.path.join(os.path.dirname(sys.executable), "batchpredict")


def _no_credentials_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "STORAGE_"))}
    env.update(
        HOME=str(tmp_path),  # no ~/.config/gcloud/application_default_credentials.json
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        GCE_METADATA_HOST="metadata.invalid",  # not a GCE machine, even in CI on GCE
        GCE_METADATA_IP="127.0.0.1:9",
    )
    return env


@pytest.mark.parametrize("where", ["input", "model", "output"])
def test_no_credentials_is_one_line_in_seconds(tmp_path, sklearn_model_dir, where):
    data = tmp_path / "in.jsonl"
    data.write_text("[1, 2, 3, 4]\n")
    args = {
        "input": ["gs://some-bucket/in/*.jsonl"],
        "model": [str(data)],
        "output": [str(data)],
    }[where]
    model = "gs://some-bucket/model" if where == "model" else sklearn_model_dir
    out = "gs://some-bucket/out" if where == "output" else str(tmp_path / "out")
    started = time.monotonic()
    proc = subprocess.run(
        [BIN, "predict", "--job-display-name", "j", "--gcs-source-uris", *args]
        + ["--gcs-destination-output-uri-prefix", out, "--model-uri", model, "--no-progress"],
        capture_output=True,
        text=True,
        env=_no_credentials_env(tmp_path),
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("batchpredict: error: Cannot read or write 'gs://some-bucket/")
    assert "no Application Default Credentials" in lines[0]
    assert "gcloud auth application-default login" in lines[0]
    assert "does not exist" not in lines[0]
    assert elapsed < 15, elapsed


def test_unreachable_host_is_named_and_not_taken_for_a_missing_bucket(
    tmp_path, monkeypatch, sklearn_model_dir, capfd
):
    adc = tmp_path / "adc.json"  # an ADC file that loads without network
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(fs, "GCS_HOST", "storage.invalid")  # never resolves (RFC 2606)
    monkeypatch.setattr(fs, "_gcs_checked", False)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        run_batch_prediction(
            BatchPredictionJobSpec(
                job_display_name="j",
                model_uri="gs://some-bucket/model",
                gcs_source_uris=["gs://some-bucket/in.jsonl"],
                gcs_destination_output_uri_prefix=str(tmp_path / "out"),
                progress=False,
            )
        )
    assert time.monotonic() - started < 15
    message = str(err.value)
    assert "Cloud Storage (storage.invalid:443) is unreachable" in message
    assert "this is not a missing bucket or object" in message
    assert "\n" not in message
    assert "Traceback" not in capfd.readouterr().err


def test_a_public_bucket_is_read_without_credentials_when_asked(
    tmp_path, sklearn_model_dir, bucket, gcs_emulator
):
    # the emulator stands for a public bucket, reached as gcsfs reaches any endpoint (fsspec's
    # FSSPEC_GCS_ENDPOINT_URL), not through the emulator switch
    gcs_put(f"{bucket}/in/data.jsonl", "[1, 2, 3, 4]\n[5, 6, 7, 8]\n")
    env = {**_no_credentials_env(tmp_path), "FSSPEC_GCS_ENDPOINT_URL": gcs_emulator}

    def predict(out: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BIN, "predict", "--job-display-name", "j", "--model-uri", sklearn_model_dir]
            + ["--gcs-source-uris", f"{bucket}/in/*.jsonl", "--no-progress"]
            + ["--gcs-destination-output-uri-prefix", str(tmp_path / out)],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=300,
        )

    refused = predict("refused")  # without the opt-out: credentials are asked for
    assert refused.returncode == 1
    assert "no Application Default Credentials" in refused.stderr
    assert "set BATCHPREDICT_GCS_ANONYMOUS=1" in refused.stderr
    for out, extra in [
        ("ours", {"BATCHPREDICT_GCS_ANONYMOUS": "1"}),
        ("fsspec", {"FSSPEC_GCS_TOKEN": "anon"}),
    ]:
        proc = predict(out, **extra)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["completion_stats"]["successful_count"] == 2


def test_anonymous_access_still_says_when_the_host_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHPREDICT_GCS_ANONYMOUS", "1")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(fs, "GCS_HOST", "storage.invalid")
    monkeypatch.setattr(fs, "_gcs_checked", False)
    with pytest.raises(UserError, match=r"Cloud Storage \(storage.invalid:443\) is unreachable"):
        fs.filesystem("gs://public-bucket/data.jsonl")
