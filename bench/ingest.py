"""Sealing throughput: `shutterlock run --once` vs `restic backup` on the same synthetic card.

    .venv/bin/python bench/ingest.py [--files 80] [--size-mb 25]

Prints MB/s for both, the ratio (target: at least 2× restic) and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys

from common import cleanup, installation, make_card, require, scratch, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--size-mb", type=float, default=25)
    args = parser.parse_args()
    restic = require("restic")

    base = scratch("ingest")
    try:
        card = base / "card"
        total = make_card(card, args.files, int(args.size_mb * 1_000_000))
        mb = total / 1e6

        ours = installation(base / "shutterlock", [card])
        ours.configure()
        os.sync()
        seconds, rss, _ = timed([sys.executable, "-m", "shutterlock", "run", "--once"], env=ours.env)
        ours_rate = mb / seconds

        repo = base / "restic-repo"
        env = {**os.environ, "RESTIC_PASSWORD": "benchmark passphrase", "RESTIC_CACHE_DIR": str(base / "rcache")}
        timed([restic, "init", "-r", str(repo)], env=env)
        os.sync()
        r_seconds, r_rss, _ = timed([restic, "backup", "-q", "-r", str(repo), str(card)], env=env)
        restic_rate = mb / r_seconds

        print(f"card: {args.files} files, {mb:.0f} MB of random bytes, {os.cpu_count()} cores")
        print(f"shutterlock run --once : {seconds:6.2f} s  {ours_rate:7.1f} MB/s  peak RSS {rss:6.1f} MB")
        print(f"restic backup          : {r_seconds:6.2f} s  {restic_rate:7.1f} MB/s  peak RSS {r_rss:6.1f} MB")
        print(f"ratio shutterlock/restic: {ours_rate / restic_rate:.2f}x (target >= 2.0x)")
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
