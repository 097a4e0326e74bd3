"""The local engine: batching, worker processes, failure isolation and completion stats.

Steps of a job (``run_job``):
1. The source plans its splits; the destination prepares a temporary output directory.
2. Workers (one process per core by default; in-process when there is one split) each load the
   model once, take splits from a shared queue, read them in batches of ``batch_size`` records
   and write their own result shard. Memory is bounded by a batch per worker, whatever the input.
3. A predict call that fails is split in halves until the failing instances are isolated; each
   gets an error record (code 3 for bad input, 13 for a model error), the rest succeed.
4. The main process counts everything (successful + failed == read), reports progress, writes
   ``prediction.errors_stats-*`` and publishes the output (completion stats go in the result).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from batchpredict.errors import (
    BatchPredictError,
    InstanceError,
    InternalError,
    ModelServerError,
    UserError,
)
from batchpredict.io.base import Destination, ShardWriter, Source, Split
from batchpredict.models import ModelHandler, ModelRef, handler_class, load_handler
from batchpredict.progress import Progress

# Worker processes are forked when this process runs no other thread: fast, and the model loaded
# once here is shared copy-on-write. Otherwise they are spawned fresh, since forking a process
# whose threads may hold locks (client libraries' I/O threads) can deadlock the child.
FORK_WHEN_SINGLE_THREADED = True
# Distinct error messages kept in errors_stats; the rest are counted under one line.
MAX_DISTINCT_ERRORS = 1000
OTHER_ERRORS_MESSAGE = "Other errors (more distinct messages than errors_stats keeps)"
# How long the main process waits for worker messages before checking that workers are alive.
POLL_SECONDS = 0.5


@dataclass
class Counts:
    """What one worker (or the whole job) did."""

    read: int = 0
    successful: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)
    framework: str = ""
    # The model received JSON objects (dicts): the hint for array models in the failure summary.
    object_instances: bool = False

    def add(self, other: Counts) -> None:
        """Adds another worker's counts."""
        self.read += other.read
        self.successful += other.successful
        self.failed += other.failed
        self.framework = self.framework or other.framework
        self.object_instances = self.object_instances or other.object_instances
        for message, n in other.errors.items():
            self._count_error(message, n)

    def record_failures(self, failures: list[tuple[Any, InstanceError]]) -> None:
        """Counts failed instances by message."""
        self.failed += len(failures)
        for _, err in failures:
            self._count_error(str(err), 1)

    def _count_error(self, message: str, n: int) -> None:
        if message in self.errors or len(self.errors) < MAX_DISTINCT_ERRORS:
            self.errors[message] += n
        else:
            self.errors[OTHER_ERRORS_MESSAGE] += n


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


def predict_isolated(
    handler: ModelHandler,
    instances: list[Any],
    displays: list[Any],
    parameters: dict[str, Any],
    offset: int = 0,
) -> tuple[list[Any], list[Any], list[tuple[Any, InstanceError]]]:
    """Predicts ``instances``, splitting failed calls until the failing instances are isolated.

    Returns:
        (displays of successes, their predictions, (display, error) of failures); each error's
        ``row`` is its instance's position in the first call (``offset`` + index).
    """
    try:
        predictions = handler.predict(instances, parameters)
        if len(predictions) != len(instances):
            raise InternalError(
                f"The model returned {len(predictions)} predictions for {len(instances)} "
                "instances; it must return one per instance."
            )
        return displays, predictions, []
    except ModelServerError:  # the server is gone: no instance is to blame
        raise
    except Exception as err:
        if len(instances) == 1:
            error = _instance_error(handler, err)
            error.row = offset
            return [], [], [(displays[0], error)]
        mid = len(instances) // 2
        d1, p1, f1 = predict_isolated(handler, instances[:mid], displays[:mid], parameters, offset)
        d2, p2, f2 = predict_isolated(
            handler, instances[mid:], displays[mid:], parameters, offset + mid
        )
        return d1 + d2, p1 + p2, f1 + f2


def _instance_error(handler: ModelHandler, err: Exception) -> InstanceError:
    """The error record of an isolated failure; the handler tells bad input (3) from model (13)."""
    if isinstance(err, InstanceError):
        return err
    return InstanceError(f"{type(err).__name__}: {err}", handler.classify_error(err))


def process_split(
    plan: JobPlan,
    handler: ModelHandler,
    writer: ShardWriter,
    split: Split,
    counts: Counts,
    report: Callable[[int, int], None],
) -> None:
    """Reads, predicts and writes one split, counting every record read."""
    for batch, predicted in _predicted_batches(plan, handler, split):
        conv = batch.converted
        counts.read += batch.read_count
        if conv.failures:
            writer.write_errors(conv.failures)
            counts.record_failures(conv.failures)
        if predicted is not None:
            if not counts.object_instances and isinstance(conv.instances[0], dict):
                counts.object_instances = True
            displays, predictions, failures = predicted
            writer.write(displays, predictions, conv.columns)
            counts.successful += len(predictions)
            if failures:
                batch.locate_failures(failures)
                writer.write_errors(failures)
                counts.record_failures(failures)
        report(batch.read_count, batch.work)


