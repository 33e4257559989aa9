"""The derive lane: turns a sealed original into its share-ready derivative in the outbox.

The heavy work (decoding, the cloak) runs in a separate, low-priority child process with a
per-image time limit, so neither a pathological file nor torch can stall or bloat the daemon.
If the original has changed or gone from the source since it was sealed, the derivative is made
from the sealed object instead, decrypted into an owner-only temp folder and deleted right after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from shutterlock.catalog import Catalog, FileRow, Job
from shutterlock.config import Config
from shutterlock.fsutil import ensure_dir
from shutterlock.pipeline import Stage, StageError, WorkerState
from shutterlock.vault.format import FormatError, Keys, ObjectReader
from shutterlock.vault.local import LocalStore

log = logging.getLogger(__name__)

HELD_RETRY = 3600.0  # seconds before a held-back (uncloaked) derivative is tried again


class DeriveStage(Stage):
    kind = "derive"

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.config, self.catalog, self.keys, self.vault = config, catalog, keys, vault
        self.threads = config.derive.workers
        self._local = threading.local()
        self._runners: list[Any] = []

    def _get_runner(self) -> Any:
        """One long-lived worker process per lane thread, started on first use."""
        runner = getattr(self._local, "runner", None)
        if runner is None:
            from shutterlock.derive.runner import DeriveRunner

            runner = self._local.runner = DeriveRunner(self.config.derive.time_limit)
            self._runners.append(runner)
        return runner

    def process(self, job: Job, worker: WorkerState) -> None:
        from shutterlock.derive import FAILED, HELD, DeriveJob, should_derive

        file = self.catalog.file_by_id(int(job.subject))
        if file is None or file.content_id is None:
            return
        source = self.config.source_by_name(file.source)
        original = source.path / file.relpath if source else Path(PurePosixPath(file.relpath).name)
        if source is not None and not should_derive(original, self.config.derive.pair_preference):
            self._record(file, status="skipped", reason="RAW+JPEG pair: the other half is derived")
            return
        previous = self.catalog.derivative_of(file.id)
        with self._input_for(file, original) as path:
            result = self._get_runner().run(DeriveJob(
                source=path, derive=self.config.derive, watermark=self.config.watermark,
                rights=self.config.rights, cloak=self.config.cloak,
                previous_output=Path(previous["output"]) if previous and previous.get("output") else None,
                seed=int(file.content_id[:8], 16), check_pair=False))
            worker.tick()
        output = result.output
        if result.status == HELD and previous:
            output = previous.get("output")  # the earlier derivative stays where it was
        self._record(file, status=result.status, reason=result.reason,
                     output=str(output) if output else None, cloaked=result.cloaked,
                     strength=result.cloak_strength, watermark=result.watermark)
        if result.status == FAILED:
            raise StageError(result.reason, transient=False)
        if result.status == HELD:
            # Not a lost cause: the cloak may work once its weights are there. Try again later.
            raise StageError(result.reason, transient=True, delay=HELD_RETRY, count=False)
        log.info("derivative of %s/%s: %s", file.source, file.relpath, result.output or result.reason)

    def _record(self, file: FileRow, *, status: str, reason: str, output: str | None = None,
                cloaked: bool = False, strength: str = "", watermark: str = "") -> None:
        self.catalog.record_derivative(file.id, file.content_id or "", status=status, output=output, reason=reason,
                                       cloaked=cloaked, strength=strength, watermark=watermark)

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

    def describe(self, job: Job) -> str:
        file = self.catalog.file_by_id(int(job.subject))
        return f"derivative of {file.source}/{file.relpath}" if file else f"derivative #{job.subject}"

    def close(self) -> None:
        for runner in self._runners:
            runner.close()
        self._runners.clear()
