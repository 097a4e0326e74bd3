"""Progress reporting: a live line on a terminal, plain log lines otherwise."""

import io

from batchpredict import progress as progress_mod
from batchpredict.progress import Progress


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_plain_log_lines_with_rows_rate_and_eta(monkeypatch):
    monkeypatch.setattr(progress_mod, "LOG_INTERVAL_SECONDS", 0.0)
    stream = io.StringIO()
    p = Progress(total_work=1000, stream=stream)
    p.update(rows=50, work=250)
    p.update(rows=50, work=250)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("batchpredict: 100 rows, ")
    assert "rows/s" in lines[-1] and "50%" in lines[-1] and "ETA" in lines[-1]


def test_live_line_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_mod, "TTY_REFRESH_SECONDS", 0.0)
    stream = FakeTty()
    p = Progress(total_work=10, stream=stream)
    p.update(rows=5, work=5)
    p.close()
    text = stream.getvalue()
    assert text.startswith("\r5 rows")
    assert text.endswith("\n") and text.count("\n") == 1


def test_disabled_prints_nothing():
    stream = FakeTty()
    p = Progress(total_work=10, enabled=False, stream=stream)
    p.update(rows=5, work=5)
    p.close()
    assert stream.getvalue() == ""
