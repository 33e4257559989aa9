"""The derive lane: turns a sealed original into its share-ready derivative in the outbox.

The heavy work (decoding, the cloak) runs in a separate, low-priority child process with a per-image
time limit, so neither a pathological file nor torch can stall or bloat the daemon; the child returns the
encoded bytes and this lane, in the daemon, places them in the outbox. If the original has changed or
gone from the source since it was sealed, the derivative is made from the sealed object instead,
decrypted into an owner-only temp folder and deleted right after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from shutterlock.catalog import Catalog, FileRow, Job, JobQueue
from shutterlock.config import Config
from shutterlock.engine import Periodic, StageError, WorkerState
from shutterlock.fsutil import ensure_dir
from shutterlock.vault.format import FormatError, Keys, ObjectReader
from shutterlock.vault.local import LocalStore

from . import outbox
from .pairs import skip_reason
from .render import DeriveJob, Outcome, Rendered
from .runner import DeriveRunner

log = logging.getLogger(__name__)

HELD_RETRY = 3600.0  # seconds before a held-back (uncloaked) derivative is tried again
KILL_GRACE = 60.0  # beyond the per-image limit, how long a derive worker may look stuck to the watchdog


class DeriveStage:
    """One job per sealed original (its file id); one long-lived worker process per lane thread."""

    name = "derive"

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.catalog, self.keys, self.vault = catalog, keys, vault
        self.queue = JobQueue(catalog, self.name)
        self.workers = config.derive.workers
        self._local = threading.local()
        self._runners: list[DeriveRunner] = []
        # Why the cloak could not run on the latest attempt: "" once it runs, None before the first attempt.
        self.cloak_problem: str | None = None
        self.reload(config)

    def reload(self, config: Config) -> str:
        """Settings are read per job, and each runner follows the time limit; only the worker count waits."""
        self.config = config
        self.attempts = config.engine.max_attempts
        self.stall_limit = max(config.engine.stall_seconds, config.derive.time_limit + KILL_GRACE)
        for runner in self._runners:
            runner.time_limit = config.derive.time_limit
        if config.derive.workers != self.workers:
            return "[derive] workers changes after a restart"
        return ""

    def subject(self, file_id: int, content_id: str) -> str | None:
        return str(file_id)

    def schedule(self) -> list[Periodic]:
        return []

    def describe(self, job: Job) -> str:
        file = self.catalog.file_by_id(int(job.subject))
        return f"derivative of {file.source}/{file.relpath}" if file else f"derivative #{job.subject}"

    def _runner(self) -> DeriveRunner:
        """One long-lived worker process per lane thread, started on first use."""
        runner: DeriveRunner | None = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = DeriveRunner(self.config.derive.time_limit)
            self._runners.append(runner)
        return runner

    def process(self, job: Job, worker: WorkerState) -> None:
        file = self.catalog.file_by_id(int(job.subject))
        if file is None or file.content_id is None:
            return
        source = self.config.source_by_name(file.source)
        original = source.path / file.relpath if source else Path(PurePosixPath(file.relpath).name)
        if source is not None and (reason := skip_reason(original, self.config.derive.pair_preference)):
            self._record(file, Outcome.SKIPPED, reason)
            return
        previous = self.catalog.derivative_of(file.id)
        previous_output = Path(previous["output"]) if previous and previous.get("output") else None
        with self._input_for(file, original) as path:
            rendered = self._runner().run(DeriveJob(
                source=path, derive=self.config.derive, watermark=self.config.watermark,
                rights=self.config.rights, cloak=self.config.cloak, seed=int(file.content_id[:8], 16)))
            worker.tick()
        self._note_cloak(rendered)
        output = previous_output if rendered.outcome is Outcome.HELD else None  # the earlier one stays
        if rendered.outcome is Outcome.WRITTEN:
            output = self._place(rendered, PurePosixPath(file.relpath).stem, previous_output)
        self._record(file, rendered.outcome, rendered.reason, output, rendered)
        if rendered.outcome is Outcome.FAILED:
            raise StageError(rendered.reason, transient=False)
        if rendered.outcome is Outcome.HELD:
            # Not a lost cause: the cloak may work once its weights are there. Try again later.
            raise StageError(rendered.reason, transient=True, delay=HELD_RETRY, count=False)
        log.info("derivative of %s/%s: %s", file.source, file.relpath, output or rendered.reason)

    def _note_cloak(self, rendered: Rendered) -> None:
        """Status shows the cloak's current state, not its first failure; a working cloak releases held items."""
        if rendered.outcome is Outcome.HELD:
            self.cloak_problem = rendered.cloak_error
        elif rendered.cloaked:
            if self.cloak_problem:
                log.info("the cloak runs again; retrying the derivatives held back")
                self.queue.expedite()
            self.cloak_problem = ""

    def _place(self, rendered: Rendered, stem: str, previous: Path | None) -> Path:
        """Write the rendered bytes into the outbox; the previous derivative is replaced only inside it."""
        root = self.config.derive.outbox
        assert rendered.jpeg is not None and rendered.capture_time is not None
        if previous is not None and not previous.is_relative_to(root):
            previous = None
        try:
            return outbox.place(rendered.jpeg, outbox.dated_dir(root, rendered.capture_time), stem,
                                previous=previous)
        except OSError as error:
            raise StageError(f"cannot write the derivative into {root}: {error.strerror or error}",
                             transient=True) from None

    def _record(self, file: FileRow, outcome: Outcome, reason: str, output: Path | None = None,
                rendered: Rendered | None = None) -> None:
        self.catalog.record_derivative(
            file.id, file.content_id or "", status=outcome, output=str(output) if output else None, reason=reason,
            cloaked=bool(rendered and rendered.cloaked), strength=rendered.cloak_strength if rendered else "",
            watermark=rendered.watermark if rendered else "")

    @contextlib.contextmanager
    def _input_for(self, file: FileRow, original: Path) -> Iterator[Path]:
        """The original if it is still the sealed version, else a temporary decrypted copy."""
        try:
            info = os.stat(original)
            if (info.st_size, info.st_mtime_ns) == (file.size, file.mtime_ns):
                yield original
                return
        except OSError:
            pass
        scratch = ensure_dir(self.config.paths.cache_dir / "derive")
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            target = Path(folder) / PurePosixPath(file.relpath).name
            try:
                with self.vault.open(file.content_id or "") as handle, open(target, "wb") as out:
                    ObjectReader(self.keys, handle, file.content_id).copy_to(out)
            except FormatError as error:
                raise StageError(f"sealed object failed authentication: {error}", transient=False) from None
            os.utime(target, ns=(file.mtime_ns, file.mtime_ns))  # the capture-date fallback
            yield target

    def close(self) -> None:
        for runner in self._runners:
            runner.close()
        self._runners.clear()
