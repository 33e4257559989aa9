"""Issue 16 item 3: restore writes under --to and nowhere else.

A former key holder (an assistant, an old vault) can craft objects whose encrypted ``source`` or ``path``
is absolute or climbs with ``..``; recovery puts that metadata in the catalog. Links already in the target
are never followed, a different file in the way is never replaced without --overwrite, and restored files
are owner-only unless asked otherwise.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from conftest import Home


def plant(home: Home, source: str, path: str, data: bytes) -> None:
    """What a key holder can do: seal an object with any metadata, and what recovery does: trust it."""
    import io

    from shutterlock.catalog import Catalog
    from shutterlock.keystore import read_key_file
    from shutterlock.vault.format import Keys, ObjectMeta, seal_stream
    from shutterlock.vault.local import LocalStore

    keys = Keys.from_master(read_key_file(home.state / "master.key"))
    meta = ObjectMeta(source=source, path=path, size=len(data), mtime_ns=time.time_ns(), sealed_at=time.time())
    vault = LocalStore(home.vault)
    with vault.staging() as (staged, out):
        result = seal_stream(keys, meta, io.BytesIO(data), out)
        vault.adopt(staged, result.content_id)
    with Catalog(home.state / "catalog.sqlite3") as catalog:
        catalog.adopt_recovered(result.content_id, meta, staged_size=vault.size(result.content_id))


def test_crafted_paths_links_and_existing_files_stay_outside(make_home, tmp_path):
    home = make_home(sources=2)
    src = home.sources[0]
    (src / "sub").mkdir()
    for name in ("sub/a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (src / name).write_bytes(os.urandom(2000) + name.encode())
    home.cli("run", "--once", check=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"keep me")
    plant(home, src.name, "../../escape.txt", b"evil 1")
    plant(home, src.name, str(outside / "absolute.txt"), b"evil 2")
    plant(home, "..", "climb.txt", b"evil 3")
    plant(home, "a/b", "slash.txt", b"evil 4")

    dest = tmp_path / "restored"
    mine = dest / src.name
    mine.mkdir(parents=True)
    (mine / "sub").symlink_to(outside)                       # a link where a folder goes
    (mine / "c.jpg").symlink_to(outside / "victim.txt")       # a link where a file goes
    (mine / "b.jpg").write_bytes(b"the user's own newer edit")  # a different file in the way

    result = home.cli("restore", "--to", str(dest))
    assert result.returncode == 1
    refused = [line for line in result.stderr.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 7, result.stderr
    for needle in ("escape.txt", "absolute.txt", "climb.txt", "slash.txt"):
        assert any(needle in line and "unsafe" in line for line in refused), needle
    assert any("sub/a.jpg" in line and "symbolic link" in line for line in refused)
    assert any("c.jpg" in line and "symbolic link is in the way" in line for line in refused)
    assert any("b.jpg" in line and "--overwrite" in line for line in refused)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"keep me"
    assert not (tmp_path / "escape.txt").exists() and not (dest / "escape.txt").exists()
    assert (mine / "b.jpg").read_bytes() == b"the user's own newer edit"
    restored = mine / "d.jpg"
    assert restored.read_bytes() == (src / "d.jpg").read_bytes()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600, "owner-only unless asked otherwise"
    assert not [p for p in dest.rglob(".shutterlock-tmp*")]

    # Asked for: the link and the different file are replaced (the link itself, never its target).
    again = home.cli("restore", "b.jpg", "c.jpg", "--to", str(dest), "--overwrite", "--mode", "644")
    assert again.returncode == 0, again.stderr
    assert (mine / "b.jpg").read_bytes() == (src / "b.jpg").read_bytes()
    assert not (mine / "c.jpg").is_symlink() and (outside / "victim.txt").read_bytes() == b"keep me"
    assert stat.S_IMODE((mine / "b.jpg").stat().st_mode) == 0o644
    # What is already there and identical counts as restored: an interrupted restore just runs again.
    rerun = home.cli("restore", "d.jpg", "--to", str(dest), check=True)
    assert "restored 1 file(s)" in rerun.stdout


def test_versions_listed_and_restored_by_date_or_all(make_home, tmp_path):
    home = make_home()
    folder = home.sources[0] / "shoot"
    folder.mkdir()
    card_a, card_b = os.urandom(5000), os.urandom(6000)
    long_name = "日" * 83 + "ab.jpg"  # 255 bytes: NAME.vN.ext must still fit
    (folder / "IMG_0001.JPG").write_bytes(card_a)
    (folder / long_name).write_bytes(b"first")
    home.cli("run", "--once", check=True)
    time.sleep(1.1)
    between = time.time()
    time.sleep(1.1)
    (folder / "IMG_0001.JPG").write_bytes(card_b)  # the second card's IMG_0001.JPG copied over the first
    (folder / long_name).write_bytes(b"second")
    home.cli("run", "--once", check=True)

    listing = home.cli("ls", "--versions", check=True).stdout.splitlines()
    assert [line.split("\t")[1] for line in listing if "IMG_0001" in line] == ["v1", "v2"]

    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(between))
    then = tmp_path / "then"
    home.cli("restore", "--at", at, "--to", str(then), check=True)
    assert (then / "shoot" / "IMG_0001.JPG").read_bytes() == card_a
    assert (then / "shoot" / long_name).read_bytes() == b"first"
    now = tmp_path / "now"
    home.cli("restore", "--at", time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 60)),
             "--to", str(now), check=True)
    assert (now / "shoot" / "IMG_0001.JPG").read_bytes() == card_b

    every = tmp_path / "every"
    home.cli("restore", "IMG_0001.JPG", long_name, "--all-versions", "--to", str(every), check=True)
    names = sorted(os.listdir(every / "shoot"))
    assert (every / "shoot" / "IMG_0001.v1.JPG").read_bytes() == card_a
    assert (every / "shoot" / "IMG_0001.v2.JPG").read_bytes() == card_b
    shortened = [n for n in names if n.startswith("日")]
    assert len(shortened) == 2 and all(len(n.encode()) <= 255 for n in shortened), names
    assert {(every / "shoot" / n).read_bytes() for n in shortened} == {b"first", b"second"}

    before = Path(tmp_path / "before")
    early = home.cli("restore", "--at", "2001-01-01 00:00", "--to", str(before))
    assert early.returncode == 1 and "was sealed by 2001-01-01 00:00" in early.stderr
