"""The long-running process: a single-instance lock, watchers, the engine, the control socket,
the scheduler, signals and sd_notify. Owns process concerns only; the work is in the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from shutterlock import config as config_module
from shutterlock import facade
from shutterlock.config import Config, ShareConfig, SourceConfig
from shutterlock.config import warnings as config_warnings
from shutterlock.control import ControlServer
from shutterlock.engine import Engine
from shutterlock.errors import AlreadyRunning, ConfigError, ShutterlockError
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.names import display
from shutterlock.service import Notifier
from shutterlock.status import SourceStatus, Status, UnsettledFile, duration
from shutterlock.watch import SourceWatcher, StabilityGate, scan_source, walk

log = logging.getLogger(__name__)

VAULT_SNAPSHOT_SECONDS = 600  # the vault's own catalog snapshot, when something was sealed since the last

SHARE_CHECK_MINUTES = ShareConfig.__dataclass_fields__["check_minutes"].default


class _InstanceLock:
    """An advisory lock (filelock: flock, or a lock file where flock is missing) so two daemons never
    share a catalog and vault; the holder's pid sits beside it so the second one can say who holds it."""

    def __init__(self, path: Path):
        self.path = path
        self.pid_file = path.with_suffix(".pid")
        self._lock = FileLock(path, timeout=0, mode=0o600)

    def acquire(self) -> None:
        ensure_dir(self.path.parent, 0o700)
        try:
            self._lock.acquire()
        except Timeout:
            try:
                other = self.pid_file.read_text().strip()
            except OSError:
                other = "?"
            raise AlreadyRunning(f"another shutterlock daemon is running (pid {other})") from None
        atomic_write_bytes(self.pid_file, str(os.getpid()).encode())

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
            self._lock.release()


