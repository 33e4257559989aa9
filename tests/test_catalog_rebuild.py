"""Issue 17 item 5: a lost or damaged catalog is said so, rebuilt, and never overwrites the bucket's history.

On the first cut, deleting the catalog silently started a new one (history gone from ``ls`` and ``restore``,
``verify`` "all good") whose snapshot then replaced the bucket's; a corrupt one gave a raw sqlite3 traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from conftest import Backend, with_replica


def catalog_files(home) -> list:
    return [home.state / f"catalog.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]


def snapshots(server) -> list[str]:
    return sorted(k for k in server.all_objects("photos") if "/catalog/snapshots/" in k)


def test_a_lost_catalog_is_named_rebuilt_and_never_replaces_the_bucket_history(make_home, s3_server):
    home = with_replica(make_home(), Backend("moto", s3_server, "photos"))
    src = home.sources[0]
    (src / "keep.jpg").write_bytes(os.urandom(3000))
    (src / "edited.jpg").write_bytes(b"first version" + os.urandom(3000))
    home.cli("run", "--once", check=True)
    time.sleep(1.1)
    (src / "edited.jpg").write_bytes(b"second version" + os.urandom(3000))
    (src / "gone.jpg").write_bytes(os.urandom(3000))
    home.cli("run", "--once", check=True)
    (src / "gone.jpg").unlink()  # deleted from the card: only the catalog remembers it
    history = json.loads(home.cli("ls", "--versions", "--json", check=True).stdout)
    assert len(history) == 4
    kept_snapshots = snapshots(s3_server)

    # The catalog file is deleted: every command says what happened and what to run.
    for path in catalog_files(home):
        path.unlink(missing_ok=True)
    for command in (("run", "--once"), ("ls",), ("restore", "--to", str(home.base / "r"))):
        result = home.cli(*command)
        assert result.returncode == 1, command
        assert "the catalog is missing" in result.stderr and "shutterlock catalog rebuild" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not home.state.joinpath("catalog.sqlite3").exists()

    # Worse: the vault went too, and a fresh catalog starts sealing. Its snapshot must not replace the richer one.
    shutil.rmtree(home.vault)
    (src / "new.jpg").write_bytes(os.urandom(3000))
    home.cli("run", "--once", check=True)
    assert snapshots(s3_server) == kept_snapshots, "an emptier catalog overwrote the bucket's history"
    status = home.status()
    assert "shutterlock catalog rebuild" in status["replica"]["problem"], status["replica"]
    assert status["state"] != "idle" or "catalog rebuild" in status["summary"]

    rebuilt = home.cli("catalog", "rebuild", check=True)
    assert "from catalog snapshot generation" in rebuilt.stdout and "old catalog is kept" in rebuilt.stdout
    after = json.loads(home.cli("ls", "--versions", "--json", check=True).stdout)
    assert {(r["path"], r["content_id"]) for r in history} <= {(r["path"], r["content_id"]) for r in after}
    assert "new.jpg" in {r["path"] for r in after}
    home.cli("run", "--once", check=True)  # the lineage continues: the next snapshot goes up
    assert len(snapshots(s3_server)) == len(kept_snapshots) + 1
    healed = home.cli("verify")  # the vault was lost: verify fills it again from the bucket
    assert healed.returncode == 0 and "repaired" in healed.stdout, healed.stderr
    dest = home.base / "restored"
    every = home.cli("restore", "--all-versions", "--to", str(dest))
    assert every.returncode == 0, every.stderr
    assert sorted(os.listdir(dest)) == ["edited.v1.jpg", "edited.v2.jpg", "gone.v1.jpg", "keep.v1.jpg", "new.v1.jpg"]


def test_a_corrupt_catalog_is_one_line_and_rebuilt_from_the_vault(make_home):
    home = make_home()
    for name in ("a.jpg", "b.jpg"):
        (home.sources[0] / name).write_bytes(os.urandom(2000))
    home.cli("run", "--once", check=True)
    catalog = home.state / "catalog.sqlite3"
    home.cli("status", check=True)  # folds the write-ahead log into the file
    data = bytearray(catalog.read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)  # the schema page is intact, the tables behind it are garbage
    catalog.write_bytes(bytes(data))
    for command in (("ls",), ("status",), ("run", "--once")):
        result = home.cli(*command)
        assert result.returncode != 0, command
        assert "catalog is damaged" in result.stderr and "shutterlock catalog rebuild" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    rebuilt = home.cli("catalog", "rebuild", check=True)
    assert "2 paths, 2 objects" in rebuilt.stdout
    assert list(home.state.glob("catalog.sqlite3.broken-*")), "the damaged file is kept"
    assert sorted(r["path"] for r in json.loads(home.cli("ls", "--json", check=True).stdout)) == ["a.jpg", "b.jpg"]
    assert home.cli("verify").returncode == 0
