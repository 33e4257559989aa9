"""Finding originals: walking sources, watching them, and deciding when a file is complete.

Watchdog events only mark paths as *candidates*; the :class:`StabilityGate` thread stats them
and releases a file once its size and mtime have not changed for ``settle_seconds`` and it can
be read. Event handlers therefore never do I/O, and a burst of events on one path costs one stat
per gate tick. Walks (start-up scan, periodic rescans, polling) feed the same gate.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from shutterlock.catalog import Catalog, FileState
from shutterlock.config import SourceConfig

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".!ut", ".swp")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "afs", "ceph", "glusterfs",
              "fuse.rclone", "davfs", "fuse.davfs2", "virtiofs"}
POLL_SECONDS = 5.0


def is_ignored(relpath: str, patterns: Iterable[str] = ()) -> bool:
    """Temporary and hidden names are not originals (yet): they are picked up once renamed. ``patterns``:
    a source's ``ignore`` list (file names such as Thumbs.db, matched in any case)."""
    parts = relpath.replace("\\", "/").split("/")
    if any(part.startswith((".", "~")) for part in parts):
        return True
    name = parts[-1].lower()
    return name.endswith(TEMP_SUFFIXES) or any(fnmatch.fnmatch(name, pattern.lower()) for pattern in patterns)