def _predicted_batches(plan: JobPlan, handler: ModelHandler, split: Split) -> Iterator[tuple]:
    """Each batch of ``split`` with its ``predict_isolated`` outcome (None: nothing to predict).

    In order. A handler whose ``concurrency`` is above 1 (a model server over HTTP) gets that many
    batches predicted at once by threads, read ahead of the one being written.
    """

    def predict(batch: Any) -> tuple | None:
        conv = batch.converted
        if not conv.instances:
            return None
        return predict_isolated(handler, conv.instances, conv.displays, plan.parameters)

    batches = plan.source.batches(split, plan.batch_size)
    if handler.concurrency <= 1:
        for batch in batches:
            yield batch, predict(batch)
        return
    pool = ThreadPoolExecutor(handler.concurrency, thread_name_prefix="predict")
    pending: deque = deque()
    try:
        for batch in batches:
            pending.append((batch, pool.submit(predict, batch)))
            if len(pending) >= handler.concurrency:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    except BaseException:  # a failure, Ctrl-C, or the consumer stopped: do not wait for requests
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# The model a forked worker inherits from the main process (None when workers are spawned).
_inherited_handler: ModelHandler | None = None


def _run_worker(
    plan: JobPlan,
    index: int,
    next_split: Callable[[], Split | None],
    report: Callable,
    handler: ModelHandler | None = None,
) -> Counts:
    if handler is None:
        handler = load_handler(plan.model, single_thread=plan.workers > 1)
    elif plan.workers > 1:
        handler.limit_threads()
    try:
        writer = plan.destination.shard_writer(index, plan.workers)
        counts = Counts(framework=handler.framework)
        try:
            while (split := next_split()) is not None:
                process_split(plan, handler, writer, split, counts, report)
        finally:
            writer.close()
    finally:
        handler.close()
    return counts


def _worker_process(plan: JobPlan, index: int, tasks: Any, results: Any) -> None:
    """Entry point of a worker process: reports progress, then its counts or its failure."""

    def next_split() -> Split | None:
        return tasks.get()

    def report(rows: int, work: int) -> None:
        results.put(("progress", rows, work))

    try:
        counts = _run_worker(plan, index, next_split, report, _inherited_handler)
        results.put(("done", index, counts))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the main process
        exit_code = err.exit_code if isinstance(err, BatchPredictError) else 13
        kind = "user" if isinstance(err, UserError) else "internal"
        results.put(("fatal", index, kind, f"{type(err).__name__}: {err}", exit_code))


def run_plan(plan: JobPlan, progress: Progress) -> Counts:
    """Runs every split of ``plan`` and returns the job's counts."""
    if plan.workers == 1:
        pending = list(plan.splits)
        return _run_worker(plan, 0, lambda: pending.pop(0) if pending else None, progress.update)
    global _inherited_handler
    method = _start_method()
    handler_cls = handler_class(plan.model)
    if method == "fork" and not handler_cls.can_fork_workers():
        method = "spawn"
    if method == "fork" and handler_cls.share_with_forked_workers:
        _inherited_handler = load_handler(plan.model)
        if threading.active_count() > 1:  # loading the model started threads: fork is unsafe
            method = "spawn"
            _inherited_handler.close()
            _inherited_handler = None
    try:
        return _run_processes(plan, progress, mp.get_context(method))
    finally:
        if _inherited_handler is not None:
            _inherited_handler.close()
        _inherited_handler = None


def _start_method() -> str:
    forkable = "fork" in mp.get_all_start_methods() and threading.active_count() == 1
    return "fork" if FORK_WHEN_SINGLE_THREADED and forkable else "spawn"


def _run_processes(plan: JobPlan, progress: Progress, ctx: Any) -> Counts:
    tasks = ctx.Queue()
    results = ctx.Queue()
    for split in plan.splits:
        tasks.put(split)
    for _ in range(plan.workers):
        tasks.put(None)
    procs = [
        ctx.Process(target=_worker_process, args=(plan, i, tasks, results), daemon=True)
        for i in range(plan.workers)
    ]
    for p in procs:
        p.start()
    total = Counts()
    done: set[int] = set()
    try:
        while len(done) < plan.workers:
            try:
                msg = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in done and not p.is_alive()]
                if dead and results.empty():
                    codes = [procs[i].exitcode for i in dead]
                    raise InternalError(
                        f"Worker process(es) {dead} died (exit codes {codes}) without reporting; "
                        "the model may have crashed the interpreter or run out of memory. Try "
                        "fewer workers or a smaller manual_batch_tuning_parameters_batch_size."
                    ) from None
                continue
            if msg[0] == "progress":
                progress.update(msg[1], msg[2])
            elif msg[0] == "done":
                done.add(msg[1])
                total.add(msg[2])
            else:
                _, index, kind, message, _code = msg
                error_type = UserError if kind == "user" else InternalError
                raise error_type(f"Worker {index} failed: {message}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
    return total


def run_job(plan: JobPlan, show_progress: bool = True) -> tuple[Counts, float]:
    """Runs the plan with progress reporting; returns the counts and the elapsed seconds."""
    progress = Progress(sum(s.weight for s in plan.splits), enabled=show_progress)
    start = time.monotonic()
    try:
        counts = run_plan(plan, progress)
    finally:
        progress.close()
    return counts, time.monotonic() - start
