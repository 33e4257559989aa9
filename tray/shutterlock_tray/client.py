"""The tray's only link to the daemon: a long-poll on the control socket that survives restarts.

Why a long-poll: ``watch`` returns as soon as the status version changes, so the tray is current within
milliseconds yet sleeps in ``recv`` while nothing happens (one wake-up per ``WATCH_SECONDS``). When no
daemon answers, it retries with a capped back-off; ``wake()`` cuts a back-off short (e.g. after the tray
started a daemon itself). A new daemon is recognised by its pid, so a restart is never mistaken for "no
change" even if its version counter happens to match the old one. Every reply becomes a typed
:class:`Status` here, at the edge, so nothing else in the tray reads the wire format.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shutterlock.control import ControlClient
from shutterlock.errors import ControlError, DaemonNotRunning
from shutterlock.status import Status

log = logging.getLogger(__name__)

WATCH_SECONDS = 120.0
RETRY_FIRST, RETRY_MAX = 0.25, 5.0

#: Called with the new status, or with None when the daemon went away and why ("" when simply none answers).
Listener = Callable[[Status | None, str], None]
#: Called with the unchanged status when a long-poll times out: a cheap, rare heartbeat for time-based checks.
Tick = Callable[[Status], None]


class StatusFeed:
    """Runs in its own thread; calls ``listener`` on every status change and on connect/disconnect."""

    def __init__(self, socket_path: Path, listener: Listener, *, on_tick: Tick | None = None,
                 watch_seconds: float = WATCH_SECONDS, retry_max: float = RETRY_MAX):
        self.client = ControlClient(socket_path)
        self._listener = listener
        self._on_tick = on_tick
        self._watch_seconds = watch_seconds
        self._retry_max = retry_max
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()  # held while notifying, so listeners see statuses in order
        self._thread: threading.Thread | None = None
        self.status: Status | None = None
        self._down_announced = False

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="status-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current long-poll; the thread is a daemon thread, so exiting never waits on it."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Retry now instead of waiting out the back-off."""
        self._wake.set()

    # ------------------------------------------------------------------ commands

    def call(self, op: str, **args: Any) -> Status:
        """One request to the daemon, its reply typed (raises DaemonNotRunning / ControlError)."""
        return Status.from_dict(self.client.call(op, **args))

    def command(self, op: str) -> Status:
        """Send pause/resume/rescan/reload/stop; the reply is applied at once so the menu does not lag the click."""
        status = self.call(op)
        self.offer(status)
        return status

    def offer(self, status: Status) -> bool:
        """Apply a status unless it is older than the one shown (a reply and a watch can cross); True if new."""
        with self._lock:
            current = self.status
            if current is not None and status.pid == current.pid and status.version < current.version:
                return False
            changed = current is None or (status.pid, status.version) != (current.pid, current.version)
            self.status, self._down_announced = status, False
            if changed:
                self._listener(status, "")
            return changed

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            version = self._known_version()
            asked = time.monotonic()
            try:
                status = self.call("watch", version=version, timeout=self._watch_seconds)
            except (DaemonNotRunning, ControlError, OSError, ValueError, TypeError) as error:
                self._disconnected(error)
                self._wake.wait(delay)
                self._wake.clear()
                delay = min(delay * 2, self._retry_max)
                continue
            if self._stop.is_set():
                return
            if self.status is None:
                log.info("connected to the daemon (pid %s)", status.pid)
            delay = RETRY_FIRST
            if self.offer(status):
                continue
            if self._on_tick is not None:
                self._on_tick(status)
            if time.monotonic() - asked < self._watch_seconds / 2:
                # Unchanged yet early: a daemon shutting down answers at once; do not spin on it.
                self._wake.wait(RETRY_FIRST)
                self._wake.clear()

    def _known_version(self) -> int:
        """-1 (answer at once) until connected; otherwise the version shown."""
        with self._lock:
            return -1 if self.status is None else self.status.version

    def _disconnected(self, error: Exception) -> None:
        """Tell the listener once per outage, not once per retry."""
        with self._lock:
            was_connected = self.status is not None
            announce = was_connected or not self._down_announced
            self.status, self._down_announced = None, True
            if was_connected:
                log.info("lost the daemon: %s", error)
            if announce:
                # A daemon killed mid-poll resets the connection: as good as "not running".
                gone = isinstance(error, DaemonNotRunning | ConnectionError)
                reason = "" if gone else f"daemon unreachable: {error}"
                self._listener(None, reason)
