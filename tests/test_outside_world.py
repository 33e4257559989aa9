"""Issue 17 (items 1, 3, 4, 8): the world around the daemon — a vault drive not mounted, sources that vanish
and come back, full disks, odd files — with real file systems (loop mounts), real folder removal and real
permissions. Nothing is lost, the daemon lives through all of it, and status says what is going on."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Home, LoopMount, stop, wait_for
from test_vault import _cli_as, _hand_over, _unprivileged_home


def sealed_paths(home: Home) -> list[str]:
    return sorted(row["path"] for row in json.loads(home.cli("ls", "--json", check=True).stdout))


def use_vault(home: Home, vault: Path) -> None:
    home.config_file.write_text(home.config_file.read_text().replace(f'path = "{home.vault}"', f'path = "{vault}"'))


def source_mode(home: Home, name: str) -> str:
    return next(s["watch_mode"] for s in home.status()["sources"] if s["name"] == name)


def fill(folder: Path) -> Path:
    """Fill a file system to the last block (as root, the reserved blocks too); returns the filler file."""
    filler = folder / "filler"
    block = b"\xa5" * (1 << 20)
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(block[:size])
    return filler


def photo(path: Path, size: int = 150_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


# --------------------------------------------------------------------------- 17.1 a missing vault drive


def test_a_missing_vault_drive_gets_no_shadow_vault(make_home, loop_mount: LoopMount):
    home = make_home(settle=0.3)
    vault = loop_mount.mountpoint / "vault"
    use_vault(home, vault)
    photo(home.sources[0] / "a.jpg")
    daemon = home.start_daemon()
    try:
        wait_for(lambda: sealed_paths(home) == ["a.jpg"], 30, message="the first photo sealed")
        loop_mount.unmount()
        wait_for(lambda: "the vault is missing" in home.status()["summary"], 10, message="status names the vault")
        assert home.status()["state"] == "error"
        photo(home.sources[0] / "b.jpg")
        wait_for(lambda: home.status()["backlog"]["items"] == 1, 10, message="the new photo queued")
        time.sleep(1.5)
        assert not vault.exists(), "a shadow vault was created under the mount point"
        assert sealed_paths(home) == ["a.jpg"]
        assert home.status()["state"] == "error"
    finally:
        assert stop(daemon) == 0
    # Stopping owes the vault a catalog snapshot (a.jpg was sealed since the last): it waits for the drive.
    assert not vault.exists(), "stopping wrote into the mount point"
    daemon = home.start_daemon()
    try:
        loop_mount.mount()
        back = time.monotonic()
        wait_for(lambda: sealed_paths(home) == ["a.jpg", "b.jpg"], 10, message="sealed once the drive is back")
        assert time.monotonic() - back < 10
        wait_for(lambda: home.status()["state"] == "idle", 10, message="idle again")
    finally:
        assert stop(daemon) == 0

    # The drive is missing when the daemon starts: it comes up, waits, and seals when the drive is back.
    loop_mount.unmount()
    once = home.cli("run", "--once")
    assert once.returncode == 1 and "the vault is missing" in once.stderr and "Traceback" not in once.stderr
    init = home.cli("init", "--passphrase-file", str(home.passphrase_file))
    assert init.returncode == 1 and "the vault is missing" in init.stderr
    assert not vault.exists()
    daemon = home.start_daemon()
    try:
        assert "the vault is missing" in home.status()["summary"]
        photo(home.sources[0] / "c.jpg")
        time.sleep(1.5)
        assert not vault.exists()
        loop_mount.mount()
        wait_for(lambda: sealed_paths(home) == ["a.jpg", "b.jpg", "c.jpg"], 15, message="sealed after the start")
    finally:
        assert stop(daemon) == 0
    assert len(list((vault / "objects").rglob("*/*"))) == 3
    assert home.cli("verify").returncode == 0


def test_init_refuses_a_source_that_does_not_exist(make_home):
    home = make_home()
    typo = home.base / "Pictrues"
    result = home.cli("init", "--source", str(typo), "--passphrase-file", str(home.passphrase_file))
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(typo) in result.stderr and "no such folder" in result.stderr
    assert not typo.exists()


# --------------------------------------------------------------------------- 17.3 sources that come back


def test_a_source_that_disappears_and_comes_back_is_watched_again(make_home, loop_mount: LoopMount, tmp_path):
    home = make_home(sources=2, settle=0.3)
    card = loop_mount.mountpoint
    folder = home.sources[0]
    home.config_file.write_text(home.config_file.read_text().replace(
        f'path = "{home.sources[1]}"', f'path = "{card}"\nname = "card"'))
    daemon = home.start_daemon()
    try:
        assert source_mode(home, "card") == "native"
        # A folder deleted and made again.
        shutil.rmtree(folder)
        wait_for(lambda: source_mode(home, "src0") == "missing", 10, message="the folder shown as missing")
        status = home.status()
        assert status["state"] == "degraded" and "missing" in status["summary"]
        assert "all" not in status["summary"], status["summary"]
        folder.mkdir()
        wait_for(lambda: source_mode(home, "src0") == "native", 10, message="watched natively again")
        photo(folder / "after.jpg")
        wait_for(lambda: "after.jpg" in sealed_paths(home), 10, message="a new file in the new folder")

        # A card taken out, filled elsewhere, put back.
        photo(card / "DCIM" / "one.jpg")
        wait_for(lambda: "DCIM/one.jpg" in sealed_paths(home), 10, message="the card's first photo")
        loop_mount.unmount()
        wait_for(lambda: source_mode(home, "card") == "missing", 10, message="the card shown as missing")
        elsewhere = tmp_path / "camera"
        elsewhere.mkdir()
        subprocess.run(["mount", "-o", "loop", str(loop_mount.image), str(elsewhere)], check=True)
        try:
            photo(elsewhere / "DCIM" / "two.jpg")
        finally:
            subprocess.run(["umount", str(elsewhere)], check=True)
        loop_mount.mount()
        wait_for(lambda: "DCIM/two.jpg" in sealed_paths(home), 10, message="what the card brought back")
        assert source_mode(home, "card") == "native"
        photo(card / "DCIM" / "three.jpg")
        wait_for(lambda: "DCIM/three.jpg" in sealed_paths(home), 10, message="watched natively on the card again")
        wait_for(lambda: home.status()["state"] == "idle", 10, message="idle")
    finally:
        assert stop(daemon) == 0


# --------------------------------------------------------------------------- 17.4 full disks


def test_a_full_catalog_disk_is_named_and_sealing_resumes(make_home, loop_mount: LoopMount):
    home = make_home(settle=0.3)
    state = loop_mount.mountpoint / "state"
    shutil.copytree(home.state, state)
    home.env["STATE_DIRECTORY"] = str(state)
    for index in range(20):
        photo(home.sources[0] / "before" / f"{index}.jpg", 20_000)
    daemon = home.start_daemon()
    try:
        wait_for(lambda: home.status()["files"]["sealed"] == 20, 30, message="the first photos sealed")
        # The WAL keeps the size it grew to, and writes into it need no new blocks: empty it first (as any
        # SQLite tool may), so that what comes next must have space the full disk does not have.
        with contextlib.closing(sqlite3.connect(state / "catalog.sqlite3", timeout=30)) as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        filler = fill(loop_mount.mountpoint)
        for index in range(600):
            photo(home.sources[0] / "during" / f"{index}.jpg", 2_000)

        def catalog_full() -> bool:
            status = home.status()
            return status["state"] == "error" and "the catalog's disk is full" in status["summary"]

        wait_for(catalog_full, 60, message="status to name the full catalog disk")
        summary = home.status()["summary"]
        assert str(loop_mount.mountpoint) in summary, summary
        time.sleep(6)  # the lanes keep trying, and live
        status = home.status()
        assert daemon.poll() is None and status["healthy"], status
        assert catalog_full()

        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: home.status()["files"]["sealed"] == 620, 60, message="sealing to resume")
        assert time.monotonic() - freed < 60
        wait_for(lambda: home.status()["state"] == "idle", 20, message="idle again")
        assert status["pid"] == home.status()["pid"]
    finally:
        assert stop(daemon) == 0
    assert home.cli("verify").returncode == 0
    assert len(sealed_paths(home)) == 620


def test_a_full_vault_disk_is_named_and_sealing_resumes_within_a_minute(make_home, loop_mount: LoopMount):
    home = make_home(settle=0.3)
    vault = loop_mount.mountpoint / "vault"
    use_vault(home, vault)
    photo(home.sources[0] / "a.jpg")
    daemon = home.start_daemon()
    try:
        wait_for(lambda: sealed_paths(home) == ["a.jpg"], 30, message="the first photo sealed")
        filler = fill(loop_mount.mountpoint)
        photo(home.sources[0] / "big.jpg", 8 << 20)

        def vault_full() -> bool:
            status = home.status()
            return status["state"] == "error" and "the vault's disk is full" in status["summary"]

        wait_for(vault_full, 30, message="status to name the full vault disk")
        assert str(loop_mount.mountpoint) in home.status()["summary"]
        time.sleep(30)  # long enough for retries that back off to be far apart
        assert vault_full() and daemon.poll() is None

        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: sealed_paths(home) == ["a.jpg", "big.jpg"], 30, message="sealing to resume")
        assert time.monotonic() - freed < 15
        wait_for(lambda: home.status()["state"] == "idle", 10, message="idle again")
    finally:
        assert stop(daemon) == 0
    assert not [p for p in vault.rglob("*") if p.name.startswith(".shutterlock-tmp")]
    assert home.cli("verify").returncode == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
def test_a_dead_lane_stops_the_watchdog(tmp_path):
    """The daemon pings systemd only while engine.stalled() is empty; a lane thread that dies is in it.

    The lane here is a minimal Stage of this test whose item ends its thread (SystemExit, the one exception
    the engine does not catch): there is no way to kill a thread from outside."""
    from shutterlock.catalog import Catalog
    from shutterlock.engine import Engine, JobQueue

    class Fatal:
        name, workers, attempts, stall_limit = "fatal", 1, 1, 60.0

        def __init__(self, catalog: Catalog):
            self.queue = JobQueue(catalog, "fatal")

        def process(self, item: Any, worker: Any) -> None:
            raise SystemExit("a library called sys.exit()")

        def describe(self, item: Any) -> str:
            return "fatal"

        def subject(self, file_id: int, content_id: str) -> str | None:
            return None

        def schedule(self) -> list[Any]:
            return []

        def reload(self, config: Any) -> str:
            return ""

        def close(self) -> None:
            pass

    with Catalog(tmp_path / "catalog.sqlite3") as catalog:
        engine = Engine(catalog, [Fatal(catalog)])
        engine.start()
        assert engine.stalled() == []
        catalog.enqueue("fatal", "x")
        engine.wake()
        wait_for(lambda: engine.stalled() == ["fatal-0: worker thread died"], 5, 0.05, message="the dead lane")
        engine.stop()


# --------------------------------------------------------------------------- 17.8 the minor, silent ones


def test_symlinked_and_unreadable_folders_are_reported_in_status(make_home):
    home = _unprivileged_home(make_home)
    source = home.sources[0]
    photo(source / "ok.jpg")
    photo(source / "locked" / "x.jpg")
    photo(home.base / "elsewhere" / "y.jpg")
    (source / "linked").symlink_to(home.base / "elsewhere")
    _hand_over(home)
    (source / "locked").chmod(0)
    result = _cli_as(home, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert "locked" in result.stderr and "linked" in result.stderr  # and logged
    status = json.loads(_cli_as(home, "status", "--json").stdout)
    (reported,) = status["sources"]
    assert sorted(reported["skipped"]) == ["cannot open folder locked: Permission denied",
                                           "not followed (a symbolic link): linked"]
    assert status["state"] == "degraded" and "all" not in status["summary"], status["summary"]
    assert "skipped" in _cli_as(home, "status").stdout


def test_a_file_that_keeps_changing_has_a_reason_in_status(make_home):
    home = make_home(settle=0.5)
    daemon = home.start_daemon()
    done = threading.Event()

    def keep_writing() -> None:
        with open(home.sources[0] / "timelapse.mov", "ab") as handle:
            while not done.is_set():
                handle.write(os.urandom(1000))
                handle.flush()
                time.sleep(0.3)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        def explained() -> bool:
            status = home.status()
            return any(u["relpath"] == "timelapse.mov" and "keeps changing" in u["reason"]
                       for u in status["unsettled"]) and "timelapse.mov keeps changing" in status["summary"]

        wait_for(explained, 15, message="a reason in status")
        assert home.status()["files"]["sealed"] == 0
        done.set()
        writer.join()
        wait_for(lambda: sealed_paths(home) == ["timelapse.mov"], 10, message="sealed once it stopped changing")
        assert home.status()["unsettled"] == []
    finally:
        done.set()
        writer.join()
        assert stop(daemon) == 0


def _start_as_nobody(home: Home) -> subprocess.Popen[bytes]:
    with open(home.base / "daemon.log", "ab") as log:
        process = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                    "-m", "shutterlock", "run"], env=home.env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(lambda: home.socket.exists(), 30, message="the daemon's socket")
    return process


def _status_as_nobody(home: Home) -> dict[str, Any]:
    return json.loads(_cli_as(home, "status", "--json").stdout)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run the daemon as another user")
def test_a_chmod_that_fixes_an_unreadable_file_is_noticed(make_home):
    home = _unprivileged_home(make_home)
    home.write_config(settle=0.3)
    locked = photo(home.sources[0] / "locked.jpg")
    _hand_over(home)
    locked.chmod(0)
    daemon = _start_as_nobody(home)
    try:
        wait_for(lambda: _status_as_nobody(home)["files"]["failed"] == 1, 30, 0.5, message="the file failed")
        locked.chmod(0o644)  # no new content, no new mtime: only an attribute event says so
        fixed = time.monotonic()
        wait_for(lambda: _status_as_nobody(home)["files"]["sealed"] == 1, 15, 0.5, message="sealed after chmod")
        assert time.monotonic() - fixed < 15
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)


def test_a_sparse_file_warns_with_its_vault_cost(make_home):
    home = make_home()
    sparse = home.sources[0] / "disk.img"
    with open(sparse, "wb") as handle:
        handle.write(b"boot")
        handle.truncate(256 << 20)
    result = home.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert "disk.img is sparse: 268.4 MB" in result.stderr
    status = home.status()
    (warning,) = [e for e in status["errors"] if e["subject"] == "sparse file"]
    assert "its sealed copy takes 268.4 MB in the vault" in warning["message"]


def test_status_works_right_after_init(make_home):
    home = make_home()
    home.cli("init", "--passphrase-file", str(home.passphrase_file), check=True)
    result = home.cli("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("idle:"), result.stdout


def test_a_newline_in_a_file_name_does_not_split_a_log_line(make_home):
    home = make_home()
    photo(home.sources[0] / "evil\nERROR forged line.jpg")
    result = home.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("ERROR forged") for line in lines), result.stderr
    assert any("sealed src/evil\\nERROR forged line.jpg" in line for line in lines), result.stderr
