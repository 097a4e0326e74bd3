"""Progress of a long job: a live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# How often a progress line is printed: live on a terminal, sparser in logs.
TTY_REFRESH_SECONDS = 0.5
LOG_INTERVAL_SECONDS = 10.0


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class Progress:
    """Tracks rows done and work units (bytes or rows) against the total, and reports them."""

    def __init__(self, total_work: int, enabled: bool = True, stream: TextIO | None = None):
        """``total_work``: the input's size in the units the source reports."""
        self.total_work = max(total_work, 0)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.rows = 0
        self.work = 0
        self.start = time.monotonic()
        self._last = self.start

    def update(self, rows: int, work: int) -> None:
        """Adds finished rows and work units; prints when it is time to."""
        self.rows += rows
        self.work += work
        now = time.monotonic()
        interval = TTY_REFRESH_SECONDS if self.tty else LOG_INTERVAL_SECONDS
        if self.enabled and now - self._last >= interval:
            self._last = now
            self._print(self.line(now))

    def line(self, now: float | None = None) -> str:
        """``rows done, rows/s, percent and ETA``."""
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.rows / elapsed
        text = f"{self.rows:,} rows, {rate:,.0f} rows/s, elapsed {_fmt_duration(elapsed)}"
        if self.total_work and self.work:
            frac = min(self.work / self.total_work, 1.0)
            eta = elapsed * (1 - frac) / frac
            text += f", {frac:.0%}, ETA {_fmt_duration(eta)}"
        return text

    def _print(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(79))
        else:
            self.stream.write(f"batchpredict: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the live line."""
        if self.enabled and self.tty:
            self.stream.write("\r" + self.line().ljust(79) + "\n")
            self.stream.flush()
