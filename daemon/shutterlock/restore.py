"""Getting originals back out, and checking that they still can be.

Both read objects through :class:`ObjectReader`, which authenticates every chunk and the
content id, so a damaged, truncated or swapped object is refused rather than restored wrong.
"""

from __future__ import annotations

import fnmatch
import os
import random
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from shutterlock.catalog import Version
from shutterlock.fsutil import Confined, commit_at, staged_at
from shutterlock.names import display, to_bytes
from shutterlock.vault.format import FormatError, Keys, ObjectReader, authenticate
from shutterlock.vault.local import LocalStore
from shutterlock.vault.store import Store, StoreError

NAME_MAX = 255  # bytes in one file name on every file system we restore to


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    bytes: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know besides (one line each)
    bad_ids: list[str] = field(default_factory=list)  # verify: the objects behind ``bad``, in the same order
    repaired: list[str] = field(default_factory=list)  # verify: objects replaced by a good copy from elsewhere

    @property
    def failed(self) -> bool:
        return bool(self.bad)


def matches(version: Version, patterns: Iterable[str]) -> bool:
    return matches_path(version.source, version.relpath, patterns)


def matches_path(source: str, relpath: str, patterns: Iterable[str]) -> bool:
    """PATTERN as the commands take it: a glob or a folder, against the path, source/path or the name, as the
    bytes are or as they are shown."""
    patterns = list(patterns)
    if not patterns:
        return True
    candidates = {relpath, f"{source}/{relpath}", PurePosixPath(relpath).name}
    candidates |= {display(c) for c in candidates}
    return any(fnmatch.fnmatchcase(c, p) or c.startswith(p.rstrip("/") + "/") for p in patterns for c in candidates)


class UnsafePath(ValueError):
    """A stored source or path would land outside the restore folder (crafted metadata)."""


def safe_parts(version: Version, by_source: bool) -> tuple[str, ...]:
    """The components of a version's place under ``--to``; refuses anything that could leave it.

    The path comes from the catalog, and recovery fills the catalog from objects' encrypted metadata: anyone
    who ever held the key can craft an absolute path, a ``..`` or a source name with a slash.
    """
    path = PurePosixPath(version.relpath)
    parts = path.parts
    if path.is_absolute() or not parts or any(p in ("..", ".", "") or "\0" in p for p in parts) \
            or "//" in version.relpath or version.relpath.endswith("/"):
        raise UnsafePath(f"unsafe path {display(version.relpath)!r} (absolute or with '..'): not restored")
    source = version.source
    if by_source and (source in ("", ".", "..") or "/" in source or "\0" in source):
        raise UnsafePath(f"unsafe source name {display(source)!r}: not restored")
    return (source, *parts) if by_source else parts


def versioned_name(name: str, number: int) -> str:
    """``IMG_0001.JPG`` → ``IMG_0001.v2.JPG``, shortened at a character boundary to fit 255 bytes."""
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    tag = f".v{number}"
    while len(to_bytes(stem + tag + dot + suffix)) > NAME_MAX and stem:
        stem = stem[:-1]
    return stem + tag + dot + suffix


@dataclass(frozen=True)
class Planned:
    """One file to restore: which version, and where under the restore folder."""

    version: Version
    parts: tuple[str, ...]
    label: str


def plan(versions: list[Version], *, by_source: bool, numbered: bool = False,
         report: Report | None = None) -> tuple[list[Planned], Report]:
    """Where each version goes; unsafe ones are in the report, not in the plan. ``numbered``: every version
    of a path is restored as NAME.vN.ext, N counting from the oldest."""
    report, planned = report or Report(), []
    counts: dict[tuple[str, str], int] = {}
    for version in sorted(versions, key=lambda v: (v.source, v.relpath, v.sealed_at)) if numbered else versions:
        label = display(f"{version.source}/{version.relpath}" if by_source else version.relpath)
        try:
            parts = safe_parts(version, by_source)
        except UnsafePath as error:
            report.bad.append((label, str(error)))
            continue
        if numbered:
            key = (version.source, version.relpath)
            counts[key] = counts.get(key, 0) + 1
            parts = (*parts[:-1], versioned_name(parts[-1], counts[key]))
            label = display("/".join(parts))
        planned.append(Planned(version, parts, label))
    return planned, report


