"""Issue 16 items 1 and 7: the derive worker, which parses untrusted files, reaches no key, no secret, no
network and no unbounded memory; the daemon records why and goes on.

Real processes throughout: the runner's real confined worker, running :func:`hostile.misbehave` (through
the runner's ``work`` seam) in place of a decoder that a crafted file took over.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
from conftest import SAMPLES, stop, wait_for
from hostile import misbehave
from PIL import Image
from shutterlock import config as config_module
from shutterlock import facade
from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig
from shutterlock.derive import DeriveJob, DeriveRunner, Outcome
from shutterlock.derive.lane import DeriveStage
from shutterlock.engine import Engine
from shutterlock.seal import SealStage
from shutterlock.watch import discoveries, scan_source

GOOD = SAMPLES / "exif-samples" / "jpg" / "gps" / "DSCN0010.jpg"
SECRET = "AKIA-not-for-the-worker"


def crafted(folder: Path, action: str, target: object) -> Path:
    """An input whose name says what the exploit tries and whose content names the target."""
    path = folder / f"{action}.jpg"
    path.write_text(str(target))
    return path


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A daemon's secrets where they live in production: a key file, a credentials directory, the
    environment; and a cache directory for the workers' scratch folders."""
    state = tmp_path / "state"
    credentials = tmp_path / "credentials"
    for folder in (state, credentials):
        folder.mkdir(mode=0o700)
    (state / "master.key").write_text("c2VjcmV0IG1hc3RlciBrZXkgZm9yIHRoZSB0ZXN0cyE=\n")
    (credentials / "shutterlock.passphrase").write_text("the passphrase\n")
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return {"key": state / "master.key", "credentials": credentials, "state": state}


def test_a_hijacked_worker_reaches_no_key_no_network_no_memory(tmp_path: Path, secrets: dict[str, Path]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    control = socket.socket(socket.AF_UNIX)
    control.bind(str(tmp_path / "control.sock"))
    control.listen()
    control.setblocking(False)
    outside = tmp_path / "outbox" / "planted.jpg"
    outside.parent.mkdir()
    signals: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda number, _frame: signals.append(number))
    attempts = {
        "open": secrets["key"],
        "list": secrets["credentials"],
        "environ": "",
        "connect": f"127.0.0.1:{listener.getsockname()[1]}",
        "unix": tmp_path / "control.sock",
        "allocate": "",
        "write": outside,
        "execute": "/bin/sh",
        "signal": os.getpid(),
    }
    files = {action: crafted(inputs, action, target) for action, target in attempts.items()}
    out = tmp_path / "derived"
    derive = DeriveConfig(outbox=out)

    def job(path: Path) -> DeriveJob:
        return DeriveJob(source=path, derive=derive, watermark=WatermarkConfig(), rights=RightsConfig(),
                         cloak=CloakConfig(strength="off"))

    try:
        with DeriveRunner(time_limit=60.0, work=misbehave) as runner:
            results = {action: runner.run(job(path)) for action, path in files.items()}
            credential = runner.run(job(crafted(inputs, "open", secrets["credentials"] / "shutterlock.passphrase")))
            memory = runner.run(job(crafted(inputs, "open", f"/proc/{os.getpid()}/mem")))
            good = runner.run(job(GOOD))
            isolation = runner.isolation
    finally:
        signal.signal(signal.SIGUSR2, previous)
    denied = "PermissionError: [Errno 13] Permission denied"
    for action in ("open", "list", "write", "execute"):
        assert results[action].outcome is Outcome.FAILED, (action, results[action].jpeg)
        assert results[action].reason.startswith(f"worker error: {denied}"), (action, results[action].reason)
    assert credential.outcome is Outcome.FAILED and denied in credential.reason
    assert memory.outcome is Outcome.FAILED and denied in memory.reason, "the daemon's memory holds the key"
    for action in ("connect", "unix"):  # no socket at all
        assert results[action].outcome is Outcome.FAILED and denied in results[action].reason, results[action]
    assert results["signal"].reason == "worker error: PermissionError: [Errno 1] Operation not permitted"
    assert (results["allocate"].outcome, results["allocate"].reason) == (
        Outcome.FAILED, f"out of memory (the worker's limit is {derive.memory_limit} MB)")
    inherited = (results["environ"].jpeg or b"")[2:].decode()
    assert "PATH" in inherited and "CREDENTIALS_DIRECTORY" not in inherited
    assert "AWS_" not in inherited and SECRET not in inherited
    with pytest.raises(BlockingIOError):
        listener.accept()
    with pytest.raises(BlockingIOError):
        control.accept()
    assert not outside.exists() and not signals
    assert good.outcome is Outcome.WRITTEN and good.jpeg and good.jpeg.startswith(b"\xff\xd8")
    assert isolation is not None
    print("\nisolation:", "; ".join(isolation.active), "| missing:", "; ".join(isolation.missing) or "none")
    assert isolation.active[0] == "fresh process, clean environment"
    assert any(layer.startswith(("Landlock ABI", "own network namespace")) for layer in isolation.active)
    listener.close()
    control.close()


