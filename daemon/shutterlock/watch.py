"""Finding originals: walking sources, watching them, and deciding when a file is complete.

Watchdog events only mark paths as *candidates*; the :class:`StabilityGate` thread stats each candidate when
its own deadline comes and releases it once it has neither changed nor produced an event for
``settle_seconds`` and it can be read. Candidates wait in a heap ordered by deadline, so an event costs
O(1) (a candidate's deadline only moves later; it is re-filed, O(log n), when it comes up) and a candidate
is statted about once per settle period, however many others are pending. Released files reach the catalog
in batches, one transaction each. Event handlers never do I/O.

Walks (start-up scan, periodic rescans, a source coming back) stat each file once and compare the whole
walk with the catalog in one query per source; what they find goes through the same gate.

Each source's folder is checked every second: a source that disappears (a card taken out, a folder
deleted) is shown as missing, and one that comes back, or is replaced by another folder of the same name,
is watched natively again at once and scanned.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import heapq
import itertools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from shutterlock.catalog import Catalog, CatalogFull, Discovery, FileState
from shutterlock.config import SourceConfig
from shutterlock.names import display

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".!ut", ".swp")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "afs", "ceph", "glusterfs",
              "fuse.rclone", "davfs", "fuse.davfs2", "virtiofs"}
POLL_SECONDS = 5.0
CHECK_SECONDS = 1.0  # how often each source's folder is looked at (one stat)
RELEASE_BATCH = 5000  # candidates settled and queued together, one catalog transaction
RELEASE_RETRY = 5.0  # seconds before offering again what the catalog could not take (a full disk)
UNSETTLED_AFTER = 10  # a candidate still changing after this many settle times (5 s at least) is named in status
SKIPPED_KEPT = 50  # skipped folders and links remembered per source for status


def is_ignored(relpath: str, patterns: Iterable[str] = ()) -> bool:
    """Temporary and hidden names are not originals (yet): they are picked up once renamed. ``patterns``:
    a source's ``ignore`` list (file names such as Thumbs.db, matched in any case)."""
    parts = relpath.replace("\\", "/").split("/")
    if any(part.startswith((".", "~")) for part in parts):
        return True
    name = parts[-1].lower()
    return name.endswith(TEMP_SUFFIXES) or any(fnmatch.fnmatch(name, pattern.lower()) for pattern in patterns)


