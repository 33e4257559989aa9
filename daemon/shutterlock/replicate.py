"""The replicate lane and everything that keeps the bucket sufficient on its own.

Besides copying each sealed object, the lane keeps the key envelope and dated, numbered catalog
snapshots in the bucket, tracks whether the bucket is reachable (an outage only grows the queue; it
drains by itself when the bucket returns), reconciles the catalog with a listing of the bucket (a lost
or emptied bucket is refilled, and status says so until it is whole), aborts stale multipart uploads
and runs the scheduled scrub.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shutterlock import keystore
from shutterlock.catalog import SNAPSHOT_GENERATION, Catalog, CatalogError, Job, snapshot_facts
from shutterlock.config import Config, Paths
from shutterlock.engine import JobQueue, Periodic, StageError, WorkerState
from shutterlock.errors import KeyProblem
from shutterlock.fsutil import atomic_write_bytes
from shutterlock.provenance.identity import SEALED_NAME as SEALED_IDENTITY
from shutterlock.restore import verify
from shutterlock.status import ReplicaStatus, ScrubReport
from shutterlock.vault.format import Blob, FormatError, Keys, open_dated_blob, seal_blob
from shutterlock.vault.local import LocalStore
from shutterlock.vault.s3 import CATALOG_KEY, ENVELOPE_KEY, OfflineError, S3Store
from shutterlock.vault.store import NamedBlobs, StoreError

log = logging.getLogger(__name__)

CATALOG_LABEL = b"catalog"
SNAPSHOTS = "catalog/snapshots/"
RECONCILE = "reconcile"  # the replicate job that compares the bucket with the catalog
OFFLINE_RETRY = (5.0, 60.0)  # first and longest wait between probes of an unreachable bucket
SNAPSHOT_DEBOUNCE = 20.0


ENVELOPE_PROBLEM, SNAPSHOT_PROBLEM = "replica_envelope_problem", "replica_snapshot_problem"  # catalog settings
VAULT_GENERATION = "vault_snapshot_generation"  # catalog setting: the vault numbers its own snapshots
SNAPSHOT_DUE = "snapshot_due"  # set when the catalog was rebuilt or recovered: it knows more than any snapshot


def replica_problem(catalog: Catalog) -> str:
    """Why the bucket's key envelope or catalog snapshot is not current, or ""."""
    return "; ".join(p for p in (catalog.get_setting(ENVELOPE_PROBLEM), catalog.get_setting(SNAPSHOT_PROBLEM)) if p)


def open_replica(config: Config) -> S3Store:
    if config.s3 is None:
        raise StoreError("no [s3] replica is configured", transient=False)
    return S3Store.from_config(config.s3, config.paths)


def snapshot_name(generation: int) -> str:
    return f"{SNAPSHOTS}{generation:020d}"


def publish_signing_identity(store: S3Store, vault_root: Path) -> bool:
    """Copy the sealed signing identity from the vault to the bucket, unless it is there already; False while
    there is none yet. A recovered machine then signs as this one did."""
    sealed = vault_root / SEALED_IDENTITY
    if not sealed.exists():
        return False
    data = sealed.read_bytes()
    if store.get_bytes_if_any(SEALED_IDENTITY) != data:
        store.put_bytes(SEALED_IDENTITY, data)
    return True


def generation_of(name: str) -> int | None:
    """The generation a snapshot's key claims (unauthenticated: only a hint of what to open)."""
    tail = name[len(SNAPSHOTS):] if name.startswith(SNAPSHOTS) else ""
    return int(tail) if tail.isdigit() else None


@dataclass(frozen=True)
class Snapshot:
    name: str
    blob: Blob


