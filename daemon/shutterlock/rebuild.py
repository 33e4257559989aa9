"""Rebuilding a lost or damaged catalog from what the vault and the bucket hold.

Every object carries its source, path, size and dates (encrypted), so the objects alone give back every
file; the bucket's newest authentic catalog snapshot adds what only the catalog knew (older versions'
dates, every path that shares an object, derivatives). The new catalog continues the snapshot's
lineage (its identity and generation), so the bucket's history is extended, never replaced by an
emptier catalog. The old file is kept beside the new one, renamed, never deleted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from shutterlock.catalog import SNAPSHOT_GENERATION, Catalog, install_catalog
from shutterlock.fsutil import temp_path_in
from shutterlock.recover import RECOVERING
from shutterlock.replicate import SNAPSHOT_DUE, bucket_snapshots
from shutterlock.vault.format import FormatError, Keys, ObjectReader
from shutterlock.vault.local import LocalStore
from shutterlock.vault.s3 import S3Store
from shutterlock.vault.store import Store, StoreError

log = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    paths: int = 0
    objects: int = 0
    notes: list[str] = field(default_factory=list)
    kept: Path | None = None  # where the old catalog file went


def rebuild(catalog_path: Path, vault: LocalStore, bucket: S3Store | None, keys: Keys, *, from_bucket: bool) -> Rebuilt:
    """Build a catalog from the newest snapshot (``from_bucket``) and every object's own metadata."""
    result = Rebuilt()
    base, generation = b"", 0
    if bucket is not None:
        snapshots, refused = bucket_snapshots(bucket, keys)
        result.notes += [f"warning: {name} in the bucket is not an authentic catalog snapshot; ignored"
                         for name in refused]
        if from_bucket and snapshots:
            newest = snapshots[0].blob
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest.created_at)) if newest.created_at else "?"
            result.notes.append(f"from catalog snapshot generation {newest.generation} of {when}")
            base = newest.data
            generation = newest.generation
        elif from_bucket:
            result.notes.append("the bucket holds no authentic catalog snapshot: rebuilt from the objects alone")
    work = temp_path_in(catalog_path.parent)
    try:
        if base:
            install_catalog(work, base, {SNAPSHOT_GENERATION: str(generation), RECOVERING: ""})
        with Catalog(work) as catalog:
            known = set(catalog.object_ids())
            local = set(vault.list())
            remote = set(bucket.list()) if bucket is not None else set()
            for store, ids in ((vault, local), *(((bucket, remote - local),) if bucket is not None else ())):
                for content_id in sorted(ids - known):
                    _adopt(catalog, store, keys, content_id, result)
                    known.add(content_id)
            catalog.forget_replicas(vault.name)
            for content_id in sorted(local):
                catalog.add_replica(content_id, vault.name)
            if bucket is not None:
                catalog.forget_replicas(bucket.name)
                for content_id in sorted(remote):
                    catalog.add_replica(content_id, bucket.name)
            catalog.identity()
            catalog.set_setting(SNAPSHOT_DUE, "1")
            catalog.checkpoint()
            result.paths, result.objects = len(catalog.all_paths()), len(known)
            missing = known - local - remote
            if missing:
                result.notes.append(f"warning: {len(missing)} object(s) the snapshot lists are in neither the vault "
                                    "nor the bucket")
        result.kept = _set_aside(catalog_path)
        install_catalog(catalog_path, work.read_bytes(), {})
    finally:
        for leftover in (work, work.with_name(work.name + "-wal"), work.with_name(work.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return result


def _adopt(catalog: Catalog, store: Store, keys: Keys, content_id: str, result: Rebuilt) -> None:
    """Register one object from its own metadata (the first path it was sealed under)."""
    try:
        with store.open(content_id) as handle:
            meta = ObjectReader(keys, handle, content_id).meta
    except (FormatError, StoreError) as error:
        result.notes.append(f"warning: object {content_id[:12]}… in {store.name} is unreadable ({error}); skipped")
        return
    size = store.size(content_id) if isinstance(store, LocalStore) else meta.size
    catalog.adopt_recovered(content_id, meta, staged_size=size, holder=store.name)


def _set_aside(path: Path) -> Path | None:
    """Rename the old catalog (and its journal files) out of the way, keeping it for inspection."""
    if not path.exists():
        return None
    kept = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        old = path.with_name(path.name + suffix)
        if old.exists():
            os.replace(old, kept.with_name(kept.name + suffix))
    log.info("the old catalog is kept as %s", kept)
    return kept
