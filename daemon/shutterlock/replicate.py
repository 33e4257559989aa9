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
from typing import Any

from shutterlock.catalog import Catalog, Job
from shutterlock.config import Config
from shutterlock.pipeline import Stage, StageError, WorkerState
from shutterlock.restore import verify
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
    return S3Store.from_config(config.s3, config.paths.credentials_dir)


def publish_envelope(config: Config) -> None:
    """Put the key envelope in the bucket: with the passphrase, it is all a recovery needs."""
    store = open_replica(config)
    store.put_bytes(ENVELOPE_KEY, config.paths.envelope_file.read_bytes())


def snapshot_blob(catalog: Catalog, keys: Keys) -> bytes:
    return seal_blob(keys.catalog, catalog.snapshot_bytes(), CATALOG_LABEL)


class ReplicateStage(Stage):
    kind = "replicate"
    threads = 3

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.config, self.catalog, self.keys, self.vault = config, catalog, keys, vault
        self.store = open_replica(config)
        self._lock = threading.Lock()
        self.online = True
        self.offline_since: float | None = None
        self.error = ""
        self._next_probe = 0.0
        self._probe_wait = OFFLINE_RETRY[0]
        self._dirty_since: float | None = None
        self._envelope_published = False
        self.last_snapshot: float | None = None
        self.scrub: dict[str, Any] = {}
        queued = catalog.enqueue_missing_replicas(self.store.name)
        if queued:
            log.info("%d object(s) queued for the replica", queued)

    # ------------------------------------------------------------------ the lane

    def process(self, job: Job, worker: WorkerState) -> None:
        with self._lock:
            if not self.online and time.monotonic() < self._next_probe:
                raise StageError(self.error, transient=True, delay=self._next_probe - time.monotonic(), count=False)
        try:
            if not self._envelope_published:
                self.store.put_bytes(ENVELOPE_KEY, self.config.paths.envelope_file.read_bytes())
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
        self.catalog.expedite("replicate")

    def describe(self, job: Job) -> str:
        return f"replicate {job.subject[:12]}…"

    def status(self) -> dict[str, Any]:
        waiting, waiting_bytes = self.catalog.job_backlog(self.kind)
        return {"configured": True, "online": self.online, "error": self.error, "offline_since": self.offline_since,
                "waiting": waiting, "waiting_bytes": waiting_bytes, "url": self.config.s3.url if self.config.s3 else "",
                "last_snapshot": self.last_snapshot, "scrub": self.scrub}

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

    def snapshot_if_dirty(self) -> None:
        with self._lock:
            due = self._dirty_since is not None and time.monotonic() - self._dirty_since >= SNAPSHOT_DEBOUNCE
        if due:
            self.upload_snapshot()

    def abort_stale(self) -> None:
        journal = self.catalog.uploads(self.store.name)
        try:
            aborted = self.store.abort_stale_uploads(self.config.s3.stale_upload_hours,
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
        report = verify(ids, self.store, self.keys, sample_percent=self.config.s3.scrub_percent)
        self.scrub = {"at": time.time(), "checked": len(report.ok) + len(report.bad),
                      "bad": [f"{what}: {why}" for what, why in report.bad]}
        for what, why in report.bad:
            self.catalog.record_event("error", "scrub", f"{what}: {why}")
        log.log(logging.ERROR if report.bad else logging.INFO, "scrub: %d checked, %d bad",
                self.scrub["checked"], len(report.bad))

    def schedule(self, scheduler: Any) -> None:
        s3 = self.config.s3

        def every(seconds: float, job: Any, name: str) -> None:
            # Jitter (a tenth of the period, at most an hour) keeps many installations off the same second.
            scheduler.add_job(job, "interval", seconds=seconds, jitter=max(1, int(min(3600, seconds / 10))),
                              id=name, coalesce=True, max_instances=1)

        every(10, self.snapshot_if_dirty, "snapshot-debounced")
        every(s3.snapshot_minutes * 60, self.upload_snapshot, "snapshot")
        every(max(3600.0, s3.stale_upload_hours * 900), self.abort_stale, "abort-stale")
        every(s3.scrub_days * 86400, self.run_scrub, "scrub")

    def close(self) -> None:
        with self._lock:
            dirty = self._dirty_since is not None
        if dirty:
            self.upload_snapshot()
