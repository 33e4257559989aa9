"""The control socket: how the CLI and the tray talk to a running daemon.

Newline-delimited JSON over a Unix domain socket in an owner-only runtime directory; the
socket is 0600 and, where the OS tells us, the peer's uid must be ours. Where AF_UNIX is not
available (Windows), a loopback TCP port plus a random token in an owner-only file stands in.

Requests: ``{"op": "status" | "pause" | "resume" | "rescan" | "retry" | "wake" | "reload" | "stop"}``,
``{"op": "watch", "version": N, "timeout": S}``, which long-polls until the status changes, and
``{"op": "share_link", "name": NAME}`` (the share's link and QR code files, for the tray).
Replies: ``{"ok": true, "status": {...}}`` (the status document of ``status.py``; ``share_link`` adds
``"share": {...}``) or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any, Protocol

from shutterlock.errors import ControlError, DaemonNotRunning, ShutterlockError
from shutterlock.status import Status

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
HAVE_UNIX = hasattr(socket, "AF_UNIX")


class ControlTarget(Protocol):
    def status(self) -> Status: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def rescan(self) -> None: ...
    def retry(self) -> None: ...
    def wake(self) -> None: ...
    def request_reload(self) -> None: ...
    def request_stop(self) -> None: ...
    def share_link(self, name: str) -> dict[str, Any]: ...
    def wait_for_change(self, version: int, timeout: float) -> None: ...


def peer_uid(sock: socket.socket) -> int | None:
    """The connecting process's uid, where the OS can tell us."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    getpeereid = getattr(sock, "getpeereid", None)
    return getpeereid()[0] if getpeereid else None


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer | _TcpServer

    def handle(self) -> None:
        if HAVE_UNIX and isinstance(self.server, _UnixServer):
            uid = peer_uid(self.request)
            if uid is not None and uid != os.getuid():
                log.warning("refused control connection from uid %d", uid)
                self._reply({"ok": False, "error": "permission denied"})
                return
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            self._reply({"ok": False, "error": "malformed request"})
            return
        token = getattr(self.server, "token", None)
        if token is not None and not hmac.compare_digest(str(request.get("token", "")), token):
            self._reply({"ok": False, "error": "permission denied"})
            return
        self._reply(self._dispatch(request))

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        target: ControlTarget = self.server.target
        op = request.get("op")
        extra: dict[str, Any] = {}
        try:
            if op == "watch":
                timeout = min(max(float(request.get("timeout", 30)), 0.0), 300.0)
                target.wait_for_change(int(request.get("version", -1)), timeout)
            elif op == "pause":
                target.pause()
            elif op == "resume":
                target.resume()
            elif op == "rescan":
                target.rescan()
            elif op == "retry":
                target.retry()
            elif op == "wake":  # new work was queued in the catalog by another process
                target.wake()
            elif op == "reload":
                target.request_reload()
            elif op == "stop":
                target.request_stop()
            elif op == "share_link":
                extra["share"] = target.share_link(str(request.get("name", "")))
            elif op != "status":
                return {"ok": False, "error": f"unknown op {op!r}"}
            return {"ok": True, "status": target.status().to_dict(), **extra}
        except ShutterlockError as error:
            return {"ok": False, "error": str(error)}
        except Exception as error:
            log.exception("control request %r failed", op)
            return {"ok": False, "error": f"internal error: {error!r}"}

    def _reply(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(payload).encode() + b"\n")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    target: ControlTarget


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    target: ControlTarget
    token: str


class ControlServer:
    def __init__(self, socket_path: Path, target: ControlTarget):
        self.path = socket_path
        self._target = target
        self._server: _UnixServer | _TcpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._listen()
        except OSError as error:
            raise ControlError(f"cannot listen on the control socket {self.path}: {error.strerror or error}") \
                from None

    def _listen(self) -> None:
        # Imported here: clients (the tray) load the socket client and the status types, nothing more.
        from shutterlock.fsutil import atomic_write_bytes, ensure_dir

        ensure_dir(self.path.parent, 0o700)
        if hasattr(os, "getuid") and self.path.parent.stat().st_uid != os.getuid():
            raise ControlError(f"{self.path.parent} belongs to another user; refusing to put the socket there")
        self.path.parent.chmod(0o700)
        if HAVE_UNIX:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            old_umask = os.umask(0o177)
            try:
                server: _UnixServer | _TcpServer = _UnixServer(str(self.path), _Handler)
            finally:
                os.umask(old_umask)
            self.path.chmod(0o600)
        else:
            server = _TcpServer(("127.0.0.1", 0), _Handler)
            server.token = secrets.token_hex(32)
            port = server.server_address[1]
            atomic_write_bytes(_token_file(self.path), json.dumps({"port": port, "token": server.token}).encode())
        server.target = self._target
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            (self.path if HAVE_UNIX else _token_file(self.path)).unlink()


def _token_file(socket_path: Path) -> Path:
    return socket_path.with_suffix(".json")


class ControlClient:
    def __init__(self, socket_path: Path, timeout: float = 10.0):
        self.path, self.timeout = socket_path, timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request; returns the status document as sent, or raises DaemonNotRunning / ControlError."""
        status: dict[str, Any] = self.request(op, **args)["status"]
        return status

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request; returns the whole reply (the status and whatever the op adds)."""
        request = {"op": op, **args}
        wait = float(args.get("timeout", 0)) if op == "watch" else 0.0
        try:
            if HAVE_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout + wait)
                sock.connect(str(self.path))
            else:
                info = json.loads(_token_file(self.path).read_text())
                request["token"] = info["token"]
                sock = socket.create_connection(("127.0.0.1", info["port"]), timeout=self.timeout + wait)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise DaemonNotRunning(str(self.path)) from error
        except OSError as error:
            raise DaemonNotRunning(f"{self.path}: {error.strerror or error}") from error
        try:
            with sock, sock.makefile("rwb") as stream:
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                line = stream.readline(16 << 20)
        except (ConnectionError, TimeoutError) as error:
            raise DaemonNotRunning(f"{self.path}: {error}") from error
        if not line:
            raise DaemonNotRunning(f"{self.path}: the daemon closed the connection")
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlError(f"{self.path}: the daemon sent a malformed reply") from None
        if not reply.get("ok"):
            raise ControlError(f"the daemon refused {op!r}: {reply.get('error', 'request failed')}")
        answer: dict[str, Any] = reply
        return answer