def test_the_daemon_records_each_refused_attempt_and_goes_on(make_home, monkeypatch: pytest.MonkeyPatch) -> None:
    """The derive lane in a process that holds the key (as the daemon does): the hijacked derivatives fail
    with their reasons, the other originals are sealed and derived."""
    home = make_home(derive=True)
    home.config_file.write_text(home.config_file.read_text() + '\n[cloak]\nstrength = "off"\n')
    for name, value in home.env.items():
        monkeypatch.setenv(name, value)
    listener = socket.create_server(("127.0.0.1", 0))
    crafted(home.sources[0], "open", home.state / "master.key")
    crafted(home.sources[0], "connect", f"127.0.0.1:{listener.getsockname()[1]}")
    crafted(home.sources[0], "allocate", "")
    (home.sources[0] / "good.jpg").write_bytes(GOOD.read_bytes())
    config = config_module.load(home.config_file)
    keys = facade.load_keys(config)
    with facade.open_catalog(config) as catalog:
        vault = facade.open_vault(config, catalog)
        lane = DeriveStage(config, catalog, keys, vault, work=misbehave)
        engine = Engine(catalog, [SealStage(config, catalog, keys, vault, [lane]), lane])
        try:
            for source in config.sources:
                engine.discover(discoveries(source, scan_source(source, catalog).found))
            engine.run_until_idle()
        finally:
            engine.close()
        made = {row["relpath"]: row for row in catalog.derivatives()}
        status = facade.read_status(config, catalog)
    listener.close()
    assert status.files.sealed == 4 and engine.failures == 3
    assert made["good.jpg"]["status"] == "written" and Path(made["good.jpg"]["output"]).is_file()
    assert made["open.jpg"]["status"] == "failed"
    assert "Permission denied" in made["open.jpg"]["reason"] and "master.key" in made["open.jpg"]["reason"]
    assert made["connect.jpg"]["status"] == "failed" and "Permission denied" in made["connect.jpg"]["reason"]
    assert made["allocate.jpg"]["reason"] == "out of memory (the worker's limit is 3072 MB)"
    assert not any("key" in path.name for path in home.outbox.rglob("*"))


def test_status_says_how_the_worker_is_confined(make_home) -> None:
    home = make_home(derive=True)
    home.config_file.write_text(home.config_file.read_text() + '\n[cloak]\nstrength = "off"\n')
    daemon = home.start_daemon()
    try:
        assert home.status()["derive"]["isolation"] is None, "no worker has started yet"
        (home.sources[0] / "good.jpg").write_bytes(GOOD.read_bytes())
        wait_for(lambda: home.status()["derive"]["isolation"], 60, message="a worker reporting its confinement")
        isolation = home.status()["derive"]["isolation"]
        assert isolation["active"][0] == "fresh process, clean environment"
        assert "memory limit 3072 MB" in isolation["active"]
        text = home.cli("status", check=True).stdout
        assert "worker       confined: fresh process, clean environment" in text
    finally:
        assert stop(daemon) == 0


def test_files_read_whole_are_refused_by_size_before_they_cost_memory(tmp_path: Path, secrets: dict[str, Path]) -> None:
    """Issue 16 item 7: a file that starts like a JPEG (or is a HEIF or RAW) used to be read whole into
    memory whatever its size; now the size is checked first (sparse files: no disk is spent here)."""
    derive = DeriveConfig(outbox=tmp_path / "out", memory_limit=1024)
    limit = (derive.memory_limit << 20) // 4
    heads = {"huge.jpg": b"\xff\xd8\xff\xe0", "huge.heic": b"\0\0\0\x18ftypheic", "huge.dng": b"II*\0"}
    with DeriveRunner(time_limit=30.0) as runner:
        for name, head in heads.items():
            path = tmp_path / name
            with path.open("wb") as handle:
                handle.write(head)
                handle.truncate(limit + 1)
            result = runner.run(DeriveJob(source=path, derive=derive, watermark=WatermarkConfig(),
                                          rights=RightsConfig(), cloak=CloakConfig(strength="off")))
            kind = {".jpg": "JPEG", ".heic": "HEIF", ".dng": "RAW"}[path.suffix]
            assert result.outcome is Outcome.FAILED
            assert result.reason == (f"file too large: {limit + 1:,} bytes; a {kind} file is read whole, and the "
                                     f"limit is {limit:,} bytes (a quarter of [derive] memory_limit)")
            assert result.seconds < 5
        # Just under the limit, the JPEG is mapped, not read: the stream check finds it truncated.
        with (tmp_path / "huge.jpg").open("r+b") as handle:
            handle.truncate(limit)
        result = runner.run(DeriveJob(source=tmp_path / "huge.jpg", derive=derive, watermark=WatermarkConfig(),
                                      rights=RightsConfig(), cloak=CloakConfig(strength="off")))
        assert (result.outcome, result.reason) == (Outcome.FAILED, "truncated image data")


def test_the_confined_worker_cloaks_with_weights_from_the_cache(tmp_path: Path, secrets: dict[str, Path]) -> None:
    """Landlock leaves the weights readable: here they sit in the cache (where the daemon downloads them,
    since the worker has no network), and the worker, confined, cloaks with them."""
    shutil.copytree(SAMPLES.parent / "models", tmp_path / "cache" / "models")
    small = tmp_path / "small.jpg"
    with Image.open(GOOD) as photo:
        photo.resize((256, 192)).save(small, quality=92)
    job = DeriveJob(source=small, derive=DeriveConfig(outbox=tmp_path / "out"), watermark=WatermarkConfig(),
                    rights=RightsConfig(), cloak=CloakConfig(strength="light", threads=1))
    with DeriveRunner(time_limit=300.0) as runner:
        result = runner.run(job)
        isolation = runner.isolation
    assert (result.outcome, result.cloaked, result.cloak_error) == (Outcome.WRITTEN, True, "")
    assert isolation is not None and any(layer.startswith("Landlock ABI") for layer in isolation.active)
