"""The catalog: one SQLite database (WAL) holding every fact the daemon must not forget.

- ``files``: each original seen in a source, with its stage (the durable seal queue);
- ``versions``: every sealed version of every path (a changed file keeps its old object);
- ``objects`` / ``replicas``: which sealed objects exist and which stores hold them;
- ``jobs``: the durable queue of the later stages (replicate, derive), with retries;
- ``derivatives``: what was made for sharing, and how;
- ``uploads``: multipart uploads in flight, so they resume after a crash;
- ``settings`` and ``events``: the paused flag and recent problems;
- ``shares``, ``share_items``, ``share_feedback``: published galleries (see ``shutterlock.share``).

The queue states live here and nowhere else.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from shutterlock.errors import ShutterlockError
from shutterlock.fsutil import describe_free_space, ensure_dir, fsync_dir, fsync_file, temp_path_in
from shutterlock.names import display, from_bytes, is_text, to_bytes
from shutterlock.status import Event, FailedFile, FileCounts
from shutterlock.vault.format import ObjectMeta

log = logging.getLogger(__name__)

SNAPSHOT_GENERATION = "snapshot_generation"  # setting: the generation of the bucket's newest snapshot


class FileState(enum.StrEnum):
    """Where an original is in the seal queue."""

    DISCOVERED = "discovered"
    SEALING = "sealing"
    SEALED = "sealed"
    FAILED = "failed"


class JobState(enum.StrEnum):
    """Where a later-stage job is; a job that failed for good is DONE with ``permanent`` set."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"


BACKOFF_BASE = 2.0
BACKOFF_MAX = 3600.0
DISCOVER_CHUNK = 5000  # rows per transaction when recording a scan, so the catalog lock is never held long