class Walk:
    """Every regular, non-ignored file under ``root``, with its stat (one per file). Links are not followed
    and unreadable folders cannot be entered: both are listed in ``skipped``, for status. ``ignore``: a
    source's patterns for names that are not originals (Thumbs.db), in any case."""

    def __init__(self, root: Path, ignore: Iterable[str] = ()):
        self.root = root
        self.patterns = tuple(pattern.lower() for pattern in ignore)
        self.skipped: list[str] = []

    def _ignored(self, name: str) -> bool:
        if name.startswith((".", "~")):
            return True
        name = name.lower()
        return name.endswith(TEMP_SUFFIXES) or any(fnmatch.fnmatch(name, pattern) for pattern in self.patterns)

    def __iter__(self) -> Iterator[tuple[str, os.stat_result]]:
        stack = [("", str(self.root))]
        while stack:
            prefix, folder = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError as error:
                self.skipped.append(f"cannot open folder {prefix.rstrip('/') or '.'}: {error.strerror}")
                continue
            for entry in entries:
                if self._ignored(entry.name):
                    continue
                relpath = prefix + entry.name
                try:
                    if entry.is_symlink():
                        self.skipped.append(f"not followed (a symbolic link): {relpath}")
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((relpath + "/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        yield relpath, entry.stat(follow_symlinks=False)
                except OSError as error:
                    self.skipped.append(f"cannot read {relpath}: {error.strerror}")


def walk(root: Path, ignore: Iterable[str] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """The files of :class:`Walk`, for callers that need no report of what was skipped."""
    return iter(Walk(root, ignore))


@dataclass
class ScanResult:
    """One source walked and compared with the catalog."""

    source: SourceConfig
    available: bool
    found: list[tuple[str, os.stat_result]] = field(default_factory=list)  # new or changed since last seen
    skipped: list[str] = field(default_factory=list)
    files: int = 0


_SETTLED_STATES = (FileState.SEALED, FileState.SEALING, FileState.DISCOVERED)


def scan_source(source: SourceConfig, catalog: Catalog) -> ScanResult:
    """Walk one source and keep what the catalog does not already hold as queued or sealed with that size
    and mtime (one catalog query for the whole source). A failed file is offered again: its permissions may
    have been fixed without its mtime changing."""
    if not source.path.is_dir():
        return ScanResult(source, available=False)
    known = catalog.known_stat(source.name)
    walker = Walk(source.path, source.ignore)
    result = ScanResult(source, available=True)
    for relpath, info in walker:
        result.files += 1
        previous = known.get(relpath)
        if previous is None or previous[0] != info.st_size or previous[1] != info.st_mtime_ns \
                or previous[2] not in _SETTLED_STATES:
            result.found.append((relpath, info))
    result.skipped = walker.skipped
    remember_skipped(catalog, source.name, walker.skipped)
    return result


def remember_skipped(catalog: Catalog, source: str, skipped: list[str]) -> None:
    """Keep what the last walk of a source skipped in the catalog, for status (daemon or not); log news."""
    key = f"skipped:{source}"
    try:
        before = json.loads(catalog.get_setting(key, '{"items": []}'))["items"]
    except (ValueError, KeyError, TypeError):
        before = []
    kept = [display(item) for item in skipped[:SKIPPED_KEPT]]  # names escaped to one line, as status shows them
    for item in sorted(set(kept) - set(before)):
        log.warning("source %s: %s", source, item)
    if kept != before or len(skipped) > SKIPPED_KEPT:
        with contextlib.suppress(CatalogFull):  # status names the full disk; the next scan writes the list
            catalog.set_setting(key, json.dumps({"items": kept, "total": len(skipped)}))


def skipped_of(catalog: Catalog, source: str) -> list[str]:
    """What the last walk of a source skipped ("and N more" when the list was cut)."""
    try:
        data = json.loads(catalog.get_setting(f"skipped:{source}", '{"items": []}'))
        items, total = list(data["items"]), int(data.get("total", len(data["items"])))
    except (ValueError, KeyError, TypeError):
        return []
    return items + ([f"and {total - len(items)} more"] if total > len(items) else [])


def discoveries(source: SourceConfig, found: list[tuple[str, os.stat_result]]) -> list[Discovery]:
    return [Discovery(source.name, relpath, info.st_size, info.st_mtime_ns) for relpath, info in found]


# --------------------------------------------------------------------------- the stability gate


@dataclass(eq=False, slots=True)
class _Candidate:
    source: SourceConfig
    relpath: str
    trusted: bool  # watched natively: every change to it comes with an event, so its events date its changes
    first_seen: float
    quiet_since: float  # the last change observed: an event, or a stat that differed
    due: float  # when it is looked at next (its live heap entry carries the same value)
    seen: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) at the last look
    settled: bool = False  # it settled, but the catalog could not take it yet: waiting, not changing

    @property
    def key(self) -> tuple[str, str]:
        return self.source.name, self.relpath


@dataclass(frozen=True)
class Unsettled:
    """A file the gate has held for long because it keeps changing."""

    source: str
    relpath: str
    changing_for: float


Release = Callable[[list[Discovery]], object]
_GONE = object()


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ino


class StabilityGate:
    """Holds candidate files until they stop changing, then releases them, many at a time.

    ``release`` receives the settled files; if it raises (the catalog's disk is full), they are kept and
    offered again after a pause, so nothing found is dropped.
    """

    def __init__(self, settle_seconds: float, release: Release):
        self.settle = settle_seconds
        self._release = release
        self._pending: dict[tuple[str, str], _Candidate] = {}
        self._heap: list[tuple[float, int, _Candidate]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="stability-gate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def offer(self, source: SourceConfig, relpath: str, *, trusted: bool = False,
              info: os.stat_result | None = None) -> None:
        """A file may be new or changed. From watchdog threads (no I/O here) or from a walk (with its stat)."""
        now = time.monotonic()
        with self._lock:
            wake = self._offer(source, relpath, trusted, info, now)
        if wake:
            self._wake.set()

    def offer_found(self, source: SourceConfig, found: list[tuple[str, os.stat_result]], *, trusted: bool) -> None:
        """What a walk found, in one go."""
        now = time.monotonic()
        with self._lock:
            wake = [self._offer(source, relpath, trusted, info, now) for relpath, info in found]
        if any(wake):
            self._wake.set()

    def _offer(self, source: SourceConfig, relpath: str, trusted: bool, info: os.stat_result | None,
               now: float) -> bool:
        """File or update one candidate; True if the gate's thread must wake for it (it is the next due)."""
        candidate = self._pending.get((source.name, relpath))
        if candidate is None:
            seen = _identity(info) if info is not None else None
            # Without a first look (an event on a polled source), look at once; otherwise after the settle time.
            due = now if seen is None and not trusted else now + self.settle
            candidate = _Candidate(source, relpath, trusted, first_seen=now, quiet_since=now, due=due, seen=seen)
            self._pending[candidate.key] = candidate
            heapq.heappush(self._heap, (due, next(self._order), candidate))
            return self._heap[0][2] is candidate
        if info is None or _identity(info) != candidate.seen:
            candidate.quiet_since = now  # its deadline moves; the heap entry is re-filed when it comes up
            candidate.settled = False
        return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def unsettled(self) -> list[Unsettled]:
        """Files held for long (ten settle times, 5 s at least) because they keep changing."""
        older_than = max(5.0, UNSETTLED_AFTER * self.settle)
        now = time.monotonic()
        with self._lock:
            return sorted((Unsettled(c.source.name, c.relpath, now - c.first_seen)
                           for c in self._pending.values() if now - c.first_seen > older_than and not c.settled),
                          key=lambda u: -u.changing_for)

    # ------------------------------------------------------------------ the gate's thread

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self._take_due()
            if due:
                self._settle(due)

    def _take_due(self) -> list[_Candidate]:
        """The candidates whose time has come (waiting for the first one when there are none)."""
        with self._lock:
            self._wake.clear()
            now = time.monotonic()
            taken: list[_Candidate] = []
            while self._heap and self._heap[0][0] <= now and len(taken) < RELEASE_BATCH:
                due, _, candidate = heapq.heappop(self._heap)
                if candidate.due == due and self._pending.get(candidate.key) is candidate:
                    taken.append(candidate)
            timeout = self._heap[0][0] - now if self._heap else None
        if not taken:
            self._wake.wait(timeout)
        return taken

    def _schedule(self, candidate: _Candidate, due: float) -> None:
        candidate.due = due
        heapq.heappush(self._heap, (due, next(self._order), candidate))

    def _settle(self, candidates: list[_Candidate]) -> None:
        looked = [(candidate, self._look(candidate)) for candidate in candidates]
        ready: list[tuple[_Candidate, os.stat_result]] = []
        with self._lock:
            now = time.monotonic()
            for candidate, info in looked:
                if self._pending.get(candidate.key) is not candidate:
                    continue
                if info is _GONE:
                    del self._pending[candidate.key]
                    continue
                if info is None:
                    self._schedule(candidate, now + self.settle)
                    continue
                assert isinstance(info, os.stat_result)
                identity = _identity(info)
                if identity != candidate.seen:
                    if not candidate.trusted:  # no event dates the change: it happened just now, for all we know
                        candidate.quiet_since = now
                    candidate.seen = identity
                if candidate.quiet_since + self.settle > now:
                    self._schedule(candidate, candidate.quiet_since + self.settle)
                else:
                    del self._pending[candidate.key]
                    ready.append((candidate, info))
        released = [(candidate, info) for candidate, info in ready if self._readable(candidate)]
        if not released:
            return
        try:
            self._release([Discovery(c.source.name, c.relpath, info.st_size, info.st_mtime_ns)
                           for c, info in released])
        except Exception as error:
            self._put_back([candidate for candidate, _ in released], error)
            return
        if self._failing:
            log.info("new files are queued again")
            self._failing = False

    def _look(self, candidate: _Candidate) -> os.stat_result | object | None:
        """Its stat now; _GONE if it is no longer a regular file; None if it cannot be looked at now."""
        path = candidate.source.path / candidate.relpath
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return _GONE
        except OSError as error:
            log.warning("cannot stat %s: %s", path, error.strerror)
            return None
        return info if stat.S_ISREG(info.st_mode) else _GONE

    def _readable(self, candidate: _Candidate) -> bool:
        """Can be opened (or cannot for good: the seal lane records why); else it waits another settle time."""
        path = candidate.source.path / candidate.relpath
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except FileNotFoundError:
            return False
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM):
                return True
            self.offer(candidate.source, candidate.relpath, trusted=candidate.trusted)
            return False
        return True

    def _put_back(self, candidates: list[_Candidate], error: Exception) -> None:
        if not self._failing and not isinstance(error, CatalogFull):  # a full catalog logs itself
            log.error("could not queue %d new file(s): %s; trying again in %.0f s", len(candidates), error,
                      RELEASE_RETRY)
        self._failing = True
        with self._lock:
            due = time.monotonic() + RELEASE_RETRY
            for candidate in candidates:
                if candidate.key not in self._pending:
                    candidate.settled = True
                    self._pending[candidate.key] = candidate
                    self._schedule(candidate, due)


# --------------------------------------------------------------------------- watching


class _Handler(FileSystemEventHandler):
    def __init__(self, source: SourceConfig, gate: StabilityGate, on_folder: Callable[[SourceConfig, Path], None],
                 trusted: bool):
        self._source, self._gate, self._on_folder, self._trusted = source, gate, on_folder, trusted
        self._root = str(source.path)

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("created", "modified", "closed", "attrib"):
            path = os.fsdecode(event.src_path)
        elif kind == "moved":
            path = os.fsdecode(event.dest_path)
        else:
            return
        if not path.startswith(self._root):
            return
        relpath = Path(path).relative_to(self._source.path).as_posix()
        if relpath == "." or is_ignored(relpath, self._source.ignore):
            return
        if not event.is_directory:
            self._gate.offer(self._source, relpath, trusted=self._trusted)
        elif kind in ("created", "moved"):
            # A folder arrived: its files may predate the watch on it. (A folder's "modified" only means a
            # file in it changed, and that file has its own event: walking the folder again for each file of
            # a burst was what made bursts quadratic.)
            self._on_folder(self._source, Path(path))


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
    mode: str  # native | polling | missing | unavailable
    warning: str = ""


def _folder_identity(path: Path, was_mount: bool) -> tuple[int, int, bool] | None:
    """(device, inode, is a mount point) of a source folder; None while it is missing (or, for a folder that
    was a mount point, while nothing is mounted there)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    mounted = os.path.ismount(path) if was_mount or path.parent.stat().st_dev != info.st_dev else False
    if was_mount and not mounted:
        return None
    return info.st_dev, info.st_ino, mounted


class SourceWatcher:
    """One observer per source, native where it works, polling where it must, re-armed whenever a source's
    folder comes back or is replaced; a missing source is never created, only waited for."""

    def __init__(self, sources: tuple[SourceConfig, ...], gate: StabilityGate,
                 on_folder: Callable[[SourceConfig, Path], None], on_return: Callable[[SourceConfig], None]):
        self._sources, self._gate, self._on_folder, self._on_return = sources, gate, on_folder, on_return
        self._observers: dict[str, BaseObserver] = {}
        self._identities: dict[str, tuple[int, int, bool]] = {}
        self._mount_points: set[str] = set()  # sources whose folder was a mount point: unmounted means missing
        self.states: dict[str, WatchState] = {}
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._check_loop, name="source-monitor", daemon=True)

    def start(self) -> None:
        for source in self._sources:
            self.states[source.name] = self._arm(source)
        self._monitor.start()

    def native(self, name: str) -> bool:
        state = self.states.get(name)
        return state is not None and state.mode == "native"

    def _check_loop(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            for source in self._sources:
                try:
                    self.check(source)
                except Exception:  # the monitor must outlive any one odd folder
                    log.exception("checking source %s failed", source.name)

    def check(self, source: SourceConfig) -> None:
        """Notice a source folder going missing, coming back, or being replaced; re-arm its watch."""
        armed = self._identities.get(source.name)
        now = _folder_identity(source.path, was_mount=source.name in self._mount_points)
        if now is None:
            if self.states[source.name].mode != "missing":
                self._disarm(source.name)
                self.states[source.name] = self._missing(source)
                log.warning("source %s is missing: %s; it is watched again when it comes back", source.name,
                            source.path)
            return
        if now == armed:
            return
        self._disarm(source.name)
        self.states[source.name] = state = self._arm(source)
        log.info("source %s is %s at %s: watching it again (%s)", source.name,
                 "back" if armed is None else "a new folder", source.path, state.mode)
        self._on_return(source)

    def _missing(self, source: SourceConfig) -> WatchState:
        return WatchState("missing", f"source folder is missing: {source.path} (a card or drive not mounted?); "
                                     "new files there are sealed when it is back")

    def _arm(self, source: SourceConfig) -> WatchState:
        identity = _folder_identity(source.path, was_mount=source.name in self._mount_points)
        if identity is None:
            return self._missing(source)
        self._identities[source.name] = identity
        if identity[2]:
            self._mount_points.add(source.name)
        mode, warning = source.watch_mode, ""
        if mode == "auto":
            fs = filesystem_type(source.path)
            if fs in NETWORK_FS:
                mode, warning = "polling", f"{source.path} is on a network file system ({fs}): polling"
            else:
                mode = "native"
        if mode == "native":
            try:
                return self._schedule(Observer(), source, "native")
            except OSError as error:
                if source.watch_mode == "native":
                    return WatchState("unavailable", f"native watching failed: {error.strerror or error}")
                reason = "inotify limit reached" if error.errno in (errno.ENOSPC, errno.EMFILE) else \
                    (error.strerror or str(error))
                warning = f"native watching of {source.path} failed ({reason}); falling back to polling"
                log.warning("%s", warning)
        state = self._schedule(PollingObserver(timeout=POLL_SECONDS), source, "polling")
        state.warning = warning
        return state

    def _schedule(self, observer: BaseObserver, source: SourceConfig, mode: str) -> WatchState:
        handler = _Handler(source, self._gate, self._on_folder, trusted=mode == "native")
        observer.schedule(handler, str(source.path), recursive=True)
        observer.daemon = True
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        self._observers[source.name] = observer
        return WatchState(mode)

    def _disarm(self, name: str) -> None:
        self._identities.pop(name, None)
        observer = self._observers.pop(name, None)
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def stop(self) -> None:
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(timeout=5)
        for name in list(self._observers):
            self._disarm(name)
