"""Helpers shared by the benchmarks: an isolated installation, synthetic cards, measured child processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PASSPHRASE = "benchmark passphrase"


def scratch(prefix: str) -> Path:
    """A scratch folder on the same disk as /tmp; removed by the caller."""
    return Path(tempfile.mkdtemp(prefix=f"shutterlock-bench-{prefix}-"))


def make_card(folder: Path, files: int = 80, size: int = 25_000_000) -> int:
    """A synthetic camera card of random (incompressible) files; returns the total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        with open(folder / f"DSC{index:05d}.ARW", "wb") as handle:
            remaining = size
            while remaining:
                piece = min(remaining, 1 << 22)
                handle.write(os.urandom(piece))
                remaining -= piece
    os.sync()
    return files * size


@dataclass
class Installation:
    base: Path
    sources: list[Path]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHUTTERLOCK_", "XDG_", "NOTIFY_"))}
        env.update({"XDG_DATA_HOME": str(self.base / "data"), "XDG_CACHE_HOME": str(self.base / "cache"),
                    "XDG_RUNTIME_DIR": str(self.base / "run"), "XDG_CONFIG_HOME": str(self.base / "config-root"),
                    "SHUTTERLOCK_CONFIG": str(self.base / "config.toml"),
                    "SHUTTERLOCK_MODELS_DIR": str(SHARED / "models"), "PYTHONUNBUFFERED": "1"})
        return env

    @property
    def vault(self) -> Path:
        return self.base / "vault"

    def configure(self, extra: str = "", derive: bool = False, settle: float = 2.0,
                  env: dict[str, str] | None = None) -> None:
        lines = []
        for source in self.sources:
            lines += ["[[source]]", f'path = "{source}"', ""]
        lines += ["[vault]", f'path = "{self.vault}"', "", "[derive]", f"enabled = {str(derive).lower()}",
                  f'outbox = "{self.base / "outbox"}"', "", "[engine]", f"settle_seconds = {settle}", ""]
        (self.base / "config.toml").write_text("\n".join(lines) + extra)
        passphrase = self.base / "passphrase"
        passphrase.write_text(PASSPHRASE)
        self.cli("init", "--passphrase-file", str(passphrase), env=env)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "shutterlock", *args], env={**self.env, **(env or {})},
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"shutterlock {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def wait_idle(self, timeout: float) -> dict[str, Any]:
        """Until the running daemon is idle with nothing pending, plus 5 s for the start-up scan's stragglers
        (the idle figures must not include its tail); its status then."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if status.get("running") and status["state"] == "idle" and not status["pending"]:
                    break
            except SystemExit:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not become idle")
            time.sleep(1)
        time.sleep(5)
        return status

    @contextlib.contextmanager
    def daemon(self) -> Iterator[subprocess.Popen]:
        """``shutterlock run`` in the background for the duration of the block (log in daemon.log)."""
        with open(self.base / "daemon.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "shutterlock", "run"], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield process
        finally:
            process.terminate()
            process.wait(30)


def installation(base: Path, sources: list[Path]) -> Installation:
    base.mkdir(parents=True, exist_ok=True)
    for source in sources:
        source.mkdir(parents=True, exist_ok=True)
    return Installation(base, sources)


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; returns (seconds, peak RSS of the child in MB, result)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = process.stdout.read(), process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    result = subprocess.CompletedProcess(command, code, stdout.decode(), stderr.decode())
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{result.stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, result


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float  # user + system of the child
    rss_mb: float  # its peak
    result: subprocess.CompletedProcess


def measured(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command to completion; its wall time, CPU time and peak RSS (fails loudly if it fails).

    Output goes through temp files, not pipes: a run that logs 100,000 lines must not block on a full pipe.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, code, out.read().decode(), err.read().decode(errors="replace"))
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{result.stderr[-2000:]}")
    return Measured(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, result)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    """The machine's load (1, 5, 15 min), printed beside every figure: 2 shared cores make it matter."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def cleanup(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise SystemExit(f"{tool} is not installed (packaging/bootstrap.sh test installs it)")
    return found
