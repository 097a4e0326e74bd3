"""The HTML report opens rendered in a browser, and reads as people write numbers.

Headless Chromium (installed by scripts/ensure_chromium.sh, which `make test` runs) loads the
report from disk as a user's file:// link does: its DOM must hold the rendered title (not the page
source in a <pre>), and its screenshot must show the plots' colour.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from batchpredict.tasks.evaluate import run_evaluate
from batchpredict.tasks.report import ACCENT

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
TITLE = "Held-out batch predictions"


def _evaluate(tmp_path: Path, table: pa.Table, meta: dict) -> dsl.HTML:
    d = tmp_path / "collected"
    d.mkdir()
    pq.write_table(table, d / "predictions.parquet")
    report = dsl.HTML(uri=str(tmp_path / "report"))
    run_evaluate(
        predictions=dsl.Dataset(uri=str(d), metadata=meta),
        metrics=dsl.Metrics(uri=str(tmp_path / "metrics")),
        classification_metrics=dsl.ClassificationMetrics(uri=str(tmp_path / "cm")),
        evaluation_metrics=dsl.Artifact(uri=str(tmp_path / "em")),
        report=report,
        title=TITLE,
    )
    return report


@pytest.fixture
def classification_report(tmp_path) -> dsl.HTML:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 114).astype(float)  # labels as floats, as KFP metadata has them
    p1 = np.clip(y * 0.8 + rng.normal(0.1, 0.2, 114), 0, 1)
    table = pa.table(
        {"target": y, "predicted": (p1 > 0.5).astype(float), "score_0": 1 - p1, "score_1": p1}
    )
    meta = {
        "target_column": "target",
        "problem_type": "classification",
        "class_labels": [0.0, 1.0],
        "score_columns": ["score_0", "score_1"],
        "successful_count": 114.0,  # KFP stores metadata numbers as floats
        "failed_count": 0.0,
    }
    return _evaluate(tmp_path, table, meta)


@pytest.fixture
def regression_report(tmp_path) -> dsl.HTML:
    rng = np.random.default_rng(1)
    t = rng.uniform(25, 346, 88)
    table = pa.table({"target": t, "predicted": t + rng.normal(0, 55, 88)})
    return _evaluate(tmp_path, table, {"target_column": "target", "successful_count": 88.0})


def _texts(html: str) -> list[str]:
    return re.findall(r"<text [^>]*>([^<]*)</text>", html)


def test_report_file_has_an_html_name(classification_report):
    assert classification_report.uri.endswith("/report.html")
    assert Path(classification_report.path).read_text().startswith("<!DOCTYPE html>")


def test_labels_and_counts_are_whole_numbers(classification_report):
    html = Path(classification_report.path).read_text()
    assert "<td>0</td>" in html and "<td>1</td>" in html  # per-class labels, not 0.0 / 1.0
    assert "114 / 0" in html and "114.0" not in html
    assert not any(re.fullmatch(r"\d+\.0", t) for t in _texts(html))


def test_tick_labels_are_rounded_and_count_axes_whole(regression_report):
    html = Path(regression_report.path).read_text()
    histogram = re.findall(r"<svg .*?</svg>", html, re.S)[-1]
    assert "Residual distribution" in histogram
    y_ticks = re.findall(r'<text x="-6" [^>]*>([^<]*)</text>', histogram)
    assert y_ticks and all(re.fullmatch(r"\d+", t) for t in y_ticks), y_ticks
    for label in _texts(html):
        if re.fullmatch(r"-?[\d.]+", label):  # every numeric tick: at most 2 decimals
            assert len(label.partition(".")[2]) <= 2, label


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _png_pixels(path: Path) -> list[tuple[int, ...]]:
    """Decodes an 8-bit RGB/RGBA PNG (Chromium's screenshots) into pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6), header
    bpp = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa_, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa_ <= pb and pa_ <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return [tuple(r[x : x + 3]) for r in rows for x in range(0, stride, bpp)]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run scripts/ensure_chromium.sh")
def test_report_opens_rendered_in_headless_chromium(classification_report, tmp_path):
    path = Path(classification_report.path)
    dom = _chromium("--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert f"<h1>{TITLE}</h1>" in dom.stdout  # rendered: the title is an element...
    assert "&lt;!DOCTYPE" not in dom.stdout  # ...not page source shown as text
    # The same bytes without the .html name open as source (what the report was before):
    source = tmp_path / "report"
    source.write_bytes(path.read_bytes())
    shown = _chromium("--dump-dom", source.as_uri())
    assert "&lt;h1&gt;" in shown.stdout and f"<h1>{TITLE}</h1>" not in shown.stdout
    shot = tmp_path / "shot.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1000,1400", path.as_uri())
    assert shot.exists(), taken.stderr
    accent = tuple(int(ACCENT[i : i + 2], 16) for i in (1, 3, 5))
    pixels = _png_pixels(shot)
    close = [p for p in pixels if all(abs(a - b) <= 8 for a, b in zip(p, accent))]
    assert len(close) > 500, "the plots (drawn in the accent colour) are not on the screenshot"
