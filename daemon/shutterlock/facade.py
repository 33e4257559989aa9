"""The façade: every user-facing operation, called by the CLI, the daemon and the control socket.

Nothing here parses arguments or prints; it takes plain values and returns plain results, and raises
the errors of ``errors.py``. It is also where the engine is put together (the lanes a config asks for)
and where the one status document is produced, for a running daemon and for the offline reader alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from shutterlock import keystore
from shutterlock.catalog import Catalog, CatalogError, Version
from shutterlock.config import Choices, Config, Credential, parse, save, to_toml_dict, warnings, with_overrides
from shutterlock.control import ControlClient
from shutterlock.engine import Engine, Stage
from shutterlock.errors import ConfigError, ControlError, DaemonNotRunning, KeyProblem, OperationFailed, UsageError
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.names import b64, display, is_text
from shutterlock.restore import Report, matches, matches_path, plan, repair, restore, verify
from shutterlock.status import (
    Backlog,
    CloakStatus,
    DeriveStatus,
    IsolationStatus,
    LaneStatus,
    ProcessFacts,
    ReplicaStatus,
    RotationStatus,
    ShareStatus,
    SourceStatus,
    Status,
    UnsettledFile,
    VaultStatus,
)
from shutterlock.vault.format import Keys
from shutterlock.vault.local import LocalStore, VaultMissing, open_local_vault
from shutterlock.vault.store import Store, StoreError

if TYPE_CHECKING:
    from shutterlock.derive.outbox import Placed
    from shutterlock.provenance import Verdict
    from shutterlock.rebuild import Rebuilt
    from shutterlock.share import Check, ShareInfo, Shares
    from shutterlock.site import BuildReport, PublishReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitResult:
    config_file: Path
    created_config: bool
    created_key: bool
    replica_problem: str | None  # None: no bucket configured or the envelope is there; else why not yet
    signer: str  # who the C2PA manifests name as signer
    created_signer: bool
    key_file: Path | None = None  # None: a credential supplies the key at every start, so none is kept


def init(config: Config, passphrase: Callable[[], bytes], choices: Choices) -> InitResult:
    """Write the config (keeping an existing one), create the key envelope if there is none, and put the
    envelope in the vault and the bucket (with the passphrase, either is enough to recover).

    A ``--source`` that does not exist is refused (a typo would otherwise be watched forever, empty); the
    default import folder is created. The catalog is created too, so ``status`` works right away.
    """
    paths = config.paths
    existed = paths.config_file.exists()
    for source in choices.sources or []:
        if not source.expanduser().is_dir():
            raise UsageError(f"--source {source}: no such folder (create it first, or check the path)")
    config = with_overrides(config, choices)
    parse(to_toml_dict(config), paths.config_file, paths)  # the flags must make a valid config too
    ensure_dir(paths.state_dir)
    created_key = False
    # A key or passphrase credential ($CREDENTIALS_DIRECTORY: systemd, Docker secrets) unlocks every start:
    # then no master.key is written, so the key never lies on the disk beside the data.
    given_key = paths.credential(Credential.MASTER_KEY)
    given_passphrase = paths.credential(Credential.PASSPHRASE)
    if not paths.key_file.exists():
        if paths.envelope_file.exists():
            master = keystore.load_master_key(paths) if given_key or given_passphrase else \
                keystore.unwrap(keystore.read_envelope(paths.envelope_file), passphrase())
        else:
            master = keystore.load_master_key(paths) if given_key else keystore.new_master_key()
            secret = keystore.read_passphrase_file(given_passphrase) if given_passphrase else passphrase()
            keystore.write_envelope(paths.envelope_file, keystore.wrap(master, secret))
            created_key = True
        if not (given_key or given_passphrase):
            keystore.write_key_file(paths.key_file, master)
    with open_catalog(config) as catalog:  # created now, so `status` works before the daemon first runs
        try:
            local = open_vault(config, catalog, create_new=choices.vault is not None)
        except StoreError as error:
            raise OperationFailed(str(error)) from None
    from shutterlock.derive.signing import identity_for

    signer, created_signer = identity_for(config, lambda: load_keys(config), local.root)
    if not existed or choices.any():
        save(config)
    if choices.sources is None:
        for source in config.sources:
            ensure_dir(source.path, 0o755)
    return InitResult(paths.config_file, not existed, created_key, publish_envelope(config), signer.subject,
                      created_signer, key_file=paths.key_file if paths.key_file.exists() else None)


def publish_envelope(config: Config) -> str | None:
    """Bring the bucket's copy of the key envelope up to date, if a bucket is configured; returns why it could
    not be, or None."""
    if config.s3 is None:
        return None
    from shutterlock.replicate import open_replica, publish_signing_identity, sync_envelopes

    try:
        store = open_replica(config)
        problem = sync_envelopes(config.paths, LocalStore(config.vault.path), store, load_keys(config))
        publish_signing_identity(store, config.vault.path)
    except StoreError as error:
        return str(error)
    return problem or None


def change_passphrase(config: Config, old: bytes, new: bytes) -> None:
    """Re-wrap the master key (no object is re-encrypted) as the next generation of the envelope, and replace
    every copy; an older copy can then never win over it (docs/FORMAT.md section 2)."""
    envelope_file = config.paths.envelope_file
    master = keystore.unwrap(keystore.read_envelope(envelope_file), old)
    vault = LocalStore(config.vault.path)
    copies = [envelope_file, vault.envelope_path]
    generations = [keystore.read_envelope(path).generation for path in copies if path.exists()]
    if config.s3 is not None:
        from shutterlock.replicate import open_replica
        from shutterlock.vault.s3 import ENVELOPE_KEY

        try:
            remote = open_replica(config).get_bytes_if_any(ENVELOPE_KEY)
        except StoreError:
            remote = None  # the bucket gets the new generation when it is reachable again
        if remote is not None:
            with contextlib.suppress(KeyProblem):
                generations.append(keystore.Envelope.from_json(remote, "the bucket").generation)
    data = keystore.wrap(master, new, generation=max(generations, default=0) + 1).to_json()
    atomic_write_bytes(envelope_file, data)
    if vault.present():  # not into the empty mount point of a drive that is not there
        atomic_write_bytes(vault.envelope_path, data)
    problem = publish_envelope(config)
    if problem is not None:
        raise OperationFailed(f"passphrase changed locally, but the bucket's key envelope is not updated yet: "
                              f"{problem}; the daemon will update it when the bucket is reachable")


def rotate_key(config: Config, passphrase: bytes, new_passphrase: bytes) -> int:
    """``key rotate``: a new master key for everything sealed from now on, wrapped by ``new_passphrase``;
    the daemon re-encrypts the existing objects in the background. Returns how many there are."""
    from shutterlock import rotate

    with daemon_stopped(config):
        return rotate.begin(config, passphrase, new_passphrase)


def check_passphrase(config: Config, passphrase: bytes) -> None:
    """Raise KeyProblem unless ``passphrase`` opens the key envelope (before asking for a new one)."""
    keystore.unwrap(keystore.read_envelope(config.paths.envelope_file), passphrase)


def load_keys(config: Config) -> Keys:
    """The current key, with the retired ones of an unfinished rotation (objects under them still read)."""
    current, *retired = keystore.load_keys(config.paths)
    return Keys.from_master(current, tuple(retired))


def open_catalog(config: Config) -> Catalog:
    """The catalog; a missing one is an error when the vault shows there was one (a fresh, empty catalog
    would hide every sealed file's history), with the command that brings it back."""
    path = config.paths.catalog
    if not path.exists() and any(LocalStore(config.vault.path).list()):
        raise CatalogError(f"{path}: the catalog is missing, but the vault ({config.vault.path}) holds sealed "
                           "objects: run `shutterlock catalog rebuild` to rebuild it from the vault and the bucket")
    return Catalog(path)


def rebuild_catalog(config: Config, where: str | None = None) -> Rebuilt:
    """``catalog rebuild``: a new catalog from the bucket's newest snapshot (``where="s3"``, the default when a
    bucket is configured) and every object's own metadata, in the vault and the bucket."""
    from shutterlock.rebuild import rebuild

    keys = load_keys(config)
    where = where or ("s3" if config.s3 is not None else "local")
    if where == "s3" and config.s3 is None:
        raise ConfigError(f"--from s3 needs a bucket, and {config.paths.config_file} has no [s3] table")
    bucket = None
    if config.s3 is not None:
        from shutterlock.replicate import open_replica

        try:
            bucket = open_replica(config)
            bucket.check()
        except StoreError as error:
            if where == "s3":
                raise OperationFailed(str(error)) from None
            bucket = None
    with daemon_stopped(config):
        result = rebuild(config.paths.catalog, LocalStore(config.vault.path), bucket, keys, from_bucket=where == "s3")
    if config.s3 is not None and bucket is None:
        result.notes.append("the bucket was not reachable: only the local vault was read")
    return result


@contextlib.contextmanager
def daemon_stopped(config: Config) -> Iterator[None]:
    """Hold the daemon's instance lock: operations that replace the catalog or the keys need it stopped."""
    lock = FileLock(config.paths.lock_file, timeout=0, mode=0o600)
    ensure_dir(config.paths.lock_file.parent)
    try:
        lock.acquire()
    except Timeout:
        raise OperationFailed("the daemon is running: stop it first (`systemctl --user stop shutterlock`, or "
                              "Ctrl-C on `shutterlock run`)") from None
    try:
        yield
    finally:
        lock.release()


VAULT_SETTING = "vault_path"


def open_vault(config: Config, catalog: Catalog, *, create_new: bool = False) -> LocalStore:
    """The configured vault, ready for writing.

    A vault is created only where none is known: once the catalog has recorded a vault (or holds objects),
    a missing vault folder is a drive that is not mounted (VaultMissing), never a reason to start a new,
    empty vault on the disk under the mount point. ``create_new`` (``init --vault``) starts one elsewhere.
    """
    path = str(config.vault.path)
    recorded = catalog.get_setting(VAULT_SETTING)
    known = bool(recorded) or catalog.object_count() > 0
    vault = open_local_vault(config.vault.path, config.paths.envelope_file,
                             create=not known or (create_new and recorded != path))
    if recorded != path:
        catalog.set_setting(VAULT_SETTING, path)
    return vault


def open_vault_or_wait(config: Config, catalog: Catalog) -> LocalStore:
    """For the daemon: the vault, or, while it is missing, the place it will be (the seal lane waits for it)."""
    try:
        return open_vault(config, catalog)
    except VaultMissing as error:
        log.error("%s; sealing waits for it", error)
        return LocalStore(config.vault.path)


def lane_names(config: Config) -> list[str]:
    """The lanes this config asks for, in the order data flows through them."""
    return ["seal", *(["replicate"] if config.s3 is not None else []),
            *(["derive"] if config.derive.enabled else []), "rotate"]


def build_stages(config: Config, catalog: Catalog, keys: Keys, vault: LocalStore) -> list[Stage[Any]]:
    """The lanes of :func:`lane_names`, ready to run."""
    names = lane_names(config)
    later: list[Stage[Any]] = []
    if "replicate" in names:
        from shutterlock.replicate import ReplicateStage

        later.append(ReplicateStage(config, catalog, keys, vault))
    if "derive" in names:
        from shutterlock.derive.lane import DeriveStage

        later.append(DeriveStage(config, catalog, keys, vault))
    from shutterlock.rotate import RotateStage

    later.append(RotateStage(config, catalog, keys, vault))
    from shutterlock.seal import SealStage

    return [SealStage(config, catalog, keys, vault, later), *later]


def run_once(config: Config) -> tuple[int, Status]:
    """Scan, process everything due, exit: (number of failed or unfinished items, final status)."""
    from shutterlock.watch import discoveries, scan_source

    keys = load_keys(config)
    for source in config.sources:
        if not source.path.is_dir():
            raise OperationFailed(f"source {source.name}: not a directory: {source.path}")
    with open_catalog(config) as catalog:
        try:
            vault = open_vault(config, catalog)
        except StoreError as error:
            raise OperationFailed(str(error)) from None
        engine = Engine(catalog, build_stages(config, catalog, keys, vault))
        try:
            for source in config.sources:
                engine.discover(discoveries(source, scan_source(source, catalog).found))
            engine.run_until_idle()
        finally:
            engine.close()
        snapshot_vault(catalog, keys, vault)
        seal = engine.stage("seal")
        status = read_status(config, catalog, vault_problem=seal.guard.problem() if seal else "")  # type: ignore[attr-defined]
        unfinished = status.backlog.items + catalog.jobs_retrying()
        return engine.failures + unfinished, status


def snapshot_vault(catalog: Catalog, keys: Keys, vault: LocalStore) -> None:
    """A sealed catalog snapshot in the vault too (the vault and the passphrase alone recover everything);
    a problem is logged, never fatal: the originals are sealed either way."""
    from shutterlock.replicate import snapshot_into_vault

    try:
        problem = snapshot_into_vault(vault, catalog, keys)
    except (StoreError, CatalogError) as error:
        problem = str(error)
    if problem:
        log.warning("no catalog snapshot in the vault: %s", problem)


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class LiveFacts:
    """What only a running daemon knows; the offline reader has none of it."""

    pid: int
    version: int
    uptime: float
    pending: int
    lanes: list[LaneStatus]
    healthy: bool
    process: ProcessFacts
    sources: list[SourceStatus]
    replica: ReplicaStatus | None
    cloak_problem: str | None  # None: the cloak has not been tried since the daemon started
    restart_needed: list[str] = field(default_factory=list)
    vault_problem: str = ""  # why the seal lane cannot write to the vault right now
    unsettled: list[UnsettledFile] = field(default_factory=list)
    scanning: list[str] = field(default_factory=list)
    isolation: IsolationStatus | None = None  # how the derive lane's worker is confined (None: not started)


def read_status(config: Config, catalog: Catalog, live: LiveFacts | None = None, *, vault_problem: str = "") -> Status:
    """The status document from the catalog, plus the live facts of a running daemon (the one producer).

    ``vault_problem``: what ``run --once`` met writing the vault (a daemon says it in its live facts).
    """
    from shutterlock.watch import skipped_of

    held = catalog.derivative_counts().get("held", 0)
    if live is not None and live.cloak_problem is not None:
        cloak_error = live.cloak_problem
    else:  # no daemon, or it has not tried the cloak yet: the catalog's last word
        cloak_error = catalog.latest_held_reason() if held else ""
    if held and cloak_error:
        cloak_error = f"cloak unavailable, {held} derivative{'s' if held != 1 else ''} held back: {cloak_error}"
    start_of_day = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
    sealed_today, last_sealed = catalog.sealed_since(start_of_day)
    items, size = catalog.seal_backlog()
    lanes = live.lanes if live is not None else _offline_lanes(config, catalog)
    replica = live.replica if live is not None and live.replica is not None else _offline_replica(config, catalog)
    derive_lane = next((lane for lane in lanes if lane.name == "derive"), None)
    if live is not None:
        sources = [replace(source, skipped=skipped_of(catalog, source.name)) for source in live.sources]
        vault_problem = live.vault_problem
    else:
        sources = [SourceStatus(name=s.name, path=str(s.path), configured_mode=s.watch_mode,
                                watch_mode=s.watch_mode if s.path.is_dir() else "missing",
                                warning="" if s.path.is_dir() else f"source folder is missing: {s.path}",
                                skipped=skipped_of(catalog, s.name))
                   for s in config.sources]
    return Status(
        shares=share_statuses(catalog),
        running=live is not None,
        paused=catalog.get_setting("paused") == "1",
        files=catalog.file_counts(),
        objects=catalog.object_count(),
        sealed_today=sealed_today,
        last_sealed_at=last_sealed,
        backlog=Backlog(items=items, bytes=size),
        replica=replica,
        derive=DeriveStatus(enabled=config.derive.enabled, waiting=derive_lane.waiting if derive_lane else 0,
                            by_status=catalog.derivative_counts(),
                            isolation=live.isolation if live is not None else None),
        cloak=CloakStatus(strength=config.cloak.strength, held=held, error=cloak_error),
        vault=VaultStatus(path=str(config.vault.path), error=vault_problem),
        sources=sources,
        errors=catalog.recent_events(10),
        failed_files=catalog.failed_files(10),
        outbox=str(config.derive.outbox),
        config_file=str(config.paths.config_file),
        warnings=warnings(config),
        lanes=lanes,
        pending=live.pending if live is not None else 0,
        restart_needed=live.restart_needed if live is not None else [],
        pid=live.pid if live is not None else None,
        version=live.version if live is not None else 0,
        uptime=live.uptime if live is not None else None,
        healthy=live.healthy if live is not None else True,
        process=live.process if live is not None else None,
        catalog_error=catalog.write_problem,
        unsettled=live.unsettled if live is not None else [],
        scanning=live.scanning if live is not None else [],
        rotation=_rotation(catalog),
    )


def _rotation(catalog: Catalog) -> RotationStatus | None:
    from shutterlock.rotate import FINISH

    done, total = catalog.job_progress("rotate", besides=FINISH)
    return RotationStatus(done=done, total=total) if total else None


def _offline_lanes(config: Config, catalog: Catalog) -> list[LaneStatus]:
    from shutterlock.replicate import RECONCILE

    items, size = catalog.seal_backlog()
    lanes = [LaneStatus(name="seal", waiting=items, waiting_bytes=size)]
    for name, wanted in (("replicate", config.s3 is not None), ("derive", config.derive.enabled)):
        if wanted:
            waiting, waiting_bytes = catalog.job_backlog(name, due_only=True, besides=RECONCILE)
            lanes.append(LaneStatus(name=name, waiting=waiting, waiting_bytes=waiting_bytes))
    return lanes


def _offline_replica(config: Config, catalog: Catalog) -> ReplicaStatus:
    if config.s3 is None:
        return ReplicaStatus(configured=False)
    from shutterlock.replicate import RECONCILE, replica_problem

    waiting, waiting_bytes = catalog.job_backlog("replicate", besides=RECONCILE)
    return ReplicaStatus(configured=True, url=config.s3.url, waiting=waiting, waiting_bytes=waiting_bytes,
                         failed=catalog.jobs_failed("replicate"), lost=catalog.missing_count("s3"),
                         snapshot_generation=catalog.snapshot_generation(), problem=replica_problem(catalog))


def process_facts() -> ProcessFacts:
    """What the daemon costs: resident memory, and whether torch is loaded (it should not be when idle)."""
    import sys
    import threading

    import psutil

    rss_mb = psutil.Process().memory_info().rss / 2**20
    return ProcessFacts(rss_mb=rss_mb, torch_loaded="torch" in sys.modules, threads=threading.active_count())


def status(config: Config) -> Status:
    """Ask the running daemon; fall back to reading the catalog."""
    try:
        return control(config, "status")
    except DaemonNotRunning:
        pass
    if not config.paths.catalog.exists() and not any(LocalStore(config.vault.path).list()):
        raise OperationFailed(f"no catalog at {config.paths.catalog}: run `shutterlock init` first")
    with open_catalog(config) as catalog:
        return read_status(config, catalog)


def control(config: Config, op: str, **args: Any) -> Status:
    """Send one control request to the running daemon (raises DaemonNotRunning when none answers)."""
    return Status.from_dict(ControlClient(config.paths.socket).call(op, **args))


def rederive(config: Config, patterns: list[str], *, stale_only: bool = False) -> int:
    """Make the derivatives of the matching originals again (after a settings change); returns how many."""
    chosen = [row for row in list_originals(config) if matches_path(row["source"], row["path"], patterns)
              and (not stale_only or (row["derivative"] or {}).get("stale"))]
    if patterns and not chosen:
        raise OperationFailed(f"nothing in the catalog matches {' '.join(patterns)}")
    with open_catalog(config) as catalog:
        for file_id in catalog.file_ids([(row["source"], row["path"]) for row in chosen]):
            catalog.enqueue("derive", str(file_id))
    with contextlib.suppress(DaemonNotRunning):
        control(config, "wake")
    return len(chosen)


def retry(config: Config) -> str:
    """Try again now whatever failed or waits out a back-off; through the daemon if one runs."""
    try:
        control(config, "retry")
        return "the daemon is retrying"
    except DaemonNotRunning:
        with open_catalog(config) as catalog:
            files, jobs = catalog.retry_everything()
        return f"{files} original(s) and {jobs} job(s) queued again; they run when the daemon starts"


@dataclass(frozen=True)
class WeightsFile:
    file: str
    found: Path | None
    problem: str


def weights(config: Config, *, fetch: bool = False, source: Path | None = None) -> list[WeightsFile]:
    """Where each cloak weights file is (verified), after fetching or copying the missing ones if asked.

    ``source``: a folder holding the files (an offline machine); else ``fetch`` downloads from upstream.
    Every file is checked against its pinned SHA-256 wherever it came from.
    """
    from shutterlock.cloak import WeightsError
    from shutterlock.cloak.models import REGISTRY, cache_dir, resolve_weights, sha256_file

    found = []
    for name, entry in REGISTRY.items():
        try:
            if source is not None:
                candidate = source / entry.file
                if not candidate.is_file():
                    raise WeightsError(f"{candidate}: no such file")
                if sha256_file(candidate) != entry.sha256:
                    raise WeightsError(f"{candidate}: SHA-256 mismatch (not the pinned {entry.file})")
                atomic_write_bytes(cache_dir() / entry.file, candidate.read_bytes(), mode=0o644)
            path = resolve_weights(name, config.cloak.models_dir, offline=not fetch)
            found.append(WeightsFile(entry.file, path, ""))
        except WeightsError as error:
            found.append(WeightsFile(entry.file, None, str(error)))
    return found


def set_paused_offline(config: Config, paused: bool) -> None:
    with open_catalog(config) as catalog:
        catalog.set_setting("paused", "1" if paused else "0")


# --------------------------------------------------------------------------- originals


def list_originals(config: Config, *, versions: bool = False) -> list[dict[str, Any]]:
    """What is sealed: the newest version of each path with its replicas and its derivative (``stale``: made
    under other settings), or (``versions``) every version, numbered from 1."""
    from shutterlock.derive.lane import settings_fingerprint

    current = settings_fingerprint(config)
    with open_catalog(config) as catalog:
        replicas = catalog.replicas_of()
        derivatives = {(d["source"], d["relpath"]): d for d in catalog.derivatives()}

        def derivative(source: str, relpath: str) -> dict[str, Any] | None:
            made = derivatives.get((source, relpath))
            if made is None:
                return None
            return {"status": made["status"], "output": made["output"], "reason": made["reason"],
                    "cloaked": bool(made["cloaked"]), "strength": made["strength"], "watermark": made["watermark"],
                    "stale": made["status"] in ("written", "held") and made["settings"] != current}

        rows = []
        numbers: dict[tuple[str, str], int] = {}
        for v in catalog.all_versions() if versions else catalog.latest_versions():
            row = {"source": v.source, **path_fields(v.relpath), "size": v.size, "sealed_at": v.sealed_at,
                   "mtime_ns": v.mtime_ns, "content_id": v.content_id, "replicas": replicas.get(v.content_id, [])}
            if versions:
                numbers[(v.source, v.relpath)] = row["version"] = numbers.get((v.source, v.relpath), 0) + 1
            else:
                row["derivative"] = derivative(v.source, v.relpath)
            rows.append(row)
        return rows


def path_fields(relpath: str) -> dict[str, str]:
    """A path for people and JSON: escaped to one printable line, plus its exact bytes when it is not UTF-8."""
    return {"path": display(relpath)} | ({} if is_text(relpath) else {"path_b64": b64(relpath)})


def select_store(config: Config, where: str, flag: str) -> Store:
    """The store to read from; ``flag`` is how the user asked for it, for the error message."""
    if where == "local":
        return LocalStore(config.vault.path)
    if config.s3 is None:
        raise ConfigError(f"{flag} needs a bucket, and {config.paths.config_file} has no [s3] table "
                          "(add one with `shutterlock init --s3-url s3://BUCKET/PREFIX`)")
    from shutterlock.vault.s3 import S3Store

    store = S3Store.from_config(config.s3, config.paths)
    try:
        store.check()
    except StoreError as error:
        raise OperationFailed(str(error)) from None
    return store


def restore_originals(config: Config, patterns: list[str], dest: Path, where: str = "local", *,
                      at: float | None = None, all_versions: bool = False, overwrite: bool = False,
                      mode: int = 0o600, progress: Callable[[int], None] | None = None,
                      on_total: Callable[[int], None] | None = None) -> Report:
    """Restore the newest version of each matching path; ``at``: the version current then (sealed at or
    before it); ``all_versions``: every version, as NAME.vN.ext."""
    keys = load_keys(config)
    with open_catalog(config) as catalog:
        versions = [v for v in (catalog.all_versions() if at is not None or all_versions
                                else catalog.latest_versions()) if matches(v, patterns)]
    if patterns and not versions:
        raise OperationFailed(f"nothing in the catalog matches {' '.join(patterns)}")
    if at is not None:
        current: dict[tuple[str, str], Version] = {}
        for version in versions:  # oldest first: the last one sealed by ``at`` wins
            if version.sealed_at <= at:
                current[(version.source, version.relpath)] = version
        versions = list(current.values())
        if not versions:
            raise OperationFailed(f"nothing {'matching ' + ' '.join(patterns) + ' ' if patterns else ''}"
                                  f"was sealed by {time.strftime('%Y-%m-%d %H:%M', time.localtime(at))}")
    if on_total is not None:
        on_total(sum(v.size for v in versions))
    by_source = len({v.source for v in versions}) > 1 or len(config.sources) > 1
    planned, report = plan(versions, by_source=by_source, numbered=all_versions)
    store = select_store(config, where, f"--from {where}")
    return restore(planned, store, keys, dest, overwrite=overwrite, mode=mode, report=report, progress=progress)


def recover(config: Config, passphrase: Callable[[], bytes], dest: Path, *, s3_url: str | None = None,
            s3_endpoint: str | None = None, vault: Path | None = None,
            progress: Callable[[int], None] | None = None) -> Report:
    """Disaster recovery on a new machine: the bucket, or the vault, and the passphrase bring everything back."""
    from shutterlock.recover import recover as recover_from_bucket
    from shutterlock.recover import recover_from_vault

    if (s3_url is None) == (vault is None):
        raise UsageError("recover needs where from: --s3-url s3://BUCKET/PREFIX (the bucket) or --vault DIR "
                         "(the vault, e.g. on an external drive)")
    if vault is not None:
        return recover_from_vault(config, vault.expanduser().resolve(), passphrase, dest, progress=progress)
    assert s3_url is not None
    return recover_from_bucket(config, s3_url, s3_endpoint, passphrase, dest, progress=progress)


def verify_objects(config: Config, *, remote: bool = False, sample: float | None = None,
                   progress: Callable[[int], None] | None = None,
                   on_total: Callable[[int], None] | None = None) -> Report:
    keys = load_keys(config)
    with open_catalog(config) as catalog:
        ids = catalog.object_ids()
        referenced: dict[str, list[str]] = {}
        for version in catalog.latest_versions():
            referenced.setdefault(version.content_id, []).append(f"{version.source}/{version.relpath}")
    if on_total is not None:
        on_total(len(ids) if sample is None else max(1, round(len(ids) * sample / 100)) if ids else 0)
    store = select_store(config, "s3" if remote else "local", "--remote" if remote else "verify")
    report = verify(ids, store, keys, sample_percent=sample, referenced_by=referenced, progress=progress)
    if report.bad and (remote or config.s3 is not None):
        # The other copy repairs what is missing or damaged here: the vault the bucket, the bucket the vault.
        try:
            other = LocalStore(config.vault.path) if remote else select_store(config, "s3", "verify")
        except OperationFailed as error:
            report.notes.append(f"cannot repair from the bucket: {error}")
            return report
        repair(report, store, other, keys)
        if remote and report.repaired:
            with open_catalog(config) as catalog:
                for content_id in report.repaired:
                    catalog.add_replica(content_id, store.name)
    return report


# --------------------------------------------------------------------------- private shares


def share_statuses(catalog: Catalog) -> list[ShareStatus]:
    """The active shares for the status document: names and counts, never a link."""
    from shutterlock.share.state import ShareState

    return [ShareStatus(**row) for row in ShareState(catalog).overview()]


@contextlib.contextmanager
def _shares(config: Config, *, changes: bool = False) -> Iterator[Shares]:
    """The share engine on this installation; ``changes``: tell a running daemon (its tray) afterwards."""
    from shutterlock.share import Shares

    keys = load_keys(config)
    with open_catalog(config) as catalog:
        yield Shares(config, catalog, keys)
    if changes:
        with contextlib.suppress(DaemonNotRunning, ControlError):
            control(config, "wake")


def share_create(config: Config, name: str, patterns: list[str], *, password: str | None = None,
                 expires: str | None = None, download: bool = False, feedback: bool = True,
                 allow_uncloaked: bool = False, title: str = "", message: str = "",
                 progress: Callable[[int, int, str], None] | None = None) -> ShareInfo:
    """``share create``: publish a new gallery of the selected originals' protected derivatives."""
    from shutterlock.share import parse_expiry

    expires_at = parse_expiry(expires) if expires else None
    with _shares(config, changes=True) as shares:
        return shares.create(name, patterns, password=password, expires_at=expires_at, download=download,
                             feedback_on=feedback, allow_uncloaked=allow_uncloaked, title=title, message=message,
                             progress=progress)


def share_list(config: Config) -> list[ShareInfo]:
    """``share ls``: every share, ended ones included."""
    with _shares(config) as shares:
        return shares.list()


def share_show(config: Config, name: str) -> tuple[ShareInfo, str]:
    """``share show``: the share, and its link's QR code drawn for a terminal ("" once it has ended)."""
    from shutterlock.share.qr import terminal

    with _shares(config) as shares:
        info = shares.show(name)
    return info, terminal(info.link) if info.link else ""


def share_add(config: Config, name: str, patterns: list[str],
              progress: Callable[[int, int, str], None] | None = None) -> ShareInfo:
    with _shares(config, changes=True) as shares:
        return shares.add(name, patterns, progress)


def share_remove(config: Config, name: str, patterns: list[str]) -> ShareInfo:
    with _shares(config, changes=True) as shares:
        return shares.remove(name, patterns)


def share_revoke(config: Config, name: str) -> ShareInfo:
    with _shares(config, changes=True) as shares:
        return shares.revoke(name)


def share_feedback(config: Config, name: str) -> list[dict[str, Any]]:
    """``share feedback``: collect what clients sent, then every visitor's latest selection (marked as seen)."""
    with _shares(config, changes=True) as shares:
        return shares.feedback(name)


def share_link(config: Config, name: str) -> ShareInfo:
    """The tray's "copy link" and "show QR code": the share with its link, through the control socket."""
    with _shares(config) as shares:
        return shares.show(name)


def share_doctor(config: Config) -> list[Check]:
    """``share doctor``: try everything shares need from the bucket, say what to change."""
    from shutterlock.share import doctor

    if config.share is None:
        raise ConfigError(f"{config.paths.config_file.name}: [share]: not configured; add a [share] table with "
                          'url = "s3://BUCKET/PREFIX" (docs/SHARING.md)')
    return doctor(config.share, config.paths)


def share_maintenance(config: Config, catalog: Catalog, keys: Keys) -> tuple[list[str], int]:
    """The daemon's schedule for shares: expiry, renewals, clean-up, then new feedback. (what was done, new)."""
    from shutterlock.share import Shares

    shares = Shares(config, catalog, keys)
    return shares.maintain(), shares.collect_feedback()


# --------------------------------------------------------------------------- derivatives and publishing


def protect(config: Config, inputs: list[Path], out_dir: Path, *, strength: str | None = None,
            preview: bool = False, on_result: Callable[[Placed], None] | None = None) -> list[Placed]:
    """One-shot derivatives of ``inputs`` into ``out_dir``, signed like the daemon's."""
    from shutterlock.derive.protect import protect as run_protect
    from shutterlock.derive.signing import identity_for

    signer, _ = identity_for(config, lambda: load_keys(config), config.vault.path)
    return run_protect(inputs, out_dir, derive=config.derive, watermark=config.watermark, rights=config.rights,
                       cloak=config.cloak, signer=signer, strength=strength, preview=preview,
                       on_result=on_result)


def verify_provenance(config: Config, path: Path) -> Verdict:
    """Read ``path``'s C2PA manifest the way any reader does; your own signing key is recognised (trusted)."""
    from shutterlock.provenance import IdentityError, identity, verify_file

    anchor = None
    try:
        if config.provenance.certificate is not None and config.provenance.key is not None:
            anchor = identity.load_user(config.provenance.certificate, config.provenance.key).anchor_pem
        elif identity.exists(identity.folder(config.paths.state_dir)):
            anchor = identity.load(identity.folder(config.paths.state_dir)).anchor_pem
    except IdentityError as error:
        log.warning("cannot recognise your own signing key: %s", error)
    return verify_file(path, anchor=anchor)


def site_build(config: Config, patterns: list[str], out: Path | None = None,
               min_rating: int | None = None) -> BuildReport:
    """Build the portfolio from the catalog's protected derivatives (default folder: the cache);
    ``min_rating`` (default: ``[site] min_rating``) keeps only originals with that many stars."""
    from shutterlock.derive.signing import identity_for
    from shutterlock.site import build
    from shutterlock.site.select import candidates

    if not config.paths.catalog.exists():
        raise OperationFailed(f"no catalog at {config.paths.catalog}: run `shutterlock init` and the daemon first")
    with open_catalog(config) as catalog:
        rows = catalog.derivatives()
    offered, missing = candidates(rows, patterns=patterns or config.site.include, captions=config.site.captions,
                                  cloak_strength=config.cloak.strength,
                                  min_rating=config.site.min_rating if min_rating is None else min_rating)
    if patterns and not offered and not missing:
        raise OperationFailed(f"no derivative matches {' '.join(patterns)}")
    signer, _ = identity_for(config, lambda: load_keys(config), config.vault.path)
    report = build(offered, out or site_folder(config), site=config.site, rights=config.rights, identity=signer)
    report.left_out[:0] = missing
    return report


def site_folder(config: Config) -> Path:
    """Where ``site publish`` builds before sending: kept, so images made once are reused."""
    return config.paths.cache_dir / "site"


def site_publish(config: Config) -> tuple[BuildReport, PublishReport]:
    """Build the portfolio and send what changed to ``[site] url``."""
    from shutterlock.site import publish

    if not config.site.url:
        raise ConfigError(f"{config.paths.config_file.name}: [site] url: not set; give it s3://BUCKET/PREFIX or "
                          "a folder to publish to")
    built = site_build(config, [])
    return built, publish(built.out, config.site.url, paths=config.paths, endpoint=config.site.endpoint)
