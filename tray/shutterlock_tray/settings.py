"""Whether the config file was saved since the tray last looked: one ``stat`` per look, no watcher thread.

Why polling a stamp rather than inotify: the tray looks only on events it already wakes for (a status
change, the long-poll's heartbeat) and, for a while after "Edit settings", once a second; that keeps the
idle tray near 0 % CPU and works the same on every platform. Editors that save by renaming a new file
into place change the stamp too; a file briefly missing mid-save is not a change.
"""

from __future__ import annotations

import threading
from pathlib import Path


class SettingsFile:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def changed(self) -> bool:
        """True once per save (the new stamp is remembered); False while the file is missing."""
        stamp = self._stamp()
        with self._lock:
            if stamp is None or stamp == self._seen:
                return False
            self._seen = stamp
            return True