def bucket_snapshots(store: NamedBlobs, keys: Keys, *, above: int = -1) -> tuple[list[Snapshot], list[str]]:
    """The authentic catalog snapshots in the bucket (or the vault) whose name claims a generation above
    ``above``, newest first, and the names of those that did not authenticate (damaged, or not ours). The
    legacy ``catalog/latest`` of the first version counts as generation 0."""
    names = [n for n in store.list_names("catalog/") if (generation_of(n) or 0) > above or
             (n == CATALOG_KEY and above < 0)]
    found, refused = [], []
    for name in names:
        try:
            blob = open_dated_blob(keys.catalog, store.get_bytes(name), CATALOG_LABEL)
        except FormatError:
            refused.append(name)
            continue
        if name != CATALOG_KEY and blob.generation != generation_of(name):
            refused.append(name)  # an authentic snapshot copied under another generation's name
            continue
        found.append(Snapshot(name, blob))
    found.sort(key=lambda s: s.blob.generation, reverse=True)
    return found, refused


RETIRED_NAME = "retired-keys.blob"


def sync_envelopes(paths: Paths, vault: LocalStore, store: S3Store | None, keys: Keys) -> str:
    """Bring every copy of the key material (state, vault, bucket) up to date: first the retired keys of an
    unfinished rotation (so the new passphrase reaches them before the new envelope replaces the old), then
    the newest key envelope this key vouches for. Returns a problem worth showing in status, or "".
    Never overwrites a newer envelope it cannot vouch for."""
    retired = _read_or_none(paths.retired_keys) if keys.retired else None
    local_retired = vault.root / RETIRED_NAME
    in_vault = vault.present()  # a vault whose drive is not mounted gets its copies when it is back
    if retired is not None:
        if in_vault and _read_or_none(local_retired) != retired:
            atomic_write_bytes(local_retired, retired)
        if store is not None and store.get_bytes_if_any(RETIRED_NAME) != retired:
            store.put_bytes(RETIRED_NAME, retired)
    elif not keys.retired:  # a finished rotation: the old keys go from every copy
        local_retired.unlink(missing_ok=True)
        if store is not None and store.exists_key(store.key(RETIRED_NAME)):
            store.delete_name(RETIRED_NAME)
    copies: dict[str, bytes | None] = {"the state directory": _read_or_none(paths.envelope_file)}
    if in_vault:
        copies["the vault"] = _read_or_none(vault.envelope_path)
    if store is not None:
        copies["the bucket"] = store.get_bytes_if_any(ENVELOPE_KEY)
    try:
        result = keystore.reconcile_envelopes(copies, keys)
    except KeyProblem as error:
        return str(error)
    for place in result.stale:
        if place == "the bucket":
            assert store is not None
            store.put_bytes(ENVELOPE_KEY, result.winner)
        else:
            atomic_write_bytes(paths.envelope_file if place == "the state directory" else vault.envelope_path,
                               result.winner)
        if copies[place] is not None:
            log.info("key envelope in %s replaced by the newer one", place)
    return result.problem


def upload_snapshot(store: NamedBlobs, catalog: Catalog, keys: Keys, kept: int,
                    counter: str = SNAPSHOT_GENERATION) -> str:
    """Upload the catalog as the next generation (to the bucket, or into the vault), unless the store holds a
    newer snapshot of another catalog or (first upload) a richer legacy one: then nothing is uploaded and the
    reason returned. Each store numbers its own snapshots (``counter`` names the catalog setting), so the
    bucket's newest generation is always one the bucket holds."""
    ours = catalog.identity()
    generation = int(catalog.get_setting(counter, "0"))
    newer, _ = bucket_snapshots(store, keys, above=generation)
    for snapshot in newer:
        if snapshot_facts(snapshot.blob.data).catalog_id != ours:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(snapshot.blob.created_at))
            return (f"the bucket holds a newer catalog (generation {snapshot.blob.generation} of {when}) than "
                    f"{catalog.path}; it is kept. Run `shutterlock catalog rebuild` to start from it")
        generation = max(generation, snapshot.blob.generation)  # ours, uploaded just before a crash
    if generation == 0:
        legacy = store.get_bytes_if_any(CATALOG_KEY)
        if legacy is not None:
            try:
                facts = snapshot_facts(open_dated_blob(keys.catalog, legacy, CATALOG_LABEL).data)
            except FormatError:
                facts = None
            if facts is not None and facts.paths - set(catalog.all_paths()):
                return (f"the bucket's catalog snapshot knows files {catalog.path} does not; it is kept. "
                        "Run `shutterlock catalog rebuild` to start from it")
    blob = seal_blob(keys.catalog, catalog.snapshot_bytes(), CATALOG_LABEL, generation=generation + 1)
    store.put_bytes(snapshot_name(generation + 1), blob)
    catalog.set_setting(counter, str(generation + 1))
    if counter == SNAPSHOT_GENERATION:
        catalog.set_setting(SNAPSHOT_DUE, "")
    log.info("catalog snapshot %d uploaded", generation + 1)
    names = sorted((n for n in store.list_names(SNAPSHOTS) if (generation_of(n) or 0) <= generation + 1),
                   key=lambda n: generation_of(n) or 0)
    for name in names[:-kept]:  # keep the newest: a rollback then needs every one of them deleted
        store.delete_name(name)
    return ""


