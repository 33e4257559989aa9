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
from decryptor import content_id, decrypt_object, open_envelope, subkey


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
    """Decrypts every object with nacl.bindings only, following docs/FORMAT.md (tests/decryptor.py)."""
    home = make_home()
    original = SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg"
    shutil.copy2(original, home.sources[0] / "Canon_40D.jpg")
    (home.sources[0] / "empty.raw").write_bytes(b"")
    (home.sources[0] / "exact.raw").write_bytes(os.urandom(3 << 20))  # an exact multiple of the chunk size
    home.cli("run", "--once", check=True)
    master = open_envelope((home.vault / "key-envelope.json").read_bytes(), PASSPHRASE)
    found = {}
    for obj in vault_objects(home):
        raw = obj.read_bytes()
        assert raw[8] == 2 and len(raw) == padme(len(raw)), "version 2: the size is a Padmé bucket"
        meta, body = decrypt_object(raw, master)
        assert content_id(master, body) == obj.name
        assert meta["mtime_ns"] == (home.sources[0] / meta["path"]).stat().st_mtime_ns
        found[meta["path"]] = body
    assert found == {name: (home.sources[0] / name).read_bytes() for name in ("Canon_40D.jpg", "empty.raw",
                                                                               "exact.raw")}


def padme(length: int) -> int:
    """FORMAT.md section 4, written out again here."""
    exponent = length.bit_length() - 1
    low = exponent - exponent.bit_length()
    return (length + (1 << low) - 1) & ~((1 << low) - 1)


def seal_v1(master: bytes, plaintext: bytes, meta: dict, chunk_size: int = 4096) -> tuple[str, bytes]:
    """A version 1 object made by hand from FORMAT.md (what the first cut wrote), with nacl.bindings only."""
    prelude = b"SHUTRLK\x00" + bytes([1, 0, 0, 0]) + struct.pack(">I", chunk_size)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, subkey(master, b"shutterlock/v1/object"))
    body = json.dumps(meta).encode()
    framed = struct.pack(">I", len(body)) + body
    framed += bytes(-len(framed) % 256)
    meta_ct = sodium.crypto_secretstream_xchacha20poly1305_push(state, framed, prelude, 0)
    chunks = [plaintext[i:i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    out = [prelude, header, struct.pack(">I", len(meta_ct)), meta_ct]
    for index, chunk in enumerate(chunks):
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, None,
                                                                     3 if index == len(chunks) - 1 else 0))
    return content_id(master, plaintext), b"".join(out)


def test_version_1_objects_still_read(make_home):
    """Objects of the first cut (no padding) restore and verify, from the vault and after a catalog rebuild."""
    home = make_home()
    home.cli("run", "--once", check=True)
    master = open_envelope((home.vault / "key-envelope.json").read_bytes(), PASSPHRASE)
    data = os.urandom(10_000)
    meta = {"source": home.sources[0].name, "path": "old/first-cut.jpg", "size": len(data),
            "mtime_ns": 1_600_000_000_000_000_000, "sealed_at": 1_600_000_000.0, "capture_time": None}
    object_id, raw = seal_v1(master, data, meta)
    decrypt_meta, decrypted = decrypt_object(raw, master)
    assert decrypted == data and decrypt_meta["path"] == "old/first-cut.jpg"
    target = home.vault / "objects" / object_id[:2] / object_id
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    home.cli("catalog", "rebuild", check=True)
    assert home.cli("verify").returncode == 0
    dest = home.base / "restored"
    home.cli("restore", "--to", str(dest), check=True)
    assert (dest / "old" / "first-cut.jpg").read_bytes() == data


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


def test_stored_sizes_do_not_reveal_exact_sizes(make_home):
    """Issue 16 item 5: the bucket (and a disk thief) sees Padmé buckets, not each original's exact size."""
    home = make_home()
    for index in range(10):
        (home.sources[0] / f"img{index}.jpg").write_bytes(os.urandom(1_000_000 + 37 * index))
    home.cli("run", "--once", check=True)
    sizes = {obj.stat().st_size for obj in vault_objects(home)}
    assert len(vault_objects(home)) == 10
    assert len(sizes) == 1, f"ten originals of different sizes stored as {sorted(sizes)}"
    (stored,) = sizes
    assert stored == padme(stored) and stored < 1_000_000 * 1.12
