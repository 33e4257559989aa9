"""Issue 16 item 8: ``shutterlock key rotate`` — a new master key, the old objects re-encrypted in the
background (local and remote) through SIGKILLs, then the old key, objects and envelope deleted.

``key passwd`` only re-wraps the key: a leaked old passphrase plus an old envelope copy read everything.
After a rotation, nothing in the vault or the bucket opens with the old key, and the independent decryptor
reads objects under both keys from FORMAT.md alone while the rotation is under way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import nacl.exceptions
import pytest
from conftest import PASSPHRASE, Backend, S3Server, stop, wait_for, with_replica
from decryptor import content_id, decrypt_object, open_blob, open_envelope

NEW_PASSPHRASE = "a new key after the old passphrase leaked"


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def bucket_objects(server: S3Server) -> dict[str, bytes]:
    return {k.rsplit("/", 1)[1]: v for k, v in server.all_objects("photos").items() if "/objects/" in k}


def test_rotation_reencrypts_everything_through_kills_and_forgets_the_old_key(make_home, s3_server):
    home = with_replica(make_home(), Backend("moto", s3_server, "photos"), extra="bandwidth_limit = 600000\n")
    src = home.sources[0]
    for index in range(12):
        (src / f"img{index:02d}.jpg").write_bytes(os.urandom(150_000 + index))
    (src / "edited.jpg").write_bytes(b"version one")
    home.cli("run", "--once", check=True)
    time.sleep(1.1)
    (src / "edited.jpg").write_bytes(b"version two")
    home.cli("run", "--once", check=True)
    old_master = open_envelope((home.state / "key-envelope.json").read_bytes(), PASSPHRASE)
    old_ids = set(bucket_objects(s3_server))
    assert len(old_ids) == 14

    new = home.base / "new-passphrase"
    new.write_text(NEW_PASSPHRASE + "\n")
    result = home.cli("key", "rotate", "--passphrase-file", str(home.passphrase_file), "--new-passphrase-file",
                      str(new))
    assert result.returncode == 0, result.stderr
    assert "14 object(s) will be re-encrypted" in result.stdout
    assert len((home.state / "master.key").read_text().split()) == 2
    (src / "after.jpg").write_bytes(os.urandom(90_000))  # sealed under the new key at once

    rng = random.Random(16)
    kills = 0
    mid_rotation_checked = False
    log = home.base / "daemon.log"
    daemon = home.start_daemon()
    try:
        # The first SIGKILL lands in the middle of the re-encryption; the others at random moments of the rest.
        wait_for(lambda: "re-encrypted" in log.read_text(), 30, interval=0.005, message="re-encryption started")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        # The local re-encryption of 14 small objects can outrun the kill; the rotation as a whole (uploads under
        # the bandwidth limit, deletion of the old objects) cannot.
        said = log.read_text()
        assert said.count("re-encrypted") > 0 and "key rotation finished" not in said, \
            "the kill did not land in the rotation"
        daemon = home.start_daemon()
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 2.5))
            if daemon.poll() is not None:
                break
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            kills += 1
            stored = s3_server.all_objects("photos")
            if not mid_rotation_checked and "vault/retired-keys.blob" in stored and \
                    old_ids & set(bucket_objects(s3_server)):
                check_both_keys_from_the_bucket(stored, old_master)
                mid_rotation_checked = True
            daemon = home.start_daemon()
        wait_for(lambda: home.status().get("rotation") is None and home.status()["replica"]["waiting"] == 0, 180,
                 interval=0.5, message="the rotation to finish")
    finally:
        stop(daemon)
    assert kills >= 2 and mid_rotation_checked, (kills, mid_rotation_checked)

    # Nothing under the old key is left anywhere; the key file holds the new key only.
    new_master = open_envelope((home.state / "key-envelope.json").read_bytes(), NEW_PASSPHRASE)
    assert (home.state / "master.key").read_text().split() == [base64.b64encode(new_master).decode()]
    remote = bucket_objects(s3_server)
    local = {p.name: p.read_bytes() for p in (home.vault / "objects").rglob("*") if p.is_file()}
    assert not (old_ids & (set(remote) | set(local))), "an object under the old key survived"
    assert set(remote) == set(local) and len(local) == 15
    for name, raw in local.items():
        _, plain = decrypt_object(raw, new_master)
        assert content_id(new_master, plain) == name
    stored = s3_server.all_objects("photos")
    assert "vault/retired-keys.blob" not in stored and not (home.vault / "retired-keys.blob").exists()
    assert not (home.state / "retired-keys.blob").exists()
    envelope = stored["vault/key-envelope.json"]
    assert json.loads(envelope)["generation"] == 2
    with pytest.raises(nacl.exceptions.CryptoError):  # the old passphrase opens nothing any more
        open_envelope(envelope, PASSPHRASE)

    assert home.cli("verify").returncode == 0 and home.cli("verify", "--remote").returncode == 0
    dest = home.base / "restored"
    home.cli("restore", "--all-versions", "--to", str(dest), check=True)
    assert (dest / "edited.v1.jpg").read_bytes() == b"version one"
    assert (dest / "edited.v2.jpg").read_bytes() == b"version two"
    current = home.base / "current"
    home.cli("restore", "--to", str(current), check=True)
    assert digests(current) == digests(src)

    # The bucket and the new passphrase alone bring everything back.
    shutil.rmtree(home.state)
    shutil.rmtree(home.vault)
    recovered = home.base / "recovered"
    home.cli("recover", "--s3-url", "s3://photos/vault", "--s3-endpoint", s3_server.endpoint, "--passphrase-file",
             str(new), "--to", str(recovered), check=True)
    assert digests(recovered) == digests(src)


def check_both_keys_from_the_bucket(stored: dict[str, bytes], old_master: bytes) -> None:
    """Mid-rotation, the new passphrase and the bucket alone open objects under the old and the new key."""
    new_master = open_envelope(stored["vault/key-envelope.json"], NEW_PASSPHRASE)
    _, _, retired = open_blob(stored["vault/retired-keys.blob"], new_master, b"retired-keys")
    assert retired == old_master
    opened = {"old": 0, "new": 0}
    for key, raw in stored.items():
        if "/objects/" not in key:
            continue
        name = key.rsplit("/", 1)[1]
        for label, master in (("new", new_master), ("old", old_master)):
            try:
                _, plain = decrypt_object(raw, master)
            except Exception:
                continue
            assert content_id(master, plain) == name
            opened[label] += 1
            break
    assert opened["old"] and opened["new"], opened
