"""Latency from a file's last write to its object being in the vault, p50 and p95 over 50 files.

    .venv/bin/python bench/latency.py [--files 50]

Target: p95 under settle_seconds (2 s, the default) + 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import Installation, cleanup, installation, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    base = scratch("latency")
    try:
        ours = installation(base / "shutterlock", [base / "import"])
        ours.configure(settle=args.settle)
        with ours.daemon():
            latencies = measure(ours, args.files)
        p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
        print(f"{args.files} files of ~4 MB, written one after another, settle_seconds = {args.settle}")
        print(f"p50 {statistics.median(latencies):.2f} s   p95 {p95:.2f} s   max {latencies[-1]:.2f} s "
              f"(target p95 < {args.settle + 1:.1f} s)")
    finally:
        cleanup(base)


def measure(ours: Installation, files: int) -> list[float]:
    """Write files one by one; time until each one's object (named by its content id) is in the vault."""
    from shutterlock import config as config_module
    from shutterlock.keystore import read_key_file
    from shutterlock.vault.format import Keys

    os.environ.update({k: v for k, v in ours.env.items() if k.startswith(("XDG_", "SHUTTERLOCK_"))})
    paths = config_module.resolve_paths()
    keys = Keys.from_master(read_key_file(paths.key_file))
    while not paths.socket.exists():
        time.sleep(0.1)
    latencies = []
    for index in range(files):
        data = os.urandom(4_000_000 + index)
        hasher = keys.hasher()
        hasher.update(data)
        content_id = hasher.hexdigest()
        target = ours.vault / "objects" / content_id[:2] / content_id
        with open(ours.sources[0] / f"IMG_{index:04d}.HEIC", "wb") as handle:
            handle.write(data)
        written = time.monotonic()
        while not target.exists():
            time.sleep(0.005)
        latencies.append(time.monotonic() - written)
    return sorted(latencies)


if __name__ == "__main__":
    main()
