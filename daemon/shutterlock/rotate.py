"""Key rotation: a new master key for new objects, every old object re-encrypted under it, then the old
key, its objects and its envelope gone from every store.

``key rotate`` (daemon stopped) makes the new key current, with the old one kept as *retired* (see
keystore's commit order). The rotate lane then takes every object once: an object still under a retired
key is read (authenticated), sealed again under the current key into the vault, and swapped for the old
one in the catalog in one transaction; the new object goes to the bucket through the replicate lane.
When none is left and the bucket holds every new object and a catalog snapshot that lists them, the old
objects are deleted from the bucket and the vault, then the retired keys from every copy. Each step is
idempotent, so a crash anywhere only repeats work.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

from shutterlock import keystore
from shutterlock.catalog import Catalog, Job
from shutterlock.config import Config
from shutterlock.engine import JobQueue, Periodic, StageError, WorkerState
from shutterlock.errors import KeyProblem, OperationFailed
from shutterlock.fsutil import atomic_write_bytes
from shutterlock.vault.format import FormatError, Keys, ObjectReader, seal_stream
from shutterlock.vault.local import LocalStore
from shutterlock.vault.s3 import S3Store
from shutterlock.vault.store import ObjectMissing, StoreError

log = logging.getLogger(__name__)

FINISH = "finish"  # the rotate job that deletes what was replaced, once everything else is done
WAIT = 10.0  # seconds the finish waits for the other lanes before it looks again


def begin(config: Config, passphrase: bytes, new_passphrase: bytes) -> int:
    """Make a new master key current (the daemon must be stopped); returns the objects to re-encrypt."""
    paths = config.paths
    if paths.credential(keystore.Credential.MASTER_KEY) is not None:
        raise KeyProblem("the master key comes from a systemd credential: rotating it means replacing that "
                         "credential; use a passphrase credential (LoadCredentialEncrypted=) instead")
    ring = keystore.read_key_ring(paths.key_file)
    if len(ring) > 1:
        raise OperationFailed("a key rotation is already under way; the daemon finishes it in the background "
                              "(`shutterlock status` shows how far it is)")
    envelope = keystore.read_envelope(paths.envelope_file)
    if keystore.unwrap(envelope, passphrase) != ring[0]:
        raise KeyProblem(f"{paths.envelope_file} does not wrap the key in {paths.key_file}")
    new = keystore.new_master_key()
    keys = Keys.from_master(new)
    generation = envelope.generation + 1
    atomic_write_bytes(paths.retired_keys, keystore.seal_retired(keys, ring, generation))
    atomic_write_bytes(keystore.next_envelope(paths), keystore.wrap(new, new_passphrase,
                                                                   generation=generation).to_json())
    keystore.write_key_file(paths.key_file, new, ring)  # the commit point
    keystore.settle_rotation(paths)
    with Catalog(paths.catalog) as catalog:
        return catalog.object_count()


class _PlainStream(io.RawIOBase):
    """An authenticated object's plaintext as a readable stream, to seal it again without a temp copy."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size], self._rest = self._rest[:size], self._rest[size:]
        return size


