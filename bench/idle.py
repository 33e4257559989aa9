"""Idle cost: the daemon watching 10,000 already-sealed files, CPU over 60 s and RSS.

    .venv/bin/python bench/idle.py [--files 10000] [--seconds 60]

Targets: under 1% of one core, RSS under 150 MB, torch not imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from common import Installation, cleanup, cpu_seconds, installation, rss_mb, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    base = scratch("idle")
    try:
        source = base / "import"
        for index in range(args.files):
            folder = source / f"2026-{index // 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"IMG_{index:05d}.JPG").write_bytes(os.urandom(2048))
        ours = installation(base / "shutterlock", [source])
        ours.configure()  # derivation is idle too once done; off here so preparing 10,000 files stays quick
        ours.cli("run", "--once")
        with ours.daemon() as daemon:
            measure(ours, daemon, args)
    finally:
        cleanup(base)


def measure(ours: Installation, daemon: subprocess.Popen, args: argparse.Namespace) -> None:
    ours.wait_idle(120)
    before, started = cpu_seconds(daemon.pid), time.monotonic()
    time.sleep(args.seconds)
    used, elapsed = cpu_seconds(daemon.pid) - before, time.monotonic() - started
    status = ours.status()
    print(f"{args.files} sealed files watched ({status['sources'][0]['watch_mode']}), idle for {elapsed:.0f} s")
    print(f"CPU: {used:.2f} s = {100 * used / elapsed:.3f}% of one core (target < 1%)")
    print(f"RSS: {rss_mb(daemon.pid):.1f} MB (target < 150 MB)")
    print(f"torch imported: {status['process']['torch_loaded']} (target: False)")


if __name__ == "__main__":
    main()
