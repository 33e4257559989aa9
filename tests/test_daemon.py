"""Issue 3: the watching daemon, driven as a real process on real folders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SAMPLES, Home, stop, wait_for
from shutterlock.control import ControlClient


def sealed_paths(home: Home) -> list[str]:
    return [row["path"] for row in json.loads(home.cli("ls", "--json", check=True).stdout)]


def vault_temps(home: Home) -> list[str]:
    return [p.name for p in home.vault.rglob("*") if p.name.startswith(".shutterlock-tmp")]


def test_slow_write_is_sealed_once_after_the_last_write(make_home):
    home = make_home(settle=2.0)
    daemon = home.start_daemon()
    try:
        target = home.sources[0] / "card" / "big.cr3"
        target.parent.mkdir()
        block = os.urandom(1 << 20)
        with open(target, "wb") as handle:
            for index in range(50):
                handle.write(block[:-4] + index.to_bytes(4, "big"))
                handle.flush()
                time.sleep(0.1)
        last_write = time.time()
        wait_for(lambda: sealed_paths(home) == ["card/big.cr3"], 30, message="sealed")
        (row,) = json.loads(home.cli("ls", "--json").stdout)
        assert row["sealed_at"] >= last_write
        assert row["size"] == 50 << 20
    finally:
        assert stop(daemon) == 0
    log = (home.base / "daemon.log").read_text()
    assert log.count("sealed src/card/big.cr3") == 1, log
    assert len(list((home.vault / "objects").rglob("*/*"))) == 1
    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    assert (dest / "card" / "big.cr3").read_bytes() == target.read_bytes()


def test_sigkill_chaos_every_file_sealed_exactly_once(make_home):
    home = make_home(settle=0.3)
    photos = sorted((SAMPLES / "exif-samples" / "jpg").rglob("*.jpg"))
    rng = random.Random(7)
    done = threading.Event()

    def copy_in() -> None:
        for index in range(200):
            folder = home.sources[0] / f"day{index // 40}"
            folder.mkdir(exist_ok=True)
            data = photos[index % len(photos)].read_bytes() + index.to_bytes(4, "big")
            temp = folder / f".incoming-{index}.part"
            temp.write_bytes(data)
            temp.rename(folder / f"IMG_{index:04d}.jpg")
            time.sleep(rng.uniform(0.005, 0.04))
        done.set()

    copier = threading.Thread(target=copy_in)
    daemon = home.start_daemon()
    copier.start()
    try:
        for _ in range(10):
            time.sleep(rng.uniform(0.2, 1.0))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            daemon = home.start_daemon()
        copier.join()
        wait_for(lambda: len(sealed_paths(home)) == 200 and home.status()["backlog"]["items"] == 0, 120,
                 interval=0.5, message="all 200 sealed")
    finally:
        stop(daemon)
    paths = sealed_paths(home)
    assert len(paths) == len(set(paths)) == 200
    assert sorted(paths) == sorted(f"day{i // 40}/IMG_{i:04d}.jpg" for i in range(200))
    assert not vault_temps(home)
    assert len(list((home.vault / "objects").rglob("*/*"))) == 200
    assert home.cli("verify").returncode == 0


def test_files_added_while_stopped_and_polling_source(make_home):
    home = make_home(sources=2, watch_mode="polling")
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[1] / "while-stopped.jpg")
    daemon = home.start_daemon()
    try:
        wait_for(lambda: "while-stopped.jpg" in sealed_paths(home), 30, message="start-up scan")
        modes = {s["name"]: s["watch_mode"] for s in home.status()["sources"]}
        assert modes == {"src0": "polling", "src1": "native"}
        shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Nikon_D70.jpg", home.sources[0] / "polled.jpg")
        wait_for(lambda: "polled.jpg" in sealed_paths(home), 30, message="sealed through polling")
    finally:
        assert stop(daemon) == 0


def test_pause_holds_work_and_survives_restart(make_home):
    home = make_home()
    daemon = home.start_daemon()
    try:
        home.cli("pause", check=True)
        paused_at = time.monotonic()
        assert home.status()["state"] == "paused"
        for index in range(5):
            shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0] / f"p{index}.jpg")
        wait_for(lambda: home.status()["backlog"]["items"] == 5, 20, message="queued while paused")
        assert time.monotonic() - paused_at < 20
        time.sleep(2)
        assert sealed_paths(home) == []
        stop(daemon)
        daemon = home.start_daemon()
        status = home.status()
        assert status["paused"] and status["state"] == "paused"
        time.sleep(2)
        assert sealed_paths(home) == []
        home.cli("resume", check=True)
        wait_for(lambda: len(sealed_paths(home)) == 5, 30, message="sealed after resume")
    finally:
        assert stop(daemon) == 0


def test_pause_takes_effect_within_a_second(make_home):
    """After `pause` returns, work in flight may finish but no new item starts (checked by sealing times)."""
    home = make_home(settle=0.2)
    home.write_config("seal_workers = 1\n", settle=0.2)  # appended to [engine]: one item in flight at most
    home.cli("pause", check=True)  # no daemon yet: it starts paused
    daemon = home.start_daemon()
    try:
        for index in range(40):
            (home.sources[0] / f"f{index}.bin").write_bytes(os.urandom(4 << 20))
        wait_for(lambda: home.status()["backlog"]["items"] == 40, 30, 0.05, message="queued while paused")
        control = ControlClient(home.socket)  # in-process: a CLI start-up would outlast the whole batch
        control.call("resume")
        wait_for(lambda: control.call("status")["files"]["sealed"] >= 1, 30, 0.005, message="work started")
        control.call("pause")
        paused_at = time.time()
        time.sleep(3.0)
        sealed = [row for row in json.loads(home.cli("ls", "--json", check=True).stdout)]
        assert 1 <= len(sealed) < 40, "the pause came too late to prove anything"
        late = [row["path"] for row in sealed if row["sealed_at"] > paused_at + 1.0]
        assert not late, f"sealed more than a second after the pause: {late}"
        assert home.status()["backlog"]["items"] == 40 - len(sealed)
    finally:
        assert stop(daemon) == 0


def test_control_socket_is_owner_only(make_home):
    home = make_home()
    daemon = home.start_daemon()
    try:
        mode = home.socket.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(home.socket.parent.stat().st_mode) == 0o700
        if os.getuid() == 0:
            # Another user: the directory and socket modes already refuse the connection.
            probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                     "try:\n    s.connect(sys.argv[1]); print('connected')\n"
                     "except PermissionError:\n    print('refused')\n")
            result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                     "-c", probe, str(home.socket)], capture_output=True, text=True, timeout=30)
            assert result.stdout.strip() == "refused", result.stderr
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(home.socket))
            sock.sendall(b'{"op": "status"}\n')
            reply = json.loads(sock.makefile().readline())
        assert reply["ok"] and reply["status"]["running"]
    finally:
        assert stop(daemon) == 0


def test_sigterm_stops_cleanly_and_status_reads_the_catalog(make_home):
    home = make_home()
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0] / "a.jpg")
    daemon = home.start_daemon()
    wait_for(lambda: sealed_paths(home) == ["a.jpg"], 20, message="sealed")
    started = time.monotonic()
    assert stop(daemon, signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert not home.socket.exists()
    status = home.status()
    assert status["running"] is False and status["files"]["sealed"] == 1


def test_second_daemon_is_refused(make_home):
    home = make_home()
    daemon = home.start_daemon()
    try:
        second = home.cli("run", timeout=30)
        assert second.returncode == 1 and "another shutterlock daemon is running" in second.stderr
    finally:
        assert stop(daemon) == 0


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@pytest.mark.skipif(os.getuid() != 0 or not os.access(INOTIFY_INSTANCES, os.W_OK),
                    reason="needs root to lower the inotify instance limit")
def test_inotify_limit_falls_back_to_polling_with_a_warning(make_home):
    home = make_home()
    limit = INOTIFY_INSTANCES.read_text()
    INOTIFY_INSTANCES.write_text("0")  # the real kernel limit, not a mock: inotify_init1 fails with EMFILE
    try:
        daemon = home.start_daemon()
    finally:
        INOTIFY_INSTANCES.write_text(limit)
    try:
        status = home.status()
        (source,) = status["sources"]
        assert source["watch_mode"] == "polling" and source["configured_mode"] == "auto"
        assert "inotify limit reached" in source["warning"] and "falling back to polling" in source["warning"]
        assert status["state"] == "degraded"
        shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0] / "late.jpg")
        wait_for(lambda: "late.jpg" in sealed_paths(home), 30, message="sealed through polling")
    finally:
        assert stop(daemon) == 0
