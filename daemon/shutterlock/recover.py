"""Disaster recovery: a new machine, the passphrase and the bucket (or the vault) bring every original back.

The key envelope and the newest authentic catalog snapshot (the highest generation, whatever
``catalog/latest`` says) come from the bucket. Objects sealed after that snapshot are found by
listing the bucket and reading their (encrypted) metadata, so a lagging snapshot loses nothing;
objects no snapshot lists are named, since only a key holder can have put them there. Each object is
downloaded into a fresh local vault and authenticated whole before it is adopted, so a download cut
short is never kept; an interrupted recovery is simply run again and continues where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from shutterlock import keystore
from shutterlock.catalog import SNAPSHOT_GENERATION, Catalog, CatalogError, install_catalog, snapshot_facts
from shutterlock.config import Choices, Config, Paths, save, with_overrides
from shutterlock.errors import OperationFailed
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.provenance import IdentityError, identity
from shutterlock.replicate import (
    RETIRED_NAME,
    SNAPSHOT_DUE,
    VAULT_GENERATION,
    Snapshot,
    bucket_snapshots,
)
from shutterlock.restore import Report, plan, restore
from shutterlock.vault.format import FormatError, Keys, ObjectReader, authenticate
from shutterlock.vault.local import VAULT_MARKER, LocalStore, open_local_vault
from shutterlock.vault.s3 import ENVELOPE_KEY, S3Store
from shutterlock.vault.store import NamedBlobs, ObjectMissing, StoreError

log = logging.getLogger(__name__)

RECOVERING = "recovering_from"  # catalog setting present while a recovery is unfinished


def recover(config: Config, s3_url: str, s3_endpoint: str | None, passphrase: Callable[[], bytes], dest: Path,
            progress: Callable[[int], None] | None = None) -> Report:
    config = with_overrides(config, Choices(s3_url=s3_url, s3_endpoint=s3_endpoint))
    assert config.s3 is not None
    paths = config.paths
    resuming = False
    if paths.catalog.exists():
        with Catalog(paths.catalog) as existing:
            resuming = existing.get_setting(RECOVERING) == s3_url
            if not resuming and existing.latest_versions():
                raise OperationFailed(f"{paths.catalog} already holds a catalog: recover is for an empty machine "
                                      "(to fetch originals from the bucket here, use `restore --from s3`)")
    store = S3Store.from_config(config.s3, paths)
    try:
        store.check()
        envelope_bytes = store.get_bytes(ENVELOPE_KEY)
    except StoreError as error:
        raise OperationFailed(f"cannot read the bucket: {error}") from None
    keys = _adopt_keys(paths, envelope_bytes, f"{s3_url}/{ENVELOPE_KEY}", passphrase, store)
    if not paths.config_file.exists():
        save(config)

    report = Report()
    try:
        identity.restore(paths.state_dir, keys.catalog, store.get_bytes(identity.SEALED_NAME),
                         f"{s3_url}/{identity.SEALED_NAME}")
        log.info("signing identity restored")
    except ObjectMissing:
        log.info("the bucket holds no signing identity; a new one is made when the first derivative is signed")
    except IdentityError as error:  # the originals matter more; a new identity can sign from now on
        log.warning("the signing identity in the bucket is unusable (%s); a new one will be made", error)
    except StoreError as error:
        raise OperationFailed(f"cannot read the bucket: {error}") from None
    try:
        snapshots, refused = bucket_snapshots(store, keys)
        in_bucket = set(store.list())
    except StoreError as error:
        raise OperationFailed(f"cannot read the bucket: {error}") from None
    for name in refused:
        report.notes.append(f"warning: {name} in the bucket is not an authentic catalog snapshot; ignored")
    listed: set[str] = set()
    for snapshot in snapshots:
        try:
            listed |= snapshot_facts(snapshot.blob.data).objects
        except CatalogError:
            continue
    if not resuming:
        _install_snapshot(paths.catalog, snapshots[0] if snapshots else None, report, s3_url, SNAPSHOT_GENERATION)
    with Catalog(paths.catalog) as catalog:
        catalog.set_setting(RECOVERING, s3_url)
        vault = open_local_vault(config.vault.path, paths.envelope_file)
        catalog.forget_replicas("local")
        known = set(catalog.object_ids())
        for content_id in sorted(in_bucket):
            catalog.add_replica(content_id, store.name)
            try:
                _fetch(store, vault, keys, catalog, content_id, known)
            except (StoreError, FormatError) as error:
                report.bad.append((f"object {content_id[:12]}…", f"not recovered: {error}"))
        unlisted = sorted(in_bucket - listed)
        if unlisted and snapshots:
            report.notes.append(f"warning: {len(unlisted)} object(s) in the bucket are listed by no catalog snapshot "
                                "(sealed after the last one, or put there by someone holding the key); recovered "
                                "under the names their own metadata gives: " +
                                ", ".join(f"{c[:12]}…" for c in unlisted[:10]) + (" …" if len(unlisted) > 10 else ""))
        report = _restore_every_original(catalog, vault, keys, dest, report, progress,
                                         {c for c in in_bucket if vault.exists(c)}, in_bucket, "the bucket")
        if not report.bad:
            catalog.set_setting(RECOVERING, "")
        else:
            report.notes.append("run the same `shutterlock recover` again to continue")
        return report


def _restore_every_original(catalog: Catalog, vault: LocalStore, keys: Keys, dest: Path, report: Report,
                            progress: Callable[[int], None] | None, restorable: set[str], held: set[str],
                            where: str) -> Report:
    """Restore the newest version of every original whose object is ``restorable`` from the vault, name each
    original whose object ``where`` (the store recovered from) does not hold, and mark the catalog as knowing
    more than any snapshot."""
    versions = catalog.latest_versions()
    planned, report = plan([v for v in versions if v.content_id in restorable],
                           by_source=len({v.source for v in versions}) > 1, report=report)
    restore(planned, vault, keys, dest, report=report, progress=progress)
    for content_id in sorted({v.content_id for v in versions} - held):
        holders = ", ".join(f"{v.source}/{v.relpath}" for v in versions if v.content_id == content_id)
        report.bad.append((holders, f"object {content_id[:12]}… is not in {where}"))
    catalog.set_setting(SNAPSHOT_DUE, "1")
    return report


def _adopt_keys(paths: Paths, envelope_bytes: bytes, where: str, passphrase: Callable[[], bytes],
                store: NamedBlobs) -> Keys:
    """Open the envelope with the passphrase and make its keys this machine's (envelope, retired keys of a
    rotation under way, key file), the retired keys read from the store the envelope came from."""
    master = keystore.unwrap(keystore.Envelope.from_json(envelope_bytes, where), passphrase())
    retired_blob = store.get_bytes_if_any(RETIRED_NAME)  # a key rotation under way: the old keys, sealed
    retired = keystore.open_retired(Keys.from_master(master), retired_blob) if retired_blob else ()
    ensure_dir(paths.state_dir)
    atomic_write_bytes(paths.envelope_file, envelope_bytes)
    if retired_blob is not None:
        atomic_write_bytes(paths.retired_keys, retired_blob)
    keystore.write_key_file(paths.key_file, master, retired)
    return Keys.from_master(master, retired)


def _install_snapshot(target: Path, snapshot: Snapshot | None, report: Report, recovering: str,
                      counter: str) -> None:
    """The newest authentic snapshot becomes the catalog, marked as being recovered and with its generation
    remembered under the store's own ``counter`` (both before it gets its name, so a crash never leaves a
    catalog that refuses the rerun); or none: the catalog is rebuilt from the objects' own metadata."""
    if snapshot is None:
        report.notes.append("warning: the bucket holds no authentic catalog snapshot; the catalog is rebuilt "
                            "from the objects (every path an object was sealed under first)")
        return
    blob = snapshot.blob
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(blob.created_at)) if blob.created_at else "an unknown date"
    report.notes.append(f"catalog snapshot: generation {blob.generation} of {when}")
    install_catalog(target, blob.data, {counter: str(blob.generation), RECOVERING: recovering})


