"""The façade: every user-facing operation, called by the CLI, the daemon and the tray.

Nothing here parses arguments or prints; it takes plain values and returns plain results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from shutterlock import keys as keyring
from shutterlock import status as st
from shutterlock.catalog import Catalog, FileRow
from shutterlock.config import Config, ConfigError, parse, to_toml_dict, with_overrides
from shutterlock.control import ControlClient, DaemonNotRunning
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.pipeline import Engine, Stage
from shutterlock.restore import Report, matches, restore, verify
from shutterlock.vault.format import Keys
from shutterlock.vault.local import LocalStore
from shutterlock.vault.store import Store, StoreError

log = logging.getLogger(__name__)


class OperationFailed(Exception):
    """The operation could not be carried out; exit code 1."""


@dataclass(frozen=True)
class InitResult:
    config_file: Path
    created_config: bool
    created_key: bool


def write_config(config: Config) -> None:
    atomic_write_bytes(config.paths.config_file, tomli_w.dumps(to_toml_dict(config)).encode(), mode=0o600)


def init(config: Config, passphrase: Callable[[], bytes], *, sources: list[Path] | None = None,
         vault: Path | None = None, outbox: Path | None = None, s3_url: str | None = None,
         s3_endpoint: str | None = None) -> InitResult:
    """Write the config (keeping an existing one) and create the key envelope if there is none."""
    paths = config.paths
    existed = paths.config_file.exists()
    config = with_overrides(config, sources=sources, vault=vault, outbox=outbox, s3_url=s3_url,
                            s3_endpoint=s3_endpoint)
    parse(to_toml_dict(config), paths.config_file, paths)  # the flags must make a valid config too
    ensure_dir(paths.state_dir)
    created_key = False
    if not paths.key_file.exists():
        if paths.envelope_file.exists():
            master = keyring.unwrap(keyring.read_envelope(paths.envelope_file), passphrase())
        else:
            master = keyring.new_master_key()
            keyring.write_envelope(paths.envelope_file, keyring.wrap(master, passphrase()))
            created_key = True
        keyring.write_key_file(paths.key_file, master)
    try:
        open_vault(config)
    except StoreError as error:
        raise OperationFailed(str(error)) from None
    if not existed or any(v is not None for v in (sources, vault, outbox, s3_url, s3_endpoint)):
        write_config(config)
    for source in config.sources:
        ensure_dir(source.path, 0o755)
    return InitResult(paths.config_file, not existed, created_key)


def change_passphrase(config: Config, old: bytes, new: bytes) -> None:
    """Re-wrap the master key; no object is re-encrypted."""
    envelope_file = config.paths.envelope_file
    master = keyring.unwrap(keyring.read_envelope(envelope_file), old)
    data = keyring.wrap(master, new).to_json()
    atomic_write_bytes(envelope_file, data)
    vault = LocalStore(config.vault.path)
    if vault.root.is_dir():
        atomic_write_bytes(vault.envelope_path, data)


def load_keys(config: Config) -> Keys:
    paths = config.paths
    return Keys.from_master(keyring.load_master_key(paths.key_file, paths.envelope_file, paths.credentials_dir))


def open_catalog(config: Config) -> Catalog:
    return Catalog(config.paths.catalog)


def open_vault(config: Config) -> LocalStore:
    """The local vault, ready for writing, with a copy of the key envelope (vault + passphrase suffice)."""
    vault = LocalStore(config.vault.path)
    vault.prepare()
    if not vault.envelope_path.exists() and config.paths.envelope_file.exists():
        try:
            atomic_write_bytes(vault.envelope_path, config.paths.envelope_file.read_bytes())
        except OSError as error:
            raise StoreError(f"cannot write the key envelope into the vault: {error.strerror}") from None
    return vault


def build_stages(config: Config, catalog: Catalog, keys: Keys, vault: LocalStore) -> tuple[
        list[Stage], Callable[[FileRow, str, int], list[tuple[str, str, int]]]]:
    """The later stages this config asks for, and which jobs a freshly sealed file needs."""
    from shutterlock.stages import follow_up_jobs, make_stages

    stages = make_stages(config, catalog, keys, vault)
    return stages, lambda file, content_id, size: follow_up_jobs(stages, file, content_id, size)


def make_engine(config: Config, catalog: Catalog, keys: Keys, vault: LocalStore) -> Engine:
    stages, follow_up = build_stages(config, catalog, keys, vault)
    return Engine(config, catalog, keys, vault, stages, follow_up)


def run_once(config: Config) -> tuple[int, dict[str, Any]]:
    """Scan, process everything due, exit: (number of failed items, final status)."""
    keys = load_keys(config)
    try:
        vault = open_vault(config)
    except StoreError as error:
        raise OperationFailed(str(error)) from None
    catalog = open_catalog(config)
    try:
        engine = make_engine(config, catalog, keys, vault)
        for source in config.sources:
            if not source.path.is_dir():
                raise OperationFailed(f"source {source.name}: not a directory: {source.path}")
        engine.scan()
        engine.run_until_idle()
        for stage in engine.stages:
            stage.close()
        status = offline_status(config, catalog)
        unfinished = status["backlog"]["items"] + catalog.jobs_retrying()
        return engine.failures + unfinished, status
    finally:
        catalog.close()


def offline_status(config: Config, catalog: Catalog) -> dict[str, Any]:
    """The status document built from the catalog alone (no daemon running)."""
    counts = catalog.counts()
    replica_waiting = catalog.job_backlog("replicate")
    held, held_reason = catalog.held_derivatives()
    status: dict[str, Any] = {
        "running": False,
        "paused": catalog.get_setting("paused") == "1",
        **counts,
        "pending": 0,
        "current": [],
        "errors": catalog.recent_events(10),
        "failed_files": catalog.failed_files(10),
        "sources": [{"name": s.name, "path": str(s.path), "watch_mode": s.watch_mode, "warning": ""}
                    for s in config.sources],
        "replica": {"configured": config.s3 is not None, "online": True,
                    "waiting": replica_waiting[0], "waiting_bytes": replica_waiting[1]},
        "cloak": {"strength": config.cloak.strength, "held": held,
                  "error": f"cloak unavailable, {held} derivative(s) held back: {held_reason}" if held else ""},
        "vault": str(config.vault.path),
        "outbox": str(config.derive.outbox),
        "config_file": str(config.paths.config_file),
    }
    return finish_status(status)


def finish_status(status: dict[str, Any]) -> dict[str, Any]:
    status["state"] = st.derive_state(status)
    status["summary"] = st.summary(status)
    return status


def status(config: Config) -> dict[str, Any]:
    """Ask the running daemon; fall back to reading the catalog."""
    try:
        return ControlClient(config.paths.socket).call("status")
    except DaemonNotRunning:
        pass
    if not config.paths.catalog.exists():
        raise OperationFailed(f"no catalog at {config.paths.catalog}: run `shutterlock init` first")
    catalog = open_catalog(config)
    try:
        return offline_status(config, catalog)
    finally:
        catalog.close()


def control(config: Config, op: str) -> dict[str, Any]:
    return ControlClient(config.paths.socket).call(op)


def set_paused_offline(config: Config, paused: bool) -> None:
    catalog = open_catalog(config)
    try:
        catalog.set_setting("paused", "1" if paused else "0")
    finally:
        catalog.close()


def list_originals(config: Config) -> list[dict[str, Any]]:
    catalog = open_catalog(config)
    try:
        replicas = catalog.replicas_of()
        derivatives = {(d["source"], d["relpath"]): d for d in catalog.derivatives()}

        def derivative(source: str, relpath: str) -> dict[str, Any] | None:
            made = derivatives.get((source, relpath))
            if made is None:
                return None
            return {"status": made["status"], "output": made["output"], "reason": made["reason"],
                    "cloaked": bool(made["cloaked"]), "strength": made["strength"]}

        return [{"source": v.source, "path": v.relpath, "size": v.size, "sealed_at": v.sealed_at,
                 "content_id": v.content_id, "replicas": replicas.get(v.content_id, []),
                 "derivative": derivative(v.source, v.relpath)}
                for v in catalog.latest_versions()]
    finally:
        catalog.close()


def select_store(config: Config, where: str, keys: Keys) -> Store:
    if where == "local":
        return LocalStore(config.vault.path)
    if config.s3 is None:
        raise ConfigError(f"{config.paths.config_file.name}: [s3]: not configured; cannot use --from s3")
    from shutterlock.vault.s3 import S3Store

    store = S3Store.from_config(config.s3, config.paths.credentials_dir)
    try:
        store.check()
    except StoreError as error:
        raise OperationFailed(str(error)) from None
    return store


def restore_originals(config: Config, patterns: list[str], dest: Path, where: str = "local",
                      progress: Callable[[int], None] | None = None,
                      on_total: Callable[[int], None] | None = None) -> Report:
    keys = load_keys(config)
    catalog = open_catalog(config)
    try:
        versions = [v for v in catalog.latest_versions() if matches(v, patterns)]
    finally:
        catalog.close()
    if patterns and not versions:
        raise OperationFailed(f"nothing in the catalog matches {' '.join(patterns)}")
    if on_total is not None:
        on_total(sum(v.size for v in versions))
    by_source = len({v.source for v in versions}) > 1 or len(config.sources) > 1
    ensure_dir(dest, 0o755)
    return restore(versions, select_store(config, where, keys), keys, dest, by_source=by_source,
                   progress=progress)


def verify_objects(config: Config, *, remote: bool = False, sample: float | None = None,
                   progress: Callable[[int], None] | None = None,
                   on_total: Callable[[int], None] | None = None) -> Report:
    keys = load_keys(config)
    catalog = open_catalog(config)
    try:
        ids = catalog.object_ids()
        referenced: dict[str, list[str]] = {}
        for version in catalog.latest_versions():
            referenced.setdefault(version.content_id, []).append(f"{version.source}/{version.relpath}")
    finally:
        catalog.close()
    if on_total is not None:
        on_total(len(ids) if sample is None else max(1, round(len(ids) * sample / 100)) if ids else 0)
    store = select_store(config, "s3" if remote else "local", keys)
    return verify(ids, store, keys, sample_percent=sample, referenced_by=referenced, progress=progress)
