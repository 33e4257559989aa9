"""Run derivatives in a confined, long-lived child process with a hard per-image time limit.

A pathological file (a decoder loop, a huge allocation, a native crash) must not stall or kill the
daemon, and a decoder exploit must find nothing worth stealing. So the worker is a fresh interpreter,
exec'd with a clean environment and confined before it loads a decoder (``shutterlock.sandbox``); it is
killed when the limit passes (or found dead) and a fresh one is started for the next job. One worker is
kept alive between jobs so heavy imports (torch, for the cloak) load once; it runs niced, so derivatives
never compete with sealing.

The worker is untrusted once it has parsed a file. It gets each original as an open file descriptor (it
can open no path of its own), and what it sends back is read as plain data -- a bounded JSON header and
the JPEG bytes -- never unpickled; the daemon decides where the bytes go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Self

from shutterlock.config import resolve_paths
from shutterlock.fsutil import ensure_dir
from shutterlock.sandbox import Isolation, Policy, environment, read_only_paths

from .look import resampler
from .render import DeriveJob, Outcome, Rendered

log = logging.getLogger(__name__)

NICE_INCREMENT = 10
START_LIMIT = 120.0  # seconds a new worker may take to confine itself and import its libraries (busy machine)
HEADER_LIMIT = 64 << 10  # bytes of a result's JSON header
TEXT_LIMIT = 2000  # characters kept of any text a worker reports
# A worker's lifetime CPU limit, in per-image budgets: past it, a fresh worker takes over (see _Worker).
LIFETIME_JOBS = 50
DEFAULT_WORK = "shutterlock.derive.render:render"
_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1])['path']; from shutterlock.sandbox import main; main()"
_PREFIX = struct.Struct("!II")  # header length, body length

Work = Callable[[DeriveJob, BinaryIO, BinaryIO | None], Rendered]  # the job, the original, its XMP sidecar

# PR_SET_PDEATHSIG fires when the *thread* that started a process ends, not the process: workers are
# started from this one long-lived thread, so a worker lives exactly as long as the daemon.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derive-spawner")


class _Failure(Exception):
    """The worker could not deliver a result; the message is the reason recorded for the original."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    channel: socket.socket
    scratch: Path
    key: tuple[Any, ...]  # what the policy was made from: a different job needs a different worker
    cpu_limit: int
    cpu_used: float = 0.0

    def stop(self, *, kill: bool) -> None:
        """Close the channel (a healthy worker then exits by itself), kill if asked or if it lingers."""
        with contextlib.suppress(OSError):
            self.channel.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)
        shutil.rmtree(self.scratch, ignore_errors=True)


