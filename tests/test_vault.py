"""Issue 2: sealing, restoring and verifying through the real CLI, on real sample files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import nacl.bindings as sodium
import pytest
from conftest import PASSPHRASE, SAMPLES, Home, at_most_chance, copy_tree


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def vault_objects(home: Home) -> list[Path]:
    return sorted(p for p in (home.vault / "objects").rglob("*") if p.is_file())


def test_every_sample_sealed_and_restored_byte_identical(make_home):
    home = make_home()
    originals = copy_tree(SAMPLES, home.sources[0])
    assert len(originals) > 100
    result = home.cli("run", "--once", check=True)
    assert re.search(r"all [\d,]+ originals sealed", result.stdout), result.stdout
    listing = json.loads(home.cli("ls", "--json", check=True).stdout)
    assert len(listing) == len(originals)

    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    for original in originals:
        relative = original.relative_to(home.sources[0])
        restored = dest / relative
        assert sha256(restored) == sha256(original), relative
        assert restored.stat().st_mtime_ns == original.stat().st_mtime_ns, relative
    assert home.cli("verify").returncode == 0
    assert not list((home.vault / "tmp").iterdir())


def test_nothing_readable_in_the_vault(make_home):
    home = make_home()
    originals = copy_tree(SAMPLES / "exif-samples" / "jpg" / "gps", home.sources[0])
    home.cli("run", "--once", check=True)
    blob = b"".join(p.read_bytes() for p in vault_objects(home))
    names = b"".join(p.name.encode() for p in vault_objects(home))
    for original in originals:
        assert original.name.encode() not in blob + names
        data = original.read_bytes()
        for offset in range(0, len(data) - 64, 4096):
            assert data[offset:offset + 64] not in blob
    for marker in (b"NIKON", b"GPS", b"Exif", b"DSCN"):
        assert at_most_chance(blob, marker), marker


def test_corruption_is_named_and_refused(make_home):
    home = make_home()
    copy_tree(SAMPLES / "exif-samples" / "jpg" / "gps", home.sources[0])
    home.cli("run", "--once", check=True)
    listing = {row["path"]: row["content_id"] for row in json.loads(home.cli("ls", "--json", check=True).stdout)}
    paths = sorted(listing)
    by_id = {p.name: p for p in vault_objects(home)}

    flipped, truncated, swap_a, swap_b = (by_id[listing[p]] for p in paths[:4])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    a, b = swap_a.read_bytes(), swap_b.read_bytes()
    swap_a.write_bytes(b)
    swap_b.write_bytes(a)

    verify = home.cli("verify")
    assert verify.returncode == 1
    for path in paths[:4]:
        assert listing[path] in verify.stderr, f"verify does not name {path}"
    assert verify.stderr.count("BAD ") == 4

    dest = home.base / "restored"
    restore = home.cli("restore", "--to", str(dest))
    assert restore.returncode == 1
    for path in paths[:4]:
        assert not (dest / path).exists()
        assert path in restore.stderr
    for path in paths[4:]:
        assert sha256(dest / path) == sha256(home.sources[0] / path)
    leftovers = [p for p in dest.rglob("*") if p.name.startswith(".shutterlock-tmp")]
    assert not leftovers


def test_independent_decryptor_from_format_md(make_home):
    """Decrypts an object with nacl.bindings only, following docs/FORMAT.md (not the project's reader)."""
    home = make_home()
    original = SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg"
    shutil.copy2(original, home.sources[0] / "Canon_40D.jpg")
    home.cli("run", "--once", check=True)
    (obj,) = vault_objects(home)

    envelope = json.loads((home.vault / "key-envelope.json").read_text())
    import base64

    kek = sodium.crypto_pwhash_alg(32, PASSPHRASE.encode(), base64.b64decode(envelope["salt"]),
                                   envelope["opslimit"], envelope["memlimit"],
                                   sodium.crypto_pwhash_ALG_ARGON2ID13)
    master = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        base64.b64decode(envelope["wrapped_key"]), b"shutterlock/v1/key-envelope",
        base64.b64decode(envelope["nonce"]), kek)

    def subkey(label: bytes) -> bytes:
        return sodium.crypto_generichash_blake2b_salt_personal(label, digest_size=32, key=master)

    object_key = subkey(b"shutterlock/v1/object")
    id_key = subkey(b"shutterlock/v1/content-id")
    raw = obj.read_bytes()
    assert raw[:8] == b"SHUTRLK\x00" and raw[8] == 1
    (chunk_size,) = struct.unpack(">I", raw[12:16])
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, raw[16:40], object_key)
    (meta_len,) = struct.unpack(">I", raw[40:44])
    padded, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, raw[44:44 + meta_len], raw[:16])
    assert tag == 0 and len(padded) % 256 == 0
    (json_len,) = struct.unpack(">I", padded[:4])
    meta = json.loads(padded[4:4 + json_len])
    body, offset = b"", 44 + meta_len
    while True:
        piece = raw[offset:offset + chunk_size + 17]
        offset += len(piece)
        plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, piece, None)
        body += plain
        if tag == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
            break
    assert offset == len(raw)
    assert body == original.read_bytes()
    assert meta["path"] == "Canon_40D.jpg" and meta["size"] == len(body)
    assert meta["mtime_ns"] == (home.sources[0] / "Canon_40D.jpg").stat().st_mtime_ns
    content_id = sodium.crypto_generichash_blake2b_salt_personal(body, digest_size=32, key=id_key).hex()
    assert content_id == obj.name


