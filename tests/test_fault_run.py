"""Issue 17's acceptance: a fault run. 20 SIGKILLs at random moments while a mixed workload arrives (small
photos and 100 MB files), with the S3 replica behind a proxy that drops and stalls connections at random;
then verify, verify --remote and a full restore from each store, compared by sha256.

Between kills, what status says is checked against the catalog and the bucket, in the direction that cannot
race: "idle" means every file written before is sealed; "up to date" means every object sealed before is in
the bucket. After each kill, the status read from the catalog must agree exactly with ``ls``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from conftest import S3_ENV, Home, S3Server, stop, wait_for
from faultproxy import FaultProxy

KILLS = 20
SMALL = 150
BIG = 2  # of 100 MB


def listing(home: Home) -> list[dict[str, Any]]:
    return json.loads(home.cli("ls", "--json", check=True).stdout)


def bucket_objects(server: S3Server) -> set[str]:
    keys: set[str] = set()
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket="photos", Prefix="vault/objects/"):
        keys.update(item["Key"].rsplit("/", 1)[1] for item in page.get("Contents", []))
    return keys


class Workload:
    """Writes the photos in a thread the way an importer does (temp name, then rename), remembering each
    finished file's sha256 and when it was finished."""

    def __init__(self, source: Path, seed: int):
        self.source, self.rng = source, random.Random(seed)
        self.done: dict[str, tuple[str, float]] = {}
        self.plan = [(f"day{i % 5}/IMG_{i:04d}.JPG", self.rng.randint(20_000, 1_500_000)) for i in range(SMALL)]
        for index in range(BIG):
            self.plan.insert(self.rng.randrange(len(self.plan)), (f"video/CLIP_{index}.MP4", 100 << 20))
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for relpath, size in self.plan:
            target = self.source / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.part")
            digest = hashlib.sha256()
            with open(temp, "wb") as handle:
                for start in range(0, size, 8 << 20):
                    block = os.urandom(min(8 << 20, size - start))
                    digest.update(block)
                    handle.write(block)
            temp.rename(target)
            self.done[relpath] = (digest.hexdigest(), time.monotonic())
            time.sleep(self.rng.uniform(0.0, 0.25))


def check_live(home: Home, server: S3Server, work: Workload) -> None:
    """Status, taken between two looks at the catalog, claims nothing the catalog and the bucket deny."""
    before = listing(home)
    asked = time.monotonic()
    status = home.status()
    after = listing(home)
    assert len(before) <= status["files"]["sealed"] <= len(after), (len(before), status["files"], len(after))
    if status["state"] == "idle":
        finished = {relpath for relpath, (_, at) in work.done.items() if at < asked - 1.0}
        missing = finished - {row["path"] for row in after}
        assert not missing, f"status said {status['summary']!r} with {sorted(missing)[:5]} not sealed"
    replica = status["replica"]
    if replica["online"] and replica["waiting"] == 0:
        assert replica["failed"] == 0
        absent = {row["content_id"] for row in before} - bucket_objects(server)
        assert not absent, f"status said the bucket is up to date; it lacks {len(absent)} object(s)"


def check_offline(home: Home) -> None:
    """With the daemon dead, status is the catalog's: it must count exactly what ``ls`` lists."""
    status = json.loads(home.cli("status", "--json", check=True).stdout)
    assert not status["running"]
    assert status["files"]["sealed"] == len(listing(home))


def test_twenty_sigkills_with_a_flaky_bucket_lose_nothing(make_home, s3_server: S3Server):
    proxy = FaultProxy(s3_server.port, seed=17)
    try:
        home = make_home(settle=0.3)
        home.env.update(S3_ENV)
        home.write_config(f'\n[s3]\nurl = "s3://photos/vault"\nendpoint = "{proxy.endpoint}"\n'
                          'addressing_style = "path"\n', settle=0.3)
        work = Workload(home.sources[0], seed=2017)
        run_with_faults(home, s3_server, proxy, work)
        print(f"proxy: {proxy.dropped} connections dropped, {proxy.stalled} stalled polls")
        check_everything(home, s3_server, work)  # verify --remote and restore --from s3 go through the calm proxy
    finally:
        proxy.close()


def run_with_faults(home: Home, server: S3Server, proxy: FaultProxy, work: Workload) -> None:
    rng = random.Random(2017)
    proxy.chaos()
    daemon = home.start_daemon()
    work.thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 5.0))
            check_live(home, server, work)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            check_offline(home)
            daemon = home.start_daemon()
        work.thread.join()
        proxy.calm()

        def drained() -> bool:
            status = home.status()
            return status["state"] == "idle" and status["files"]["sealed"] == len(work.plan) \
                and status["replica"]["waiting"] == 0

        wait_for(drained, 300, 1.0, message="everything sealed and uploaded")
        check_live(home, server, work)
        status = home.status()
        assert status["summary"] == f"all {len(work.plan):,} originals sealed"
        assert status["replica"]["failed"] == 0 and status["files"]["failed"] == 0
    finally:
        stop(daemon)


def check_everything(home: Home, server: S3Server, work: Workload) -> None:
    """0 lost, 0 duplicates, 0 stuck jobs; both stores verify; both restore every original byte for byte."""
    rows = listing(home)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) == len(work.plan), "lost or duplicated originals"
    assert all("s3" in row["replicas"] for row in rows)
    db = sqlite3.connect(f"file:{home.state / 'catalog.sqlite3'}?mode=ro", uri=True)
    stuck = db.execute("SELECT kind, subject, state, error FROM jobs WHERE state != 'done' OR permanent").fetchall()
    unfinished = db.execute("SELECT relpath, state FROM files WHERE state != 'sealed'").fetchall()
    uploads = db.execute("SELECT content_id FROM uploads").fetchall()
    objects = {row[0] for row in db.execute("SELECT content_id FROM objects")}
    db.close()
    assert stuck == [] and unfinished == [] and uploads == []
    assert objects == {p.name for p in (home.vault / "objects").rglob("*/*")} == bucket_objects(server)

    local = home.cli("verify")
    assert local.returncode == 0 and f"verified {len(objects)} object(s)" in local.stdout, local.stdout
    remote = home.cli("verify", "--remote")
    assert remote.returncode == 0 and f"verified {len(objects)} object(s)" in remote.stdout, remote.stderr
    for where in ("local", "s3"):
        dest = home.base / f"restored-{where}"
        home.cli("restore", "--to", str(dest), "--from", where, check=True)
        restored = {p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in dest.rglob("*") if p.is_file()}
        assert restored == {relpath: digest for relpath, (digest, _) in work.done.items()}, where