def walk(root: Path, ignore: Iterable[str] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular, non-ignored file under ``root`` (symlinks are not followed)."""
    ignore = tuple(ignore)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            log.warning("cannot list %s: %s", folder, error.strerror)
            continue
        for entry in entries:
            relpath = Path(entry.path).relative_to(root).as_posix()
            if is_ignored(relpath, ignore):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield relpath, entry.stat(follow_symlinks=False)
            except OSError as error:
                log.warning("cannot stat %s: %s", entry.path, error.strerror)


Found = Callable[[SourceConfig, str, os.stat_result], None]


def scan(sources: Iterable[SourceConfig], catalog: Catalog, found: Found) -> int:
    """Walk every source; hand each file the catalog does not know as sealed (or being sealed) to ``found``.

    Used at start-up, by the periodic safety-net rescans and by ``run --once``; returns how many were found.
    """
    count = 0
    for source in sources:
        if not source.path.is_dir():
            log.warning("source %s is not available: %s", source.name, source.path)
            continue
        known = catalog.known_stat(source.name)
        for relpath, info in walk(source.path, source.ignore):
            previous = known.get(relpath)
            if previous is not None and previous[:2] == (info.st_size, info.st_mtime_ns) \
                    and previous[2] in (FileState.SEALED, FileState.SEALING):
                continue
            count += 1
            found(source, relpath, info)
    return count


@dataclass
class _Candidate:
    source: SourceConfig
    relpath: str
    size: int = -1
    mtime_ns: int = -1
    changed_at: float = 0.0


Release = Callable[[SourceConfig, str, int, int], None]


class StabilityGate:
    """Holds candidate files until they stop changing, then releases them."""

    def __init__(self, settle_seconds: float, release: Release, tick: float = 0.25):
        self.settle = settle_seconds
        self._release = release
        self._tick = tick
        self._pending: dict[tuple[str, str], _Candidate] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stability-gate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def offer(self, source: SourceConfig, relpath: str) -> None:
        """Called from watchdog threads: no I/O here."""
        key = (source.name, relpath)
        with self._lock:
            if key not in self._pending:
                self._pending[key] = _Candidate(source, relpath, changed_at=time.monotonic())
            else:
                self._pending[key].changed_at = time.monotonic()
        self._wake.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                idle = not self._pending
            if idle:
                self._wake.wait()
                self._wake.clear()
                continue
            self._check()
            self._stop.wait(self._tick)

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            candidates = list(self._pending.values())
        for candidate in candidates:
            released = self._probe(candidate, now)
            if released is not None:
                with self._lock:
                    if self._pending.get((candidate.source.name, candidate.relpath)) is candidate:
                        del self._pending[(candidate.source.name, candidate.relpath)]
                if released:
                    try:
                        self._release(candidate.source, candidate.relpath, candidate.size, candidate.mtime_ns)
                    except Exception:
                        log.exception("could not queue %s", candidate.relpath)

    def _probe(self, candidate: _Candidate, now: float) -> bool | None:
        """True: stable, release. False: drop (gone or not a file). None: keep waiting."""
        path = candidate.source.path / candidate.relpath
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as error:
            log.warning("cannot stat %s: %s", path, error.strerror)
            return None
        if not stat.S_ISREG(info.st_mode):
            return False
        if (info.st_size, info.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
            candidate.size, candidate.mtime_ns = info.st_size, info.st_mtime_ns
            candidate.changed_at = now
            return None
        # mtime may have been set in the past (cp -p): settle on our own clock, not the file's.
        if now - candidate.changed_at < self.settle:
            return None
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM):
                return True  # the seal stage records the specific, permanent error
            return None
        return True


class _Handler(FileSystemEventHandler):
    def __init__(self, source: SourceConfig, gate: StabilityGate, on_folder: Callable[[SourceConfig, Path], None]):
        self._source, self._gate, self._on_folder = source, gate, on_folder
        self._root = str(source.path)

    def _offer(self, path: str | bytes, is_directory: bool) -> None:
        path = os.fsdecode(path)
        if not path.startswith(self._root):
            return
        relpath = Path(path).relative_to(self._source.path).as_posix()
        if relpath == "." or is_ignored(relpath, self._source.ignore):
            return
        if is_directory:
            self._on_folder(self._source, Path(path))
        else:
            self._gate.offer(self._source, relpath)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "closed"):
            self._offer(event.src_path, event.is_directory)
        elif event.event_type == "moved":
            self._offer(event.dest_path, event.is_directory)


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (psutil reads the mount table on every platform)."""
    import psutil

    resolved = str(path.resolve())
    best, kind = "", ""
    for partition in psutil.disk_partitions(all=True):
        mount_point = partition.mountpoint
        if (resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")) and \
                len(mount_point) > len(best):
            best, kind = mount_point, partition.fstype
    return kind


@dataclass
class WatchState:
    mode: str  # native | polling | unavailable
    warning: str = ""


class SourceWatcher:
    """One observer per source, native where it works, polling where it must."""

    def __init__(self, sources: tuple[SourceConfig, ...], gate: StabilityGate,
                 on_folder: Callable[[SourceConfig, Path], None]):
        self._sources, self._gate, self._on_folder = sources, gate, on_folder
        self._observers: list[BaseObserver] = []
        self.states: dict[str, WatchState] = {}

    def start(self) -> None:
        for source in self._sources:
            self.states[source.name] = self._start_one(source)

    def _start_one(self, source: SourceConfig) -> WatchState:
        try:
            source.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return WatchState("unavailable", f"cannot create {source.path}: {error.strerror}")
        handler = _Handler(source, self._gate, self._on_folder)
        mode, warning = source.watch_mode, ""
        if mode == "auto":
            fs = filesystem_type(source.path)
            if fs in NETWORK_FS:
                mode, warning = "polling", f"{source.path} is on a network file system ({fs}): polling"
            else:
                mode = "native"
        if mode == "native":
            try:
                return self._schedule(Observer(), source, handler, "native")
            except OSError as error:
                if source.watch_mode == "native":
                    return WatchState("unavailable", f"native watching failed: {error.strerror or error}")
                reason = "inotify limit reached" if error.errno in (errno.ENOSPC, errno.EMFILE) else \
                    (error.strerror or str(error))
                warning = f"native watching of {source.path} failed ({reason}); falling back to polling"
                log.warning("%s", warning)
        state = self._schedule(PollingObserver(timeout=POLL_SECONDS), source, handler, "polling")
        state.warning = warning
        return state

    def _schedule(self, observer: BaseObserver, source: SourceConfig, handler: _Handler, mode: str) -> WatchState:
        observer.schedule(handler, str(source.path), recursive=True)
        observer.daemon = True
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        self._observers.append(observer)
        return WatchState(mode)

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=5)
        self._observers.clear()