def test_dedupe_and_new_versions(make_home):
    home = make_home(sources=2)
    photo = SAMPLES / "exif-samples" / "jpg" / "Nikon_D70.jpg"
    shutil.copy2(photo, home.sources[0] / "a.jpg")
    (home.sources[1] / "day2").mkdir()
    shutil.copy2(photo, home.sources[1] / "day2" / "b.jpg")
    home.cli("run", "--once", check=True)
    assert len(vault_objects(home)) == 1
    assert len(json.loads(home.cli("ls", "--json", check=True).stdout)) == 2

    changed = home.sources[0] / "a.jpg"
    changed.write_bytes(changed.read_bytes() + b"edited")
    home.cli("run", "--once", check=True)
    assert len(vault_objects(home)) == 2, "the old version's object must stay"
    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    assert (dest / home.sources[0].name / "a.jpg").read_bytes() == changed.read_bytes()
    assert (dest / home.sources[1].name / "day2" / "b.jpg").read_bytes() == photo.read_bytes()


def test_wrong_passphrase_is_exit_2_one_line(make_home):
    home = make_home()
    wrong = home.base / "wrong"
    wrong.write_text("not the passphrase\n")
    new = home.base / "new"
    new.write_text("another passphrase\n")
    result = home.cli("key", "passwd", "--passphrase-file", str(wrong), "--new-passphrase-file", str(new))
    assert result.returncode == 2
    assert "wrong passphrase" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

    home.cli("key", "passwd", "--passphrase-file", str(home.passphrase_file), "--new-passphrase-file", str(new),
             check=True)
    (home.state / "master.key").unlink()
    # init re-creates the key file from the envelope: the old passphrase no longer opens it.
    assert home.cli("init", "--passphrase-file", str(home.passphrase_file)).returncode == 2
    home.cli("init", "--passphrase-file", str(new), check=True)


def test_missing_key_file(make_home):
    home = make_home()
    (home.state / "master.key").unlink()
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0])
    result = home.cli("run", "--once")
    assert result.returncode == 2
    assert "no key file" in result.stderr and "Traceback" not in result.stderr
    assert not (home.vault / "objects").exists() or not vault_objects(home)


def _unprivileged_home(make_home) -> Home:
    """Root ignores file modes, so permission tests run the CLI as ``nobody`` in a home it owns."""
    import tempfile

    home = make_home(base=Path(tempfile.mkdtemp(prefix="shutterlock-perm-")))
    if os.getuid() == 0:
        home.base.chmod(0o755)
    return home


def _hand_over(home: Home) -> None:
    if os.getuid() == 0:
        for path in [home.base, *home.base.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)


def _cli_as(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-m", "shutterlock", *args], env=home.env, capture_output=True,
                          text=True, timeout=120)


def test_unreadable_source_file_is_named_and_others_sealed(make_home):
    home = _unprivileged_home(make_home)
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0] / "ok.jpg")
    secret = home.sources[0] / "locked.jpg"
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Nikon_D70.jpg", secret)
    _hand_over(home)
    secret.chmod(0)
    result = _cli_as(home, "run", "--once")
    assert result.returncode == 1, result.stderr
    assert "locked.jpg: cannot read: Permission denied" in result.stderr
    status = json.loads(_cli_as(home, "status", "--json").stdout)
    assert status["files"]["sealed"] == 1 and status["files"]["failed"] == 1
    assert len(vault_objects(home)) == 1
    assert not list((home.vault / "tmp").iterdir())
    secret.chmod(0o644)  # fixing permissions does not change the mtime: the next scan still retries it
    retried = _cli_as(home, "retry")
    assert retried.returncode == 0 and "1 original(s)" in retried.stdout, retried.stdout + retried.stderr
    assert json.loads(_cli_as(home, "status", "--json").stdout)["files"]["failed"] == 0
    assert _cli_as(home, "run", "--once").returncode == 0
    assert json.loads(_cli_as(home, "status", "--json").stdout)["files"]["sealed"] == 2


def test_read_only_vault(make_home):
    home = _unprivileged_home(make_home)
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0] / "a.jpg")
    home.cli("run", "--once", check=True)
    shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Nikon_D70.jpg", home.sources[0] / "b.jpg")
    _hand_over(home)
    before = vault_objects(home)
    folders = [p for p in [home.vault, *home.vault.rglob("*")] if p.is_dir()]
    for folder in folders:
        folder.chmod(0o500)
    try:
        result = _cli_as(home, "run", "--once")
    finally:
        for folder in folders:
            folder.chmod(0o700)
    assert result.returncode == 1
    assert "vault is not writable" in result.stderr and "Traceback" not in result.stderr
    assert vault_objects(home) == before
    assert not [p for p in home.vault.rglob("*") if p.name.startswith(".shutterlock-tmp")]


@pytest.mark.slow
def test_two_gib_file_streams_in_bounded_memory(make_home):
    home = make_home()
    big = home.sources[0] / "huge.tif"
    block = os.urandom(1 << 20)
    with open(big, "wb") as handle:
        for index in range(2048):
            handle.write(struct.pack(">Q", index) + block[8:])
    expected = sha256(big)

    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    seal = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "shutterlock", "run", "--once"],
                          env=home.env, capture_output=True, text=True, timeout=600)
    assert seal.returncode == 0, seal.stderr
    seal_rss_mb = int(seal.stdout.split()[-1]) / 1024
    dest = home.base / "restored"
    restore = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "shutterlock", "restore",
                              "--to", str(dest)], env=home.env, capture_output=True, text=True, timeout=600)
    assert restore.returncode == 0, restore.stderr
    restore_rss_mb = int(restore.stdout.split()[-1]) / 1024
    assert sha256(dest / "huge.tif") == expected
    print(f"peak RSS: seal {seal_rss_mb:.0f} MB, restore {restore_rss_mb:.0f} MB")
    assert seal_rss_mb < 200 and restore_rss_mb < 200
