"""Where derivatives land, and how they get there without ever clobbering someone else's file.

Layout ``OUTBOX/YYYY/YYYY-MM-DD/NAME.jpg`` (or flat ``DIR/NAME.jpg`` for ``protect``). A name taken
by another file gets ``NAME-2.jpg``, ``NAME-3.jpg``, …; the derivative previously made from the same
original (the caller knows it from the catalog) is the only file ever replaced. Writes are atomic:
temp file in the target directory, fsync, then a no-clobber hard link (or rename), then fsync of the
directory, so a crash leaves either the old state or the new file, never a torn JPEG.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

MAX_SUFFIX = 10_000
TEMP_PREFIX = ".shutterlock-"
STALE_TEMP_SECONDS = 3600.0  # a temp file this old belongs to a writer that was killed


def dated_dir(root: Path, when: datetime) -> Path:
    return root / f"{when:%Y}" / f"{when:%Y-%m-%d}"


def _candidates(directory: Path, stem: str) -> Iterator[Path]:
    yield directory / f"{stem}.jpg"
    for index in range(2, MAX_SUFFIX):
        yield directory / f"{stem}-{index}.jpg"


def _is_own(directory: Path, stem: str, previous: Path | None) -> bool:
    """The previous derivative keeps its name if it is one this original would get in ``directory``."""
    if previous is None or previous.parent != directory:
        return False
    return re.fullmatch(re.escape(stem) + r"(-\d+)?\.jpg", previous.name) is not None


def write_atomic(directory: Path, stem: str, write: Callable[[BinaryIO], None], *,
                 previous: Path | None = None) -> Path:
    """Write a new derivative named after ``stem`` into ``directory``; return its final path."""
    directory.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temps(directory)
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        final = _place(temp, directory, stem, previous)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(directory)
    if previous is not None and previous != final:
        with contextlib.suppress(OSError):
            previous.unlink()
            _fsync_dir(previous.parent)
    return final


def _place(temp: Path, directory: Path, stem: str, previous: Path | None) -> Path:
    if previous is not None and _is_own(directory, stem, previous):
        os.replace(temp, previous)
        return previous
    for candidate in _candidates(directory, stem):
        try:
            os.link(temp, candidate)  # unlike a rename, a hard link fails if the name is taken
        except FileExistsError:
            continue
        except OSError:
            # Filesystems without hard links (exFAT, some network shares): check, then rename.
            if candidate.exists() or candidate.is_symlink():
                continue
            os.replace(temp, candidate)
            return candidate
        temp.unlink()
        return candidate
    raise OSError(f"no free name for {stem}.jpg in {directory}")


def _sweep_stale_temps(directory: Path) -> None:
    """A worker killed by the time limit mid-write leaves its temp file; the next write clears it."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for leftover in directory.glob(f"{TEMP_PREFIX}*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
