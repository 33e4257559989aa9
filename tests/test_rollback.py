"""Issue 16 item 4: rollback is visible, and an older copy never replaces a newer one.

Snapshots and key envelopes carry an authenticated generation and date. The bucket keeps the last N
numbered snapshots; recovery takes the newest authentic one whatever ``catalog/latest`` or a renamed copy
says, prints which it used, and names objects no snapshot lists. An old machine that restarts after
``key passwd`` elsewhere adopts the newer envelope instead of putting its own back.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from conftest import Backend, Home, S3Server, with_replica
from test_restore_safety import plant


def moto(server: S3Server) -> Backend:
    return Backend("moto", server, "photos")


def test_an_old_machine_does_not_put_back_its_older_envelope(make_home, s3_server):
    home = with_replica(make_home(), moto(s3_server))
    (home.sources[0] / "a.jpg").write_bytes(os.urandom(5000))
    home.cli("run", "--once", check=True)
    before = (home.state / "key-envelope.json").read_bytes()

    new = home.base / "new-passphrase"
    new.write_text("a new passphrase after an assistant left\n")
    home.cli("key", "passwd", "--passphrase-file", str(home.passphrase_file), "--new-passphrase-file", str(new),
             check=True)
    bucket = s3_server.client()
    newer = bucket.get_object(Bucket="photos", Key="vault/key-envelope.json")["Body"].read()
    assert json.loads(newer)["generation"] == json.loads(before)["generation"] + 1

    # The old machine (its disk still has the envelope from before) restarts and seals a new photo.
    for copy in (home.state / "key-envelope.json", home.vault / "key-envelope.json"):
        copy.write_bytes(before)
    (home.sources[0] / "b.jpg").write_bytes(os.urandom(5000))
    run = home.cli("run", "--once")
    assert run.returncode == 0, run.stderr
    assert bucket.get_object(Bucket="photos", Key="vault/key-envelope.json")["Body"].read() == newer
    assert (home.state / "key-envelope.json").read_bytes() == newer, "the newer envelope is adopted"
    assert (home.vault / "key-envelope.json").read_bytes() == newer

    shutil.rmtree(home.state)
    args = ["--s3-url", "s3://photos/vault", "--s3-endpoint", s3_server.endpoint]
    old = home.cli("recover", *args, "--passphrase-file", str(home.passphrase_file), "--to", str(home.base / "x"))
    assert old.returncode == 2 and "wrong passphrase" in old.stderr
    home.cli("recover", *args, "--passphrase-file", str(new), "--to", str(home.base / "y"), check=True)


def snapshot_keys(server: S3Server) -> list[str]:
    return sorted(k for k in server.all_objects("photos") if k.startswith("vault/catalog/"))


def test_recovery_takes_the_newest_snapshot_and_names_what_none_lists(make_home, s3_server, tmp_path):
    home: Home = with_replica(make_home(), moto(s3_server), extra="snapshots_kept = 3\n")
    for index in range(5):
        (home.sources[0] / f"day{index}.jpg").write_bytes(os.urandom(4000))
        home.cli("run", "--once", check=True)
    keys = snapshot_keys(s3_server)
    assert keys == [f"vault/catalog/snapshots/{n:020d}" for n in (3, 4, 5)], keys

    # Someone with write access rolls back: an older authentic snapshot as `latest` and as a newer number.
    client = s3_server.client()
    old = client.get_object(Bucket="photos", Key=keys[0])["Body"].read()
    client.put_object(Bucket="photos", Key="vault/catalog/latest", Body=old)
    client.put_object(Bucket="photos", Key=f"vault/catalog/snapshots/{9:020d}", Body=old)
    # A former key holder adds an object no snapshot lists, with a path that climbs out.
    plant(home, home.sources[0].name, "../../planted.jpg", b"planted")
    planted = sorted(set(p.name for p in (home.vault / "objects").rglob("*") if p.is_file()) -
                     {k.rsplit("/", 1)[1] for k in s3_server.all_objects("photos") if "/objects/" in k})
    assert len(planted) == 1
    obj = next((home.vault / "objects").rglob(planted[0]))
    client.put_object(Bucket="photos", Key=f"vault/objects/{planted[0][:2]}/{planted[0]}", Body=obj.read_bytes())

    passphrase = tmp_path / "passphrase"
    shutil.copy2(home.passphrase_file, passphrase)
    shutil.rmtree(home.state)
    shutil.rmtree(home.vault)
    dest = tmp_path / "recovered"
    result = home.cli("recover", "--s3-url", "s3://photos/vault", "--s3-endpoint", s3_server.endpoint,
                      "--passphrase-file", str(passphrase), "--to", str(dest))
    assert result.returncode == 1, result.stderr  # the planted path is refused
    today = time.strftime("%Y-%m-%d")
    assert f"catalog snapshot: generation 5 of {today}" in result.stdout, result.stdout
    assert f"{9:020d} in the bucket is not an authentic catalog snapshot" in result.stdout
    assert "1 object(s) in the bucket are listed by no catalog snapshot" in result.stdout
    assert f"{planted[0][:12]}…" in result.stdout
    assert "planted.jpg" in result.stderr and "unsafe path" in result.stderr
    assert sorted(os.listdir(dest)) == [f"day{index}.jpg" for index in range(5)]
    assert not (tmp_path / "planted.jpg").exists() and not (dest.parent.parent / "planted.jpg").exists()
