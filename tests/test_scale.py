"""Issue 18: bursts and batches. A burst into a watched source is sealed in time linear in its size, and
batched sealing keeps the crash contract: a SIGKILL at any moment loses nothing and half-records nothing."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import Home, stop, wait_for


def write_files(folder: Path, count: int, seed: int, size: tuple[int, int] = (2_000, 12_000)) -> dict[str, str]:
    """``count`` random files in ``folder``; relpath (from the folder's parent) -> sha256."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for index in range(count):
        data = rng.randbytes(rng.randint(*size))
        (folder / f"IMG_{index:05d}.JPG").write_bytes(data)
        digests[f"{folder.name}/IMG_{index:05d}.JPG"] = hashlib.sha256(data).hexdigest()
    return digests


def catalog_problems(home: Home) -> list[str]:
    """Rows that would be half-recorded: sealed without a version, an object row, a local replica or the
    object file; versions pointing at no object; anything still claimed."""
    db = sqlite3.connect(f"file:{home.state / 'catalog.sqlite3'}?mode=ro", uri=True)
    problems = [f"sealed without its records: {row}" for row in db.execute(
        "SELECT f.relpath FROM files f LEFT JOIN versions v ON v.source = f.source AND v.relpath = f.relpath "
        "AND v.content_id = f.content_id LEFT JOIN objects o ON o.content_id = f.content_id "
        "LEFT JOIN replicas r ON r.content_id = f.content_id AND r.store = 'local' "
        "WHERE f.state = 'sealed' AND (v.content_id IS NULL OR o.content_id IS NULL OR r.content_id IS NULL)")]
    problems += [f"version without object: {row}" for row in db.execute(
        "SELECT v.relpath FROM versions v LEFT JOIN objects o USING (content_id) WHERE o.content_id IS NULL")]
    problems += [f"not finished: {row}" for row in db.execute("SELECT relpath, state FROM files "
                                                              "WHERE state != 'sealed'")]
    recorded = {row[0] for row in db.execute("SELECT content_id FROM objects")}
    db.close()
    stored = {p.name for p in (home.vault / "objects").rglob("*/*")}
    problems += [f"object recorded but not in the vault: {c}" for c in sorted(recorded - stored)]
    problems += [f"object in the vault the catalog does not know: {c}" for c in sorted(stored - recorded)]
    problems += [f"temp file left: {p.name}" for p in home.vault.rglob(".shutterlock-tmp*")]
    return problems


def restored_digests(home: Home) -> dict[str, str]:
    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    return {p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in dest.rglob("*") if p.is_file()}


def test_a_burst_into_a_watched_source_is_sealed_promptly(make_home):
    """600 files dropped at once into a new folder. Before the heap gate and batched sealing each file's
    event re-walked its whole folder (quadratic: ~25 s here for 600 files); now it takes a few seconds."""
    home = make_home(settle=0.5)
    daemon = home.start_daemon()
    try:
        digests = write_files(home.sources[0] / "100CANON", 600, seed=1)
        last_write = time.monotonic()
        wait_for(lambda: home.status()["files"]["sealed"] == 600, 60, 0.1, message="the burst sealed")
        elapsed = time.monotonic() - last_write
        assert elapsed < 10, f"600 files took {elapsed:.1f} s after the last write"
    finally:
        assert stop(daemon) == 0
    assert catalog_problems(home) == []
    assert restored_digests(home) == digests


def test_sigkill_during_batched_run_once_loses_nothing(make_home):
    home = make_home()
    digests = write_files(home.sources[0] / "archive", 2500, seed=2)
    rng = random.Random(3)
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-m", "shutterlock", "run", "--once"], env=home.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    result = home.cli("run", "--once", check=True)
    assert "all 2,500 originals sealed" in result.stdout
    assert catalog_problems(home) == []
    paths = [row["path"] for row in json.loads(home.cli("ls", "--json", check=True).stdout)]
    assert len(paths) == len(set(paths)) == 2500
    assert home.cli("verify").returncode == 0
    assert restored_digests(home) == digests


def test_sigkill_during_a_burst_loses_nothing(make_home):
    home = make_home(settle=0.2)
    rng = random.Random(4)
    daemon = home.start_daemon()
    digests: dict[str, str] = {}
    try:
        for round_ in range(5):
            digests |= write_files(home.sources[0] / f"card{round_}", 400, seed=10 + round_)
            time.sleep(rng.uniform(0.3, 1.2))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            daemon = home.start_daemon()
        wait_for(lambda: home.status()["files"]["sealed"] == 2000 and home.status()["state"] == "idle", 60, 0.5,
                 message="all 2,000 sealed")
    finally:
        assert stop(daemon) == 0
    assert catalog_problems(home) == []
    assert home.cli("verify").returncode == 0
    assert restored_digests(home) == digests
