"""The engine: lanes of worker threads that move originals through seal → replicate → derive.

Every unit of work is claimed from the catalog and its outcome written back before the next is
taken, so killing the process at any instant loses nothing: in-flight work is simply claimed
again after a restart. Sealing has its own pool; replication and derivation have their own
lanes, so a slow bucket or a slow cloak never delays sealing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shutterlock import catalog as cat
from shutterlock.catalog import Catalog, FileRow, Job
from shutterlock.config import Config, SourceConfig
from shutterlock.seal import FileChanged, SourceUnreadable, seal_file
from shutterlock.vault.format import Keys
from shutterlock.vault.local import LocalStore
from shutterlock.vault.store import StoreError
from shutterlock.watch import walk

log = logging.getLogger(__name__)

TEST_STALL_ENV = "SHUTTERLOCK_TEST_STALL_SEAL"  # test hook: a seal worker blocks forever


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


class Stage:
    """A later stage (replicate, derive) that processes one job at a time."""

    kind: str
    threads: int = 1

    def process(self, job: Job, worker: WorkerState) -> None:
        """Do the job; raise StageError to retry or fail it."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {}

    def describe(self, job: Job) -> str:
        """How the job is named in logs and status."""
        return f"{self.kind} {job.subject[:16]}"

    def close(self) -> None:
        """Release what the stage holds (child processes, connections)."""


class StageError(Exception):
    def __init__(self, message: str, *, transient: bool, delay: float | None = None, count: bool = True):
        super().__init__(message)
        self.transient, self.delay, self.count = transient, delay, count