def _fetch(store: S3Store, vault: LocalStore, keys: Keys, catalog: Catalog, content_id: str, known: set[str]) -> None:
    """Have one object in the vault and in the catalog: downloaded and authenticated whole before it is
    adopted (a download cut short is never kept), registered if the snapshot predates it."""
    if not vault.exists(content_id):
        with vault.staging() as (staged, out), store.open(content_id) as body:
            while chunk := body.read(1 << 20):
                out.write(chunk)
            out.flush()
            with open(staged, "rb") as handle:
                authenticate(keys, handle, content_id)
            vault.adopt(staged, content_id)
    if content_id not in known:
        with vault.open(content_id) as handle:
            meta = ObjectReader(keys, handle, content_id).meta
        catalog.adopt_recovered(content_id, meta, staged_size=vault.size(content_id))
        known.add(content_id)


def recover_from_vault(config: Config, vault_dir: Path, passphrase: Callable[[], bytes], dest: Path,
                       progress: Callable[[int], None] | None = None) -> Report:
    """A new machine with the vault (an external drive) and the passphrase, no bucket: the vault becomes this
    machine's vault where it is (nothing is copied), the newest catalog snapshot in it becomes the catalog,
    objects sealed after that snapshot are added from their own metadata, and every original is restored."""
    vault = LocalStore(vault_dir)
    if not vault.present():
        raise OperationFailed(f"{vault_dir} is not a Shutterlock vault (no {VAULT_MARKER})")
    config = with_overrides(config, Choices(vault=vault_dir))
    paths = config.paths
    if paths.catalog.exists():
        with Catalog(paths.catalog) as existing:
            if existing.latest_versions():
                raise OperationFailed(f"{paths.catalog} already holds a catalog: recover is for an empty machine "
                                      "(to restore from this vault, use `restore`)")
    try:
        envelope_bytes = vault.envelope_path.read_bytes()
    except OSError as error:
        raise OperationFailed(f"{vault.envelope_path}: cannot read the key envelope: {error.strerror}") from None
    keys = _adopt_keys(paths, envelope_bytes, str(vault.envelope_path), passphrase, vault)
    save(config)

    report = Report()
    sealed_identity = vault.get_bytes_if_any(identity.SEALED_NAME)
    if sealed_identity is not None:
        try:
            identity.restore(paths.state_dir, keys.catalog, sealed_identity, str(vault_dir / identity.SEALED_NAME))
        except IdentityError as error:
            log.warning("the signing identity in the vault is unusable (%s); a new one will be made", error)
    snapshots, refused = bucket_snapshots(vault, keys)
    for name in refused:
        report.notes.append(f"warning: {name} in the vault is not an authentic catalog snapshot; ignored")
    _install_snapshot(paths.catalog, snapshots[0] if snapshots else None, report, str(vault_dir),
                      VAULT_GENERATION)
    listed: set[str] = set()
    for snapshot in snapshots:
        with contextlib.suppress(CatalogError):
            listed |= snapshot_facts(snapshot.blob.data).objects
    with Catalog(paths.catalog) as catalog:
        catalog.set_setting(RECOVERING, "")
        in_vault = set(vault.list())
        known = set(catalog.object_ids())
        for content_id in sorted(in_vault - known):
            try:
                with vault.open(content_id) as handle:
                    meta = ObjectReader(keys, handle, content_id).meta
            except FormatError as error:
                report.bad.append((f"object {content_id[:12]}…", f"not recovered: {error}"))
                continue
            catalog.adopt_recovered(content_id, meta, staged_size=vault.size(content_id))
        unlisted = sorted(in_vault - listed)
        if unlisted and snapshots:
            report.notes.append(f"warning: {len(unlisted)} object(s) in the vault are listed by no catalog snapshot "
                                "(sealed after the last one, or put there by someone holding the key); recovered "
                                "under the names their own metadata gives")
        report = _restore_every_original(catalog, vault, keys, dest, report, progress, in_vault, in_vault,
                                         "the vault")
        return report
