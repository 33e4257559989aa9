"""Process plumbing for running as a service: logging to stderr/journald and sd_notify.

sd_notify is a datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET``; no libsystemd needed.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import ClassVar

from shutterlock.names import display


class _SecretFilter(logging.Filter):
    """Belt and braces: never let a credential-looking value through, whatever a library logs."""

    MARKERS: ClassVar[tuple[str, ...]] = ("aws_secret_access_key", "secret_key", "passphrase=", "x-amz-security-token")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lower()
        return not any(marker in message for marker in self.MARKERS)


class _OneLineFilter(logging.Filter):
    """A file name may hold a newline or other control characters: escape them, so that one event stays one
    line (and nobody can forge a log line by naming a file)."""

    ESCAPES: ClassVar[dict[int, str]] = {code: f"\\x{code:02x}" for code in [*range(32), 127]} | \
        {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = message.translate(self.ESCAPES)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def setup_logging(level: str = "INFO") -> None:
    """One line per event on stderr; under journald the timestamp is added by the journal."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "<%(levelno)s>%(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)-7s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter(fmt) if under_journal else _OneLineFormatter(fmt, "%H:%M:%S"))
    handler.addFilter(_SecretFilter())
    handler.addFilter(_OneLineFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "apscheduler", "watchdog", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _OneLineFormatter(logging.Formatter):
    """One event, one line: a file name holding a newline or bytes that are not UTF-8 is shown escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = display(record.message)
        return super().formatMessage(record)


class _JournalFormatter(_OneLineFormatter):
    """Maps Python levels to syslog priorities in the ``<N>`` prefix journald understands."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = self.PRIORITY.get(record.levelno, 6)
        return super().format(record)


class Notifier:
    """Sends sd_notify messages when started by systemd with Type=notify; a no-op otherwise."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2
        self._socket: socket.socket | None = None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as error:
            logging.getLogger(__name__).debug("sd_notify failed: %s", error)

    def ready(self) -> None:
        self.send("READY=1")

    def status(self, line: str) -> None:
        if line != self._last_status:
            self._last_status = line
            self.send(f"STATUS={line}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
