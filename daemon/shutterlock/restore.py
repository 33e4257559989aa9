"""Getting originals back out, and checking that they still can be.

Both read objects through :class:`ObjectReader`, which authenticates every chunk and the
content id, so a damaged, truncated or swapped object is refused rather than restored wrong.
"""

from __future__ import annotations

import fnmatch
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from shutterlock.catalog import Version
from shutterlock.fsutil import atomic_writer, ensure_dir
from shutterlock.vault.format import FormatError, Keys, ObjectReader, authenticate
from shutterlock.vault.store import Store, StoreError


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    bytes: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.bad)


def matches(version: Version, patterns: Iterable[str]) -> bool:
    return matches_path(version.source, version.relpath, patterns)


def matches_path(source: str, relpath: str, patterns: Iterable[str]) -> bool:
    """PATTERN as the commands take it: a glob or a folder, against the path, source/path or the name."""
    patterns = list(patterns)
    if not patterns:
        return True
    candidates = (relpath, f"{source}/{relpath}", PurePosixPath(relpath).name)
    return any(fnmatch.fnmatchcase(c, p) or c.startswith(p.rstrip("/") + "/") for p in patterns for c in candidates)


def safe_relative(relpath: str) -> PurePosixPath:
    """Refuse paths that would land outside the restore folder."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise ValueError(f"unsafe path in catalog: {relpath!r}")
    return path


def restore(versions: list[Version], store: Store, keys: Keys, dest: Path, *, by_source: bool,
            progress: Callable[[int], None] | None = None) -> Report:
    report = Report()
    for version in versions:
        label = f"{version.source}/{version.relpath}" if by_source else version.relpath
        try:
            relative = safe_relative(version.relpath)
            target = dest / version.source / relative if by_source else dest / relative
            ensure_dir(target.parent, 0o755)
            with store.open(version.content_id) as handle, atomic_writer(target, 0o644) as out:
                reader = ObjectReader(keys, handle, version.content_id)
                written = reader.copy_to(out, progress)
            os.utime(target, ns=(version.mtime_ns, version.mtime_ns))
        except (FormatError, StoreError) as error:
            report.bad.append((label, f"object {version.content_id[:12]}…: {error}"))
            continue
        except (OSError, ValueError) as error:
            report.bad.append((label, str(error)))
            continue
        report.ok.append(label)
        report.bytes += written
    return report


def verify(object_ids: list[str], store: Store, keys: Keys, *, sample_percent: float | None = None,
           referenced_by: dict[str, list[str]] | None = None, progress: Callable[[int], None] | None = None,
           ) -> Report:
    """Authenticate every object (or a random sample); name each bad one and the files it holds."""
    ids = list(object_ids)
    if sample_percent is not None and sample_percent < 100:
        count = max(1, round(len(ids) * sample_percent / 100)) if ids else 0
        ids = random.SystemRandom().sample(ids, count)
    report = Report()
    for object_id in ids:
        files = ", ".join((referenced_by or {}).get(object_id, [])[:3])
        label = f"{object_id}" + (f" ({files})" if files else "")
        try:
            with store.open(object_id) as handle:
                meta = authenticate(keys, handle, object_id)
            report.ok.append(object_id)
            report.bytes += meta.size
        except (FormatError, StoreError) as error:
            report.bad.append((label, str(error)))
        if progress is not None:
            progress(1)
    return report
