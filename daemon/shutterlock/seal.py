"""The seal stage: one original in, one sealed object in the local vault out.

The file is read once: hashed for its content id and encrypted in the same pass, into a temp
file inside the vault that is renamed into place only when complete. If the file changed while
it was read, nothing is recorded and the file is queued again once it is stable.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shutterlock.catalog import Catalog, FileRow
from shutterlock.config import Config
from shutterlock.engine import FileQueue, Periodic, Stage, StageError, WorkerState
from shutterlock.errors import ShutterlockError
from shutterlock.vault.format import DEFAULT_CHUNK, Keys, ObjectMeta, seal_stream
from shutterlock.vault.local import LocalStore, describe_os_error
from shutterlock.vault.store import StoreError

log = logging.getLogger(__name__)


class FileChanged(ShutterlockError):
    """The original changed (or vanished) while being sealed; not a failure, try again later."""


class SourceUnreadable(ShutterlockError):
    """The original cannot be read at all (permissions, I/O error); ``transient`` if worth retrying."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Sealed:
    content_id: str
    size: int
    mtime_ns: int
    stored_size: int
    new_object: bool


def seal_file(vault: LocalStore, keys: Keys, source_name: str, root: Path, relpath: str,
              chunk_size: int = DEFAULT_CHUNK, progress: Callable[[], None] | None = None) -> Sealed:
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
        meta = ObjectMeta(source=source_name, path=relpath, size=before.st_size, mtime_ns=before.st_mtime_ns,
                          sealed_at=time.time())
        with vault.staging() as (staged, out):
            try:
                result = seal_stream(keys, meta, handle, out, chunk_size, progress)
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM):
                    raise StoreError(describe_os_error(error, "write to", vault.tmp)) from None
                raise SourceUnreadable(f"{path}: read failed: {error.strerror}", transient=True) from None
            after = os.fstat(handle.fileno())
            if not _same(before, after) or result.plain_size != before.st_size or _changed_on_disk(path, after):
                raise FileChanged(f"{path}: changed while being sealed")
            new_object = vault.adopt(staged, result.content_id)
    return Sealed(content_id=result.content_id, size=result.plain_size, mtime_ns=before.st_mtime_ns,
                  stored_size=result.stored_size, new_object=new_object)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _changed_on_disk(path: Path, seen: os.stat_result) -> bool:
    """The path may now name another file (atomic replace by the importer)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev) or not _same(now, seen)


class SealStage:
    """The first lane: seals what the watchers and scans queued, and queues what the later stages need."""

    name = "seal"

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore,
                 later: Sequence[Stage[Any]]):
        self.catalog, self.keys, self.vault, self.later = catalog, keys, vault, later
        self.queue = FileQueue(catalog)
        self.workers = config.engine.seal_workers or os.cpu_count() or 2
        self.reload(config)

    def reload(self, config: Config) -> str:
        self.config = config
        self.attempts = config.engine.max_attempts
        self.stall_limit = config.engine.stall_seconds
        wanted = config.engine.seal_workers or os.cpu_count() or 2
        return "" if wanted == self.workers else "[engine] seal_workers changes after a restart"

    def describe(self, item: FileRow) -> str:
        return f"{item.source}/{item.relpath}"

    def subject(self, file_id: int, content_id: str) -> str | None:
        return None

    def schedule(self) -> list[Periodic]:
        return []

    def close(self) -> None:
        pass

    def process(self, file: FileRow, worker: WorkerState) -> None:
        source = self.config.source_by_name(file.source)
        if source is None:
            raise StageError(f"source {file.source!r} is no longer configured", transient=False)
        try:
            sealed = seal_file(self.vault, self.keys, source.name, source.path, file.relpath,
                               self.config.engine.chunk_size, progress=worker.tick)
        except FileChanged as error:
            if (source.path / file.relpath).exists():
                self.catalog.requeue_file(file)
                log.info("%s", error)
            else:
                self.catalog.forget_file(file)
            return
        except SourceUnreadable as error:
            raise StageError(str(error), transient=error.transient) from None
        except StoreError as error:
            raise StageError(str(error), transient=True) from None
        follow_up = [(stage.name, subject, sealed.stored_size) for stage in self.later
                     if (subject := stage.subject(file.id, sealed.content_id)) is not None]
        self.catalog.mark_sealed(file, content_id=sealed.content_id, size=sealed.size, mtime_ns=sealed.mtime_ns,
                                 stored_size=sealed.stored_size, capture_time=None, follow_up=follow_up)
        log.info("sealed %s/%s (%s, %d bytes%s)", file.source, file.relpath, sealed.content_id[:12], sealed.size,
                 "" if sealed.new_object else ", already in the vault")
