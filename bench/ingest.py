"""Sealing throughput: `shutterlock run --once` vs `restic backup` vs `rclone copy` to a crypt remote, on the
same synthetic card, in one run.

    .venv/bin/python bench/ingest.py [--files 80] [--size-mb 25] [--rounds 1]

rclone: Debian's rclone, a ``crypt`` remote over a local folder, ``rclone copy --transfers 4``. Each tool
starts cold on the same card (page cache warm for all three: the card is read once before). Prints MB/s,
peak RSS and CPU time for each, and the ratios (targets: at least 3x restic and 2x rclone crypt). With
``--rounds N`` each tool runs N times, interleaved, and the best of each is kept (a shared machine).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

from common import Measured, cleanup, installation, load_average, make_card, measured, require, scratch


def rclone_config(base: Path, rclone: str) -> Path:
    """A crypt remote (file names encrypted too) over a local folder."""

    def obscure(secret: str) -> str:
        return subprocess.run([rclone, "obscure", secret], capture_output=True, text=True, check=True).stdout.strip()

    config = base / "rclone.conf"
    config.write_text(f"[vault]\ntype = crypt\nremote = {base / 'rclone-vault'}\n"
                      f"password = {obscure('benchmark passphrase')}\npassword2 = {obscure('benchmark salt')}\n")
    return config


def single_pass(size: int = 64 << 20) -> float:
    """MB/s of the seal's inner loop alone (keyed BLAKE2b + XChaCha20-Poly1305 secretstream) on one core:
    the ceiling a seal worker can reach."""
    from shutterlock.vault.format import Keys, ObjectMeta, seal_stream

    keys = Keys.from_master(os.urandom(32))
    data = os.urandom(size)
    meta = ObjectMeta(source="bench", path="x", size=size, mtime_ns=0, sealed_at=0.0)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        seal_stream(keys, meta, io.BytesIO(data), io.BytesIO())
        best = max(best, size / 1e6 / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--size-mb", type=float, default=25)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    restic, rclone = require("restic"), require("rclone")

    base = scratch("ingest")
    try:
        card = base / "card"
        total = make_card(card, args.files, int(args.size_mb * 1_000_000))
        mb = total / 1e6
        for path in card.iterdir():  # the same warm start for everyone
            path.read_bytes()
        config = rclone_config(base, rclone)
        best: dict[str, Measured] = {}
        print(f"card: {args.files} files, {mb:.0f} MB of random bytes; {load_average()}")
        for round_ in range(args.rounds):
            for tool in ("shutterlock", "restic", "rclone crypt"):
                run = base / f"{tool.split()[0]}-{round_}"
                run.mkdir()
                if tool == "shutterlock":
                    ours = installation(run, [card])
                    ours.configure()
                    os.sync()
                    result = measured([sys.executable, "-m", "shutterlock", "run", "--once"], env=ours.env)
                elif tool == "restic":
                    env = {**os.environ, "RESTIC_PASSWORD": "benchmark passphrase",
                           "RESTIC_CACHE_DIR": str(run / "cache")}
                    measured([restic, "init", "-r", str(run / "repo")], env=env)
                    os.sync()
                    result = measured([restic, "backup", "-q", "-r", str(run / "repo"), str(card)], env=env)
                else:
                    os.sync()
                    result = measured([rclone, "--config", str(config), "copy", "--transfers", "4", str(card),
                                       f"vault:{run.name}"])
                cleanup(run, base / "rclone-vault")
                if tool not in best or result.seconds < best[tool].seconds:
                    best[tool] = result
        rates = {tool: mb / result.seconds for tool, result in best.items()}
        print(f"libsodium single pass (hash + encrypt, from memory, one core): {single_pass():.0f} MB/s")
        for tool, result in best.items():
            print(f"{tool:<13}: {result.seconds:6.2f} s  {rates[tool]:7.1f} MB/s  CPU {result.cpu_seconds:5.1f} s  "
                  f"peak RSS {result.rss_mb:6.1f} MB")
        print(f"ratio shutterlock/restic: {rates['shutterlock'] / rates['restic']:.2f}x (target >= 3x); "
              f"shutterlock/rclone crypt: {rates['shutterlock'] / rates['rclone crypt']:.2f}x (target >= 2x)")
        print(f"end: {load_average()}")
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