class Engine:
    """Runs the lanes; the daemon and ``run --once`` both drive it."""

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore,
                 stages: list[Stage], follow_up: Callable[[FileRow, str, int], list[tuple[str, str, int]]]):
        self.config, self.catalog, self.keys, self.vault = config, catalog, keys, vault
        self.stages = stages
        self._follow_up = follow_up
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.workers: list[WorkerState] = []
        self.paused = catalog.get_setting("paused") == "1"
        self.failures = 0
        self.version = 0  # bumps on every visible change; status long-polls wait on it

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
        seal_threads = self.config.engine.seal_workers or os.cpu_count() or 2
        for index in range(seal_threads):
            self._spawn("seal", index, self._seal_loop)
        for stage in self.stages:
            for index in range(stage.threads):
                self._spawn(stage.kind, index, lambda worker, stage=stage: self._stage_loop(stage, worker))

    def _spawn(self, lane: str, index: int, target: Callable[[WorkerState], None]) -> None:
        worker = WorkerState(lane)
        self.workers.append(worker)
        thread = threading.Thread(target=target, args=(worker,), name=f"{lane}-{index}", daemon=True)
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

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def healthy(self) -> bool:
        """False when a busy worker has made no progress for a while (systemd's watchdog then fires)."""
        now, limit = time.monotonic(), self.config.engine.stall_seconds
        # A derivative runs in a child process that is killed at its time limit: allow that much.
        derive_limit = max(limit, self.config.derive.time_limit + 60)
        return all(not w.busy_since or now - w.progress_at < (derive_limit if w.lane == "derive" else limit)
                   for w in self.workers)

    # ------------------------------------------------------------------ discovery

    def discover(self, source: SourceConfig, relpath: str, size: int, mtime_ns: int) -> None:
        if self.catalog.discover(source.name, relpath, size, mtime_ns):
            log.debug("queued %s/%s", source.name, relpath)
            self.wake()

    def scan(self, offer: Callable[[SourceConfig, str], None] | None = None) -> int:
        """Walk every source; unknown or changed files go to ``offer`` (or straight to the queue)."""
        found = 0
        for source in self.config.sources:
            if not source.path.is_dir():
                log.warning("source %s is not available: %s", source.name, source.path)
                continue
            known = self.catalog.known_stat(source.name)
            for relpath, info in walk(source.path):
                previous = known.get(relpath)
                if previous is not None and previous[:2] == (info.st_size, info.st_mtime_ns) \
                        and previous[2] in (cat.SEALED, cat.SEALING):
                    continue
                found += 1
                if offer is not None:
                    offer(source, relpath)
                else:
                    self.discover(source, relpath, info.st_size, info.st_mtime_ns)
        return found

    # ------------------------------------------------------------------ lanes

    def _idle_wait(self, next_due: float | None) -> None:
        timeout = 1.0 if self.paused else 30.0
        if next_due is not None:
            timeout = min(timeout, max(0.05, next_due - time.time()))
        with self._changed:
            version = self.version
            self._changed.wait_for(lambda: self.version != version or self._stopping.is_set(), timeout)

    def _seal_loop(self, worker: WorkerState) -> None:
        while not self._stopping.is_set():
            if self.paused:
                self._idle_wait(None)
                continue
            claimed = self.catalog.claim_files(1)
            if not claimed:
                self._idle_wait(self.catalog.next_file_due())
                continue
            self.seal(claimed[0], worker)

    def seal(self, file: FileRow, worker: WorkerState) -> None:
        source = self.config.source_by_name(file.source)
        label = f"{file.source}/{file.relpath}"
        worker.begin(label)
        try:
            if source is None:
                self.catalog.fail_file(file, f"source {file.source!r} is no longer configured")
                return
            if os.environ.get(TEST_STALL_ENV):
                threading.Event().wait()
            sealed = seal_file(self.vault, self.keys, source.name, source.path, file.relpath,
                               self.config.engine.chunk_size, progress=worker.tick)
            self.catalog.mark_sealed(file, content_id=sealed.content_id, size=sealed.size,
                                     mtime_ns=sealed.mtime_ns, stored_size=sealed.stored_size, capture_time=None,
                                     follow_up=self._follow_up(file, sealed.content_id, sealed.stored_size))
            log.info("sealed %s (%s, %d bytes%s)", label, sealed.content_id[:12], sealed.size,
                     "" if sealed.new_object else ", already in the vault")
        except FileChanged as error:
            if (source.path / file.relpath).exists():
                self.catalog.requeue_file(file)
                log.info("%s", error)
            else:
                self.catalog.forget_file(file)
        except SourceUnreadable as error:
            self._seal_failed(file, str(error), transient=error.transient)
        except StoreError as error:
            self._seal_failed(file, str(error), transient=True)
        except Exception as error:  # a bug must not kill the lane; record it loudly
            log.exception("unexpected error sealing %s", label)
            self._seal_failed(file, f"{label}: internal error: {error!r}", transient=True)
        finally:
            worker.end()
            self.wake()

    def _seal_failed(self, file: FileRow, message: str, *, transient: bool) -> None:
        retried = transient and self.catalog.retry_file(file, message, self.config.engine.max_attempts)
        if not transient:
            self.catalog.fail_file(file, message)
        if not retried:
            self.failures += 1
        log.log(logging.WARNING if retried else logging.ERROR, "%s%s", message, " (will retry)" if retried else "")
        self.catalog.record_event("warning" if retried else "error", f"{file.source}/{file.relpath}", message)

    def _stage_loop(self, stage: Stage, worker: WorkerState) -> None:
        while not self._stopping.is_set():
            if self.paused:
                self._idle_wait(None)
                continue
            job = self.catalog.claim_job(stage.kind)
            if job is None:
                self._idle_wait(self.catalog.next_job_due(stage.kind))
                continue
            self.run_job(stage, job, worker)

    def run_job(self, stage: Stage, job: Job, worker: WorkerState) -> None:
        label = stage.describe(job)
        worker.begin(label)
        try:
            stage.process(job, worker)
            self.catalog.finish_job(job)
        except StageError as error:
            if error.transient and job.attempts + 1 < self.config.engine.max_attempts * 4:
                self.catalog.retry_job(job, str(error), delay=error.delay, count=error.count)
                log.warning("%s: %s (will retry)", label, error)
            else:
                self.catalog.fail_job(job, str(error))
                self.failures += 1
                log.error("%s: %s", label, error)
                self.catalog.record_event("error", label, str(error))
        except Exception as error:
            log.exception("unexpected error in %s of %s", stage.kind, job.subject)
            self.catalog.retry_job(job, f"internal error: {error!r}")
        finally:
            worker.end()
            self.wake()

    # ------------------------------------------------------------------ one-shot

    def run_until_idle(self) -> None:
        """Process everything due now, in the calling thread's pool, then return (``run --once``).

        A new invocation is a new attempt: work waiting out a back-off from an earlier run is due now.
        """
        self.catalog.reset_interrupted()
        self.catalog.expedite_all()
        seal_threads = self.config.engine.seal_workers or os.cpu_count() or 2
        workers = [WorkerState("seal") for _ in range(seal_threads)]
        self.workers.extend(workers)

        def drain_seals(worker: WorkerState) -> None:
            while claimed := self.catalog.claim_files(1):
                self.seal(claimed[0], worker)

        threads = [threading.Thread(target=drain_seals, args=(w,), name=f"seal-{i}") for i, w in enumerate(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for stage in self.stages:
            stage_workers = [WorkerState(stage.kind) for _ in range(stage.threads)]

            def drain_jobs(worker: WorkerState, stage: Stage = stage) -> None:
                while job := self.catalog.claim_job(stage.kind):
                    self.run_job(stage, job, worker)

            threads = [threading.Thread(target=drain_jobs, args=(w,)) for w in stage_workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    def current_items(self) -> list[str]:
        return [w.item for w in self.workers if w.item]

    def stage_status(self) -> dict[str, Any]:
        return {stage.kind: stage.status() for stage in self.stages}
