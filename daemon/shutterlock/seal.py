"""The seal lane: originals in, sealed objects in the local vault out, a batch at a time.

Each original is read once: hashed for its content id and encrypted in the same pass, into a temp file
inside the vault. A batch's temp files are then made durable together (one flush of the vault's file
system), renamed into place, the folders flushed, and only then is the batch recorded, in one catalog
transaction. A kill at any instant leaves temp files (swept at the next start) or complete objects the
catalog does not know yet (found again by content id when the batch is redone), never a catalog row
without its object. The fsyncs, renames of folders and transactions that used to cost more than a small
file itself are paid once per batch.

If a file changed while it was read, nothing is recorded for it and it is queued again once stable. While
the vault is missing, full or refuses writes, the lane takes no work, status says why in one line, and
sealing resumes by itself when the condition clears.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shutterlock.catalog import Catalog, CatalogFull, FileRow, SealBatch, SealedFile
from shutterlock.config import Config
from shutterlock.engine import FileQueue, Periodic, Stage, StageError, WorkerState
from shutterlock.errors import ShutterlockError
from shutterlock.fsutil import describe_free_space, free_bytes
from shutterlock.status import human_bytes
from shutterlock.vault.format import DEFAULT_CHUNK, Keys, ObjectMeta, seal_stream
from shutterlock.vault.local import LocalStore, Staging, VaultFull, VaultMissing
from shutterlock.vault.store import StoreError

log = logging.getLogger(__name__)

BATCH_FILES = 256  # originals per batch: one flush and one transaction for all of them
BATCH_BYTES = 64 << 20  # about this much data per batch (a larger original is a batch of its own)
FULL_PROBE = 5.0  # seconds between looks at the free space of a full vault
FULL_RETRY = 60.0  # a real write is the best test: tried again after this long even if space looks short
REFUSED_RETRY = 15.0  # before writing again to a vault that refused a write (read-only, I/O error)
CATALOG_RETRY = 5.0  # before recording again in a catalog whose disk was full
SPARSE_MIN = 64 << 20  # sparse originals of at least this size are worth a warning
READ_AHEAD_MIN = 4 << 20  # originals larger than this are read with the kernel's sequential read-ahead


class FileChanged(ShutterlockError):
    """The original changed (or vanished) while being sealed; not a failure, try again later."""


class SourceUnreadable(ShutterlockError):
    """The original cannot be read at all (permissions, I/O error); ``transient`` if worth retrying."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Sealed:
    """One original sealed into a temp file of the vault, not yet durable or in place."""

    staged: str
    content_id: str
    size: int
    mtime_ns: int
    stored_size: int


