"""Issue 5 in the daemon: the derive lane after sealing, bad input, held-back uncloaked derivatives."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

from conftest import SAMPLES, Home, stop, wait_for

GOOD = SAMPLES / "exif-samples" / "jpg" / "gps" / "DSCN0010.jpg"


def listing(home: Home) -> dict[str, dict]:
    return {row["path"]: row for row in json.loads(home.cli("ls", "--json", check=True).stdout)}


def derived(home: Home, count: int) -> bool:
    return sum(1 for row in listing(home).values() if row["derivative"]) >= count


def test_bad_files_fail_their_derivative_not_the_daemon(make_home):
    home = make_home(derive=True)
    home.config_file.write_text(home.config_file.read_text() + '\n[cloak]\nstrength = "off"\n')
    inputs = {
        "truncated.jpg": SAMPLES / "hostile" / "truncated_jpeg.jpg",
        "truncated.png": SAMPLES / "hostile" / "truncated_image.png",
        "bomb.gif": SAMPLES / "hostile" / "decompression_bomb.gif",
        "bomb.ico": SAMPLES / "hostile" / "decompression_bomb.ico",
        "corrupted.jpg": SAMPLES / "exif-samples" / "jpg" / "corrupted.jpg",
        "notes.README": SAMPLES / "README.md",
        "good.jpg": GOOD,
    }
    daemon = home.start_daemon()
    try:
        for name, source in inputs.items():
            shutil.copy2(source, home.sources[0] / name)
        (home.sources[0] / "empty.jpg").write_bytes(b"")
        wait_for(lambda: derived(home, len(inputs) + 1), 90, message="every derivative recorded")
        rows = listing(home)
        reasons = {name: rows[name]["derivative"]["reason"] for name in rows}
        statuses = {name: rows[name]["derivative"]["status"] for name in rows}
        assert reasons["truncated.jpg"] == reasons["truncated.png"] == "truncated image data"
        assert reasons["bomb.gif"].startswith("decompression bomb: 4364696535 pixels > limit 200000000")
        assert reasons["bomb.ico"].startswith("decompression bomb: 4294836225 pixels > limit 200000000")
        assert "corrupt JPEG data" in reasons["corrupted.jpg"]
        assert reasons["empty.jpg"] == "empty file"
        assert statuses["notes.README"] == "skipped" and "not an image" in reasons["notes.README"]
        assert statuses["good.jpg"] == "written" and rows["good.jpg"]["derivative"]["output"].endswith(".jpg")
        assert all(row["size"] == (home.sources[0] / name).stat().st_size for name, row in rows.items())
        status = home.status()
        assert status["running"] and status["files"]["sealed"] == len(inputs) + 1
        assert status["derive"]["by_status"] == {"failed": 6, "skipped": 1, "written": 1}
        assert daemon.poll() is None
    finally:
        assert stop(daemon) == 0
    assert home.cli("verify").returncode == 0


def test_missing_weights_hold_the_derivative_back(make_home):
    home = make_home(derive=True)
    empty = home.base / "no-weights"
    empty.mkdir()
    home.config_file.write_text(home.config_file.read_text()
                                + f'\n[cloak]\nstrength = "standard"\nmodels_dir = "{empty}"\noffline = true\n')
    home.env.pop("SHUTTERLOCK_MODELS_DIR")
    shutil.copy2(GOOD, home.sources[0] / "portrait.jpg")
    result = home.cli("run", "--once")
    assert result.returncode == 1, "a held-back derivative is not a success"
    row = listing(home)["portrait.jpg"]
    assert row["derivative"]["status"] == "held" and row["derivative"]["output"] is None
    assert "not cloaked" in row["derivative"]["reason"]
    assert not list(home.outbox.rglob("*.jpg")), "nothing uncloaked may reach the outbox"

    daemon = home.start_daemon()
    try:
        wait_for(lambda: home.status()["cloak"]["error"], 60, message="cloak error in status")
        status = home.status()
        assert status["state"] == "degraded" and "cloak unavailable" in status["summary"]
    finally:
        stop(daemon)


def huge_png(path: Path, width: int = 20000, height: int = 19000) -> None:
    """A legitimate but slow image: 380 MP of one colour (a megabyte) that takes seconds to decode."""
    row = b"\x00" + b"\x5a\x78\x96" * width
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row * 500) for _ in range(height // 500)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height // 500 * 500, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_stuck_derivative_never_delays_sealing(make_home):
    """A real slow file (no test hook): its derivative runs into the 1-s limit while sealing goes on."""
    home = make_home(derive=True)
    home.config_file.write_text(home.config_file.read_text()
                                .replace("[derive]", "[derive]\ntime_limit = 1\nmax_pixels = 400000000")
                                + '\n[cloak]\nstrength = "off"\n')
    huge_png(home.base / "stuck.png")
    daemon = home.start_daemon()
    try:
        shutil.copy2(home.base / "stuck.png", home.sources[0] / "stuck.png")
        wait_for(lambda: home.status()["current"] == ["derivative of src/stuck.png"], 30, 0.05,
                 message="the slow derivative running")
        started = time.monotonic()
        for index in range(5):
            (home.sources[0] / f"next{index}.jpg").write_bytes(GOOD.read_bytes() + bytes([index]))
        wait_for(lambda: home.status()["files"]["sealed"] == 6, 20, message="sealed while derive is busy")
        assert time.monotonic() - started < 8, "sealing waited for the slow derivative"
        wait_for(lambda: derived(home, 6), 60, message="the lane recovers")
        reason = listing(home)["stuck.png"]["derivative"]["reason"]
        assert reason == "time limit exceeded (1 s); worker stopped"
        assert all(row["derivative"]["status"] == "written" for name, row in listing(home).items()
                   if name != "stuck.png")
    finally:
        assert stop(daemon) == 0