MIGRATIONS: list[str] = [
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        state TEXT NOT NULL,
        content_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        error TEXT,
        discovered_at REAL NOT NULL,
        sealed_at REAL,
        UNIQUE (source, relpath)
    );
    CREATE INDEX files_state ON files (state, not_before);
    CREATE TABLE versions (
        source TEXT NOT NULL,
        relpath TEXT NOT NULL,
        content_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sealed_at REAL NOT NULL,
        capture_time TEXT,
        PRIMARY KEY (source, relpath, content_id)
    );
    CREATE TABLE objects (
        content_id TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE replicas (
        content_id TEXT NOT NULL,
        store TEXT NOT NULL,
        stored_at REAL NOT NULL,
        PRIMARY KEY (content_id, store)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        state TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        error TEXT,
        permanent INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (kind, subject)
    );
    CREATE INDEX jobs_due ON jobs (kind, state, not_before);
    CREATE TABLE derivatives (
        file_id INTEGER PRIMARY KEY REFERENCES files (id),
        content_id TEXT NOT NULL,
        status TEXT NOT NULL,
        output TEXT,
        reason TEXT,
        cloaked INTEGER NOT NULL DEFAULT 0,
        strength TEXT,
        watermark TEXT,
        made_at REAL NOT NULL
    );
    CREATE TABLE uploads (
        content_id TEXT NOT NULL,
        store TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        part_size INTEGER NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (content_id, store)
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        level TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL
    );
    """,
    # 2: which settings made each derivative, so `ls` can say which are stale after a settings change.
    """
    ALTER TABLE derivatives ADD COLUMN settings TEXT NOT NULL DEFAULT ''
    """,
    # 3: the original's star rating as the worker read it (None: unrated), for the site's rating threshold.
    """
    ALTER TABLE derivatives ADD COLUMN rating INTEGER
    """,
    # 4: shares (issue 14): what was published where, its sealed keys, its pictures and the clients' feedback.
    """
    CREATE TABLE shares (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        sid TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        host_url TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        public_url TEXT NOT NULL,
        link TEXT NOT NULL DEFAULT '',
        secrets BLOB NOT NULL,
        options TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        lifecycle INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        link_expires_at REAL,
        post_expires_at REAL,
        ended_at REAL,
        cleared_at REAL
    );
    CREATE TABLE share_items (
        share_id INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
        item TEXT NOT NULL,
        file_id INTEGER NOT NULL REFERENCES files (id),
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        date TEXT NOT NULL,
        cloaked INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        thumb_width INTEGER NOT NULL,
        thumb_height INTEGER NOT NULL,
        thumb_key TEXT NOT NULL,
        full_key TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (share_id, item),
        UNIQUE (share_id, file_id)
    );
    CREATE TABLE share_feedback (
        share_id INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
        visitor TEXT NOT NULL,
        seq INTEGER NOT NULL,
        client_name TEXT NOT NULL,
        favourites TEXT NOT NULL,
        comments TEXT NOT NULL,
        note TEXT NOT NULL,
        sent_at TEXT NOT NULL,
        received_at REAL NOT NULL,
        seen INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (share_id, visitor)
    );
    """,
    # 5: objects a reconcile found missing from a store (a lost or emptied bucket), until they are back.
    """
    CREATE TABLE missing_replicas (
        content_id TEXT NOT NULL,
        store TEXT NOT NULL,
        found_at REAL NOT NULL,
        PRIMARY KEY (content_id, store)
    );
    """,
    # 6: objects a key rotation has replaced by re-encrypted copies; deleted from every store, then forgotten.
    """
    CREATE TABLE retired_objects (content_id TEXT PRIMARY KEY, retired_at REAL NOT NULL);
    """,
]


def stored_name(relpath: str) -> str | bytes:
    """A path as SQLite keeps it: text when it is UTF-8, else its exact bytes (a BLOB in the same column)."""
    return relpath if is_text(relpath) else to_bytes(relpath)


def loaded_name(value: str | bytes) -> str:
    """The inverse of :func:`stored_name`."""
    return from_bytes(value) if isinstance(value, bytes) else value


def backoff(attempts: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE ** max(0, attempts))


@dataclass(frozen=True)
class FileRow:
    id: int
    source: str
    relpath: str
    size: int
    mtime_ns: int
    state: str
    content_id: str | None
    attempts: int
    error: str | None
    sealed_at: float | None


@dataclass(frozen=True)
class Discovery:
    """A file found stable in a source, as the catalog records it."""

    source: str
    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SealedFile:
    """One original of a batch, sealed and durable in the vault, waiting to be recorded with the rest."""

    file: FileRow
    content_id: str
    size: int
    mtime_ns: int
    stored_size: int
    follow_up: list[tuple[str, str, int]]  # (lane, subject, size) of the jobs later lanes need


@dataclass(frozen=True)
class SealBatch:
    """The seal lane's unit of work: originals sealed together and made durable with one flush."""

    files: tuple[FileRow, ...]

    @property
    def bytes(self) -> int:
        return sum(file.size for file in self.files)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    subject: str
    size: int
    attempts: int


@dataclass(frozen=True)
class Version:
    source: str
    relpath: str
    content_id: str
    size: int
    mtime_ns: int
    sealed_at: float
    capture_time: str | None


class CatalogError(ShutterlockError):
    """The catalog cannot be opened or used; the message says which file and why."""


class CatalogFull(CatalogError):
    """The catalog's file system is full: nothing can be recorded until space is freed (nothing is lost)."""


def damaged(path: Path, error: Exception) -> CatalogError:
    return CatalogError(f"{path}: the catalog is damaged ({error}); run `shutterlock catalog rebuild` to rebuild it "
                        "from the vault and the bucket (the damaged file is kept beside it)")


class Catalog:
    """Thread-safe access to the catalog; every method is one short transaction. Use it as a context manager."""

    def __init__(self, path: Path):
        self.path = path
        ensure_dir(path.parent)
        self._lock = threading.RLock()
        self.write_problem = ""  # why writes fail right now (a full disk), for status; "" when they work
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            path.chmod(0o600)
            problem = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(problem)
            self._migrate()
        except sqlite3.DatabaseError as error:
            with suppress(AttributeError):
                self._db.close()
            raise damaged(path, error) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. A full file system becomes :class:`CatalogFull` (and ``write_problem``);
        whatever failed, no transaction is left open, so the next one works once space is back.

        ``durable=False`` skips the WAL fsync of this commit (synchronous=NORMAL: ~6 ms saved per commit on a
        busy disk). For what a power cut may undo without loss: a claim, a discovery (the file is still in its
        source). The next durable commit syncs the WAL up to it, so order is kept.
        """
        with self._lock, self._intact():
            changes = self._db.total_changes
            try:
                if not durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                finally:
                    if self._db.in_transaction:  # an error, or a failed COMMIT SQLite did not roll back itself
                        self._db.execute("ROLLBACK")
                    if not durable:
                        self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                    raise
                self._set_write_problem(f"the catalog's disk is full: cannot write {self.path} "
                                        f"({describe_free_space(self.path)})")
                raise CatalogFull(self.write_problem) from None
            if self.write_problem and self._db.total_changes > changes:  # a write, not an empty commit, worked
                self._set_write_problem("")

    def _set_write_problem(self, problem: str) -> None:
        if problem != self.write_problem:
            if problem:
                log.error("%s; waiting for space", problem)
            else:
                log.info("the catalog can be written again")
        self.write_problem = problem

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, self._intact():
            return self._db.execute(sql, args).fetchall()

    def _db_rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples: for the bulk reads, where building a Row per result costs more than the query."""
        with self._lock, self._intact():
            cursor = self._db.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, args).fetchall()

    @contextmanager
    def _intact(self) -> Iterator[None]:
        """Damage found while working (not only at opening) is one line that says what to run."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            if type(error) is not sqlite3.DatabaseError:  # locked, full disk, …: not damage
                raise
            raise damaged(self.path, error) from None

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise CatalogError(f"{self.path}: catalog schema {version} is newer than this program")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # ------------------------------------------------------------------ settings and events

    def get_setting(self, key: str, default: str = "") -> str:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0]["value"] if rows else default

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def record_event(self, level: str, subject: str, message: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO events (at, level, subject, message) VALUES (?, ?, ?, ?)",
                       (time.time(), level, display(subject), display(message)))
            db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - 500")

    def recent_events(self, limit: int = 20) -> list[Event]:
        rows = self._query("SELECT at, level, subject, message FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [Event(**dict(row)) for row in rows]

    # ------------------------------------------------------------------ the seal queue

    def discover_many(self, found: Sequence[Discovery]) -> int:
        """Note stable files in bulk (one transaction per few thousand); returns how many need sealing anew.

        A file that is new, changed, or failed before is (re)queued; one already queued or sealed with the
        same size and mtime is left alone. A failed file is tried afresh because it is offered again only by
        a rescan or an event, and its permissions may have been fixed without its mtime changing.
        """
        queued = 0
        now = time.time()
        for start in range(0, len(found), DISCOVER_CHUNK):
            rows = [(d.source, stored_name(d.relpath), d.size, d.mtime_ns, FileState.DISCOVERED, now)
                    for d in found[start:start + DISCOVER_CHUNK]]
            with self.transaction(durable=False) as db:
                queued += db.executemany(
                    "INSERT INTO files (source, relpath, size, mtime_ns, state, discovered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, relpath) DO UPDATE SET size = excluded.size, "
                    "mtime_ns = excluded.mtime_ns, state = excluded.state, attempts = 0, not_before = 0, "
                    "error = NULL, discovered_at = excluded.discovered_at WHERE files.state = 'failed' "
                    "OR files.size != excluded.size OR files.mtime_ns != excluded.mtime_ns", rows).rowcount
        return queued

    def known_stat(self, source: str) -> dict[str, tuple[int, int, str]]:
        """relpath -> (size, mtime_ns, state) for a source; lets a scan compare a whole walk in bulk."""
        rows = self._db_rows("SELECT relpath, size, mtime_ns, state FROM files WHERE source = ?", (source,))
        return {loaded_name(relpath): (size, mtime_ns, state) for relpath, size, mtime_ns, state in rows}

    def reset_interrupted(self) -> int:
        """After a crash, work that was in flight is due again."""
        with self.transaction() as db:
            files = db.execute("UPDATE files SET state = ? WHERE state = ?",
                               (FileState.DISCOVERED, FileState.SEALING)).rowcount
            jobs = db.execute("UPDATE jobs SET state = ? WHERE state = ?",
                              (JobState.PENDING, JobState.RUNNING)).rowcount
        return files + jobs

    def claim_batch(self, max_files: int, max_bytes: int, now: float | None = None) -> list[FileRow]:
        """Claim due originals, oldest first: up to ``max_files`` and about ``max_bytes`` (at least one).

        One that failed before (its ``error`` is set) comes alone, so that it fails or succeeds on its own.
        """
        now = time.time() if now is None else now
        with self.transaction(durable=False) as db:
            rows = db.execute("SELECT * FROM files WHERE state = ? AND not_before <= ? ORDER BY not_before, id "
                              "LIMIT ?", (FileState.DISCOVERED, now, max_files)).fetchall()
            if not rows:
                return []
            if rows[0]["error"] is not None:
                batch = rows[:1]
            else:
                batch, total = [], 0
                for row in rows:
                    if row["error"] is not None:
                        continue
                    if batch and total + row["size"] > max_bytes:
                        break
                    batch.append(row)
                    total += row["size"]
            db.executemany("UPDATE files SET state = ? WHERE id = ?",
                           [(FileState.SEALING, row["id"]) for row in batch])
        return [_file_row(row) for row in batch]

    def next_file_due(self) -> float | None:
        rows = self._query("SELECT MIN(not_before) AS due FROM files WHERE state = ?", (FileState.DISCOVERED,))
        return rows[0]["due"]

    def record_seal_batch(self, sealed: Sequence[SealedFile], *, changed: Sequence[FileRow] = (),
                          vanished: Sequence[FileRow] = (), alone: Sequence[tuple[FileRow, str]] = ()) -> None:
        """Record a batch's outcomes in one transaction: the sealed versions with their objects and follow-up
        jobs; originals that changed while read (due again shortly), vanished, or failed (``alone``: tried
        again on their own, without spending an attempt). Call it only once the batch's objects are durable.

        A row that was queued again while it was being sealed (a newer version arrived) stays queued.
        """
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "UPDATE files SET content_id = ?, sealed_at = ?, error = NULL, attempts = 0, "
                "size = CASE WHEN state = 'sealing' THEN ? ELSE size END, "
                "mtime_ns = CASE WHEN state = 'sealing' THEN ? ELSE mtime_ns END, "
                "state = CASE WHEN state = 'sealing' THEN 'sealed' ELSE state END WHERE id = ?",
                [(s.content_id, now, s.size, s.mtime_ns, s.file.id) for s in sealed])
            db.executemany(
                "INSERT INTO versions (source, relpath, content_id, size, mtime_ns, sealed_at, capture_time) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT DO UPDATE SET mtime_ns = excluded.mtime_ns, "
                "sealed_at = excluded.sealed_at",
                [(s.file.source, stored_name(s.file.relpath), s.content_id, s.size, s.mtime_ns, now) for s in sealed])
            db.executemany("INSERT OR IGNORE INTO objects (content_id, size, stored_size, created_at) "
                           "VALUES (?, ?, ?, ?)", [(s.content_id, s.size, s.stored_size, now) for s in sealed])
            db.executemany("INSERT OR IGNORE INTO replicas (content_id, store, stored_at) VALUES (?, 'local', ?)",
                           [(s.content_id, now) for s in sealed])
            for item in sealed:
                for kind, subject, job_size in item.follow_up:
                    _enqueue(db, kind, subject, job_size, now)
            db.executemany("UPDATE files SET state = ?, not_before = ? WHERE id = ? AND state = ?",
                           [(FileState.DISCOVERED, now + 1.0, f.id, FileState.SEALING) for f in changed])
            db.executemany("DELETE FROM files WHERE id = ? AND content_id IS NULL", [(f.id,) for f in vanished])
            db.executemany("UPDATE files SET state = ? WHERE id = ? AND content_id IS NOT NULL",
                           [(FileState.SEALED, f.id) for f in vanished])
            db.executemany("UPDATE files SET state = ?, error = ?, not_before = ? WHERE id = ? AND state = ?",
                           [(FileState.DISCOVERED, display(why), now, f.id, FileState.SEALING) for f, why in alone])

    def retry_file(self, file: FileRow, error: str, max_attempts: int, *, count: bool = True,
                   delay: float | None = None) -> bool:
        """Back off a transient failure; False (and nothing written) once ``max_attempts`` are spent."""
        attempts = file.attempts + (1 if count else 0)
        if count and attempts >= max_attempts:
            return False
        wait = backoff(attempts) if delay is None else delay
        with self.transaction() as db:
            db.execute("UPDATE files SET state = ?, attempts = ?, not_before = ?, error = ? WHERE id = ?",
                       (FileState.DISCOVERED, attempts, time.time() + wait, display(error), file.id))
        return True

    def postpone_files(self, files: Sequence[FileRow], delay: float) -> None:
        """Put claimed originals back, due after ``delay``, without a mark against them (the vault or the
        catalog was the problem, not the files)."""
        with self.transaction() as db:
            db.executemany("UPDATE files SET state = ?, not_before = ? WHERE id = ? AND state = ?",
                           [(FileState.DISCOVERED, time.time() + delay, f.id, FileState.SEALING) for f in files])

    def fail_file(self, file: FileRow, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE files SET state = ?, error = ? WHERE id = ?",
                       (FileState.FAILED, display(error), file.id))

    def file_by_id(self, file_id: int) -> FileRow | None:
        rows = self._query("SELECT * FROM files WHERE id = ?", (file_id,))
        return _file_row(rows[0]) if rows else None

    # ------------------------------------------------------------------ versions, objects, replicas

    def latest_versions(self) -> list[Version]:
        rows = self._query(
            "SELECT v.* FROM versions v JOIN ("
            "  SELECT source, relpath, MAX(sealed_at) AS at FROM versions GROUP BY source, relpath"
            ") latest ON v.source = latest.source AND v.relpath = latest.relpath AND v.sealed_at = latest.at "
            "ORDER BY v.source, v.relpath")
        return [_version(row) for row in rows]

    def all_versions(self) -> list[Version]:
        """Every version of every path, oldest first per path (``ls --versions``, ``restore --at``)."""
        rows = self._query("SELECT * FROM versions ORDER BY source, relpath, sealed_at")
        return [_version(row) for row in rows]

    def all_paths(self) -> list[tuple[str, str]]:
        """Every (source, path) that was ever sealed."""
        return [(row["source"], loaded_name(row["relpath"]))
                for row in self._query("SELECT DISTINCT source, relpath FROM versions")]

    def object_set(self) -> set[str]:
        return set(self.object_ids())

    def object_ids(self) -> list[str]:
        return [row["content_id"] for row in self._query("SELECT content_id FROM objects ORDER BY content_id")]

    def replicas_of(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for row in self._query("SELECT content_id, store FROM replicas ORDER BY store"):
            out.setdefault(row["content_id"], []).append(row["store"])
        return out

    def add_replica(self, content_id: str, store: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO replicas (content_id, store, stored_at) VALUES (?, ?, ?)",
                       (content_id, store, time.time()))
            db.execute("DELETE FROM missing_replicas WHERE content_id = ? AND store = ?", (content_id, store))

    def reconcile_replicas(self, store: str, present: set[str], kind: str, listed_at: float) -> int:
        """Make the replica rows of ``store`` agree with its listing, begun at ``listed_at``: objects it lost are
        queued for upload again (and remembered as missing until they are back), objects it holds are recorded.
        Returns how many objects the store lost since the last reconcile.

        Only what the catalog knew before the listing began is judged by it: an object uploaded (or sealed)
        while the listing ran may be absent from it without being lost."""
        now = time.time()
        with self.transaction() as db:
            ids = {row[0] for row in db.execute("SELECT content_id FROM objects")}
            known = {row[0] for row in db.execute("SELECT content_id FROM objects WHERE created_at < ?", (listed_at,))}
            stored_at = dict(db.execute("SELECT content_id, stored_at FROM replicas WHERE store = ?", (store,)))
            recorded = set(stored_at)
            settled = {content_id for content_id, at in stored_at.items() if at < listed_at}
            lost = sorted((ids - present) & settled)
            for content_id in lost:
                db.execute("DELETE FROM replicas WHERE content_id = ? AND store = ?", (content_id, store))
                db.execute("INSERT OR IGNORE INTO missing_replicas (content_id, store, found_at) VALUES (?, ?, ?)",
                           (content_id, store, now))
            for content_id in sorted((ids & present) - recorded):
                db.execute("INSERT OR IGNORE INTO replicas (content_id, store, stored_at) VALUES (?, ?, ?)",
                           (content_id, store, now))
                db.execute("DELETE FROM missing_replicas WHERE content_id = ? AND store = ?", (content_id, store))
            absent = sorted((known - present) - (recorded - settled))
            db.executemany(
                "INSERT INTO jobs (kind, subject, state, size, created_at, updated_at) "
                "SELECT ?, content_id, ?, stored_size, ?, ? FROM objects WHERE content_id = ? "
                "ON CONFLICT (kind, subject) DO UPDATE SET state = excluded.state, permanent = 0, attempts = 0, "
                "not_before = 0, error = NULL WHERE jobs.state = ?",
                [(kind, JobState.PENDING, now, now, content_id, JobState.DONE) for content_id in absent])
        return len(lost)

    def swap_object(self, old: str, new: str, stored_size: int, replicate: str | None) -> None:
        """A key rotation re-encrypted ``old`` as ``new``: every reference moves to it, in one transaction,
        ``new`` is queued for the bucket (``replicate``: its lane), and ``old`` waits to be deleted."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE OR IGNORE versions SET content_id = ? WHERE content_id = ?", (new, old))
            db.execute("DELETE FROM versions WHERE content_id = ?", (old,))  # the path had ``new`` already
            db.execute("UPDATE files SET content_id = ? WHERE content_id = ?", (new, old))
            db.execute("UPDATE derivatives SET content_id = ? WHERE content_id = ?", (new, old))
            db.execute("INSERT OR IGNORE INTO objects (content_id, size, stored_size, created_at) "
                       "SELECT ?, size, ?, created_at FROM objects WHERE content_id = ?", (new, stored_size, old))
            for table in ("objects", "replicas", "missing_replicas", "uploads"):
                db.execute(f"DELETE FROM {table} WHERE content_id = ?", (old,))
            db.execute("INSERT OR IGNORE INTO replicas (content_id, store, stored_at) VALUES (?, 'local', ?)",
                       (new, now))
            if replicate is not None:
                db.execute("DELETE FROM jobs WHERE kind = ? AND subject = ?", (replicate, old))
                _enqueue(db, replicate, new, stored_size, now)
            db.execute("INSERT OR IGNORE INTO retired_objects (content_id, retired_at) VALUES (?, ?)", (old, now))

    def retired_object_ids(self) -> list[str]:
        return [row["content_id"] for row in self._query("SELECT content_id FROM retired_objects ORDER BY 1")]

    def forget_retired(self, content_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM retired_objects WHERE content_id = ?", (content_id,))

    def enqueue_every_object(self, kind: str) -> int:
        """A job per object not queued for ``kind`` yet, and again for those that failed for good (key rotation:
        each object is looked at once, and a failure is retried at the next start)."""
        now = time.time()
        with self.transaction() as db:
            return db.execute("INSERT INTO jobs (kind, subject, state, size, created_at, updated_at) "
                              "SELECT ?, content_id, ?, stored_size, ?, ? FROM objects WHERE true "
                              "ON CONFLICT (kind, subject) DO UPDATE SET state = excluded.state, permanent = 0, "
                              "attempts = 0, error = NULL WHERE jobs.permanent = 1",
                              (kind, JobState.PENDING, now, now)).rowcount

    def job_progress(self, kind: str, besides: str = "") -> tuple[int, int]:
        """(done, total) of the jobs of a kind."""
        rows = self._query("SELECT COUNT(*) AS total, COALESCE(SUM(state = ?), 0) AS done FROM jobs "
                           "WHERE kind = ? AND subject != ?", (JobState.DONE, kind, besides))
        return rows[0]["done"], rows[0]["total"]

    def forget_jobs(self, kind: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM jobs WHERE kind = ?", (kind,))

    def objects_without(self, store: str) -> int:
        """Objects the store has no copy of (yet)."""
        return self._query("SELECT COUNT(*) AS n FROM objects WHERE content_id NOT IN "
                           "(SELECT content_id FROM replicas WHERE store = ?)", (store,))[0]["n"]

    def missing_count(self, store: str) -> int:
        """Objects a reconcile found missing from ``store`` that are not back yet."""
        return self._query("SELECT COUNT(*) AS n FROM missing_replicas WHERE store = ?", (store,))[0]["n"]

    def forget_replicas(self, store: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM replicas WHERE store = ?", (store,))

    def adopt_recovered(self, content_id: str, meta: ObjectMeta, staged_size: int, holder: str = "local") -> None:
        """Register an object found in a store (recovery, rebuild); its metadata names one path holding it."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO objects (content_id, size, stored_size, created_at) VALUES (?, ?, ?, ?)",
                       (content_id, meta.size, staged_size, meta.sealed_at))
            db.execute("INSERT OR REPLACE INTO replicas (content_id, store, stored_at) VALUES (?, ?, ?)",
                       (content_id, holder, time.time()))
            if db.execute("SELECT 1 FROM versions WHERE content_id = ?", (content_id,)).fetchone():
                return
            name = stored_name(meta.path)
            db.execute("INSERT OR IGNORE INTO versions (source, relpath, content_id, size, mtime_ns, sealed_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (meta.source, name, content_id, meta.size, meta.mtime_ns,
                                                     meta.sealed_at))
            db.execute("INSERT OR IGNORE INTO files (source, relpath, size, mtime_ns, state, content_id, "
                       "discovered_at, sealed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (meta.source, name, meta.size, meta.mtime_ns, FileState.SEALED, content_id, meta.sealed_at,
                        meta.sealed_at))

    def enqueue_missing_replicas(self, kind: str, store: str) -> int:
        """Queue a copy of every object the store lacks (a replica configured after the fact, a lost job)."""
        now = time.time()
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO jobs (kind, subject, state, size, created_at, updated_at) "
                "SELECT ?, content_id, ?, stored_size, ?, ? FROM objects WHERE content_id NOT IN "
                "(SELECT content_id FROM replicas WHERE store = ?) "
                "ON CONFLICT (kind, subject) DO UPDATE SET state = excluded.state, permanent = 0, attempts = 0 "
                "WHERE jobs.state = ?", (kind, JobState.PENDING, now, now, store, JobState.DONE)).rowcount

    # ------------------------------------------------------------------ later-stage jobs

    def enqueue(self, kind: str, subject: str, size: int = 0) -> None:
        with self.transaction() as db:
            _enqueue(db, kind, subject, size, time.time())

    def claim_job(self, kind: str, now: float | None = None) -> Job | None:
        now = time.time() if now is None else now
        with self.transaction(durable=False) as db:
            row = db.execute("SELECT * FROM jobs WHERE kind = ? AND state = ? AND not_before <= ? "
                             "ORDER BY not_before, id LIMIT 1", (kind, JobState.PENDING, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", (JobState.RUNNING, now, row["id"]))
        return Job(id=row["id"], kind=row["kind"], subject=row["subject"], size=row["size"],
                   attempts=row["attempts"])

    def next_job_due(self, kind: str) -> float | None:
        rows = self._query("SELECT MIN(not_before) AS due FROM jobs WHERE kind = ? AND state = ?",
                           (kind, JobState.PENDING))
        return rows[0]["due"]

    def finish_job(self, job: Job) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, error = NULL, updated_at = ? WHERE id = ?",
                       (JobState.DONE, time.time(), job.id))

    def retry_job(self, job: Job, error: str, *, delay: float | None = None, count: bool = True) -> None:
        attempts = job.attempts + (1 if count else 0)
        wait = backoff(attempts) if delay is None else delay
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, attempts = ?, not_before = ?, error = ?, updated_at = ? "
                       "WHERE id = ?", (JobState.PENDING, attempts, time.time() + wait, display(error), time.time(),
                                        job.id))

    def fail_job(self, job: Job, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, permanent = 1, updated_at = ? WHERE id = ?",
                       (JobState.DONE, display(error), time.time(), job.id))

    def expedite_files(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE files SET not_before = 0 WHERE state = ?", (FileState.DISCOVERED,))

    def retry_everything(self) -> tuple[int, int]:
        """``shutterlock retry``: originals that failed are queued afresh, jobs that failed for good or wait
        out a back-off are due now (the cause may be fixed: a permission, a bucket, the cloak's weights)."""
        with self.transaction() as db:
            files = db.execute("UPDATE files SET state = ?, attempts = 0, not_before = 0 WHERE state = ? OR "
                               "(state = ? AND not_before > 0)",
                               (FileState.DISCOVERED, FileState.FAILED, FileState.DISCOVERED)).rowcount
            jobs = db.execute("UPDATE jobs SET state = ?, attempts = 0, not_before = 0, permanent = 0 "
                              "WHERE permanent = 1 OR (state = ? AND not_before > 0)",
                              (JobState.PENDING, JobState.PENDING)).rowcount
        return files, jobs

    def expedite(self, kind: str) -> None:
        """Make every waiting job of a kind due now (the bucket is back)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET not_before = 0 WHERE kind = ? AND state = ?", (kind, JobState.PENDING))

    def jobs_retrying(self) -> int:
        """Jobs that failed at least once and wait for another attempt."""
        rows = self._query("SELECT COUNT(*) AS n FROM jobs WHERE state = ? AND error IS NOT NULL", (JobState.PENDING,))
        return rows[0]["n"]

    def job_backlog(self, kind: str, *, due_only: bool = False, besides: str = "") -> tuple[int, int]:
        """Jobs of a kind not yet done, and their bytes; ``due_only`` leaves out those waiting out a delay
        (a back-off, a held derivative) — the lane is not busy with those; ``besides``: a subject not counted."""
        rows = self._query("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM jobs WHERE kind = ? AND "
                           "(state = ? OR (state = ? AND not_before <= ?)) AND subject != ?",
                           (kind, JobState.RUNNING, JobState.PENDING, time.time() if due_only else float("inf"),
                            besides))
        return rows[0]["n"], rows[0]["bytes"]

    # ------------------------------------------------------------------ derivatives

    def record_derivative(self, file_id: int, content_id: str, *, status: str, output: str | None, reason: str,
                          cloaked: bool, strength: str, watermark: str, settings: str = "",
                          rating: int | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO derivatives (file_id, content_id, status, output, reason, cloaked, strength, "
                       "watermark, settings, rating, made_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (file_id) DO UPDATE SET "
                       "content_id = excluded.content_id, status = excluded.status, output = excluded.output, "
                       "reason = excluded.reason, cloaked = excluded.cloaked, strength = excluded.strength, "
                       "watermark = excluded.watermark, settings = excluded.settings, rating = excluded.rating, "
                       "made_at = excluded.made_at",
                       (file_id, content_id, status, None if output is None else stored_name(output), display(reason),
                        int(cloaked), strength, watermark, settings, rating, time.time()))

    def file_ids(self, pairs: list[tuple[str, str]]) -> list[int]:
        """The ids of these (source, relpath) originals."""
        ids = []
        for source, relpath in pairs:
            rows = self._query("SELECT id FROM files WHERE source = ? AND relpath = ?", (source, stored_name(relpath)))
            ids += [row["id"] for row in rows]
        return ids

    def files_named(self, source: str, folder: str, stem: str) -> list[FileRow]:
        """Files in one folder of a source named ``stem`` or ``stem.EXT`` (the images an XMP sidecar speaks for)."""
        prefix = f"{folder}/" if folder else ""
        if not is_text(prefix + stem):
            return []  # a sidecar whose name is not UTF-8 matches by exact bytes only, through file_ids
        rows = self._query("SELECT * FROM files WHERE source = ? AND (relpath = ? OR relpath LIKE ? ESCAPE '\\')",
                           (source, prefix + stem, _like_escape(prefix + stem) + ".%"))
        return [_file_row(row) for row in rows if "/" not in loaded_name(row["relpath"])[len(prefix):]]

    def derivative_of(self, file_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM derivatives WHERE file_id = ?", (file_id,))
        return _derivative(rows[0]) if rows else None

    def latest_held_reason(self) -> str:
        """Why the cloak could not run for the derivative held back most recently."""
        rows = self._query("SELECT reason FROM derivatives WHERE status = 'held' ORDER BY made_at DESC LIMIT 1")
        return rows[0]["reason"] if rows else ""

    def derivatives(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT d.*, f.source, f.relpath FROM derivatives d JOIN files f ON f.id = d.file_id "
                           "ORDER BY f.source, f.relpath")
        return [{**_derivative(row), "relpath": loaded_name(row["relpath"])} for row in rows]

    # ------------------------------------------------------------------ multipart uploads

    def upload_for(self, content_id: str, store: str) -> tuple[str, int, float] | None:
        rows = self._query("SELECT upload_id, part_size, started_at FROM uploads WHERE content_id = ? AND store = ?",
                           (content_id, store))
        return (rows[0]["upload_id"], rows[0]["part_size"], rows[0]["started_at"]) if rows else None

    def remember_upload(self, content_id: str, store: str, upload_id: str, part_size: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO uploads (content_id, store, upload_id, part_size, started_at) "
                       "VALUES (?, ?, ?, ?, ?)", (content_id, store, upload_id, part_size, time.time()))

    def uploads(self, store: str) -> list[tuple[str, str, float]]:
        """(upload id, content id, started at) of the multipart uploads in flight to a store."""
        rows = self._query("SELECT upload_id, content_id, started_at FROM uploads WHERE store = ?", (store,))
        return [(row["upload_id"], row["content_id"], row["started_at"]) for row in rows]

    def forget_upload(self, content_id: str, store: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE content_id = ? AND store = ?", (content_id, store))

    # ------------------------------------------------------------------ status

    def file_counts(self) -> FileCounts:
        rows = self._query("SELECT state, COUNT(*) AS n FROM files GROUP BY state")
        return FileCounts(**{row["state"]: row["n"] for row in rows if row["state"] in FileState.__members__.values()})

    def seal_backlog(self) -> tuple[int, int]:
        """Originals waiting to be sealed (or being sealed), and their bytes."""
        rows = self._query("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM files WHERE state IN (?, ?)",
                           (FileState.DISCOVERED, FileState.SEALING))
        return rows[0]["n"], rows[0]["bytes"]

    def sealing_fingerprint(self) -> str:
        """Changes whenever an original is sealed or a version added (cheap: two aggregates)."""
        row = self._query("SELECT COUNT(*) AS n, MAX(sealed_at) AS last FROM versions")[0]
        return f"{row['n']}:{row['last']}"

    def object_count(self) -> int:
        return self._query("SELECT COUNT(*) AS n FROM objects")[0]["n"]

    def sealed_since(self, since: float) -> tuple[int, float | None]:
        """How many originals were sealed since ``since``, and when the last one was sealed (ever)."""
        rows = self._query("SELECT SUM(sealed_at >= ?) AS n, MAX(sealed_at) AS last FROM files WHERE state = ?",
                           (since, FileState.SEALED))
        return rows[0]["n"] or 0, rows[0]["last"]

    def jobs_failed(self, kind: str) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM jobs WHERE kind = ? AND state = ? AND permanent = 1",
                           (kind, JobState.DONE))
        return rows[0]["n"]

    def derivative_counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM derivatives GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    def failed_files(self, limit: int = 20) -> list[FailedFile]:
        rows = self._query("SELECT source, relpath, error FROM files WHERE state = ? ORDER BY id DESC LIMIT ?",
                           (FileState.FAILED, limit))
        return [FailedFile(source=row["source"], relpath=display(loaded_name(row["relpath"])), error=row["error"] or "")
                for row in rows]

    # ------------------------------------------------------------------ snapshots

    def identity(self) -> str:
        """A random id given to this catalog when it was created; a snapshot of it carries the same id, so a
        new, empty catalog is never taken for a later state of an old one."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM settings WHERE key = 'catalog_id'").fetchone()
            if row is not None:
                return row[0]
            value = secrets.token_hex(16)
            db.execute("INSERT INTO settings (key, value) VALUES ('catalog_id', ?)", (value,))
            return value

    def snapshot_generation(self) -> int:
        """The generation of the newest snapshot of this catalog in the bucket (0: none yet)."""
        return int(self.get_setting(SNAPSHOT_GENERATION, "0"))

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file (before it is copied or renamed)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def snapshot_bytes(self) -> bytes:
        """A consistent copy of the whole database, for the encrypted off-site snapshot."""
        with self._lock:
            return self._db.serialize()


def install_catalog(target: Path, data: bytes, settings: dict[str, str]) -> None:
    """Make a database image (a snapshot, a rebuilt catalog) the catalog at ``target``, with ``settings``
    written into it before it gets its name: a crash leaves the old catalog or the new one, complete."""
    ensure_dir(target.parent)
    tmp = temp_path_in(target.parent)
    try:
        tmp.write_bytes(data)
        with Catalog(tmp) as catalog:
            for key, value in settings.items():
                catalog.set_setting(key, value)
            catalog.checkpoint()
        fsync_file(tmp)
        for suffix in ("-wal", "-shm"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class SnapshotFacts:
    """What a catalog snapshot says about itself, read without installing it."""

    catalog_id: str
    paths: frozenset[tuple[str, str]]
    objects: frozenset[str]


def snapshot_facts(data: bytes) -> SnapshotFacts:
    """Open a snapshot's database in memory and read its identity, paths and objects."""
    image = bytearray(data)
    if len(image) >= 20 and image[18:20] == b"\x02\x02":
        image[18:20] = b"\x01\x01"  # a WAL database's image opens in memory only as a rollback-journal one
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(bytes(image))
        row = db.execute("SELECT value FROM settings WHERE key = 'catalog_id'").fetchone()
        paths = frozenset((source, loaded_name(relpath))
                          for source, relpath in db.execute("SELECT source, relpath FROM versions"))
        objects = frozenset(row[0] for row in db.execute("SELECT content_id FROM objects"))
    except sqlite3.DatabaseError as error:
        raise CatalogError(f"the catalog snapshot is not a usable database: {error}") from None
    finally:
        db.close()
    return SnapshotFacts(catalog_id=row[0] if row else "", paths=paths, objects=objects)


def _enqueue(db: sqlite3.Connection, kind: str, subject: str, size: int, now: float) -> None:
    db.execute("INSERT INTO jobs (kind, subject, state, size, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
               "ON CONFLICT (kind, subject) DO UPDATE SET state = excluded.state, attempts = 0, not_before = 0, "
               "error = NULL, permanent = 0, size = excluded.size, updated_at = excluded.updated_at",
               (kind, subject, JobState.PENDING, size, now, now))


def _derivative(row: sqlite3.Row) -> dict[str, Any]:
    output = row["output"]
    return {**dict(row), "output": None if output is None else loaded_name(output)}


def _version(row: sqlite3.Row) -> Version:
    return Version(**{**dict(row), "relpath": loaded_name(row["relpath"])})


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _file_row(row: sqlite3.Row) -> FileRow:
    return FileRow(id=row["id"], source=row["source"], relpath=loaded_name(row["relpath"]), size=row["size"],
                   mtime_ns=row["mtime_ns"], state=row["state"], content_id=row["content_id"],
                   attempts=row["attempts"], error=row["error"], sealed_at=row["sealed_at"])
