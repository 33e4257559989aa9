"""Derive work functions that act like a decoder exploit, for the sandbox tests.

The runner runs whatever work function it is given in its worker (the daemon gives it ``render``); handing
it :func:`misbehave` is how the tests stand in for a crafted file that took over a decoder, without a hook
in the product. The file's name says what the exploit tries (``open.jpg``, ``connect.jpg``, …) and its
content names the target, as a crafted file would carry it. Whatever it manages to read comes back as
the "derivative", so a test sees the loot if the sandbox lets it through; a refused attempt raises, and
the runner records that as the reason. Its own module, so the worker can import it by name.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from datetime import datetime
from typing import BinaryIO

from shutterlock.derive.render import DeriveJob, Outcome, Rendered, render


def _read(target: str) -> bytes:
    with open(target, "rb") as handle:
        return handle.read()


def _connect(target: str) -> bytes:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as connection:
        connection.sendall(b"the master key")
    return b"connected"


def _unix(target: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(target)
    return b"connected"


def _write(target: str) -> bytes:
    with open(target, "wb") as handle:
        handle.write(b"planted by the worker")
    return b"written"


def _execute(target: str) -> bytes:
    os.execv(target, [target, "-c", "true"])
    return b"unreachable"


def _signal(target: str) -> bytes:
    os.kill(int(target), signal.SIGUSR2)
    return b"signalled"


ACTIONS: dict[str, Callable[[str], bytes]] = {
    "open": _read,  # the key file, a credential
    "list": lambda target: "\n".join(os.listdir(target)).encode(),  # $CREDENTIALS_DIRECTORY
    "environ": lambda _target: repr(dict(os.environ)).encode(),  # what the worker inherited
    "connect": _connect,  # 127.0.0.1:PORT
    "unix": _unix,  # the daemon's control socket
    "allocate": lambda _target: bytes(bytearray(8 << 30)),  # 8 GB
    "write": _write,  # a file outside the scratch folder
    "execute": _execute,  # a program
    "signal": _signal,  # the daemon
}


def misbehave(job: DeriveJob, original: BinaryIO, sidecar: BinaryIO | None) -> Rendered:
    """Try what the file's name says on the target its content names; render files named otherwise."""
    action = ACTIONS.get(job.source.stem)
    if action is None:
        return render(job, original, sidecar)
    loot = action(original.read().decode().strip())
    return Rendered(job.source, Outcome.WRITTEN, jpeg=b"\xff\xd8" + loot, capture_time=datetime.now(),
                    reason="the sandbox let it through")
