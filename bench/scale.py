"""Many small files: `shutterlock run --once` vs `restic backup` on the same archive, then the daemon idle.

    .venv/bin/python bench/scale.py [--files 20000 100000] [--idle-seconds 60]

For each size: an archive of small random files (100 per folder, 1-16 KB), sealed by ``run --once`` and
backed up by restic 0.14 (both from a cold start, each process timed with its CPU time and peak RSS);
files/s and the ratio (target: at least 0.5x restic); the catalog's size; then the daemon started on the
sealed archive, watching it natively: its CPU over ``--idle-seconds`` once idle, and its RSS. Also what
SQLite's ``synchronous=FULL`` costs per transaction on this disk, against NORMAL.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

from common import (
    Installation,
    cleanup,
    cpu_seconds,
    installation,
    load_average,
    measured,
    require,
    rss_mb,
    scratch,
)

PER_FOLDER = 100


def make_archive(root: Path, files: int, seed: int) -> int:
    """``files`` random files of 1-16 KB, 100 per folder; returns the total bytes."""
    rng = random.Random(seed)
    total = 0
    for index in range(files):
        folder = root / f"{2016 + index // 20000}" / f"{index // PER_FOLDER:05d}"
        if index % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 16384)
        (folder / f"IMG_{index:06d}.XMP").write_bytes(os.urandom(size))
        total += size
    os.sync()
    return total


def catalog_bytes(ours: Installation) -> int:
    state = ours.base / "data" / "shutterlock"
    return sum(path.stat().st_size for path in state.glob("catalog.sqlite3*"))


def idle_cost(ours: Installation, seconds: float) -> tuple[float, float, str]:
    """The daemon on the sealed archive: CPU share of one core while idle, RSS, and its watch mode."""
    with ours.daemon() as daemon:
        status = ours.wait_idle(600)
        before, started = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(daemon.pid) - before, time.monotonic() - started
        return 100 * used / elapsed, rss_mb(daemon.pid), status["sources"][0]["watch_mode"]


def synchronous_cost(folder: Path, transactions: int = 200) -> dict[str, float]:
    """Milliseconds per one-row transaction in a WAL database here, per ``synchronous`` setting."""
    out = {}
    for mode in ("FULL", "NORMAL"):
        path = folder / f"sync-{mode}.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        started = time.perf_counter()
        for _ in range(transactions):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(100),))
            db.execute("COMMIT")
        out[mode] = 1000 * (time.perf_counter() - started) / transactions
        db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    restic = require("restic")
    print(f"start: {load_average()}")
    base = scratch("scale")
    try:
        costs = synchronous_cost(base)
        print(f"SQLite WAL, one-row transaction: synchronous=FULL {costs['FULL']:.2f} ms, "
              f"NORMAL {costs['NORMAL']:.2f} ms")
        for files in args.files:
            run = base / str(files)
            archive = run / "archive"
            total = make_archive(archive, files, seed=files)

            ours = installation(run / "shutterlock", [archive])
            ours.configure()
            os.sync()
            sealed = measured([sys.executable, "-m", "shutterlock", "run", "--once"], env=ours.env)
            env = {**os.environ, "RESTIC_PASSWORD": "benchmark passphrase", "RESTIC_CACHE_DIR": str(run / "rcache")}
            repo = run / "restic-repo"
            measured([restic, "init", "-r", str(repo)], env=env)
            os.sync()
            backup = measured([restic, "backup", "-q", "-r", str(repo), str(archive)], env=env)

            ours_rate, restic_rate = files / sealed.seconds, files / backup.seconds
            print(f"\n{files:,} files, {total / 1e6:.0f} MB, {files // PER_FOLDER:,} folders ({load_average()})")
            print(f"  shutterlock run --once: {sealed.seconds:6.1f} s  {ours_rate:7.0f} files/s  "
                  f"CPU {sealed.cpu_seconds:5.1f} s  peak RSS {sealed.rss_mb:5.0f} MB")
            print(f"  restic backup:          {backup.seconds:6.1f} s  {restic_rate:7.0f} files/s  "
                  f"CPU {backup.cpu_seconds:5.1f} s  peak RSS {backup.rss_mb:5.0f} MB")
            print(f"  ratio: {ours_rate / restic_rate:.2f}x restic's files/s (target >= 0.5x)")
            size = catalog_bytes(ours)
            vault = sum(p.stat().st_size for p in (ours.vault / "objects").rglob("*") if p.is_file())
            restic_size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
            print(f"  catalog {size / 1e6:.1f} MB ({size / files:.0f} B per file); vault {vault / 1e6:.0f} MB in "
                  f"{files:,} objects; restic repository {restic_size / 1e6:.0f} MB")
            cpu, rss, mode = idle_cost(ours, args.idle_seconds)
            print(f"  daemon idle on it ({mode}): CPU {cpu:.3f}% of one core over {args.idle_seconds:.0f} s, "
                  f"RSS {rss:.1f} MB ({load_average()})")
            cleanup(run)
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