class RotateStage:
    """The lane that re-encrypts objects sealed under a retired key (idle when no rotation is under way)."""

    name = "rotate"
    workers = 1

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore):
        self.catalog, self.keys, self.vault = catalog, keys, vault
        self.queue = _RotateQueue(catalog, self.name)
        self.reload(config)
        self.bucket: S3Store | None = None
        if keys.retired:
            queued = catalog.enqueue_every_object(self.name)
            catalog.enqueue(self.name, FINISH)
            if queued:
                log.info("key rotation: %d object(s) to look at", queued)

    def reload(self, config: Config) -> str:
        self.config = config
        self.attempts = config.engine.max_attempts
        self.stall_limit = config.engine.stall_seconds
        return ""

    def subject(self, file_id: int, content_id: str) -> str | None:
        return None  # new objects are sealed under the current key already

    def describe(self, job: Job) -> str:
        return "finish the key rotation" if job.subject == FINISH else f"re-encrypt {job.subject[:12]}…"

    def schedule(self) -> list[Periodic]:
        return []

    def close(self) -> None:
        pass

    def _bucket(self) -> S3Store | None:
        if self.config.s3 is not None and self.bucket is None:
            from shutterlock.replicate import open_replica

            self.bucket = open_replica(self.config)
        return self.bucket

    def process(self, job: Job, worker: WorkerState) -> None:
        try:
            if job.subject == FINISH:
                self._finish()
            else:
                self._reencrypt(job.subject, worker)
        except StoreError as error:
            raise StageError(str(error), transient=True, count=False, delay=WAIT) from None  # offline: wait
        except FormatError as error:
            raise StageError(str(error), transient=False) from None

    # ------------------------------------------------------------------ one object

    def _reencrypt(self, old: str, worker: WorkerState) -> None:
        if old not in self.catalog.object_set():
            return  # already swapped (a repeat after a crash), or not the catalog's
        source = self.vault if self.vault.exists(old) else self._bucket()
        if source is None:
            raise StageError(f"object {old[:12]}… is in no store", transient=False)
        with source.open(old) as handle:
            reader = ObjectReader(self.keys, handle, old)
            if reader.keys is self.keys:
                return  # sealed under the current key: nothing to do
            with self.vault.staging() as (staged, out):
                result = seal_stream(self.keys, reader.meta, _PlainStream(reader.chunks()), out,  # type: ignore[arg-type]
                                     reader.chunk_size, progress=worker.tick)
                self.vault.adopt(staged, result.content_id)
        self.catalog.swap_object(old, result.content_id, result.stored_size,
                                 "replicate" if self.config.s3 is not None else None)
        log.info("re-encrypted %s… as %s…", old[:12], result.content_id[:12])

    # ------------------------------------------------------------------ the end

    def _finish(self) -> None:
        done, total = self.catalog.job_progress(self.name, besides=FINISH)
        if done < total:
            raise StageError(f"{total - done} object(s) still to re-encrypt", transient=True, delay=WAIT, count=False)
        failed = self.catalog.jobs_failed(self.name)
        if failed:  # their only key is the old one: it stays until they are readable again (the next start)
            raise StageError(f"{failed} object(s) could not be re-encrypted; the old key is kept for them",
                             transient=True, delay=WAIT * 360, count=False)
        if not self.keys.retired:
            return
        bucket = self._bucket()
        if bucket is not None:
            waiting = self.catalog.objects_without(bucket.name)
            if waiting:
                raise StageError(f"{waiting} re-encrypted object(s) still to upload", transient=True, delay=WAIT,
                                 count=False)
            from shutterlock.replicate import upload_snapshot

            assert self.config.s3 is not None
            problem = upload_snapshot(bucket, self.catalog, self.keys, self.config.s3.snapshots_kept)
            if problem:
                raise StageError(problem, transient=True, delay=WAIT * 6, count=False)
        for old in self.catalog.retired_object_ids():
            if bucket is not None:
                bucket.delete(old)
            self.vault.delete(old)
            self.catalog.forget_retired(old)
        self._sweep(bucket)
        self._retire_keys(bucket)

    def _sweep(self, bucket: S3Store | None) -> None:
        """Objects under a retired key that the catalog does not know (an interrupted run's leftovers) go too;
        one that holds a file the catalog lacks is re-encrypted first."""
        known = self.catalog.object_set()
        paths = set(self.catalog.all_paths())
        for store in (self.vault, *((bucket,) if bucket is not None else ())):
            for object_id in sorted(set(store.list()) - known):
                try:
                    with store.open(object_id) as handle:
                        reader = ObjectReader(self.keys, handle, object_id)
                        if reader.keys is self.keys:
                            continue
                        meta = reader.meta
                except (FormatError, ObjectMissing):
                    continue  # not ours to judge: verify reports it
                if (meta.source, meta.path) not in paths:
                    log.warning("object %s… holds %s/%s, which the catalog lacks: kept", object_id[:12],
                                meta.source, meta.path)
                    continue
                store.delete(object_id)

    def _retire_keys(self, bucket: S3Store | None) -> None:
        """The old keys go: from the vault's and the bucket's copies first, then from the key file."""
        from shutterlock.replicate import RETIRED_NAME

        paths = self.config.paths
        (self.vault.root / RETIRED_NAME).unlink(missing_ok=True)
        if bucket is not None:
            bucket.delete_name(RETIRED_NAME)
        paths.retired_keys.unlink(missing_ok=True)
        current = keystore.read_key_ring(paths.key_file)[0]
        keystore.write_key_file(paths.key_file, current)
        self.catalog.forget_jobs(self.name)
        self.keys = Keys.from_master(current)
        log.info("key rotation finished: the old key and its objects are gone")
        self.catalog.record_event("info", "key rotation", f"finished at {time.strftime('%Y-%m-%d %H:%M')}")


class _RotateQueue(JobQueue):
    """The rotate jobs; the finish among them is not an object waiting."""

    def backlog(self) -> tuple[int, int]:
        return self.catalog.job_backlog(self.kind, due_only=True, besides=FINISH)