def restore(items: list[Planned], store: Store, keys: Keys, dest: Path, *, overwrite: bool = False,
            mode: int = 0o600, report: Report | None = None, progress: Callable[[int], None] | None = None,
            ) -> Report:
    """Write each planned version under ``dest`` (and nowhere else), authenticated on the way out.

    A file already there with the same content counts as restored (so an interrupted restore or recovery
    just runs again); a different one is left alone unless ``overwrite``, and reported."""
    report = report or Report()
    dir_mode = 0o700 | ((mode & 0o444) >> 2) | (mode & 0o044)
    with Confined(dest, dir_mode) as root:
        for item in items:
            try:
                written = _restore_one(item, root, store, keys, overwrite=overwrite, mode=mode, progress=progress)
            except (FormatError, StoreError) as error:
                report.bad.append((item.label, f"object {item.version.content_id[:12]}…: {error}"))
                continue
            except (OSError, ValueError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                report.bad.append((item.label, display(reason)))
                continue
            report.ok.append(item.label)
            report.bytes += written
    return report


def _restore_one(item: Planned, root: Confined, store: Store, keys: Keys, *, overwrite: bool, mode: int,
                 progress: Callable[[int], None] | None) -> int:
    version, name = item.version, item.parts[-1]
    folder = root.folder(item.parts[:-1])
    try:
        in_the_way = _in_the_way(folder, name, version, keys)
        if in_the_way == "":
            os.utime(name, ns=(version.mtime_ns, version.mtime_ns), dir_fd=folder, follow_symlinks=False)
            return 0
        if in_the_way is not None and not overwrite:
            raise FileExistsError(f"{in_the_way}; not replaced (use --overwrite)")
        with store.open(version.content_id) as handle, staged_at(folder, mode) as (tmp, out):
            reader = ObjectReader(keys, handle, version.content_id)
            written = reader.copy_to(out, progress)
            out.flush()  # before the mtime is set: a later write would move it
            os.utime(out.fileno(), ns=(version.mtime_ns, version.mtime_ns))
        if not commit_at(folder, tmp, name, replace=overwrite):
            raise FileExistsError("appeared while restoring; not replaced (use --overwrite)")
        return written
    finally:
        os.close(folder)


def _in_the_way(folder: int, name: str, version: Version, keys: Keys) -> str | None:
    """None when ``name`` is free; "" when it already holds this version; else what is in the way."""
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link is in the way"
    if not stat.S_ISREG(info.st_mode):
        return "something that is not a file is in the way"
    if info.st_size != version.size:
        return "a different file exists"
    hasher = keys.hasher()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return "" if hasher.hexdigest() == version.content_id else "a different file exists"


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
            report.bad_ids.append(object_id)
        if progress is not None:
            progress(1)
    return report


def repair(report: Report, damaged: Store, source: Store, keys: Keys) -> None:
    """Replace every bad object of ``damaged`` with an authenticated copy from ``source`` where it has a
    good one; repaired objects move from ``report.bad`` to ``report.repaired`` (and a note)."""
    for (label, reason), object_id in list(zip(report.bad, report.bad_ids, strict=True)):
        try:
            copy_object(source, damaged, object_id, keys)
        except (FormatError, StoreError, OSError) as error:
            report.notes.append(f"cannot repair {label} from {source.name}: {error}")
            continue
        report.bad.remove((label, reason))
        report.bad_ids.remove(object_id)
        report.notes.append(f"REPAIRED {label} ({reason}): copied from {source.name}")
        report.repaired.append(object_id)


def copy_object(source: Store, target: Store, object_id: str, keys: Keys) -> None:
    """Put an authenticated copy of one object into the other store, replacing whatever is there."""
    if isinstance(source, LocalStore):
        path = source.path_of(object_id)
        with open(path, "rb") as handle:
            authenticate(keys, handle, object_id)
        target.put_file(object_id, path, replace=True)
        return
    assert isinstance(target, LocalStore)
    with target.staging() as (staged, out), source.open(object_id) as body:
        shutil.copyfileobj(body, out, 1 << 20)
        with open(staged, "rb") as handle:
            authenticate(keys, handle, object_id)
        target.adopt(staged, object_id, replace=True)