VAULT_SNAPSHOTS_KEPT = 30
VAULT_SNAPSHOT_OF = "vault_snapshot_of"  # catalog setting: what the catalog held at the last vault snapshot


def snapshot_into_vault(vault: LocalStore, catalog: Catalog, keys: Keys) -> str:
    """Keep a sealed catalog snapshot in the vault as well, so the vault and the passphrase alone recover
    every original's name and history (a vault on an external drive, with or without a bucket). Taken only
    when something was sealed since the last one; returns why it could not be taken, or ""."""
    facts = catalog.sealing_fingerprint()
    if catalog.get_setting(VAULT_SNAPSHOT_OF) == facts:
        return ""
    problem = upload_snapshot(vault, catalog, keys, VAULT_SNAPSHOTS_KEPT, VAULT_GENERATION)
    if not problem:
        catalog.set_setting(VAULT_SNAPSHOT_OF, facts)
    return problem


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class _UploadQueue(JobQueue):
    """The replicate jobs; the reconcile among them is housekeeping, not an object waiting to go up."""

    def backlog(self) -> tuple[int, int]:
        return self.catalog.job_backlog(self.kind, due_only=True, besides=RECONCILE)


class ReplicateStage:
    """The S3 lane: one job per sealed object, plus the reconcile job; an outage only grows the queue."""

    name = "replicate"
    workers = 3

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.catalog, self.keys, self.vault = catalog, keys, vault
        self.queue = _UploadQueue(catalog, self.name)
        self._lock = threading.Lock()
        self.online = True
        self.offline_since: float | None = None
        self.error = ""
        self._next_probe = 0.0
        self._probe_wait = OFFLINE_RETRY[0]
        self._dirty_since: float | None = None
        self._keys_synced = False
        self._identity_published = False  # the derive lane may create it after this lane started
        self.last_snapshot: float | None = None
        self.scrub: ScrubReport | None = None
        self._use(config, open_replica(config))

    def _use(self, config: Config, store: S3Store) -> None:
        assert config.s3 is not None
        self.config, self.s3, self.store = config, config.s3, store
        self.attempts = config.s3.max_attempts
        self.stall_limit = config.engine.stall_seconds
        self._keys_synced = self._identity_published = False
        queued = self.catalog.enqueue_missing_replicas(self.name, store.name)
        if queued:
            log.info("%d object(s) queued for the replica", queued)
        self.catalog.enqueue(self.name, RECONCILE)  # replica rows are not trusted forever: check the bucket

    def reload(self, config: Config) -> str:
        """A changed bucket or endpoint takes effect at once: a new client, and every object queued for it."""
        if config.s3 is None:
            return "removing [s3] takes effect after a restart"
        if config.s3 != self.s3:
            self._use(config, open_replica(config))
        else:
            self.config, self.attempts, self.stall_limit = config, config.s3.max_attempts, config.engine.stall_seconds
        return ""

    def subject(self, file_id: int, content_id: str) -> str | None:
        return content_id

    # ------------------------------------------------------------------ the lane

    def process(self, job: Job, worker: WorkerState) -> None:
        with self._lock:
            if not self.online and time.monotonic() < self._next_probe:
                raise StageError(self.error, transient=True, delay=self._next_probe - time.monotonic(), count=False)
        try:
            if job.subject == RECONCILE:
                self.reconcile()
            else:
                if not self._keys_synced:
                    self.sync_keys()
                self._upload(job, worker)
        except StoreError as error:
            self._went_wrong(error)
            if isinstance(error, OfflineError) or not error.transient:
                # Configuration or outage: keep the job, nothing is lost; probe again later.
                raise StageError(str(error), transient=True, delay=self._probe_wait, count=False) from None
            raise StageError(str(error), transient=True) from None
        self._back_online()

    def _upload(self, job: Job, worker: WorkerState) -> None:
        path = self.vault.path_of(job.subject)
        if not path.exists():
            raise StageError(f"object {job.subject[:12]}… is not in the local vault", transient=False)
        self.store.put_file(job.subject, path, journal=self.catalog)
        worker.tick()
        self.catalog.add_replica(job.subject, self.store.name)
        with self._lock:
            self._dirty_since = self._dirty_since or time.monotonic()

    def sync_keys(self) -> None:
        """Every copy of the key envelope current (the bucket's too, also when it was lost or emptied)."""
        self._note_problem(ENVELOPE_PROBLEM, "key envelope",
                           sync_envelopes(self.config.paths, self.vault, self.store, self.keys))
        self._keys_synced = True

    def _note_problem(self, setting: str, subject: str, problem: str) -> None:
        """Kept in the catalog, so status says it also when no daemon runs, until it is solved."""
        if problem and problem != self.catalog.get_setting(setting):
            log.error("%s: %s", subject, problem)
            self.catalog.record_event("error", subject, problem)
        self.catalog.set_setting(setting, problem)

    def reconcile(self) -> None:
        """Compare the catalog with a listing of the bucket: re-upload what it lost, keys, signing identity and
        snapshot included."""
        self.sync_keys()
        self._identity_published = publish_signing_identity(self.store, self.vault.root)
        listed_at = time.time()
        lost = self.catalog.reconcile_replicas(self.store.name, set(self.store.list()), self.name, listed_at)
        if lost:
            message = f"the bucket lost {lost} object(s); re-uploading"
            log.warning("%s", message)
            self.catalog.record_event("error", "replica", message)
        generation = self.catalog.snapshot_generation()
        if generation == 0 or self.catalog.get_setting(SNAPSHOT_DUE) or \
                snapshot_name(generation) not in self.store.list_names(SNAPSHOTS):
            with self._lock:
                self._dirty_since = self._dirty_since or time.monotonic() - SNAPSHOT_DEBOUNCE
        self.queue.expedite()

    def scheduled_reconcile(self) -> None:
        try:
            self.reconcile()
        except StoreError as error:
            self._went_wrong(error)
            log.warning("could not compare the bucket with the catalog: %s", error)
            return
        self._back_online()

    def _went_wrong(self, error: StoreError) -> None:
        with self._lock:
            if self.online:
                log.warning("replica unavailable: %s", error)
                self.catalog.record_event("error", "replica", str(error))
            self.online = False
            self.error = str(error)
            self.offline_since = self.offline_since or time.time()
            self._probe_wait = min(OFFLINE_RETRY[1], self._probe_wait * 2) if self._next_probe else OFFLINE_RETRY[0]
            self._next_probe = time.monotonic() + self._probe_wait

    def _back_online(self) -> None:
        with self._lock:
            if self.online:
                return
            self.online, self.error, self.offline_since = True, "", None
            self._probe_wait, self._next_probe = OFFLINE_RETRY[0], 0.0
        log.info("replica reachable again; draining the backlog")
        self.queue.expedite()

    def describe(self, job: Job) -> str:
        return "compare the bucket with the catalog" if job.subject == RECONCILE else f"upload {job.subject[:12]}…"

    def status(self) -> ReplicaStatus:
        waiting, waiting_bytes = self.catalog.job_backlog(self.name, besides=RECONCILE)
        return ReplicaStatus(configured=True, url=self.s3.url, online=self.online, error=self.error,
                             offline_since=self.offline_since, waiting=waiting, waiting_bytes=waiting_bytes,
                             failed=self.catalog.jobs_failed(self.name), last_snapshot=self.last_snapshot,
                             scrub=self.scrub, lost=self.catalog.missing_count(self.store.name),
                             snapshot_generation=self.catalog.snapshot_generation(),
                             problem=replica_problem(self.catalog))

    # ------------------------------------------------------------------ snapshots and housekeeping

    def upload_snapshot(self) -> None:
        """Upload the catalog as the next generation, unless the bucket holds a newer or richer one."""
        try:
            problem = self._snapshot()
        except (StoreError, CatalogError) as error:
            if isinstance(error, StoreError):
                self._went_wrong(error)
            with self._lock:
                self._dirty_since = self._dirty_since or time.monotonic()  # tried again later
            log.warning("catalog snapshot not uploaded: %s", error)
            return
        self._note_problem(SNAPSHOT_PROBLEM, "catalog snapshot not uploaded", problem)

    def _snapshot(self) -> str:
        with self._lock:
            self._dirty_since = None
        problem = upload_snapshot(self.store, self.catalog, self.keys, self.s3.snapshots_kept)
        if not problem:
            self.last_snapshot = time.time()
            if not self._identity_published:
                try:
                    self._identity_published = publish_signing_identity(self.store, self.vault.root)
                except StoreError as error:
                    log.warning("signing identity not uploaded: %s", error)
        return problem

    def snapshot_if_dirty(self) -> None:
        with self._lock:
            due = self._dirty_since is not None and time.monotonic() - self._dirty_since >= SNAPSHOT_DEBOUNCE
        if due:
            self.upload_snapshot()

    def abort_stale(self) -> None:
        journal = self.catalog.uploads(self.store.name)
        try:
            aborted = self.store.abort_stale_uploads(self.s3.stale_upload_hours,
                                                     {upload_id: started for upload_id, _, started in journal})
        except StoreError as error:
            log.warning("could not list stale uploads: %s", error)
            return
        for upload_id, content_id, _ in journal:
            if upload_id in aborted:
                self.catalog.forget_upload(content_id, self.store.name)  # the next attempt starts afresh
        if aborted:
            log.info("aborted %d stale multipart upload(s)", len(aborted))

    def run_scrub(self) -> None:
        """Download and authenticate a random sample of the replica's objects."""
        ids = [i for i, stores in self.catalog.replicas_of().items() if self.store.name in stores]
        report = verify(ids, self.store, self.keys, sample_percent=self.s3.scrub_percent)
        self.scrub = ScrubReport(at=time.time(), checked=len(report.ok) + len(report.bad),
                                 bad=[f"{what}: {why}" for what, why in report.bad])
        for what, why in report.bad:
            self.catalog.record_event("error", "scrub", f"{what}: {why}")
        log.log(logging.ERROR if report.bad else logging.INFO, "scrub: %d checked, %d bad",
                self.scrub.checked, len(report.bad))

    def schedule(self) -> list[Periodic]:
        s3 = self.s3
        return [Periodic("snapshot-debounced", 10, self.snapshot_if_dirty),
                Periodic("snapshot", s3.snapshot_minutes * 60, self.upload_snapshot),
                Periodic("reconcile", s3.reconcile_minutes * 60, self.scheduled_reconcile),
                Periodic("abort-stale", max(3600.0, s3.stale_upload_hours * 900), self.abort_stale),
                Periodic("scrub", s3.scrub_days * 86400, self.run_scrub)]

    def close(self) -> None:
        with self._lock:
            dirty = self._dirty_since is not None
        if dirty:
            self.upload_snapshot()