class DeriveRunner:
    """Synchronous front for the worker process; call :meth:`run` from one thread at a time."""

    def __init__(self, time_limit: float, *, nice: int = NICE_INCREMENT, work: Work | None = None,
                 guarded: Iterable[Path] = ()):
        """``work`` (default: ``render``) runs in the worker for each job: a module-level function, so the
        worker can import it. ``guarded``: paths the worker must never be able to read, beyond the state,
        runtime and credentials directories (the lane adds the vault, the sources and the outbox)."""
        self.time_limit = time_limit
        self._nice = nice
        self._work = f"{work.__module__}:{work.__qualname__}" if work is not None else DEFAULT_WORK
        self._guarded = tuple(guarded)
        self._worker: _Worker | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.isolation: Isolation | None = None  # what the latest worker reported; None before the first

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (None before the first job or after a kill)."""
        return self._worker.process.pid if self._worker is not None else None

    def run(self, job: DeriveJob) -> Rendered:
        """Derive one original; a timeout, a worker crash or a bad answer becomes a failed result."""
        with self._lock:
            started = time.monotonic()
            job = _fetch_weights(job)
            try:
                fds = [_open(job.source)]
            except OSError as error:
                return _failed(job, f"cannot read file: {error.strerror or error}", started)
            if job.sidecar is not None:
                with contextlib.suppress(OSError):  # a sidecar that vanished just says nothing
                    fds.append(_open(job.sidecar))
            try:
                return self._exchange(job, fds)
            except _Failure as failure:
                reason = str(failure)
            finally:
                for fd in fds:
                    os.close(fd)
            self._stop(kill=True)
            self.restarts += 1
            return _failed(job, reason, started)

    def _exchange(self, job: DeriveJob, fds: list[int]) -> Rendered:
        worker = self._ensure_worker(job)  # the limit starts once a worker is ready: starting is not the image's fault
        try:
            _send(worker.channel, {}, pickle.dumps(job), fds)
            header, body = _receive(worker.channel, time.monotonic() + self.time_limit, _jpeg_limit(job))
        except TimeoutError:
            raise _Failure(f"time limit exceeded ({self.time_limit:g} s); worker stopped") from None
        except (EOFError, OSError):
            raise _Failure(_death(worker, job)) from None
        rendered = _decode_result(job, header, body)
        worker.cpu_used = _number(header, "cpu_total")
        if worker.cpu_used + _cpu_per_job(job) > worker.cpu_limit:
            self._stop(kill=False)  # retire it while it is idle; the next job starts a fresh one
        return rendered

    def _ensure_worker(self, job: DeriveJob) -> _Worker:
        key = _policy_key(job)
        if self._worker is not None and self._worker.key == key and self._worker.process.poll() is None:
            return self._worker
        self._stop(kill=True)
        self._worker = self._start(job, key)
        return self._worker

    def _start(self, job: DeriveJob, key: tuple[Any, ...]) -> _Worker:
        paths = resolve_paths()
        scratch = Path(tempfile.mkdtemp(prefix="worker-", dir=ensure_dir(paths.cache_dir / "derive")))
        guarded = [paths.state_dir, paths.runtime_dir, paths.cache_dir / "derive", *self._guarded]
        if paths.credentials_dir is not None:
            guarded.append(paths.credentials_dir)
        read_only, refused = read_only_paths(_weights_and_logo(job, paths.cache_dir), guarded)
        cpu_limit = _cpu_per_job(job) * LIFETIME_JOBS
        policy = Policy(scratch=str(scratch), read_only=read_only, memory_bytes=job.derive.memory_limit << 20,
                        cpu_seconds=cpu_limit, parent=os.getpid())
        ours, theirs = socket.socketpair()
        payload = {"path": [entry or os.getcwd() for entry in sys.path], "nice": self._nice,
                   "policy": policy.to_json(), "entry": "shutterlock.derive.runner:serve",
                   "args": [theirs.fileno(), self._work, _cpu_per_job(job)]}
        try:
            process = _SPAWNER.submit(
                subprocess.Popen, [sys.executable, "-I", "-c", _BOOT, json.dumps(payload)],
                env=environment(scratch, paths.cache_dir), pass_fds=(theirs.fileno(),), cwd=scratch,
                stdin=subprocess.DEVNULL).result()
        except OSError as error:
            ours.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise _Failure(f"cannot start the derive worker: {error}") from None
        finally:
            theirs.close()
        worker = _Worker(process, ours, scratch, key, cpu_limit)
        try:
            hello, _ = _receive(ours, time.monotonic() + START_LIMIT, 0)
        except (TimeoutError, EOFError, OSError):
            worker.stop(kill=True)
            raise _Failure(f"the derive worker did not start (exit code {process.poll()})") from None
        if "error" in hello:
            worker.stop(kill=True)
            raise _Failure(f"the derive worker cannot start: {_text(hello, 'error')}")
        self.isolation = Isolation(
            active=("fresh process, clean environment", *map(str, hello.get("active", ()))),
            missing=(*map(str, hello.get("missing", ())),
                     *(f"not readable by the worker: {path} (it holds the key or the photos)" for path in refused)))
        return worker

    def _stop(self, *, kill: bool) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(kill=kill)

    def close(self) -> None:
        """Let the worker exit, killing it if it does not within a few seconds. A job still running (a
        long cloak at shutdown) is not waited for: its worker is killed, and the job is redone next time."""
        if self._lock.acquire(timeout=1.0):
            try:
                self._stop(kill=False)
            finally:
                self._lock.release()
            return
        worker = self._worker
        if worker is not None:
            worker.process.kill()


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)


def _failed(job: DeriveJob, reason: str, started: float) -> Rendered:
    return Rendered(job.source, Outcome.FAILED, reason=reason, cloak_strength=job.cloak.strength,
                    seconds=time.monotonic() - started)


def _fetch_weights(job: DeriveJob) -> DeriveJob:
    """The worker has no network: missing cloak weights are downloaded here, in the daemon (SHA-256-verified,
    into the cache the worker reads), and the worker only looks them up. A failed download is logged; the
    worker then finds no weights and the derivative is held back (or released uncloaked) as configured."""
    if job.cloak.strength == "off" or job.cloak.offline:
        return job
    from shutterlock.cloak import SURROGATES, WeightsError
    from shutterlock.cloak.models import resolve_weights

    try:
        for name in SURROGATES:
            resolve_weights(name, job.cloak.models_dir)
    except (WeightsError, OSError) as error:
        log.warning("cloak weights: %s", error)
    return dataclasses.replace(job, cloak=dataclasses.replace(job.cloak, offline=True))


def _policy_key(job: DeriveJob) -> tuple[Any, ...]:
    return (job.derive.memory_limit, _cpu_per_job(job), job.cloak.models_dir, job.watermark.font,
            job.watermark.logo)


def _cpu_per_job(job: DeriveJob) -> int:
    """CPU seconds one image may use: its time limit on every core the cloak may use (a backstop: the
    wall-clock limit stops a worker first, unless the daemon itself is stalled)."""
    return math.ceil(job.derive.time_limit * (job.cloak.threads or os.cpu_count() or 1))


def _weights_and_logo(job: DeriveJob, cache_dir: Path) -> list[Path]:
    """What the worker reads besides Python: the cloak's weights (configured or downloaded), the
    watermark's font and logo."""
    extra = [cache_dir / "models"]
    if job.cloak.models_dir is not None:
        extra.append(job.cloak.models_dir)
    extra += [path for path in (job.watermark.font, job.watermark.logo) if path is not None]
    return extra


