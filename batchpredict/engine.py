"""The local engine: batching, worker processes, failure isolation and completion stats.

Steps of a job (``run_job``):
1. The source plans its splits; the destination prepares a temporary output directory.
2. Worker processes (one per core by default, at least one: the model never runs in the main
   process) each load the model once and are handed pieces of work (a split, from a batch on) by
   the main process. A piece is read in batches of ``batch_size`` records and written to its own
   part of the output, which becomes one result shard at commit.
3. A predict call that raises is split until the failing instances are isolated; each gets an
   error record (code 3 for bad input, 13 for a model error), the rest succeed. Its instances are
   first grouped by structure (bad rows usually differ: a string among numbers, another length,
   other keys) and each group predicted in one call; within a group that still fails, the number
   of calls is bounded by the failure rate seen so far (see ``predict_batch``).
4. A worker that dies (a crash in model code, ``os.abort()``, ``SystemExit``, ``MemoryError``, the
   OOM killer) or whose predict call passes ``predict_timeout_seconds`` is noticed at once; its
   piece is discarded and redone by a fresh worker, with the call it was in split further, until
   the instance that kills the model is isolated and recorded as failed (code 13, or 4 for a
   deadline). After ``MAX_WORKER_RESTARTS`` restarts the job fails.
5. Workers are recycled after ``BATCHPREDICT_WORKER_MAX_BATCHES`` batches or above
   ``BATCHPREDICT_WORKER_MAX_RSS_MB`` of memory (a leaking model), and die with the main process
   (``PR_SET_PDEATHSIG`` on Linux, and a parent-pid watchdog).
6. The main process counts everything (successful + failed == read), reports progress on a timer,
   and the destination writes ``prediction.errors_stats-*`` and publishes the output (completion
   stats go in the result).
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from typing import Any

from batchpredict import layout
from batchpredict.errors import (
    CODE_DEADLINE_EXCEEDED,
    CODE_INTERNAL,
    CODE_INVALID_ARGUMENT,
    BatchPredictError,
    InstanceError,
    InternalError,
    ModelServerError,
    UserError,
    environment_error,
    error_cause,
)
from batchpredict.io import fs
from batchpredict.io.base import Destination, Source, Split, listed
from batchpredict.io.encoding import UNENCODABLE, dumps
from batchpredict.io.publish import try_lock
from batchpredict.models import ModelHandler, ModelRef, handler_class, load_handler
from batchpredict.progress import Progress

# Worker processes are forked when this process runs no other thread (fast); otherwise they are
# spawned fresh, since forking a process whose threads may hold locks can deadlock the child. The
# model is loaded in each worker either way, never in this process.
FORK_WHEN_SINGLE_THREADED = True
# Distinct causes a worker (and the job) counts; failures of further causes are counted under
# layout.OTHER_ERRORS_CAUSE. errors_stats keeps the layout.MAX_ERRORS_STATS_LINES most frequent.
MAX_DISTINCT_ERRORS = 10_000
# How often the main process wakes up without messages: deadlines, progress, liveness.
POLL_SECONDS = 0.2
# Worker deaths (crashes, deadlines) a job survives; each isolates part of a batch.
MAX_WORKER_RESTARTS = 64
# A piece whose worker dies twice outside any predict call (reading, writing) fails the job.
MAX_CRASHES_OUTSIDE_PREDICT = 2
# Worker recycling: after this many batches (0: never) or above this resident memory (MiB; 0: a
# share of the machine's memory per worker), a worker finishes its batch and is replaced.
MAX_BATCHES_ENV = "BATCHPREDICT_WORKER_MAX_BATCHES"
MAX_RSS_ENV = "BATCHPREDICT_WORKER_MAX_RSS_MB"
# Seconds a stopped worker gets to exit before it is killed.
STOP_GRACE_SECONDS = 2.0


@dataclass
class Counts:
    """What one worker (or the whole job) did."""

    read: int = 0
    successful: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)
    framework: str = ""
    predict_calls: int = 0
    # The model received JSON objects (dicts): the hint for array models in the failure summary.
    object_instances: bool = False

    def add(self, other: Counts) -> None:
        """Adds another worker's counts."""
        self.read += other.read
        self.successful += other.successful
        self.failed += other.failed
        self.predict_calls += other.predict_calls
        self.framework = self.framework or other.framework
        self.object_instances = self.object_instances or other.object_instances
        for message, n in other.errors.items():
            self._count_error(message, n)

    def record_failures(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Counts failed instances by cause (the message without instance values)."""
        self.failed += len(failures)
        for _, err in failures:
            self._count_error(err.cause or str(err), 1)

    def _count_error(self, message: str, n: int) -> None:
        if message in self.errors or len(self.errors) < MAX_DISTINCT_ERRORS:
            self.errors[message] += n
        else:
            self.errors[layout.OTHER_ERRORS_CAUSE] += n


@dataclass
class JobPlan:
    """Everything a worker needs; picklable."""

    source: Source
    destination: Destination
    model: ModelRef
    batch_size: int
    parameters: dict[str, Any]
    splits: list[Split]
    workers: int
    predict_timeout: float = 600.0
    load_timeout: float = 1800.0
    scratch_dir: str = ""


@dataclass
class BatchHints:
    """What earlier worker deaths taught about one batch of a piece.

    Attributes:
        bad: instance offset -> (code, message) of instances that kill the model.
        suspect: an offset range whose predict call killed the worker; it is predicted in halves.
    """

    bad: dict[int, tuple[int, str]] = field(default_factory=dict)
    suspect: tuple[int, int] | None = None


@dataclass
class Piece:
    """A unit of work handed to a worker: ``split`` from batch ``first_batch`` on."""

    part: int
    split: Split
    first_batch: int = 0
    hints: dict[int, BatchHints] = field(default_factory=dict)
    crashes_outside: int = 0
    last_batch: int | None = None  # exclusive end when the piece was cut short by recycling


class _OutOfMemory(BaseException):
    """MemoryError in a worker that has done batches: it is recycled, the batch redone."""

    def __init__(self, batch: int) -> None:
        super().__init__(batch)
        self.batch = batch


class WorkerCrash(BaseException):
    """Model code ended the worker (SystemExit, MemoryError, ...): handled as a worker death."""


# ---- failure isolation within a batch --------------------------------------------------------


class FailureRate:
    """The fraction of instances that failed so far in this worker; sizes isolation chunks.

    Kept apart: the density of failures within the minority groups of the pre-screen (see
    ``predict_batch``), where structurally odd rows are usually all bad.
    """

    def __init__(self) -> None:
        """Starts with no failures seen."""
        self.rows = 0
        self.bad = 0
        self.odd_rows = 0
        self.odd_bad = 0

    def expected_bad(self, n: int) -> float:
        """Failing instances expected among ``n`` known to hold at least one."""
        rate = self.bad / self.rows if self.rows else 0.0
        return max(1.0, rate * n)

    def expected_odd_bad(self, n: int) -> float:
        """Failing instances expected among ``n`` of a failing minority group of the pre-screen.

        A prior of one half (each instance alone), then the share seen in such groups so far.
        """
        return max(1.0, (self.odd_bad + 1) / (self.odd_rows + 2) * n)


def _chunks(lo: int, hi: int, expected_bad: float) -> list[tuple[int, int]]:
    """How to split a failing range: singletons when failures are dense, else halves or chunks.

    With d failures expected among n instances, chunks of about n/d instances hold one failure
    each on average (generalized binary splitting); a chunk that passes clears all of its
    instances in one call.
    """
    n = hi - lo
    if n <= 2 * expected_bad:
        return [(i, i + 1) for i in range(lo, hi)]
    size = 2 ** int(math.log2(n / expected_bad))
    if size * 2 > n:  # one failure expected: halves
        mid = lo + n // 2
        return [(lo, mid), (mid, hi)]
    return [(s, min(s + size, hi)) for s in range(lo, hi, size)]


def _rows(offsets: list[int]) -> range | list[int]:
    """Sorted offsets as a range when they are contiguous (a slice, not a gather)."""
    if offsets and offsets[-1] - offsets[0] + 1 == len(offsets):
        return range(offsets[0], offsets[-1] + 1)
    return offsets


def take(instances: Any, rows: range | list[int]) -> Any:
    """The instances at ``rows``: a slice for a range, else gathered (an array stays an array)."""
    if isinstance(rows, range):
        return instances[rows.start : rows.stop]
    if hasattr(instances, "dtype"):
        return instances[rows]
    return [instances[i] for i in rows]


_KINDS: dict[type, str] = {int: "number", float: "number", bool: "bool", str: "str"}


def _kind(t: type) -> str:
    """A value type as the pre-screen tells them apart: ints and floats are both numbers."""
    kind = _KINDS.get(t)
    if kind is None:
        import numbers

        number = issubclass(t, numbers.Real) and not issubclass(t, bool)
        kind = _KINDS[t] = "number" if number else f"{t.__module__}.{t.__qualname__}"
    return kind


def signature(instance: Any) -> Any:
    """A cheap structural signature: what a bad row usually differs in from the good ones.

    Arrays: the length and the set of element types; objects: the sorted keys and each value's
    type; NumPy rows: shape and dtype kind; anything else: its type. Ints and floats are alike.
    """
    t = type(instance)
    if t is list or t is tuple:
        return ("array", len(instance), frozenset(map(_kind, set(map(type, instance)))))
    if t is dict:
        return ("object", tuple(sorted((str(k), _kind(type(v))) for k, v in instance.items())))
    if hasattr(instance, "shape") and hasattr(instance, "dtype"):
        return ("ndarray", tuple(instance.shape), instance.dtype.kind)
    return ("scalar", _kind(t))


def _groups(instances: Any, rows: range | list[int]) -> list[list[int]]:
    """``rows`` grouped by ``signature``, the largest group first (ties: first seen).

    A numeric NumPy batch is one group by construction (no per-row work).
    """
    dtype = getattr(instances, "dtype", None)
    if dtype is not None and dtype.kind != "O":
        return [list(rows)]
    by: dict[Any, list[int]] = {}
    try:
        for i in rows:
            by.setdefault(signature(instances[i]), []).append(i)
    except Exception:  # noqa: BLE001 - an instance the screen cannot describe: no screen
        return [list(rows)]
    return sorted(by.values(), key=len, reverse=True)


def _instance_error(err: BaseException, classify: Callable[[BaseException], int]) -> InstanceError:
    """The error record of an isolated failure; the handler tells bad input (3) from model (13)."""
    if isinstance(err, InstanceError):
        return err
    message = f"{type(err).__name__}: {err}"
    return InstanceError(message, classify(err), cause=error_cause(message))


def _default_classify(err: BaseException) -> int:
    bad_input = (ValueError, TypeError, KeyError, IndexError)
    return CODE_INVALID_ARGUMENT if isinstance(err, bad_input) else CODE_INTERNAL


class CallState:
    """The predict call a worker is in, in shared memory the main process reads.

    Slots: piece part id, batch number, first and end offset within the batch, start time
    (``time.monotonic()``; 0 when no call is running).
    """

    def __init__(self, array: Any) -> None:
        """Wraps a ``RawArray('d', 5)``."""
        self.array = array

    def begin(self, part: int, batch: int, lo: int, hi: int) -> None:
        """Marks a call as started."""
        a = self.array
        a[0], a[1], a[2], a[3] = part, batch, lo, hi
        a[4] = time.monotonic()

    def end(self) -> None:
        """Marks the call as returned."""
        self.array[4] = 0.0

    def current(self) -> tuple[int, int, int, int, float] | None:
        """(part, batch, lo, hi, started) of the running call, or None."""
        a = list(self.array)
        if a[4] <= 0:
            return None
        return int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4]


def predict_batch(
    predict: Callable[[range | list[int]], list[Any]],
    n: int,
    hints: BatchHints | None = None,
    rate: FailureRate | None = None,
    classify: Callable[[BaseException], int] = _default_classify,
    instances: Any = None,
) -> tuple[dict[int, Any], list[tuple[int, InstanceError]]]:
    """Predicts instances ``0..n`` of a batch through ``predict(rows)``, isolating failures.

    ``rows`` is a ``range`` of offsets, or a sorted list of them (see ``take``). Exact isolation:
    every instance ends predicted, or failed with the error of a call that held it alone.

    A call that raises is first pre-screened when ``instances`` is given: its instances are
    grouped by ``signature`` (bad rows are usually structurally different: a string or null among
    numbers, another length, missing or extra keys). With more than one group, the largest is
    predicted in one call and each other group in one call; only groups that still fail are
    split. Nothing of this runs on a batch that passes, and a numeric NumPy batch is one group.

    Within a group (or without a screen), a failing call is split (see ``_chunks``) until each
    failing instance is alone; a minority group is split as densely as failures in minority
    groups have been so far (at first, instance by instance). A chunk of several instances known
    to fail (its siblings passed, so the parent's failure is its) is split without being called.
    Instances in ``hints.bad`` are not predicted; ``hints.suspect`` is predicted in halves.

    Returns:
        (offset -> prediction, [(offset, error)]).
    """
    rate = rate or FailureRate()
    hints = hints or BatchHints()
    results: dict[int, Any] = {}
    failures = [(i, InstanceError(msg, code)) for i, (code, msg) in sorted(hints.bad.items())]
    cuts = {0, n}
    if hints.suspect and hints.suspect[1] - hints.suspect[0] > 1:
        lo, hi = hints.suspect
        cuts |= {lo, (lo + hi) // 2, hi}
    segments: list[range] = []
    start = None
    for i in range(n + 1):
        if i == n or i in hints.bad or (i in cuts and start is not None):
            if start is not None and start < i:
                segments.append(range(start, i))
            start = None if (i == n or i in hints.bad) else i
        elif start is None:
            start = i

    def isolate(
        rows: range | list[int],
        known: BaseException | None,
        expect: Callable[[int], float] | None,
    ) -> bool:
        """True when ``rows`` passed in one call; records results and failures.

        ``expect``: failures expected among a failing chunk's instances; None: not screened yet.
        """
        # A single instance is always called alone, even when known to fail: its error is then
        # its own (a larger call's can come from the mix, e.g. rows of different lengths).
        err = known if len(rows) > 1 else None
        if err is None:
            try:
                predictions = predict(rows)
            except MemoryError as e:  # not a bad row: the worker is out of memory
                raise WorkerCrash(f"MemoryError: {e}") from e
            except ModelServerError:  # the server is gone: no instance is to blame
                raise
            except Exception as e:  # noqa: BLE001 - any model failure is isolated
                err = e
            else:
                results.update(zip(rows, predictions))
                return True
        if len(rows) == 1:
            failures.append((rows[0], _instance_error(err, classify)))
            return False
        if expect is None:
            groups = _groups(instances, rows) if instances is not None else [rows]
            if len(groups) > 1:
                screen(groups, err)
                return False
            expect = rate.expected_bad
        chunks = _chunks(0, len(rows), expect(len(rows)))
        all_passed = True
        for k, (a, b) in enumerate(chunks):
            # Every earlier chunk passed and the whole range failed: the last chunk fails.
            inferred = err if (k == len(chunks) - 1 and all_passed) else None
            all_passed = isolate(rows[a:b], inferred, expect) and all_passed
        return False

    def screen(groups: list[list[int]], err: BaseException) -> None:
        """Predicts each structural group in one call; splits only those that fail."""
        all_passed = True
        for k, group in enumerate(groups):
            inferred = err if (k == len(groups) - 1 and all_passed) else None
            before = len(failures)
            expect = rate.expected_bad if k == 0 else rate.expected_odd_bad
            passed = isolate(_rows(group), inferred, expect)
            if k and not passed:
                rate.odd_rows += len(group)
                rate.odd_bad += len(failures) - before
            all_passed = passed and all_passed

    for segment in segments:
        isolate(segment, None, None)
    rate.rows += n
    rate.bad += len(failures)
    located = []
    for i, err in sorted(failures, key=lambda f: f[0]):
        own = InstanceError(
            str(err), err.code, getattr(err, "record", False), getattr(err, "cause", None)
        )
        own.row = i  # its position among the batch's instances, for the error's source line
        own.source = getattr(err, "source", None)
        located.append((i, own))
    return results, located


# ---- the worker process -----------------------------------------------------------------------


def _arrow_error() -> type:
    """The base exception of pyarrow where it is loaded, else a class nothing raises."""
    import sys

    pa = sys.modules.get("pyarrow")
    return pa.ArrowException if pa is not None else _NeverRaised


class _NeverRaised(Exception):
    pass


def _unwritable(display: Any, why: BaseException) -> InstanceError:
    """The error of a record that cannot be written: its instance's fault, or its prediction's."""
    try:
        dumps(display)
    except UNENCODABLE:
        message = f"The instance cannot be written to the output ({type(why).__name__}: {why})."
        return InstanceError(message, CODE_INVALID_ARGUMENT, cause=error_cause(message))
    message = (
        f"The model's prediction cannot be written to the output ({type(why).__name__}: {why})."
    )
    return InstanceError(message, CODE_INTERNAL, cause=error_cause(message))


def _die_with_parent(parent_pid: int) -> None:
    """Ends this process when the main process dies, however it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:  # where prctl is missing (macOS), or the parent thread differs
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="batchpredict-parent-watch", daemon=True).start()


def _rss_mb() -> float:
    """This process's resident memory in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recycle_limits(workers: int) -> tuple[int, float]:
    """(max batches, max RSS MiB) per worker process; 0 means no limit."""
    max_batches = int(os.environ.get(MAX_BATCHES_ENV, "0") or 0)
    max_rss = float(os.environ.get(MAX_RSS_ENV, "0") or 0)
    if not max_rss:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
            max_rss = 0.8 * total / max(workers, 1)
    return max_batches, max_rss


class _Worker:
    """The loop of one worker process: load the model, then run the pieces it is sent.

    Everything a worker process writes goes to one part (``part``), closed when the process
    ends cleanly (no more work, or recycled); a part whose process died is discarded whole, and
    the pieces it held are redone.
    """

    def __init__(self, plan: JobPlan, part: int, conn: Any, state: CallState) -> None:
        self.plan = plan
        self.part = part
        self.conn = conn
        self.state = state
        self.rate = FailureRate()
        self.batches = 0
        self.max_batches, self.max_rss = recycle_limits(plan.workers)
        self.handler: ModelHandler | None = None
        self.writer: Any = None
        self.counts = Counts()

    def run(self) -> None:
        self.handler = load_handler(self.plan.model, single_thread=self.plan.workers > 1)
        # The framework's modules and the model live as long as the worker: out of the garbage
        # collector's way, so its full passes scan only what batches create.
        gc.freeze()
        self.counts.framework = self.handler.framework
        # Opened now: every worker's part exists, as every shard of a Vertex job does.
        self.writer = self.plan.destination.shard_writer(self.part, self.plan.workers)
        self.conn.send(("loaded",))
        while (piece := self.conn.recv()) is not None:
            try:
                next_batch = self.run_piece(piece)
            except _OutOfMemory as oom:  # end this worker cleanly; the batch is redone
                next_batch = oom.batch
            self.conn.send(("piece_done", piece.part, next_batch))
            if next_batch is not None:  # recycled: the main process starts a fresh worker
                break
        self.writer.close()
        self.conn.send(("closed", self.counts))

    def _should_recycle(self) -> bool:
        if self.max_batches and self.batches >= self.max_batches:
            return True
        return bool(self.max_rss) and _rss_mb() > self.max_rss

    def run_piece(self, piece: Piece) -> int | None:
        """Runs one piece; returns the batch to resume from when recycling, else None."""
        plan = self.plan
        assert self.handler is not None
        if self.handler.concurrency > 1:
            return self._run_piece_concurrently(piece)
        for number, batch in enumerate(plan.source.batches(piece.split, plan.batch_size)):
            if number < piece.first_batch:
                continue
            if piece.last_batch is not None and number >= piece.last_batch:
                break
            if number > piece.first_batch and self._should_recycle():
                return number
            self.run_batch(piece, number, batch)
            self.batches += 1
        return None

    def _run_piece_concurrently(self, piece: Piece) -> None:
        """Runs a piece for a model server (``handler.concurrency`` > 1).

        That many batches are predicted at once by threads and written in order. The model runs
        in the server, so deadlines and crash isolation in fresh workers do not apply.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        plan, handler = self.plan, self.handler
        assert handler is not None

        def predict(batch: Any) -> tuple:
            instances = _for_handler(batch.converted.instances, handler)
            if not len(instances):
                return {}, []

            def call(rows: range | list[int]) -> list[Any]:
                return _checked(handler.predict(take(instances, rows), plan.parameters), len(rows))

            return predict_batch(
                call, len(instances), None, FailureRate(), handler.classify_error, instances
            )

        pool = ThreadPoolExecutor(handler.concurrency, thread_name_prefix="predict")
        pending: deque = deque()
        try:
            for number, batch in enumerate(plan.source.batches(piece.split, plan.batch_size)):
                if number < piece.first_batch:
                    continue
                if piece.last_batch is not None and number >= piece.last_batch:
                    break
                pending.append((batch, pool.submit(predict, batch)))
                if len(pending) >= handler.concurrency:
                    done, future = pending.popleft()
                    self._write_batch(done, *future.result())
            while pending:
                done, future = pending.popleft()
                self._write_batch(done, *future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return None

    def run_batch(self, piece: Piece, number: int, batch: Any) -> None:
        """Predicts one batch, then writes and counts it (nothing of it if predict dies)."""
        conv, counts = batch.converted, self.counts
        results: dict[int, Any] = {}
        failures: list[tuple[int, InstanceError]] = []
        whole: list[Any] | None = None  # the batch's predictions when one call predicted it all
        n = len(conv.instances)
        if n:
            handler, parameters, state = self.handler, self.plan.parameters, self.state
            assert handler is not None
            instances = _for_handler(conv.instances, handler)

            def predict(rows: range | list[int]) -> list[Any]:
                nonlocal whole
                counts.predict_calls += 1
                # A gathered group is marked by its span: a crash there is isolated within it.
                state.begin(piece.part, number, rows[0], rows[-1] + 1)
                try:
                    predictions = handler.predict(take(instances, rows), parameters)
                except MemoryError as err:
                    if self.batches:  # memory used up by earlier batches: a fresh worker redoes it
                        state.end()
                        raise _OutOfMemory(number) from err
                    raise WorkerCrash(f"MemoryError: {err}") from err
                except (SystemExit, KeyboardInterrupt, GeneratorExit) as err:
                    # Not a bad instance: the worker is gone (or out of memory). The call state
                    # stays set, so the main process knows which instances to isolate.
                    raise WorkerCrash(f"{type(err).__name__}: {err}") from err
                except BaseException:
                    state.end()
                    raise
                state.end()
                _checked(predictions, len(rows))
                if len(rows) == n:
                    whole = predictions
                return predictions

            if not counts.object_instances and isinstance(instances[0], dict):
                counts.object_instances = True
            results, failures = predict_batch(
                predict, n, piece.hints.get(number), self.rate, handler.classify_error, instances
            )
        self._write_batch(batch, results, failures, whole)

    def _write_batch(
        self,
        batch: Any,
        results: dict[int, Any],
        failures: list[tuple[int, InstanceError]],
        whole: list[Any] | None = None,
    ) -> None:
        """Writes and counts one predicted batch.

        ``whole``: the predictions of every instance, when one call gave them all; the batch's
        displays and predictions then go to the writer as they are (an array stays an array).
        """
        conv, writer, counts = batch.converted, self.writer, self.counts
        displays = conv.displays
        counts.read += batch.read_count
        if conv.failures:
            writer.write_errors(conv.failures)
            counts.record_failures(conv.failures)
        if len(conv.instances):
            if whole is not None and not failures:
                order: Any = range(len(whole))
                shown, predicted = displays, whole
            else:  # some instances failed: their rows go out one by one
                displays = listed(displays)
                order = sorted(results)
                shown, predicted = [displays[i] for i in order], [results[i] for i in order]
            failed = [(displays[i], err) for i, err in failures]
            try:
                writer.write(shown, predicted, conv.columns)
                counts.successful += len(order)
            except UNENCODABLE + (_arrow_error(),):  # find the records that cannot be written
                for i, d, p in zip(order, listed(shown), listed(predicted)):
                    try:
                        writer.write([d], [p], conv.columns)
                        counts.successful += 1
                    except UNENCODABLE + (_arrow_error(),) as why:
                        error = _unwritable(d, why)
                        error.row = i
                        failed.append((d, error))
            if failed:
                batch.locate_failures(failed)
                writer.write_errors(failed)
                counts.record_failures(failed)
        self.conn.send(("progress", batch.read_count, batch.work))


def _for_handler(instances: Any, handler: Any) -> Any:
    """The batch's instances as the handler takes them: an array, or a list of rows."""
    return instances if handler.accepts_arrays else listed(instances)


def _checked(predictions: list[Any], n: int) -> list[Any]:
    if len(predictions) != n:
        raise InstanceError(
            f"The model returned {len(predictions)} predictions for {n} instances; it must "
            "return one per instance.",
            CODE_INTERNAL,
        )
    return predictions


def _worker_main(plan: JobPlan, part: int, conn: Any, state_array: Any, parent_pid: int) -> None:
    """Entry point of a worker process."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fs.use_worker_arrow_pool()
    if plan.scratch_dir:  # the model's temporary files (CPR working directories) go here
        os.environ["TMPDIR"] = plan.scratch_dir
        tempfile.tempdir = plan.scratch_dir
    worker = _Worker(plan, part, conn, CallState(state_array))
    try:
        worker.run()
    except (WorkerCrash, MemoryError) as err:
        reason = str(err) if isinstance(err, WorkerCrash) else f"MemoryError: {err}"
        with contextlib.suppress(Exception):
            conn.send(("crash", reason))
        os._exit(70)
    except BaseException as err:  # noqa: BLE001 - every failure must reach the main process
        env = environment_error(err)
        if env is not None:
            err = env
        exit_code = err.exit_code if isinstance(err, BatchPredictError) else 13
        kind = "user" if isinstance(err, UserError) else "internal"
        message = str(err) if isinstance(err, BatchPredictError) else f"{type(err).__name__}: {err}"
        with contextlib.suppress(Exception):
            conn.send(("fatal", kind, message, exit_code))
        os._exit(1)
    finally:
        if worker.handler is not None:
            with contextlib.suppress(Exception):
                worker.handler.close()
    conn.close()


# ---- the main process -------------------------------------------------------------------------


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass
class _Slot:
    process: Any
    conn: Any
    state: CallState
    part: int
    loaded: bool = False
    piece: Piece | None = None
    done: list[Piece] = field(default_factory=list)
    stopping: bool = False
    closed: bool = False
    crash_reason: str = ""
    deadline_hit: bool = False
    progress_rows: int = 0
    progress_work: int = 0
    started: float = field(default_factory=time.monotonic)


class _Scheduler:
    """Hands pieces to workers, replaces dead or recycled ones, and adds up the counts."""

    def __init__(self, plan: JobPlan, progress: Progress, ctx: Any) -> None:
        self.plan = plan
        self.progress = progress
        self.ctx = ctx
        self.ids = 0
        self.parts = 0
        self.pending: list[Piece] = [self._piece(s) for s in plan.splits]
        self.slots: list[_Slot] = []
        self.total = Counts()
        self.restarts = 0

    def _piece(self, split: Split, first: int = 0, hints: dict | None = None) -> Piece:
        self.ids += 1
        return Piece(self.ids - 1, split, first, hints or {})

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        state = self.ctx.RawArray("d", 5)
        part = self.parts
        self.parts += 1
        process = self.ctx.Process(
            target=_worker_main,
            args=(self.plan, part, child, state, os.getpid()),
            daemon=True,
            name=f"batchpredict-worker-{part}",
        )
        process.start()
        child.close()
        slot = _Slot(process, parent, CallState(state), part)
        self.slots.append(slot)
        return slot

    def run(self) -> Counts:
        try:
            while self.pending or self.slots:
                self._top_up()
                waitables = [s.conn for s in self.slots] + [s.process.sentinel for s in self.slots]
                ready = set(wait_for(waitables, timeout=POLL_SECONDS)) if waitables else set()
                for slot in list(self.slots):
                    if slot.conn in ready:
                        self._drain(slot)
                for slot in list(self.slots):
                    if slot.process.sentinel in ready or not slot.process.is_alive():
                        self._drain(slot)
                        self._ended(slot)
                self._check_deadlines()
                self.progress.update(0, 0)
            return self.total
        finally:
            self._stop_all()

    def _top_up(self) -> None:
        """Gives pending pieces to idle workers, stops idle ones, starts up to the plan's number."""
        # A worker still loading the model keeps one pending piece for itself, so pieces spread
        # over the workers as a shared queue would spread them (one file each, when there are as
        # many files as workers), whichever worker loads first.
        loading = sum(1 for s in self.slots if not s.loaded and not s.stopping)
        for slot in self.slots:
            if slot.loaded and slot.piece is None and not slot.stopping:
                if len(self.pending) > loading:
                    self._assign(slot)
                elif not self.pending:
                    slot.stopping = True
                    slot.conn.send(None)
        live = sum(1 for s in self.slots if not s.stopping)
        want = min(self.plan.workers, len(self.pending) + sum(1 for s in self.slots if s.piece))
        while self.pending and live < want:
            self._start()
            live += 1

    def _assign(self, slot: _Slot) -> None:
        piece = self.pending.pop(0)
        slot.piece = piece
        slot.conn.send(piece)

    def _drain(self, slot: _Slot) -> None:
        try:
            while slot.conn.poll():
                self._handle(slot, slot.conn.recv())
        except (EOFError, OSError):
            pass

    def _handle(self, slot: _Slot, msg: tuple) -> None:
        kind = msg[0]
        if kind == "progress":
            slot.progress_rows += msg[1]
            slot.progress_work += msg[2]
            self.progress.update(msg[1], msg[2])
        elif kind == "loaded":
            slot.loaded = True
        elif kind == "piece_done":
            _, piece_id, next_batch = msg
            piece = slot.piece
            assert piece is not None and piece.part == piece_id
            slot.piece = None
            if next_batch is not None:  # recycled: the rest of the split is a new piece
                slot.stopping = True
                hints = {b: h for b, h in piece.hints.items() if b >= next_batch}
                rest = self._piece(piece.split, next_batch, hints)
                rest.last_batch = piece.last_batch
                piece.hints = {b: h for b, h in piece.hints.items() if b < next_batch}
                piece.last_batch = next_batch
                self.pending.insert(0, rest)
            slot.done.append(piece)
        elif kind == "closed":
            slot.closed = True
            self.total.add(msg[1])
        elif kind == "crash":
            slot.crash_reason = msg[1]
        elif kind == "fatal":
            _, who, message, _code = msg
            error_type = UserError if who == "user" else InternalError
            raise error_type(message)

    def _ended(self, slot: _Slot) -> None:
        """A worker process exited: if it had not closed its part, redo everything it held."""
        slot.process.join(timeout=1)
        self.slots.remove(slot)
        slot.conn.close()
        if slot.closed:
            return
        reason = slot.crash_reason or _describe_exit(slot.process.exitcode)
        if not slot.loaded:
            raise InternalError(
                f"A worker process died while loading the model ({reason}); the model's load() "
                "crashed the interpreter or ran out of memory. Check the model with the same "
                "library versions, or give the job more memory."
            )
        self.restarts += 1
        self.plan.destination.discard_shard(slot.part)
        self.progress.update(-slot.progress_rows, -slot.progress_work)
        redo = [self._piece(p.split, p.first_batch, p.hints) for p in slot.done]
        for old, new in zip(slot.done, redo):
            new.last_batch = old.last_batch
            new.crashes_outside = old.crashes_outside
        piece = slot.piece
        if piece is not None:
            redo.append(self._retry(piece, slot, reason))
        self.pending[:0] = redo
        if self.restarts > MAX_WORKER_RESTARTS:
            raise InternalError(
                f"Worker processes died {self.restarts} times (last: {reason}); giving up. The "
                "model crashes on many instances, or the job needs more memory: try fewer "
                "workers or a smaller batch size."
            )

    def _retry(self, piece: Piece, slot: _Slot, reason: str) -> Piece:
        """The piece a dead worker was on, with what its death taught about the call it was in."""
        hints = {b: BatchHints(dict(h.bad), h.suspect) for b, h in piece.hints.items()}
        crashes_outside = piece.crashes_outside
        call = slot.state.current()
        if call is not None and call[0] == piece.part:
            _, batch, lo, hi, _ = call
            h = hints.setdefault(batch, BatchHints())
            if slot.deadline_hit:
                code = CODE_DEADLINE_EXCEEDED
                message = (
                    "DEADLINE_EXCEEDED: the model's predict call did not return within "
                    f"{self.plan.predict_timeout:g} s (predict_timeout_seconds)."
                )
            else:
                code = CODE_INTERNAL
                message = f"The model crashed the worker process ({reason}) on this instance."
            live = [i for i in range(lo, hi) if i not in h.bad]
            if len(live) == 1:
                h.bad[live[0]] = (code, message)
                h.suspect = None
            else:
                h.suspect = (lo, hi)
        else:
            crashes_outside += 1
            if crashes_outside >= MAX_CRASHES_OUTSIDE_PREDICT:
                raise InternalError(
                    f"A worker process died twice ({reason}) outside the model's predict call, "
                    f"on {piece.split.uri!r} (from byte/row group {piece.split.start}), reading "
                    "the input or writing the output. Check the input file and free memory."
                )
        retry = self._piece(piece.split, piece.first_batch, hints)
        retry.crashes_outside = crashes_outside
        retry.last_batch = piece.last_batch
        return retry

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        load_timeout = self.plan.load_timeout
        if load_timeout and load_timeout > 0:
            for slot in self.slots:
                if not slot.loaded and not slot.stopping and now - slot.started > load_timeout:
                    raise InternalError(
                        f"The model {_model_name(self.plan.model)} did not finish loading within "
                        f"{load_timeout:g} s (load_timeout_seconds): its load() hangs or is too "
                        "slow; raise load_timeout_seconds (0: no limit) if it needs longer."
                    )
        timeout = self.plan.predict_timeout
        if not timeout or timeout <= 0:
            return
        for slot in self.slots:
            call = slot.state.current()
            if call is not None and now - call[4] > timeout and not slot.deadline_hit:
                slot.deadline_hit = True
                with contextlib.suppress(OSError):
                    slot.process.kill()

    def _stop_all(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for slot in self.slots:
            with contextlib.suppress(Exception):
                slot.process.terminate()
        for slot in self.slots:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                with contextlib.suppress(Exception):
                    slot.process.kill()
                slot.process.join(timeout=5)
            with contextlib.suppress(Exception):
                slot.conn.close()
        self.slots.clear()


def _model_name(ref: ModelRef) -> str:
    """The model as the user named it: its Predictor class, else its directory."""
    where = ref.source_uri or ref.local_dir
    return f"{ref.predictor_class!r} ({where})" if ref.predictor_class else repr(where)


def run_plan(plan: JobPlan, progress: Progress) -> Counts:
    """Runs every split of ``plan`` in worker processes and returns the job's counts.

    The model is never loaded here (a crash in ``load()`` must not take this process with it):
    each worker loads its own.
    """
    method = _start_method()
    if method == "fork" and not handler_class(plan.model).can_fork_workers():
        method = "spawn"
    ctx = mp.get_context(method)
    own_scratch = not plan.scratch_dir
    lock = None
    if own_scratch:
        sweep_scratch()
        plan.scratch_dir = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
        lock = try_lock(os.path.join(plan.scratch_dir, SCRATCH_LOCK))
    try:
        return _Scheduler(plan, progress, ctx).run()
    finally:
        if own_scratch:
            shutil.rmtree(plan.scratch_dir, ignore_errors=True)
            if lock is not None:
                os.close(lock)
            plan.scratch_dir = ""


# A job's temporary files (CPR working directories) live in a scratch directory that the main
# process holds a lock in while the job runs; a job killed with SIGKILL (or by the OOM killer)
# cannot remove it, so the next job removes every scratch directory whose lock is free.
SCRATCH_PREFIX = "batchpredict-job-"
SCRATCH_LOCK = ".job.lock"
UNLOCKED_SCRATCH_AGE_SECONDS = 24 * 3600  # made before scratch directories were locked


def sweep_scratch(parent: str | None = None) -> list[str]:
    """Removes the scratch directories of jobs that are gone; returns them. Never raises."""
    parent = parent or tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(parent) if n.startswith(SCRATCH_PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(parent, name)
        lock = os.path.join(path, SCRATCH_LOCK)
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            if not os.path.exists(lock):  # an old job's, or one being made this instant
                if time.time() - os.stat(path).st_mtime < UNLOCKED_SCRATCH_AGE_SECONDS:
                    continue
                fd = None
            else:
                fd = try_lock(lock)
                if fd is None:
                    continue  # its job is running
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)
        removed.append(path)
    return removed


def _threads() -> int:
    """Threads of this process, native ones included (an OpenMP pool a library started)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _start_method() -> str:
    # A fork copies locks other threads hold: an OpenMP runtime (xgboost, sklearn) that ran a
    # parallel region here hangs in the child. Fork only a single-threaded process.
    forkable = "fork" in mp.get_all_start_methods() and _threads() == 1
    return "fork" if FORK_WHEN_SINGLE_THREADED and forkable else "spawn"


def run_job(plan: JobPlan, show_progress: bool = True) -> tuple[Counts, float]:
    """Runs the plan with progress reporting; returns the counts and the elapsed seconds."""
    progress = Progress(sum(s.weight for s in plan.splits), enabled=show_progress)
    start = time.monotonic()
    try:
        counts = run_plan(plan, progress)
    finally:
        progress.close()
    return counts, time.monotonic() - start


# ---- signals ----------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived: the job stops, its workers are stopped and its partial output removed."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_stops_job() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread (once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        raise Terminated("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