class Daemon:
    """Implements the control-socket target; ``run`` blocks until stopped."""

    def __init__(self, config: Config):
        self.config = config
        self.notifier = Notifier()
        self._lock = _InstanceLock(config.paths.lock_file)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reloading = threading.Lock()
        self.started_at = time.time()
        self.restart_needed: list[str] = []
        self._scanning: list[str] = []  # sources being walked (status says so: until then, nothing is "all sealed")
        self._scan_lock = threading.Lock()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Everything up to READY: lock, keys, vault, catalog, lanes, watchers, socket, first scan.

        A failure part-way stops whatever had started, so nothing is left running behind the error.
        """
        self._lock.acquire()
        started: list[Any] = []
        try:
            keys = self.keys = facade.load_keys(self.config)
            self.catalog = facade.open_catalog(self.config)
            started.append(self.catalog.close)
            vault = self.vault = facade.open_vault_or_wait(self.config, self.catalog)
            self.engine = Engine(self.catalog, facade.build_stages(self.config, self.catalog, keys, vault))
            started.append(self.engine.close)
            self.engine.start()
            started.append(self.engine.stop)
            self.gate = StabilityGate(self.config.engine.settle_seconds, self.engine.discover)
            self.gate.start()
            started.append(self.gate.stop)
            self.watcher = SourceWatcher(self.config.sources, self.gate, self._new_folder, self._source_back)
            self.watcher.start()
            started.append(self.watcher.stop)
            self.control = ControlServer(self.config.paths.socket, self)
            self.control.start()
            started.append(self.control.stop)
            self.scheduler = self._start_scheduler()
            started.append(lambda: self.scheduler.shutdown(wait=False))
            self._scan_in_background("start-up scan")
        except BaseException:
            for undo in reversed(started):
                with contextlib.suppress(Exception):
                    undo()
            self._lock.release()
            raise
        log.info("watching %s", ", ".join(f"{s.name} ({self.watcher.states[s.name].mode})"
                                          for s in self.config.sources))
        for warning in config_warnings(self.config):
            log.warning("%s", warning)
        self.notifier.ready()

    def _start_scheduler(self) -> Any:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True)

        def every(seconds: float, job: Any, name: str) -> None:
            # Jitter (a tenth of the period, at most an hour) keeps many installations off the same second.
            scheduler.add_job(job, "interval", seconds=seconds, jitter=max(1, int(min(3600, seconds / 10))),
                              id=name, coalesce=True, max_instances=1, replace_existing=True)

        every(self.config.engine.rescan_minutes * 60, lambda: self._scan_in_background("periodic rescan"),
              "rescan")
        for stage in self.engine.stages:
            for periodic in stage.schedule():
                every(periodic.seconds, periodic.run, f"{stage.name}:{periodic.name}")
        # Shares end on time and feedback arrives even after [share] is removed: they live in their own buckets.
        every(60 * (self.config.share.check_minutes if self.config.share else SHARE_CHECK_MINUTES),
              self._look_after_shares, "shares")
        every(VAULT_SNAPSHOT_SECONDS, lambda: facade.snapshot_vault(self.catalog, self.keys, self.vault),
              "vault-snapshot")
        scheduler.start()
        return scheduler

    def _look_after_shares(self) -> None:
        """Expire, renew and clean up shares, collect client feedback; the tray hears of it through the status."""
        try:
            done, new = facade.share_maintenance(self.config, self.catalog, self.keys)
        except ShutterlockError as error:
            log.error("looking after shares: %s", error)
            self.catalog.record_event("error", "shares", str(error))
            return
        for line in done:
            log.info("share %s", line)
        if new:
            log.info("%d new feedback message(s) from clients", new)
        if done or new:
            self.engine.wake()

    def _scan_in_background(self, why: str, sources: tuple[SourceConfig, ...] | None = None) -> None:
        """Walk the sources (each file statted once, compared with the catalog in bulk) and offer what is new
        or changed to the stability gate."""
        watcher, gate, walking = self.watcher, self.gate, list(sources or self.config.sources)
        with self._scan_lock:
            self._scanning.extend(source.name for source in walking)

        def run() -> None:
            for source in walking:
                try:
                    result = scan_source(source, self.catalog)
                    if result.found:
                        gate.offer_found(source, result.found, trusted=watcher.native(source.name))
                        log.info("%s of %s: %d new or changed file(s) of %d", why, source.name, len(result.found),
                                 result.files)
                except Exception:
                    log.exception("%s of %s failed", why, source.name)
                finally:
                    with self._scan_lock:
                        self._scanning.remove(source.name)
                    self.engine.wake()

        threading.Thread(target=run, name="scan", daemon=True).start()

    def _source_back(self, source: SourceConfig) -> None:
        self._scan_in_background("scan after its return", (source,))

    def _new_folder(self, source: SourceConfig, folder: Path) -> None:
        """A folder appeared (or was moved in): its files may predate the watch on it."""
        prefix = folder.relative_to(source.path).as_posix() + "/"
        self.gate.offer_found(source, [(prefix + relpath, info) for relpath, info in walk(folder, source.ignore)],
                              trusted=self.watcher.native(source.name))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.start()
        try:
            self._main_loop()
        finally:
            self.shutdown()

    def _main_loop(self) -> None:
        tick = min(1.0, self.notifier.watchdog_interval or 1.0)
        seen = -1
        while not self._stop.wait(tick):
            if self.notifier.enabled and self.engine.version != seen:
                seen = self.engine.version
                self.notifier.status(self.status().summary)
            if self._reload.is_set():
                self._reload.clear()
                with contextlib.suppress(ConfigError):  # logged and shown in status; the old config stays
                    self.reload()
            stalled = self.engine.stalled()
            if not stalled:
                self.notifier.watchdog()
            else:
                log.error("not pinging the watchdog: %s", "; ".join(stalled))

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        self.watcher.stop()
        self.gate.stop()
        clean = self.engine.stop(timeout=7.0)
        self.engine.close()
        facade.snapshot_vault(self.catalog, self.keys, self.vault)
        self.control.stop()
        if not clean:
            log.warning("in-flight work was abandoned; it will be redone on the next start")
        self.catalog.close()
        self._lock.release()
        log.info("stopped")

    def reload(self) -> None:
        """SIGHUP or the ``reload`` request: re-read the config; what cannot change live is named in status."""
        with self._reloading:
            self._reload_config()

    def _reload_config(self) -> None:
        self.notifier.reloading()
        try:
            new = config_module.load(self.config.paths.config_file)
        except ConfigError as error:
            log.error("reload failed, keeping the running config: %s", error)
            self.catalog.record_event("error", "reload", str(error))
            self.notifier.ready()
            raise
        needs_restart = []
        if new.vault != self.config.vault:
            needs_restart.append("a new [vault] path takes effect after a restart")
        if facade.lane_names(new) != [stage.name for stage in self.engine.stages]:
            needs_restart.append("turning [s3] or [derive] on or off takes effect after a restart")
        for stage in self.engine.stages:
            if why := stage.reload(new):
                needs_restart.append(why)
        self.watcher.stop()
        self.config = new
        self.gate.settle = new.engine.settle_seconds
        self.watcher = SourceWatcher(new.sources, self.gate, self._new_folder, self._source_back)
        self.watcher.start()
        self.scheduler.shutdown(wait=False)
        self.scheduler = self._start_scheduler()
        self.restart_needed = needs_restart
        for why in needs_restart + config_warnings(new):
            log.warning("%s", why)
        self._scan_in_background("rescan after reload")
        log.info("configuration reloaded")
        self.engine.wake()
        self.notifier.ready()

    # ------------------------------------------------------------------ control target

    def status(self) -> Status:
        engine = self.engine
        seal = engine.stage("seal")
        replicate = engine.stage("replicate")
        derive = engine.stage("derive")
        settle = self.config.engine.settle_seconds
        live = facade.LiveFacts(
            pid=os.getpid(),
            version=engine.version,
            uptime=time.time() - self.started_at,
            pending=len(self.gate),
            lanes=engine.lanes(),
            healthy=not engine.stalled(),
            process=facade.process_facts(),
            sources=[SourceStatus(name=s.name, path=str(s.path), watch_mode=self.watcher.states[s.name].mode,
                                  configured_mode=s.watch_mode, warning=self.watcher.states[s.name].warning)
                     for s in self.config.sources if s.name in self.watcher.states],
            replica=replicate.status() if replicate is not None else None,  # type: ignore[attr-defined]
            cloak_problem=derive.cloak_problem if derive is not None else None,  # type: ignore[attr-defined]
            restart_needed=self.restart_needed,
            vault_problem=seal.guard.problem() if seal is not None else "",  # type: ignore[attr-defined]
            unsettled=[UnsettledFile(source=u.source, relpath=display(u.relpath),
                                     reason=f"keeps changing (for {duration(u.changing_for)}): it is sealed once it "
                                            f"has not changed for {settle:g} s")
                       for u in self.gate.unsettled()],
            scanning=sorted(set(self._scanning)),
            isolation=derive.isolation if derive is not None else None,  # type: ignore[attr-defined]
        )
        return facade.read_status(self.config, self.catalog, live)

    def pause(self) -> None:
        self.engine.set_paused(True)

    def resume(self) -> None:
        self.engine.set_paused(False)

    def rescan(self) -> None:
        self._scan_in_background("rescan requested")

    def retry(self) -> None:
        files, jobs = self.catalog.retry_everything()
        log.info("retrying now: %d original(s), %d job(s)", files, jobs)
        self.engine.wake()

    def wake(self) -> None:
        self.engine.wake()

    def request_reload(self) -> None:
        self.reload()

    def request_stop(self) -> None:
        self._stop.set()

    def share_link(self, name: str) -> dict[str, Any]:
        return facade.share_link(self.config, name).to_dict()

    def wait_for_change(self, version: int, timeout: float) -> None:
        # Jitter so many clients do not wake in lockstep.
        self.engine.wait_for_change(version, timeout + random.uniform(0, 0.2))
