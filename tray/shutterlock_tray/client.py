"""The tray's only link to the daemon: a long-poll on the control socket that survives restarts.

Why a long-poll: ``watch`` returns as soon as the status version changes, so the tray is current within
milliseconds yet sleeps in ``recv`` while nothing happens (one wake-up per ``WATCH_SECONDS``). When no
daemon answers, it retries with a capped back-off; ``wake()`` cuts a back-off short (e.g. after the tray
started a daemon itself). A new daemon is recognised by its pid, so a restart is never mistaken for "no
change" even if its version counter happens to match the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shutterlock.control import ControlClient, DaemonNotRunning

log = logging.getLogger(__name__)

WATCH_SECONDS = 120.0
RETRY_FIRST, RETRY_MAX = 0.25, 5.0

#: Called with the new status, or with None and a reason when the daemon went away.
Listener = Callable[[dict[str, Any] | None, str], None]
#: Called with the unchanged status when a long-poll times out: a cheap, rare heartbeat for time-based checks.
Tick = Callable[[dict[str, Any]], None]


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
        self.status: dict[str, Any] | None = None
        self.connected = False
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

    def command(self, op: str) -> dict[str, Any]:
        """Send pause/resume/rescan/stop; the reply is applied at once so the menu does not lag the click."""
        status = self.client.call(op)
        self.offer(status)
        return status

    def offer(self, status: dict[str, Any]) -> bool:
        """Apply a status unless it is older than the one shown (a reply and a watch can cross); True if new."""
        with self._lock:
            current = self.status
            if current is not None and self.connected and status.get("pid") == current.get("pid") and \
                    int(status.get("version", 0)) < int(current.get("version", 0)):
                return False
            changed = not self.connected or current is None or \
                (status.get("pid"), status.get("version")) != (current.get("pid"), current.get("version"))
            self.status, self.connected, self._down_announced = status, True, False
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
                status = self.client.call("watch", version=version, timeout=self._watch_seconds)
            except (DaemonNotRunning, OSError, ValueError, RuntimeError) as error:
                self._disconnected(error)
                self._wake.wait(delay)
                self._wake.clear()
                delay = min(delay * 2, self._retry_max)
                continue
            if self._stop.is_set():
                return
            if not self.connected:
                log.info("connected to the daemon (pid %s)", status.get("pid"))
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
            if not self.connected or self.status is None:
                return -1
            return int(self.status.get("version", -1))

    def _disconnected(self, error: Exception) -> None:
        """Tell the listener once per outage, not once per retry."""
        with self._lock:
            announce = self.connected or not self._down_announced
            was_connected = self.connected
            self.connected, self.status, self._down_announced = False, None, True
            if was_connected:
                log.info("lost the daemon: %s", error)
            if announce:
                # A daemon killed mid-poll resets the connection: as good as "not running".
                gone = isinstance(error, DaemonNotRunning | ConnectionError)
                reason = "daemon not running" if gone else f"daemon unreachable: {error}"
                self._listener(None, reason)
