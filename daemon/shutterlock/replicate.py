"""The replicate lane and everything that keeps the bucket sufficient on its own.

Besides copying each sealed object, the lane keeps the key envelope and an encrypted catalog
snapshot in the bucket, tracks whether the bucket is reachable (an outage only grows the queue;
it drains by itself when the bucket returns), aborts stale multipart uploads and runs the
scheduled scrub.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from shutterlock.catalog import Catalog, Job
from shutterlock.config import Config
from shutterlock.engine import JobQueue, Periodic, StageError, WorkerState
from shutterlock.provenance.identity import SEALED_NAME as SEALED_IDENTITY
from shutterlock.restore import verify
from shutterlock.status import ReplicaStatus, ScrubReport
from shutterlock.vault.format import Keys, seal_blob
from shutterlock.vault.local import LocalStore
from shutterlock.vault.s3 import CATALOG_KEY, ENVELOPE_KEY, OfflineError, S3Store
from shutterlock.vault.store import StoreError

log = logging.getLogger(__name__)

CATALOG_LABEL = b"catalog"
OFFLINE_RETRY = (5.0, 60.0)  # first and longest wait between probes of an unreachable bucket
SNAPSHOT_DEBOUNCE = 20.0


def open_replica(config: Config) -> S3Store:
    if config.s3 is None:
        raise StoreError("no [s3] replica is configured", transient=False)
    return S3Store.from_config(config.s3, config.paths)


def publish_envelope(store: S3Store, envelope_file: Path, vault_root: Path) -> None:
    """Put the key envelope in the bucket: with the passphrase, it is all a recovery needs. The sealed
    signing identity goes with it when there is one, so a recovered machine signs as this one did."""
    store.put_bytes(ENVELOPE_KEY, envelope_file.read_bytes())
    publish_signing_identity(store, vault_root)


def publish_signing_identity(store: S3Store, vault_root: Path) -> bool:
    """Copy the sealed signing identity from the vault to the bucket; False while there is none yet."""
    sealed = vault_root / SEALED_IDENTITY
    if not sealed.exists():
        return False
    store.put_bytes(SEALED_IDENTITY, sealed.read_bytes())
    return True


def snapshot_blob(catalog: Catalog, keys: Keys) -> bytes:
    return seal_blob(keys.catalog, catalog.snapshot_bytes(), CATALOG_LABEL)


class ReplicateStage:
    """The S3 lane: one job per sealed object; an outage only grows the queue."""

    name = "replicate"
    workers = 3

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.catalog, self.keys, self.vault = catalog, keys, vault
        self.queue = JobQueue(catalog, self.name)
        self._lock = threading.Lock()
        self.online = True
        self.offline_since: float | None = None
        self.error = ""
        self._next_probe = 0.0
        self._probe_wait = OFFLINE_RETRY[0]
        self._dirty_since: float | None = None
        self._envelope_published = False
        self._identity_published = False  # the derive lane may create it after this lane started
        self.last_snapshot: float | None = None
        self.scrub: ScrubReport | None = None
        self._use(config, open_replica(config))

    def _use(self, config: Config, store: S3Store) -> None:
        assert config.s3 is not None
        self.config, self.s3, self.store = config, config.s3, store
        self.attempts = config.s3.max_attempts
        self.stall_limit = config.engine.stall_seconds
        self._envelope_published = self._identity_published = False
        queued = self.catalog.enqueue_missing_replicas(self.name, store.name)
        if queued:
            log.info("%d object(s) queued for the replica", queued)

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
            if not self._envelope_published:
                publish_envelope(self.store, self.config.paths.envelope_file, self.vault.root)
                self._envelope_published = True
            path = self.vault.path_of(job.subject)
            if not path.exists():
                raise StageError(f"object {job.subject[:12]}… is not in the local vault", transient=False)
            self.store.put_file(job.subject, path, journal=self.catalog)
            worker.tick()
        except StoreError as error:
            self._went_wrong(error)
            if isinstance(error, OfflineError) or not error.transient:
                # Configuration or outage: keep the job, nothing is lost; probe again later.
                raise StageError(str(error), transient=True, delay=self._probe_wait, count=False) from None
            raise StageError(str(error), transient=True) from None
        self.catalog.add_replica(job.subject, self.store.name)
        self._back_online()
        with self._lock:
            self._dirty_since = self._dirty_since or time.monotonic()

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
        return f"upload {job.subject[:12]}…"

    def status(self) -> ReplicaStatus:
        waiting, waiting_bytes = self.catalog.job_backlog(self.name)
        return ReplicaStatus(configured=True, url=self.s3.url, online=self.online, error=self.error,
                             offline_since=self.offline_since, waiting=waiting, waiting_bytes=waiting_bytes,
                             failed=self.catalog.jobs_failed(self.name), last_snapshot=self.last_snapshot,
                             scrub=self.scrub)

    # ------------------------------------------------------------------ snapshots and housekeeping

    def upload_snapshot(self) -> None:
        try:
            self.store.put_bytes(CATALOG_KEY, snapshot_blob(self.catalog, self.keys))
        except StoreError as error:
            self._went_wrong(error)
            log.warning("catalog snapshot not uploaded: %s", error)
            return
        self.last_snapshot = time.time()
        with self._lock:
            self._dirty_since = None
        log.info("catalog snapshot uploaded")
        if not self._identity_published:
            try:
                self._identity_published = publish_signing_identity(self.store, self.vault.root)
            except StoreError as error:
                log.warning("signing identity not uploaded: %s", error)

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
                Periodic("abort-stale", max(3600.0, s3.stale_upload_hours * 900), self.abort_stale),
                Periodic("scrub", s3.scrub_days * 86400, self.run_scrub)]

    def close(self) -> None:
        with self._lock:
            dirty = self._dirty_since is not None
        if dirty:
            self.upload_snapshot()
