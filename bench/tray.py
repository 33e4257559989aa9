"""The tray's idle cost: CPU over a window and resident memory, with a real daemon idle beside it.

    python bench/tray.py [--seconds 60] [--settle 10] [--backend gtk]

Sets up a throw-away installation in a temp dir (``shutterlock init``), starts ``shutterlock run``,
a virtual screen (Xvfb) with a tray host (trayer), and ``shutterlock tray`` under a D-Bus session,
waits for the icon to appear in the tray and ``--settle`` seconds more, then reads the tray process's
CPU time, context switches (all threads) and RSS from /proc across ``--seconds``. The daemon is a
process of its own, so these are the tray's figures alone. Targets (issue 7): under 0.5 % of one core
and RSS under 80 MB. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_TARGET, RSS_TARGET_MB = 0.5, 80.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                         if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
    return total


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--backend", default="gtk")
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tray-bench-") as tmp:
        base = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHUTTERLOCK_", "XDG_"))}
        env.update({"HOME": str(base / "home"), "XDG_CONFIG_HOME": str(base / "config"),
                    "XDG_DATA_HOME": str(base / "data"), "XDG_STATE_HOME": str(base / "state"),
                    "XDG_CACHE_HOME": str(base / "cache"), "XDG_RUNTIME_DIR": str(base / "run"),
                    "SHUTTERLOCK_CONFIG": str(base / "config" / "shutterlock.toml")})
        (base / "pass").write_text("tray bench passphrase\n")
        shutterlock = [sys.executable, "-m", "shutterlock"]

        def status() -> dict:
            result = subprocess.run([*shutterlock, "status", "--json"], env=env, capture_output=True, text=True)
            return json.loads(result.stdout) if result.returncode == 0 else {}

        try:
            subprocess.run([*shutterlock, "init", "--source", str(base / "src"), "--vault", str(base / "vault"),
                            "--outbox", str(base / "outbox"), "--passphrase-file", str(base / "pass")],
                           env=env, check=True, capture_output=True)
            log = open(base / "log", "ab")  # noqa: SIM115 - closed with the temp dir
            processes.append(subprocess.Popen([*shutterlock, "run"], env=env, stderr=log))
            wait(lambda: status().get("running"), 60, "the daemon")
            read_fd, write_fd = os.pipe()
            processes.append(subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24",
                                               "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                                              stderr=subprocess.DEVNULL))
            os.close(write_fd)
            with os.fdopen(read_fd) as reader:
                env["DISPLAY"] = ":" + reader.readline().strip()
            processes.append(subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel",
                                               "--width", "200", "--height", "32", "--transparent", "false"],
                                              env=env, stderr=subprocess.DEVNULL))

            def tree() -> str:
                return subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout

            wait(lambda: '"panel"' in tree(), 30, "trayer")
            tray = subprocess.Popen(["dbus-run-session", "--", *shutterlock, "tray"], stderr=log, stdout=log,
                                    env={**env, "PYSTRAY_BACKEND": args.backend})
            processes.append(tray)
            wait(lambda: '"Shutterlock: all ' in tree(), 60, "the tray icon")
            children = subprocess.run(["pgrep", "-P", str(tray.pid), "-f", "shutterlock tray"], capture_output=True,
                                      text=True).stdout.split()
            pid = int(children[0])
            time.sleep(args.settle)

            start_wall, start_cpu, start_switches = time.monotonic(), cpu_seconds(pid), context_switches(pid)
            time.sleep(args.seconds)
            wall, cpu = time.monotonic() - start_wall, cpu_seconds(pid) - start_cpu
            switches = context_switches(pid) - start_switches
            rss_mb, peak_mb = status_field(pid, "VmRSS") / 1024, status_field(pid, "VmHWM") / 1024
            threads = status_field(pid, "Threads")
        finally:
            for process in reversed(processes):
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
                if process.poll() is None:
                    process.kill()

    share = 100 * cpu / wall
    print(f"tray (the daemon in its own process), backend {args.backend}, {wall:.0f} s idle window")
    print(f"  CPU:  {cpu:.2f} s = {share:.3f} % of one core   (target < {CPU_TARGET} %)"
          f"  {'OK' if share < CPU_TARGET else 'MISS'}")
    print(f"  RSS:  {rss_mb:.1f} MB (peak {peak_mb:.1f} MB)   (target < {RSS_TARGET_MB:.0f} MB)"
          f"  {'OK' if rss_mb < RSS_TARGET_MB else 'MISS'}")
    print(f"  wake-ups: {switches} context switches over {threads} threads ({switches / wall:.2f}/s)")
    return 0 if share < CPU_TARGET and rss_mb < RSS_TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
