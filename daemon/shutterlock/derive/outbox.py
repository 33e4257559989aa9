"""Where derivatives land, and how they get there without ever clobbering someone else's file.

Layout ``OUTBOX/YYYY/YYYY-MM-DD/NAME.jpg`` by capture date (or flat ``DIR/NAME.jpg`` for ``protect``).
A name taken by another file gets ``NAME-2.jpg``, ``NAME-3.jpg``, …; the derivative previously made from
the same original (the caller knows it from the catalog) is the only file ever replaced. Writes go through
``fsutil`` (temp file, fsync, no-clobber link, fsync of the directory), so a crash leaves either the old
state or the new file, never a torn JPEG.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shutterlock.fsutil import commit, fsync_dir, remove_stale_temps, staged

from .render import Rendered

MAX_SUFFIX = 10_000
STALE_TEMP_SECONDS = 3600.0  # a temp file this old belongs to a writer that was killed


@dataclass(frozen=True)
class Placed:
    """A rendered derivative (its bytes dropped once written) and where it landed (None: not written)."""

    rendered: Rendered
    output: Path | None = None


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


def place(data: bytes, directory: Path, stem: str, *, previous: Path | None = None) -> Path:
    """Write a derivative named after ``stem`` into ``directory``; return its final path.

    ``previous`` (the derivative this original had) is replaced in place when it would keep its name, and
    removed when the new one lands elsewhere (e.g. a corrected capture date).
    """
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory, STALE_TEMP_SECONDS, recursive=False)
    with staged(directory) as (tmp, handle):
        handle.write(data)
    try:
        os.chmod(tmp, 0o644)
        final = _commit_somewhere(tmp, directory, stem, previous)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(directory)
    if previous is not None and previous != final:
        with contextlib.suppress(OSError):
            previous.unlink()
            fsync_dir(previous.parent)
    return final


def _commit_somewhere(tmp: Path, directory: Path, stem: str, previous: Path | None) -> Path:
    if previous is not None and _is_own(directory, stem, previous):
        commit(tmp, previous)
        return previous
    for candidate in _candidates(directory, stem):
        if commit(tmp, candidate, replace=False):
            return candidate
    raise OSError(f"no free name for {stem}.jpg in {directory}")
