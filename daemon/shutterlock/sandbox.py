"""Confine a process that parses untrusted files, so that a decoder exploit finds nothing worth stealing.

The derive worker runs Pillow, libjpeg, libheif and LibRaw on whatever lands in the import folder. It is
a fresh interpreter (exec'd by the daemon, never forked from it, so none of the daemon's memory -- the
master key -- is in it) with an allow-listed environment (:func:`environment`), and before it imports a
single decoder it calls :func:`confine`, which applies, each where this kernel and supervisor allow it:

- it dies with the daemon (``PR_SET_PDEATHSIG``), never dumps core, and gets memory (``RLIMIT_AS``) and
  CPU (``RLIMIT_CPU``) limits;
- ``PR_SET_NO_NEW_PRIVS``: nothing it executes can gain privileges;
- a new user and network namespace: no network interface, no capability outside;
- Landlock: read-only access to the Python installation, the shared libraries and the model weights,
  read-write access to its own scratch folder, nothing else (not the key file, not
  ``$CREDENTIALS_DIRECTORY``, not the daemon's ``/proc/PID/mem``); no TCP; no abstract UNIX sockets or
  signals outside its domain;
- seccomp: ``socket(2)`` fails, which also keeps it off named UNIX sockets (the control socket).

A layer that cannot be applied is reported, not fatal (:class:`Isolation`), and ``status`` shows it.
This module imports only the standard library and the Landlock binding: it runs before numpy starts its
thread pool, because namespaces need a single-threaded process and Landlock restricts only the calling
thread and the threads and processes it starts afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import struct
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

# Read-only beyond the Python installation: the dynamic loader's cache and the system libraries the
# wheels link against, time zone data (capture dates fall back to the file's local mtime), the system's
# fonts (the watermark's), and what numpy and torch read to size their thread pools.
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache",
               "/etc/localtime", "/usr/share/zoneinfo", "/usr/share/fonts", "/proc/cpuinfo", "/proc/meminfo",
               "/sys/devices/system/cpu", "/dev/urandom")
SYSTEM_WRITE = ("/dev/null",)
# The variables a worker keeps: locale and time zone (dated outbox folders), and OpenBLAS's CPU-type
# overrides, set on machines where a wrong guess crashes it. Nothing else crosses: no credentials
# directory, no AWS_*, no passphrase file.
KEEP_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
# seccomp: the audit architecture and the number of socket(2) for the architectures we filter.
_SOCKET_SYSCALL = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
_X32_BIT = 0x40000000


@dataclass(frozen=True)
class Policy:
    """What a confined worker may use; it crosses to the worker as JSON on its command line."""

    scratch: str
    read_only: tuple[str, ...]
    memory_bytes: int
    cpu_seconds: int  # the worker's whole life; the runner sets a per-image soft limit below it
    parent: int  # the daemon's pid: the worker dies with it

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Policy:
        return cls(scratch=str(data["scratch"]), read_only=tuple(map(str, data["read_only"])),  # type: ignore[call-overload]
                   memory_bytes=int(data["memory_bytes"]), cpu_seconds=int(data["cpu_seconds"]),  # type: ignore[call-overload]
                   parent=int(data["parent"]))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Isolation:
    """What confinement a worker has (``active``) and which layers this system refused (``missing``)."""

    active: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the daemon's side


def python_paths() -> list[Path]:
    """Where the worker imports from: this interpreter's path (the same packages as the daemon's)."""
    entries = [Path(entry or os.getcwd()) for entry in sys.path]
    entries += [Path(sys.prefix), Path(sys.base_prefix)]
    return [entry for entry in entries if entry.exists()]


def read_only_paths(extra: Iterable[Path], guarded: Iterable[Path]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The worker's read-only paths, and those refused because they would contain a ``guarded`` path.

    Landlock grants whole trees: a Python path entry such as the home folder would hand over the key
    file below it. Such an entry is left out (the worker may then fail to import, which is reported),
    never granted.
    """
    guards = [Path(os.path.realpath(path)) for path in guarded]
    allowed: dict[str, None] = {}
    refused: dict[str, None] = {}
    for path in [*python_paths(), *map(Path, SYSTEM_READ), *extra]:
        if not path.exists():
            continue
        real = Path(os.path.realpath(path))
        if any(guard == real or real in guard.parents for guard in guards):
            refused[str(real)] = None
        else:
            allowed[str(real)] = None
    return tuple(allowed), tuple(refused)