def seal_file(area: Staging, keys: Keys, source_name: str, root: Path, relpath: str,
              chunk_size: int = DEFAULT_CHUNK, progress: Callable[[], None] | None = None,
              on_sparse: Callable[[str], None] | None = None) -> Sealed:
    """Seal one original into a temp file of ``area``; raises FileChanged, SourceUnreadable or StoreError."""
    path = root / relpath
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileChanged(f"{path}: vanished before it could be sealed") from None
    except OSError as error:
        transient = error.errno in (errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ENOLCK, errno.ETIMEDOUT)
        raise SourceUnreadable(f"{path}: cannot read: {error.strerror}", transient=transient) from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise SourceUnreadable(f"{path}: not a regular file", transient=False)
        if on_sparse is not None and before.st_size >= SPARSE_MIN and \
                getattr(before, "st_blocks", before.st_size // 512 + 1) * 512 < before.st_size // 2:
            on_sparse(f"{path} is sparse: {human_bytes(before.st_size)}, of which "
                      f"{human_bytes(before.st_blocks * 512)} are on disk; its sealed copy takes "
                      f"{human_bytes(before.st_size)} in the vault")
        if before.st_size > READ_AHEAD_MIN and hasattr(os, "posix_fadvise"):
            # Read once, front to back: a larger read-ahead window keeps a card or a disk busy while we encrypt.
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        meta = ObjectMeta(source=source_name, path=relpath, size=before.st_size, mtime_ns=before.st_mtime_ns,
                          sealed_at=time.time())
        staged, out = area.open()
        with out:
            try:
                result = seal_stream(keys, meta, handle, out, chunk_size, progress)
            except OSError as error:
                area.discard(staged)
                raise SourceUnreadable(f"{path}: read failed: {error.strerror}", transient=True) from None
        after = os.fstat(handle.fileno())
        if not _same(before, after) or result.plain_size != before.st_size or _changed_on_disk(path, after):
            area.discard(staged)
            raise FileChanged(f"{path}: changed while being sealed")
    return Sealed(staged=staged, content_id=result.content_id, size=result.plain_size, mtime_ns=before.st_mtime_ns,
                  stored_size=result.stored_size)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _changed_on_disk(path: Path, seen: os.stat_result) -> bool:
    """The path may now name another file (atomic replace by the importer)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev) or not _same(now, seen)


class VaultGuard:
    """Whether the vault can take objects now; while it cannot, one line says why and when it is retried.

    A missing vault is looked for on every call (one stat); a full one is retried once free space covers
    what failed (or after a minute); one that refused a write, after a pause.
    """

    def __init__(self, vault: LocalStore, envelope_file: Path):
        self.vault, self.envelope_file = vault, envelope_file
        self._lock = threading.Lock()
        self._problem = "" if vault.present() else str(VaultMissing(vault.root))
        self._missing = bool(self._problem)
        self._retry_at = 0.0
        self._needed = 0
        self._full_since = 0.0

    def problem(self) -> str:
        """Why the lane cannot seal right now ("" when it can); notices a vault coming back or going."""
        with self._lock:
            if self._missing:
                return self._look_for_vault()
            if not self.vault.present():
                log.error("the vault is missing: %s (is its drive mounted?); sealing waits for it", self.vault.root)
                self._missing = True
                return self._set(str(VaultMissing(self.vault.root)), retry=0.0)
            if not self._problem or time.monotonic() < self._retry_at:
                return self._problem
            if self._full_since and not self._space_back():
                return self._problem
            log.info("sealing resumes (%s)", "space in the vault" if self._full_since else "trying the vault again")
            return self._clear()

    def _look_for_vault(self) -> str:
        if not self.vault.present():
            return self._problem
        try:
            self.vault.prepare(self.envelope_file)
        except StoreError as error:
            self._missing = False
            return self._set(str(error), retry=REFUSED_RETRY)
        log.info("the vault is back at %s: sealing resumes", self.vault.root)
        return self._clear()

    def _space_back(self) -> bool:
        """Free space covers what failed (or a minute has passed: then a real write decides)."""
        try:
            enough = free_bytes(self.vault.root) >= self._needed
        except OSError:
            enough = False
        if enough or time.monotonic() - self._full_since >= FULL_RETRY:
            return True
        self._set(self._full_message(), retry=FULL_PROBE)
        return False

    def failed(self, error: StoreError, needed: int) -> StageError:
        """Note a vault error met by a batch; returns what the lane raises (no attempt is spent)."""
        with self._lock:
            if isinstance(error, VaultMissing):
                self._missing = True
                self._set(str(error), retry=0.0)
                log.error("%s; sealing waits for it", error)
            elif isinstance(error, VaultFull):
                self._full_since = self._full_since or time.monotonic()
                self._needed = needed + (1 << 20)
                self._set(self._full_message(), retry=FULL_PROBE)
                log.error("%s", self._problem)
            else:
                self._set(f"{error}; sealing is retried every {REFUSED_RETRY:.0f} s", retry=REFUSED_RETRY)
                log.error("%s", self._problem)
            return StageError(self._problem, transient=True, delay=0.0, count=False)

    def _full_message(self) -> str:
        return f"the vault's disk is full ({describe_free_space(self.vault.root)}); sealing resumes when " \
            "space is freed"

    def _set(self, problem: str, retry: float) -> str:
        self._problem, self._retry_at = problem, time.monotonic() + retry
        return problem

    def _clear(self) -> str:
        self._problem, self._missing, self._full_since, self._needed = "", False, 0.0, 0
        return ""

    def wait(self) -> float:
        """Seconds until the lane should look again."""
        return 1.0 if self._missing else max(0.2, min(FULL_PROBE, self._retry_at - time.monotonic()))


class _SealQueue(FileQueue):
    """The seal queue, closed while the vault cannot take objects (the lane then just looks again later)."""

    def __init__(self, catalog: Catalog, guard: VaultGuard):
        super().__init__(catalog, BATCH_FILES, BATCH_BYTES)
        self.guard = guard

    def claim(self) -> SealBatch | None:
        return None if self.guard.problem() else super().claim()

    def next_due(self) -> float | None:
        if self.guard.problem():
            return time.time() + self.guard.wait()
        return super().next_due()


class SealStage:
    """The first lane: seals what the watchers and scans queued, and queues what the later stages need."""

    name = "seal"

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore,
                 later: Sequence[Stage[Any]]):
        self.catalog, self.keys, self.vault, self.later = catalog, keys, vault, later
        self.guard = VaultGuard(vault, config.paths.envelope_file)
        self.queue = _SealQueue(catalog, self.guard)
        self.workers = config.engine.seal_workers or os.cpu_count() or 2
        self.reload(config)

    def reload(self, config: Config) -> str:
        self.config = config
        self.attempts = config.engine.max_attempts
        self.stall_limit = config.engine.stall_seconds
        wanted = config.engine.seal_workers or os.cpu_count() or 2
        return "" if wanted == self.workers else "[engine] seal_workers changes after a restart"

    def describe(self, item: SealBatch) -> str:
        first = item.files[0]
        more = len(item.files) - 1
        return f"{first.source}/{first.relpath}" + (f" and {more} more" if more else "")

    def subject(self, file_id: int, content_id: str) -> str | None:
        return None

    def schedule(self) -> list[Periodic]:
        return []

    def close(self) -> None:
        pass

    def process(self, batch: SealBatch, worker: WorkerState) -> None:
        """Seal every original of the batch, make the objects durable together, record them together."""
        alone = len(batch.files) == 1
        sealed: list[tuple[FileRow, Sealed]] = []
        changed: list[FileRow] = []
        vanished: list[FileRow] = []
        failed: list[tuple[FileRow, str]] = []
        with self.vault.staging_area() as area:
            for file in batch.files:
                worker.tick()
                source = self.config.source_by_name(file.source)
                try:
                    if source is None:
                        raise SourceUnreadable(f"source {file.source!r} is no longer configured", transient=False)
                    result = seal_file(area, self.keys, source.name, source.path, file.relpath,
                                       self.config.engine.chunk_size, progress=worker.tick, on_sparse=self._sparse)
                except FileChanged as error:
                    if source is not None and (source.path / file.relpath).exists():
                        changed.append(file)
                        log.info("%s", error)
                    else:
                        vanished.append(file)
                    continue
                except SourceUnreadable as error:
                    if alone:
                        raise StageError(str(error), transient=error.transient) from None
                    failed.append((file, str(error)))  # tried again on its own, where it fails or succeeds
                    continue
                except StoreError as error:
                    raise self.guard.failed(error, batch.bytes) from None
                sealed.append((file, result))
            try:
                new = self.vault.commit([(result.staged, result.content_id) for _, result in sealed])
            except StoreError as error:
                raise self.guard.failed(error, batch.bytes) from None
        records = [SealedFile(file=file, content_id=result.content_id, size=result.size, mtime_ns=result.mtime_ns,
                              stored_size=result.stored_size, follow_up=self._follow_up(file, result))
                   for file, result in sealed]
        try:
            self.catalog.record_seal_batch(records, changed=changed, vanished=vanished, alone=failed)
        except CatalogFull as error:
            raise StageError(str(error), transient=True, delay=CATALOG_RETRY, count=False) from None
        for (file, result), is_new in zip(sealed, new, strict=True):
            log.info("sealed %s/%s (%s, %d bytes%s)", file.source, file.relpath, result.content_id[:12], result.size,
                     "" if is_new else ", already in the vault")

    def _follow_up(self, file: FileRow, result: Sealed) -> list[tuple[str, str, int]]:
        return [(stage.name, subject, result.stored_size) for stage in self.later
                if (subject := stage.subject(file.id, result.content_id)) is not None]

    def _sparse(self, warning: str) -> None:
        log.warning("%s", warning)
        with contextlib.suppress(CatalogFull):  # the warning is in the log; a full catalog is in status
            self.catalog.record_event("warning", "sparse file", warning)