def _jpeg_limit(job: DeriveJob) -> int:
    """The largest derivative a worker may send: six bytes per pixel of a square of its longest side (a
    width-bound preset's height is at most 1.25 times its width)."""
    size = job.derive.size
    edge = size.long_edge or 2 * size.width
    return min(max(16 << 20, 6 * edge**2), 1 << 30)


def _death(worker: _Worker, job: DeriveJob) -> str:
    """Why the channel broke: the worker's exit status, in words where there are some."""
    try:
        code = worker.process.wait(2.0)
    except subprocess.TimeoutExpired:
        return "derive worker stopped answering"
    if code == -signal.SIGXCPU:
        return f"CPU limit exceeded ({_cpu_per_job(job)} s); worker stopped"
    return f"derive worker crashed (exit code {code})"


# --------------------------------------------------------------------------- the channel


def _send(channel: socket.socket, header: dict[str, Any], body: bytes = b"", fds: list[int] | None = None) -> None:
    data = json.dumps(header).encode()
    prefix = _PREFIX.pack(len(data), len(body))
    if fds:
        socket.send_fds(channel, [prefix], fds)
    else:
        channel.sendall(prefix)
    channel.sendall(data + body)


def _receive(channel: socket.socket, deadline: float | None, body_limit: int,
             fds: list[int] | None = None) -> tuple[dict[str, Any], bytes]:
    """One framed message; passed file descriptors land in ``fds``. Sizes are checked before reading."""
    prefix = _exact(channel, _PREFIX.size, deadline, fds)
    header_size, body_size = _PREFIX.unpack(prefix)
    if header_size > HEADER_LIMIT or body_size > body_limit:
        raise _Failure(f"derive worker sent an oversized result ({header_size} + {body_size} bytes)")
    try:
        header = json.loads(_exact(channel, header_size, deadline))
    except ValueError:
        raise _Failure("derive worker sent a malformed result") from None
    if not isinstance(header, dict):
        raise _Failure("derive worker sent a malformed result")
    return header, _exact(channel, body_size, deadline)