def environment(scratch: Path, cache_dir: Path) -> dict[str, str]:
    """The worker's whole environment: an allow-list, so no secret can ride along by accident.

    ``CACHE_DIRECTORY`` points the worker at the daemon's cache, where downloaded weights live.
    """
    env = {name: os.environ[name] for name in KEEP_ENVIRONMENT if name in os.environ}
    env.update(PATH=os.defpath, HOME=str(scratch), TMPDIR=str(scratch), CACHE_DIRECTORY=str(cache_dir),
               PYTHONDONTWRITEBYTECODE="1", MALLOC_ARENA_MAX="2")
    return env


# --------------------------------------------------------------------------- the worker's side


def confine(policy: Policy) -> Isolation:
    """Apply every layer this system allows, in an order where each one still can be; report what held."""
    active: list[str] = []
    missing: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != policy.parent:
        raise SystemExit("the daemon that started this worker is gone")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (policy.memory_bytes, policy.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (policy.cpu_seconds, policy.cpu_seconds))
    active.append(f"memory limit {policy.memory_bytes >> 20} MB")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        active.append("no new privileges")
    else:
        missing.append(f"no new privileges: {_errno(libc)}")
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        active.append("own network namespace (no network)")
    else:
        missing.append(f"network namespace: {_errno(libc)}")
    _landlock(policy, active, missing)
    _deny_sockets(libc, active, missing)
    return Isolation(tuple(active), tuple(missing))


def _errno(libc: ctypes.CDLL) -> str:
    return os.strerror(ctypes.get_errno())


def _landlock(policy: Policy, active: list[str], missing: list[str]) -> None:
    try:
        from py_landlock import AccessFs, Landlock, LandlockError, get_abi_version
    except ImportError:
        missing.append("Landlock: the py-landlock package is not installed")
        return
    try:
        abi = int(get_abi_version())
        sandbox = Landlock(strict=False)
        for path in policy.read_only:
            if os.path.isdir(path):
                sandbox.add_path_rule(path, access=AccessFs.READ_FILE | AccessFs.READ_DIR)
            else:
                sandbox.add_path_rule(path, access=AccessFs.READ_FILE)
        for path in SYSTEM_WRITE:
            if os.path.exists(path):
                sandbox.add_path_rule(path, access=AccessFs.READ_FILE | AccessFs.WRITE_FILE)
        sandbox.allow_read_write(policy.scratch)
        sandbox.apply()
    except (LandlockError, OSError) as error:
        missing.append(f"Landlock: {error}")
        return
    active.append(f"Landlock ABI {abi}: files read-only, scratch folder only")
    if abi >= 4:
        active.append("Landlock: no TCP")
    else:
        missing.append(f"Landlock: no TCP rules before ABI 4 (this kernel has {abi})")
    if abi >= 6:
        active.append("Landlock: no signals or abstract sockets outside")


def _deny_sockets(libc: ctypes.CDLL, active: list[str], missing: list[str]) -> None:
    """A seccomp filter under which socket(2) fails with EACCES (any family: IP, UNIX, netlink)."""
    machine = os.uname().machine
    if machine not in _SOCKET_SYSCALL:
        missing.append(f"seccomp: no filter for {machine}")
        return
    arch, number = _SOCKET_SYSCALL[machine]
    load_word, jump_equal, jump_at_least, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EACCES
    program = [
        (load_word, 0, 0, 4),  # seccomp_data.arch
        (jump_equal, 0, 4, arch),  # another ABI (i386, x32 on x86_64): deny outright
        (load_word, 0, 0, 0),  # seccomp_data.nr
        (jump_at_least, 2, 0, _X32_BIT),  # x32 system call numbers: deny
        (jump_equal, 1, 0, number),
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]
    filters = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buffer))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0) == 0:
        active.append("seccomp: no sockets")
    else:
        missing.append(f"seccomp: {_errno(libc)}")


def main() -> None:
    """A confined process's entry (``python -I -c``): confine, then call ``entry(isolation, *args)``.

    argv[1] is JSON: ``path`` (sys.path), ``nice``, ``policy``, ``entry`` ("module:function"), ``args``.
    """
    payload = json.loads(sys.argv[1])
    sys.path[:] = payload["path"]
    if payload["nice"]:
        os.nice(payload["nice"])
    policy = Policy.from_json(payload["policy"])
    isolation = confine(policy)
    module, name = payload["entry"].split(":")
    entry = getattr(__import__(module, fromlist=[name]), name)
    entry(isolation, *payload["args"])
