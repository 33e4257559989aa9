"""A TCP proxy on 127.0.0.1 that passes, drops or stalls connections: a flaky link to a real server.

Each accepted connection is forwarded to the target by two pump threads. While the proxy is in ``drop`` mode
a connection is cut (both sides reset) after a random number of bytes; in ``stall`` mode nothing is
forwarded (the bytes wait in the kernel buffers) until the mode changes. Tests switch modes themselves or let
:meth:`FaultProxy.chaos` switch them at random. With ``cut_after``, every connection is also cut once that many
bytes have gone back to the client: a response that breaks off mid-body, as a dropping Wi-Fi or mobile link
does, at the same place every time.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int, seed: int = 0, cut_after: int | None = None):
        self.target = ("127.0.0.1", target_port)
        self.cut_after = cut_after
        self.mode = "pass"  # pass | drop | stall
        self._rng = random.Random(seed)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.dropped = 0  # connections cut: by ``drop`` mode or by ``cut_after``
        self.stalled = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            budget = self._rng.randint(1, 4 << 20)
            for source, sink, limit in ((client, upstream, None), (upstream, client, self.cut_after)):
                threading.Thread(target=self._pump, args=(source, sink, budget, limit), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int, limit: int | None) -> None:
        """Forward until either side closes; ``budget``: bytes left before a cut in drop mode; ``limit``: bytes
        to forward at most (then the connection is cut)."""
        sent = 0
        try:
            while not self._stop.is_set():
                if self.mode == "stall":
                    self.stalled += 1
                    time.sleep(0.2)
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if self.mode == "drop":
                    budget -= len(data)
                    if budget <= 0:
                        self.dropped += 1
                        break
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[:max(0, limit - sent)])
                    self.dropped += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            self._cut(source, sink)

    def _cut(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                # A reset, not a polite close: the client sees the connection die mid-request.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other direction's pump, blocked in recv
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def chaos(self, *, switch_every: tuple[float, float] = (0.5, 3.0)) -> None:
        """Switch between pass, drop and stall at random, in a thread, until :meth:`calm`."""
        self._calm = threading.Event()

        def run() -> None:
            while not self._calm.wait(self._rng.uniform(*switch_every)):
                self.mode = self._rng.choice(("pass", "pass", "drop", "stall"))
            self.mode = "pass"

        self._chaos = threading.Thread(target=run, name="proxy-chaos", daemon=True)
        self._chaos.start()

    def calm(self) -> None:
        """End the chaos: from now on every connection passes."""
        self._calm.set()
        self._chaos.join()
        self.mode = "pass"

    def close(self) -> None:
        self._stop.set()
        self.mode = "pass"
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        self._cut(*sockets)
