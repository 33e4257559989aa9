"""The seal stage: one original in, one sealed object in the local vault out.

The file is read once: hashed for its content id and encrypted in the same pass, into a temp
file inside the vault that is renamed into place only when complete. If the file changed while
it was read, nothing is recorded and the caller retries once it is stable again.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shutterlock.vault.format import DEFAULT_CHUNK, Keys, ObjectMeta, seal_stream
from shutterlock.vault.local import LocalStore, describe_os_error
from shutterlock.vault.store import StoreError


class FileChanged(Exception):
    """The original changed (or vanished) while being sealed; not a failure, try again later."""


class SourceUnreadable(Exception):
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