def _exact(channel: socket.socket, size: int, deadline: float | None, fds: list[int] | None = None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        channel.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if fds is not None and not chunks:
            data, received, _, _ = socket.recv_fds(channel, size, 2)
            fds.extend(received)
        else:
            data = channel.recv(min(size - len(chunks), 1 << 20))
        if not data:
            raise EOFError
        chunks += data
    return bytes(chunks)


def _text(header: dict[str, Any], name: str) -> str:
    value = header.get(name, "")
    if not isinstance(value, str):
        raise _Failure(f"derive worker sent a malformed result ({name})")
    return value[:TEXT_LIMIT]


def _number(header: dict[str, Any], name: str) -> float:
    value = header.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _Failure(f"derive worker sent a malformed result ({name})")
    return float(value)


def _decode_result(job: DeriveJob, header: dict[str, Any], body: bytes) -> Rendered:
    """Plain data back into a :class:`Rendered`, each field checked: the worker may be compromised."""
    try:
        outcome = Outcome(header.get("outcome"))
        capture = header.get("capture_time")
        capture_time = datetime.fromisoformat(capture) if isinstance(capture, str) else None
    except (ValueError, TypeError):
        raise _Failure("derive worker sent a malformed result (outcome or capture time)") from None
    timings = header.get("timings", {})
    if not isinstance(timings, dict):
        raise _Failure("derive worker sent a malformed result (timings)")
    stars = header.get("rating")
    if stars is not None and (isinstance(stars, bool) or not isinstance(stars, int) or not -1 <= stars <= 5):
        raise _Failure("derive worker sent a malformed result (rating)")
    if outcome is Outcome.WRITTEN and (capture_time is None or not body.startswith(b"\xff\xd8")):
        raise _Failure("derive worker sent a derivative that is not a JPEG")
    return Rendered(
        job.source, outcome, jpeg=body if outcome is Outcome.WRITTEN else None, reason=_text(header, "reason"),
        cloaked=header.get("cloaked") is True, cloak_strength=_text(header, "cloak_strength"),
        cloak_error=_text(header, "cloak_error"), watermark=_text(header, "watermark"),
        width=int(_number(header, "width")), height=int(_number(header, "height")), capture_time=capture_time,
        resized_to=int(_number(header, "resized_to")), rating=stars,
        seconds=_number(header, "seconds"), timings={str(k)[:40]: _number(timings, k) for k in list(timings)[:20]})


# --------------------------------------------------------------------------- the worker's side


def serve(isolation: Isolation, fd: int, work_name: str, cpu_per_job: int) -> None:
    """The worker's loop (confined by now): say how it is confined, then render each job it is sent."""
    channel = socket.socket(fileno=fd)
    try:
        module, name = work_name.split(":")
        work: Work = getattr(__import__(module, fromlist=[name]), name)
    except Exception as error:  # report any import failure (e.g. a path the sandbox hides), then exit
        _send(channel, {"error": f"cannot load {work_name}: {type(error).__name__}: {error}"})
        return
    resampler()  # heavy imports before the first job's time limit starts
    _send(channel, {"active": list(isolation.active), "missing": list(isolation.missing)})
    while True:
        received: list[int] = []
        try:
            _, body = _receive(channel, None, 1 << 24, received)
        except EOFError:
            return
        job: DeriveJob = pickle.loads(body)  # from the daemon, which this process trusts
        used = _cpu_used()
        _, lifetime = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (min(lifetime, math.ceil(used) + cpu_per_job), lifetime))
        with os.fdopen(received[0], "rb") as original, \
                (os.fdopen(received[1], "rb") if len(received) > 1 else contextlib.nullcontext()) as sidecar:
            rendered = _render_guarded(work, job, original, sidecar)
        header, data = _encode_result(rendered)
        _send(channel, {**header, "cpu_total": _cpu_used()}, data)


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _render_guarded(work: Work, job: DeriveJob, original: BinaryIO, sidecar: BinaryIO | None) -> Rendered:
    """``render`` never raises; anything else that does (a bug, a denied access) costs one record."""
    try:
        return work(job, original, sidecar)
    except MemoryError:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0] >> 20
        reason = f"out of memory (the worker's limit is {limit} MB)"
    except Exception as error:
        reason = f"worker error: {type(error).__name__}: {error}"
    return Rendered(job.source, Outcome.FAILED, reason=reason, cloak_strength=job.cloak.strength)


def _encode_result(rendered: Rendered) -> tuple[dict[str, Any], bytes]:
    header = {
        "outcome": rendered.outcome.value, "reason": rendered.reason, "cloaked": rendered.cloaked,
        "cloak_strength": rendered.cloak_strength, "cloak_error": rendered.cloak_error,
        "watermark": rendered.watermark, "width": rendered.width, "height": rendered.height,
        "resized_to": rendered.resized_to, "rating": rendered.rating,
        "capture_time": rendered.capture_time.isoformat() if rendered.capture_time else None,
        "seconds": rendered.seconds, "timings": rendered.timings,
    }
    return header, rendered.jpeg or b""
