"""The engine: lanes of worker threads that move originals through seal → replicate → derive.

Every lane is a :class:`Stage` over a durable queue in the catalog. Each unit of work is claimed from
the catalog and its outcome written back before the next is taken, so killing the process at any
instant loses nothing: in-flight work is simply claimed again after a restart. Each stage has its own
workers, so a slow bucket or a slow cloak never delays sealing. The engine holds one copy of each lane
mechanism (the loop, the item runner, retries, the drain of ``run --once``, health) for every stage.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from shutterlock.catalog import Catalog, CatalogFull, Discovery, Job, SealBatch, backoff
from shutterlock.errors import ShutterlockError
from shutterlock.status import LaneStatus

log = logging.getLogger(__name__)

Item = TypeVar("Item")
RATE_WINDOW = 300.0  # seconds of finished items a lane's rate is measured over
CATALOG_RETRY = 5.0  # seconds between attempts to write a catalog whose disk is full


class StageError(ShutterlockError):
    """A unit of work did not succeed. ``transient``: worth retrying after ``delay`` (None: the back-off).

    ``count=False`` retries without spending an attempt (the bucket is offline, the cloak is unavailable):
    nothing is wrong with the item itself.
    """

    def __init__(self, message: str, *, transient: bool, delay: float | None = None, count: bool = True):
        super().__init__(message)
        self.transient, self.delay, self.count = transient, delay, count


class WorkQueue(Protocol[Item]):
    """A stage's durable queue in the catalog. ``units``: how many queued entries an item stands for (a batch
    of originals: its length), so progress counts what the user queued, not how it was grouped."""

    def claim(self) -> Item | None: ...
    def units(self, item: Item) -> int: ...
    def next_due(self) -> float | None: ...
    def done(self, item: Item) -> None: ...
    def retry(self, item: Item, error: StageError, limit: int) -> bool: ...
    def fail(self, item: Item, reason: str) -> None: ...
    def backlog(self) -> tuple[int, int]: ...
    def expedite(self) -> None: ...


@dataclass(frozen=True)
class Periodic:
    """Housekeeping a stage wants run on a schedule (the daemon's scheduler runs it; ``run --once`` does not)."""

    name: str
    seconds: float
    run: Callable[[], None]


class Stage(Protocol[Item]):
    """One lane. The engine needs nothing else from a stage than this.

    - ``name``: seal | replicate | derive; ``workers``: threads in the lane;
    - ``attempts``: transient failures allowed before an item fails for good;
    - ``stall_limit``: seconds a busy worker may go without progress before the watchdog stops pinging;
    - ``subject(file_id, content_id)``: for a later stage, the job subject a freshly sealed original needs
      (None: nothing to do);
    - ``reload(config)``: apply a new config; returns why a restart is needed, or "" when applied.
    """

    name: str
    workers: int
    attempts: int
    stall_limit: float
    queue: WorkQueue[Item]

    def process(self, item: Item, worker: WorkerState) -> None: ...
    def describe(self, item: Item) -> str: ...
    def subject(self, file_id: int, content_id: str) -> str | None: ...
    def schedule(self) -> list[Periodic]: ...
    def reload(self, config: Any) -> str: ...
    def close(self) -> None: ...


@dataclass
class WorkerState:
    """What one worker thread is doing, for status and for the systemd watchdog."""

    lane: str
    item: str = ""
    busy_since: float = 0.0
    progress_at: float = field(default_factory=time.monotonic)

    def begin(self, item: str) -> None:
        self.item, self.busy_since = item, time.monotonic()
        self.progress_at = self.busy_since

    def tick(self) -> None:
        self.progress_at = time.monotonic()

    def end(self) -> None:
        self.item, self.busy_since = "", 0.0
        self.progress_at = time.monotonic()


@dataclass
class _LaneProgress(Generic[Item]):
    """Per lane: items finished in the current batch and when, for "N of M", the rate and the ETA."""

    done: int = 0
    finished: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def finish(self, now: float, units: int) -> None:
        self.done += units
        self.finished.append((now, units))
        while self.finished and now - self.finished[0][0] > RATE_WINDOW:
            self.finished.popleft()

    def rate(self, now: float) -> float | None:
        if len(self.finished) < 2:
            return None
        span = max(now - self.finished[0][0], 1e-3)
        return sum(units for _, units in self.finished) / span


class Engine:
    """Runs the lanes; the daemon and ``run --once`` both drive it."""

    def __init__(self, catalog: Catalog, stages: list[Stage[Any]]):
        self.catalog = catalog
        self.stages = stages
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.workers: list[WorkerState] = []
        self._progress = {stage.name: _LaneProgress() for stage in stages}
        self.paused = catalog.get_setting("paused") == "1"
        self.failures = 0
        self.version = 0  # bumps on every visible change; status long-polls wait on it
        # Outcomes the catalog could not take (its disk was full), per lane; recorded before the lane claims more.
        self._unrecorded: dict[str, list[tuple[Any, StageError]]] = {stage.name: [] for stage in stages}
        self._unrecorded_lock = threading.Lock()

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def set_paused(self, paused: bool) -> None:
        self.catalog.set_setting("paused", "1" if paused else "0")
        self.paused = paused
        log.info("%s", "paused" if paused else "resumed")
        self.wake()

    def wait_for_change(self, version: int, timeout: float) -> int:
        if self._stopping.is_set():
            time.sleep(min(timeout, 1.0))  # about to go away: do not let long-pollers spin
            return self.version
        with self._changed:
            self._changed.wait_for(lambda: self.version != version or self._stopping.is_set(), timeout)
            return self.version

    def start(self) -> None:
        interrupted = self.catalog.reset_interrupted()
        if interrupted:
            log.info("resuming %d item(s) interrupted by the last stop", interrupted)
        for stage in self.stages:
            for index in range(stage.workers):
                worker = WorkerState(stage.name)
                self.workers.append(worker)
                thread = threading.Thread(target=self._loop, args=(stage, worker), name=f"{stage.name}-{index}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop taking work; wait for in-flight work. False if some was abandoned (it is redone later)."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        for stage in self.stages:
            try:
                stage.close()
            except Exception:
                log.exception("closing the %s lane failed", stage.name)

    def discover(self, found: Sequence[Discovery]) -> int:
        """Stable files were found: queue those new or changed for sealing, in bulk, and wake the lanes.

        Raises CatalogFull when they cannot be recorded (the caller keeps them and offers them again).
        """
        queued = self.catalog.discover_many(found)
        if queued:
            log.info("queued %d new or changed file(s) for sealing", queued)
            self.wake()
        return queued

    def stage(self, name: str) -> Stage[Any] | None:
        return next((stage for stage in self.stages if stage.name == name), None)

    def stalled(self) -> list[str]:
        """Busy workers that have made no progress for longer than their lane allows (the watchdog stops)."""
        now = time.monotonic()
        limits = {stage.name: stage.stall_limit for stage in self.stages}
        stuck = [w for w in self.workers if w.busy_since and now - w.progress_at >= limits[w.lane]]
        dead = [thread.name for thread in self._threads if not thread.is_alive() and not self._stopping.is_set()]
        return [f"{w.lane}: no progress on {w.item} for {now - w.progress_at:.0f} s" for w in stuck] + \
            [f"{name}: worker thread died" for name in dead]

    # ------------------------------------------------------------------ lanes

    def _idle_wait(self, next_due: float | None) -> None:
        timeout = 1.0 if self.paused else 30.0
        if next_due is not None:
            timeout = min(timeout, max(0.05, next_due - time.time()))
        with self._changed:
            version = self.version
            self._changed.wait_for(lambda: self.version != version or self._stopping.is_set(), timeout)

    def _loop(self, stage: Stage[Any], worker: WorkerState) -> None:
        """A lane's worker: claim, process, record, until stopped. Nothing the catalog or the stage raises
        ends it: a catalog that cannot be written (a full disk) only makes the lane wait and look again."""
        while not self._stopping.is_set():
            if self.paused:
                self._idle_wait(None)
                continue
            try:
                if not self._record_pending(stage):
                    self._stopping.wait(CATALOG_RETRY)
                    continue
                item = stage.queue.claim()
                due = stage.queue.next_due() if item is None else None
            except CatalogFull:
                self._stopping.wait(CATALOG_RETRY)  # the catalog logged it once; status names the disk
                continue
            except Exception:
                log.exception("the %s lane could not claim work; retrying", stage.name)
                self._stopping.wait(CATALOG_RETRY)
                continue
            if item is None:
                self._progress[stage.name] = _LaneProgress()  # idle: the next item starts a new batch
                self._idle_wait(due)
                continue
            self.run_item(stage, item, worker)

    def run_item(self, stage: Stage[Item], item: Item, worker: WorkerState) -> None:
        """Process one item and record its outcome; nothing a stage raises escapes (the lane must live)."""
        label = "?"
        try:
            label = stage.describe(item)
            worker.begin(label)
            stage.process(item, worker)
            stage.queue.done(item)
            self._progress[stage.name].finish(time.time(), stage.queue.units(item))
        except StageError as error:
            self._record_failure(stage, item, label, error)
        except CatalogFull as error:  # the work may be done, but it cannot be recorded: it is redone later
            self._record_failure(stage, item, label, StageError(str(error), transient=True, delay=0.0, count=False))
        except Exception as error:  # a bug must not kill the lane; record it loudly and retry later
            log.exception("unexpected error in the %s lane (%s)", stage.name, label)
            self._record_failure(stage, item, label, StageError(f"internal error: {error!r}", transient=True))
        finally:
            worker.end()
            self.wake()

    def _record_failure(self, stage: Stage[Item], item: Item, label: str, error: StageError) -> None:
        try:
            retried = error.transient and stage.queue.retry(item, error, stage.attempts)
            if not retried:
                stage.queue.fail(item, str(error) if not error.transient else
                                 f"{error} (gave up after {stage.attempts} attempts)")
                self.failures += 1
        except CatalogFull:
            with self._unrecorded_lock:  # recorded (as a retry) once the catalog can be written again
                self._unrecorded[stage.name].append((item, error))
            return
        except Exception:
            log.exception("could not record the outcome of %s; it will be retried after a restart", label)
            return
        if error.count or not retried:
            log.log(logging.WARNING if retried else logging.ERROR, "%s: %s%s", label, error,
                    " (will retry)" if retried else "")
            with contextlib.suppress(CatalogFull):
                self.catalog.record_event("warning" if retried else "error", label, str(error))

    def _record_pending(self, stage: Stage[Any]) -> bool:
        """Record the outcomes the catalog refused earlier (as retries, due now); False while it still refuses.

        Until then the lane claims nothing new, so claimed work is never stranded in the "being worked on"
        state: it is due again as soon as the catalog has space.
        """
        with self._unrecorded_lock:
            pending = self._unrecorded[stage.name]
            while pending:
                item, error = pending[0]
                try:
                    stage.queue.retry(item, StageError(str(error), transient=True, delay=0.0, count=False),
                                      stage.attempts)
                except CatalogFull:
                    return False
                pending.pop(0)
        return True

    # ------------------------------------------------------------------ one-shot

    def run_until_idle(self) -> None:
        """Process everything due now, lane after lane, then return (``run --once``).

        A new invocation is a new attempt: work waiting out a back-off from an earlier run is due now.
        """
        self.catalog.reset_interrupted()
        for stage in self.stages:
            stage.queue.expedite()
        for stage in self.stages:
            workers = [WorkerState(stage.name) for _ in range(stage.workers)]
            self.workers.extend(workers)

            def drain(worker: WorkerState, stage: Stage[Any] = stage) -> None:
                while True:
                    try:
                        item = stage.queue.claim()
                    except CatalogFull:
                        return  # nothing more can be recorded: the run ends with the rest still queued
                    if item is None:
                        return
                    self.run_item(stage, item, worker)

            threads = [threading.Thread(target=drain, args=(w,), name=f"{stage.name}-{i}")
                       for i, w in enumerate(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------------ status

    def lanes(self) -> list[LaneStatus]:
        now = time.time()
        out = []
        for stage in self.stages:
            waiting, waiting_bytes = stage.queue.backlog()
            progress = self._progress[stage.name]
            rate = progress.rate(now)
            current = [w.item for w in self.workers if w.lane == stage.name and w.item]
            out.append(LaneStatus(name=stage.name, waiting=waiting, waiting_bytes=waiting_bytes,
                                  done=progress.done if waiting or current else 0, rate=rate,
                                  eta_seconds=waiting / rate if rate and waiting else None, current=current))
        return out


# --------------------------------------------------------------------------- the two queue flavours over the catalog


class FileQueue:
    """The seal queue: originals in the ``files`` table, claimed in batches (:meth:`Catalog.claim_batch`).

    The seal stage records a batch's outcomes itself, in one transaction once its objects are durable, so
    ``done`` has nothing left to do. A batch the lane could not finish as a whole is split: each original is
    tried again on its own, so a single bad file is found, and fails, alone.
    """

    def __init__(self, catalog: Catalog, max_files: int, max_bytes: int):
        self.catalog, self.max_files, self.max_bytes = catalog, max_files, max_bytes

    def claim(self) -> SealBatch | None:
        files = self.catalog.claim_batch(self.max_files, self.max_bytes)
        return SealBatch(tuple(files)) if files else None

    def units(self, item: SealBatch) -> int:
        return len(item.files)

    def next_due(self) -> float | None:
        return self.catalog.next_file_due()

    def done(self, item: SealBatch) -> None:
        pass

    def retry(self, item: SealBatch, error: StageError, limit: int) -> bool:
        if len(item.files) == 1:
            return self.catalog.retry_file(item.files[0], str(error), limit, count=error.count, delay=error.delay)
        if error.count:
            self._split(item, str(error))
        else:
            self.catalog.postpone_files(item.files, backoff(0) if error.delay is None else error.delay)
        return True

    def fail(self, item: SealBatch, reason: str) -> None:
        if len(item.files) == 1:
            self.catalog.fail_file(item.files[0], reason)
        else:
            self._split(item, reason)

    def _split(self, item: SealBatch, reason: str) -> None:
        self.catalog.record_seal_batch([], alone=[(file, reason) for file in item.files])

    def backlog(self) -> tuple[int, int]:
        return self.catalog.seal_backlog()

    def expedite(self) -> None:
        self.catalog.expedite_files()


class JobQueue:
    """A later stage's queue: the ``jobs`` rows of one kind."""

    def __init__(self, catalog: Catalog, kind: str):
        self.catalog, self.kind = catalog, kind

    def claim(self) -> Job | None:
        return self.catalog.claim_job(self.kind)

    def units(self, item: Job) -> int:
        return 1

    def next_due(self) -> float | None:
        return self.catalog.next_job_due(self.kind)

    def done(self, item: Job) -> None:
        self.catalog.finish_job(item)

    def retry(self, item: Job, error: StageError, limit: int) -> bool:
        if error.count and item.attempts + 1 >= limit:
            return False
        self.catalog.retry_job(item, str(error), delay=error.delay, count=error.count)
        return True

    def fail(self, item: Job, reason: str) -> None:
        self.catalog.fail_job(item, reason)

    def backlog(self) -> tuple[int, int]:
        """What the lane has to do now (not what waits out a delay)."""
        return self.catalog.job_backlog(self.kind, due_only=True)

    def expedite(self) -> None:
        self.catalog.expedite(self.kind)
