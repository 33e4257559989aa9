"""Crash-safe file writes: temp file, fsync, rename, fsync the directory.

Every file this program creates goes through here, so a power cut leaves either the old file
or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".shutterlock-tmp-"


def fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def temp_path_for(target: Path) -> Path:
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{target.name}")


@contextlib.contextmanager
def atomic_writer(target: Path, mode: int = 0o600, *, replace: bool = True) -> Iterator[BinaryIO]:
    """Yield a handle whose contents appear at ``target`` only if the block completes.

    With ``replace=False`` an existing target is left alone (``FileExistsError``), which is how
    the outbox avoids clobbering a file that is not ours.
    """
    tmp = temp_path_for(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            os.unlink(tmp)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(target: Path, data: bytes, mode: int = 0o600) -> None:
    ensure_dir(target.parent)
    with atomic_writer(target, mode) as handle:
        handle.write(data)


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files a crash left behind; returns how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for path in directory.rglob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
