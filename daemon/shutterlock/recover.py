"""Disaster recovery: a new machine, the passphrase and the bucket bring every original back.

The key envelope and the newest catalog snapshot come from the bucket. Objects sealed after that
snapshot are found by listing the bucket and reading their (encrypted) metadata, so a lagging
snapshot loses nothing. Objects are downloaded once, into a fresh local vault, and restored from
there; every one is authenticated on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from shutterlock import keystore
from shutterlock.catalog import Catalog
from shutterlock.config import Choices, Config, save, with_overrides
from shutterlock.errors import OperationFailed
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.provenance import IdentityError, identity
from shutterlock.replicate import CATALOG_LABEL
from shutterlock.restore import Report, restore
from shutterlock.vault.format import FormatError, Keys, ObjectReader, open_blob
from shutterlock.vault.local import LocalStore, open_local_vault
from shutterlock.vault.s3 import CATALOG_KEY, ENVELOPE_KEY, S3Store
from shutterlock.vault.store import ObjectMissing, StoreError

log = logging.getLogger(__name__)


def recover(config: Config, s3_url: str, s3_endpoint: str | None, passphrase: Callable[[], bytes], dest: Path,
            progress: Callable[[int], None] | None = None) -> Report:
    config = with_overrides(config, Choices(s3_url=s3_url, s3_endpoint=s3_endpoint))
    paths = config.paths
    if paths.catalog.exists():
        with Catalog(paths.catalog) as existing:
            occupied = bool(existing.latest_versions())
    else:
        occupied = False
    if occupied:
        raise OperationFailed(f"{paths.catalog} already holds a catalog: recover is for an empty machine "
                                  "(to fetch originals from the bucket here, use `restore --from s3`)")
    store = S3Store.from_config(config.s3, paths)
    try:
        store.check()
        envelope_bytes = store.get_bytes(ENVELOPE_KEY)
    except StoreError as error:
        raise OperationFailed(f"cannot read the bucket: {error}") from None
    envelope = keystore.Envelope.from_json(envelope_bytes, f"{s3_url}/{ENVELOPE_KEY}")
    master = keystore.unwrap(envelope, passphrase())
    keys = Keys.from_master(master)

    ensure_dir(paths.state_dir)
    atomic_write_bytes(paths.envelope_file, envelope_bytes)
    keystore.write_key_file(paths.key_file, master)
    if not paths.config_file.exists():
        save(config)

    try:
        identity.restore(paths.state_dir, keys.catalog, store.get_bytes(identity.SEALED_NAME),
                         f"{s3_url}/{identity.SEALED_NAME}")
        log.info("signing identity restored")
    except ObjectMissing:
        log.info("the bucket holds no signing identity; a new one is made when the first derivative is signed")
    except IdentityError as error:  # the originals matter more; a new identity can sign from now on
        log.warning("the signing identity in the bucket is unusable (%s); a new one will be made", error)
    try:
        snapshot = open_blob(keys.catalog, store.get_bytes(CATALOG_KEY), CATALOG_LABEL)
        atomic_write_bytes(paths.catalog, snapshot)
        log.info("catalog snapshot restored")
    except ObjectMissing:
        log.warning("the bucket holds no catalog snapshot; rebuilding the catalog from the objects")
    except FormatError as error:
        log.warning("the catalog snapshot is unusable (%s); rebuilding it from the objects", error)
    with Catalog(paths.catalog) as catalog:
        vault = open_local_vault(config.vault.path, paths.envelope_file)
        in_bucket = set(store.list())
        catalog.forget_replicas("local")
        for content_id in sorted(in_bucket):
            catalog.add_replica(content_id, store.name)
            if not vault.exists(content_id):
                _download(store, vault, keys, catalog, content_id)
        versions = catalog.latest_versions()
        missing = sorted({v.content_id for v in versions} - in_bucket)
        report = restore([v for v in versions if v.content_id in in_bucket], vault, keys, dest,
                         by_source=len({v.source for v in versions}) > 1, progress=progress)
        for content_id in missing:
            holders = ", ".join(f"{v.source}/{v.relpath}" for v in versions if v.content_id == content_id)
            report.bad.append((holders, f"object {content_id[:12]}… is not in the bucket"))
        return report


def _download(store: S3Store, vault: LocalStore, keys: Keys, catalog: Catalog, content_id: str) -> None:
    """Fetch one object into the vault; register it in the catalog if the snapshot predates it."""
    with vault.staging() as (staged, out), store.open(content_id) as body:
        while chunk := body.read(1 << 20):
            out.write(chunk)
        out.flush()
        with open(staged, "rb") as handle:
            try:
                meta = ObjectReader(keys, handle, content_id).meta
            except FormatError as error:
                log.error("object %s… in the bucket is damaged: %s", content_id[:12], error)
                return
        vault.adopt(staged, content_id)
    catalog.adopt_recovered(content_id, meta, staged_size=vault.size(content_id))
