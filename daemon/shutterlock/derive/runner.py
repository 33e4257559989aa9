"""Run derivatives in a long-lived child process with a hard per-image time limit.

A pathological file (a decoder loop, a huge allocation, a native crash) must not stall or kill the
daemon: the child is killed when the limit passes (or found dead) and a fresh one is started for the
next job. One worker is kept alive between jobs so heavy imports (torch, for the cloak) load once.
The child lowers its own priority (``os.nice``) so derivatives never compete with sealing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Self

from .render import DeriveJob, Outcome, Rendered

NICE_INCREMENT = 10
READY = "ready"
STARTUP_LIMIT = 120.0  # seconds a new worker may take to import its libraries on a loaded machine


Work = Callable[[DeriveJob], Rendered]


def _worker_main(connection: Connection, nice: int, work: Work | None) -> None:
    """Child loop: receive a job, send back its result; ``None`` means exit."""
    if nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(nice)
    if work is None:
        from .render import render as work  # the decoders load here, in the child, not in the daemon
    connection.send(READY)  # start-up is not part of any image's time limit
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        connection.send(work(job))


class DeriveRunner:
    """Synchronous front for the worker process; call :meth:`run` from one thread at a time."""

    def __init__(self, time_limit: float, *, nice: int = NICE_INCREMENT, work: Work | None = None):
        """``work`` (default: ``render``) runs in the child for each job; a module-level function, so the
        child can import it."""
        self.time_limit = time_limit
        self._nice = nice
        self._work = work
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (None before the first job or after a kill)."""
        return self._process.pid if self._process is not None else None

    def _ensure_worker(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._connection is not None:
            return self._connection
        self._stop_worker(kill=True)
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_worker_main, args=(child, self._nice, self._work),
                                        name="shutterlock-derive", daemon=True)
        process.start()
        child.close()
        self._process, self._connection = process, parent
        if not parent.poll(STARTUP_LIMIT) or parent.recv() != READY:
            raise OSError(f"the derive worker did not start within {STARTUP_LIMIT:g} s")
        return parent

    def run(self, job: DeriveJob) -> Rendered:
        """Derive one original; a timeout or a worker crash becomes a failed result, never an exception."""
        with self._lock:
            started = time.monotonic()
            try:
                connection = self._ensure_worker()
                connection.send(job)
                if connection.poll(self.time_limit):
                    result: Rendered = connection.recv()
                    return result
                reason = f"time limit exceeded ({self.time_limit:g} s); worker stopped"
            except (EOFError, OSError, BrokenPipeError):
                code = self._process.exitcode if self._process is not None else None
                with contextlib.suppress(Exception):
                    if self._process is not None:
                        self._process.join(1.0)
                        code = self._process.exitcode
                reason = f"derive worker crashed (exit code {code})"
            except Exception as error:  # e.g. an unpicklable job: record it, keep going
                reason = f"internal error: {type(error).__name__}: {error}"
            self._stop_worker(kill=True)
            self.restarts += 1
            return Rendered(job.source, Outcome.FAILED, reason=reason, cloak_strength=job.cloak.strength,
                            seconds=time.monotonic() - started)

    def _stop_worker(self, *, kill: bool) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            if not kill:
                with contextlib.suppress(OSError, ValueError):
                    connection.send(None)
            connection.close()
        if process is None:
            return
        if not kill:
            process.join(5.0)
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)
        with contextlib.suppress(ValueError):
            process.close()

    def close(self) -> None:
        """Ask the worker to exit, killing it if it does not within a few seconds. A job still running (a
        long cloak at shutdown) is not waited for: its worker is killed, and the job is redone next time."""
        if self._lock.acquire(timeout=1.0):
            try:
                self._stop_worker(kill=False)
            finally:
                self._lock.release()
            return
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
