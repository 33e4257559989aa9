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
from typing import IO, Any

from shutterlock import app
from shutterlock import config as config_module
from shutterlock.config import Config, SourceConfig
from shutterlock.control import ControlServer
from shutterlock.fsutil import ensure_dir
from shutterlock.pipeline import Engine
from shutterlock.service import Notifier
from shutterlock.watch import SourceWatcher, StabilityGate, walk

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    pass


def _process_facts() -> dict[str, Any]:
    """What the daemon costs: resident memory, and whether torch is loaded (it should not be when idle)."""
    import sys

    rss_mb = None
    status_file = Path("/proc/self/status")
    if status_file.exists():
        for line in status_file.read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_mb = int(line.split()[1]) / 1024
    return {"rss_mb": rss_mb, "torch_loaded": "torch" in sys.modules, "threads": threading.active_count()}


class _InstanceLock:
    """An advisory lock so two daemons never share a catalog and vault."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        ensure_dir(self.path.parent, 0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+")
        try:
            if os.name == "posix":
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            handle.seek(0)
            other = handle.read().strip()
            handle.close()
            raise AlreadyRunning(f"another shutterlock daemon is running (pid {other or '?'})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Daemon:
    """Implements the control-socket target; ``run`` blocks until stopped."""

    def __init__(self, config: Config):
        self.config = config
        self.notifier = Notifier()
        self._lock = _InstanceLock(config.paths.lock_file)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.started_at = time.time()
        self.engine: Engine | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Everything up to READY: lock, keys, vault, catalog, workers, watchers, socket, first scan."""
        self._lock.acquire()
        try:
            keys = app.load_keys(self.config)
            vault = app.open_vault(self.config)
            self.catalog = app.open_catalog(self.config)
            self.engine = app.make_engine(self.config, self.catalog, keys, vault)
            self.engine.start()
            self.gate = StabilityGate(self.config.engine.settle_seconds, self.engine.discover)
            self.gate.start()
            self.watcher = SourceWatcher(self.config.sources, self.gate, self._new_folder)
            self.watcher.start()
            self.control = ControlServer(self.config.paths.socket, self)
            self.control.start()
            self.scheduler = self._start_scheduler()
            self._scan_in_background("start-up scan")
        except BaseException:
            self._lock.release()
            raise
        log.info("watching %s", ", ".join(f"{s.name} ({self.watcher.states[s.name].mode})"
                                          for s in self.config.sources))
        self.notifier.ready()

    def _start_scheduler(self) -> Any:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True)
        minutes = self.config.engine.rescan_minutes
        scheduler.add_job(lambda: self._scan_in_background("periodic rescan"), "interval", minutes=minutes,
                          jitter=max(1, int(minutes * 6)), id="rescan", coalesce=True, max_instances=1)
        for stage in self.engine.stages:
            schedule = getattr(stage, "schedule", None)
            if schedule is not None:
                schedule(scheduler)
        scheduler.start()
        return scheduler

    def _scan_in_background(self, why: str) -> None:
        def scan() -> None:
            found = self.engine.scan(offer=self.gate.offer)
            if found:
                log.info("%s: %d new or changed file(s)", why, found)

        threading.Thread(target=scan, name="scan", daemon=True).start()

    def _new_folder(self, source: SourceConfig, folder: Path) -> None:
        """A folder appeared (or was moved in): its files may predate the watch on it."""
        for relpath, _ in walk(folder):
            self.gate.offer(source, (folder / relpath).relative_to(source.path).as_posix())

    def run(self, install_signals: bool = True) -> None:
        if install_signals:
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
                self.notifier.status(self.status()["summary"])
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if self.engine.healthy():
                self.notifier.watchdog()
            else:
                log.error("a worker has made no progress for a long time; not pinging the watchdog")

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        self.watcher.stop()
        self.gate.stop()
        clean = self.engine.stop(timeout=7.0)
        for stage in self.engine.stages:
            with contextlib.suppress(Exception):
                stage.close()
        self.control.stop()
        if not clean:
            log.warning("in-flight work was abandoned; it will be redone on the next start")
        self.catalog.close()
        self._lock.release()
        log.info("stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the config; watchers and engine settings follow it."""
        self.notifier.reloading()
        try:
            new = config_module.load(self.config.paths.config_file)
        except config_module.ConfigError as error:
            log.error("reload failed, keeping the running config: %s", error)
            self.notifier.ready()
            return
        if new.s3 != self.config.s3 or new.vault != self.config.vault:
            log.warning("changes to [s3] or [vault] take effect after a restart")
        self.watcher.stop()
        self.config = new
        self.engine.config = new
        for stage in self.engine.stages:
            stage.config = new
        self.gate.settle = new.engine.settle_seconds
        self.watcher = SourceWatcher(new.sources, self.gate, self._new_folder)
        self.watcher.start()
        self._scan_in_background("rescan after reload")
        log.info("configuration reloaded")
        self.notifier.ready()

    # ------------------------------------------------------------------ control target

    def status(self) -> dict[str, Any]:
        engine = self.engine
        status = app.offline_status(self.config, self.catalog)
        status.update({
            "running": True,
            "pid": os.getpid(),
            "version": engine.version,
            "uptime": time.time() - self.started_at,
            "pending": len(self.gate),
            "current": engine.current_items(),
            "healthy": engine.healthy(),
            "process": _process_facts(),
            "sources": [{"name": s.name, "path": str(s.path), "watch_mode": self.watcher.states[s.name].mode,
                         "configured_mode": s.watch_mode, "warning": self.watcher.states[s.name].warning}
                        for s in self.config.sources if s.name in self.watcher.states],
        })
        for kind, extra in engine.stage_status().items():
            key = "replica" if kind == "replicate" else kind
            status[key] = {**status.get(key, {}), **extra}
        return app.finish_status(status)

    def pause(self) -> None:
        self.engine.set_paused(True)

    def resume(self) -> None:
        self.engine.set_paused(False)

    def rescan(self) -> None:
        self._scan_in_background("rescan requested")

    def request_stop(self) -> None:
        self._stop.set()

    def wait_for_change(self, version: int, timeout: float) -> None:
        # Jitter so many clients do not wake in lockstep.
        self.engine.wait_for_change(version, timeout + random.uniform(0, 0.2))
