"""Issue 16 item 2: every file name is sealed, listed and restored under its exact bytes.

Cards written under Windows code pages (FAT, SMB) carry names that are not UTF-8; long CJK names reach
the 255-byte limit. On the first cut, one such name made ``run --once`` die with a traceback having sealed
none of the other files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import PASSPHRASE, Home, stop, wait_for
from decryptor import decrypt_object, open_envelope, path_bytes

NAMES = [
    b"caf\xe9.jpg",                                   # Latin-1 (a card written by Windows in cp1252)
    "写真".encode("cp932") + b".JPG",                 # Shift-JIS
    ("日" * 83 + "ab.jpg").encode(),                  # exactly 255 bytes
    ("写" * 74 + ".jpg").encode(),                    # 226 bytes
    b"line\nbreak.jpg",                               # a newline must not split a log or status line
    b"plain.jpg",
]


def write_named(folder: Path, names: list[bytes]) -> dict[bytes, bytes]:
    contents = {}
    for index, name in enumerate(names):
        data = os.urandom(3000 + index) + name
        fd = os.open(os.path.join(os.fsencode(folder), name), os.O_WRONLY | os.O_CREAT, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        contents[name] = data
    return contents


def read_named(folder: Path) -> dict[bytes, bytes]:
    out = {}
    for name in os.listdir(os.fsencode(folder)):
        with open(os.path.join(os.fsencode(folder), name), "rb") as handle:
            out[name] = handle.read()
    return out


def test_every_name_sealed_listed_and_restored_under_its_bytes(make_home):
    home = make_home()
    assert len(NAMES[2]) == 255 and len(NAMES[3]) == 226
    contents = write_named(home.sources[0], NAMES)
    run = home.cli("run", "--once")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "all 6 originals sealed" in run.stdout
    # Logs: one line per event, undecodable bytes and control characters escaped.
    assert "caf\\xe9.jpg" in run.stderr and "line\\nbreak.jpg" in run.stderr
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in run.stderr.splitlines()), run.stderr

    listing = home.cli("ls", check=True).stdout.splitlines()
    assert len(listing) == 6 and any("caf\\xe9.jpg" in line for line in listing), listing
    rows = json.loads(home.cli("ls", "--json", check=True).stdout)
    import base64

    exact = {base64.b64decode(r["path_b64"]) if "path_b64" in r else r["path"].encode() for r in rows}
    assert b"caf\xe9.jpg" in exact and NAMES[1] in exact
    assert "line\\nbreak.jpg" in {r["path"] for r in rows}

    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    assert read_named(dest) == contents
    # A pattern given as the same bytes on the command line finds the file.
    one = home.base / "one"
    home.cli("restore", os.fsdecode(b"caf\xe9.jpg"), "--to", str(one), check=True)
    assert read_named(one) == {b"caf\xe9.jpg": contents[b"caf\xe9.jpg"]}

    # The independent decryptor (FORMAT.md alone) recovers every name's bytes.
    master = open_envelope((home.vault / "key-envelope.json").read_bytes(), PASSPHRASE)
    decrypted = {}
    for obj in (home.vault / "objects").rglob("*"):
        if obj.is_file():
            meta, plain = decrypt_object(obj.read_bytes(), master)
            decrypted[path_bytes(meta)] = plain
    assert decrypted == contents


def test_the_daemon_seals_a_non_utf8_name_and_status_says_so(make_home):
    home: Home = make_home()
    daemon = home.start_daemon()
    try:
        write_named(home.sources[0], [b"\xff\xfe-card.jpg", b"ok.jpg"])
        wait_for(lambda: home.status()["files"]["sealed"] == 2, 30, message="both files sealed")
        status = home.status()
        assert status["state"] == "idle" and not status["failed_files"], status
    finally:
        stop(daemon)
    log = (home.base / "daemon.log").read_text(errors="strict")
    assert "\\xff\\xfe-card.jpg" in log
