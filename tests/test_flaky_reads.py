"""Issue 17 item 7: reading back through a link that drops connections in the middle of responses.

Through a real TCP proxy on 127.0.0.1 that resets every connection after ~1 MB, ``verify --remote``,
``restore --from s3`` and ``recover`` finish with every byte checked; on the first cut they died on
urllib3's ProtocolError with a traceback, and ``recover`` kept a truncated object and refused to run again.
A recovery killed half-way is run again and continues.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PASSPHRASE, S3Server, s3_config, with_replica
from decryptor import decrypt_object, open_envelope
from faultproxy import FaultProxy


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_reads_survive_a_dropping_link_and_recovery_resumes(make_home, tmp_path):
    server = S3Server(tmp_path)
    server.start()
    server.create_bucket("photos")
    try:
        _exercise(make_home, server)
    finally:
        server.stop()


def _exercise(make_home, server: S3Server) -> None:
    from conftest import Backend

    home = with_replica(make_home(), Backend("moto", server, "photos"))
    for index in range(6):
        (home.sources[0] / f"raw{index}.dng").write_bytes(os.urandom(2_200_000 + index))
    home.cli("run", "--once", check=True)
    originals = digests(home.sources[0])

    with FaultProxy(server.port, cut_after=800_000) as proxy:
        home.write_config(s3_config(server).replace(server.endpoint, proxy.endpoint))
        remote = home.cli("verify", "--remote")
        assert remote.returncode == 0 and "Traceback" not in remote.stderr, remote.stderr
        assert "verified 6 object(s)" in remote.stdout and "all good" in remote.stdout
        cuts_after_verify = proxy.dropped
        assert cuts_after_verify >= 6, "the link must really have dropped during the downloads"

        restored = home.base / "from-s3"
        result = home.cli("restore", "--from", "s3", "--to", str(restored))
        assert result.returncode == 0, result.stderr
        assert digests(restored) == originals

        # A new machine recovers through the same link; the first attempt is killed half-way.
        passphrase = home.base / "kept-passphrase"
        shutil.copy2(home.passphrase_file, passphrase)
        shutil.rmtree(home.state)
        shutil.rmtree(home.vault)
        home.config_file.unlink()
        dest = home.base / "recovered"
        args = ["recover", "--s3-url", "s3://photos/vault", "--s3-endpoint", proxy.endpoint,
                "--passphrase-file", str(passphrase), "--to", str(dest)]
        first = subprocess.Popen([sys.executable, "-m", "shutterlock", *args], env=home.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if len(vault_objects(home)) >= 2:
                first.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        first.wait(30)
        assert first.returncode == -signal.SIGKILL, "the kill came too late to prove anything"
        kept = vault_objects(home)
        master = open_envelope((home.state / "key-envelope.json").read_bytes(), PASSPHRASE)
        for obj in kept:  # whatever the first attempt adopted is whole and authentic
            decrypt_object(obj.read_bytes(), master)
        again = home.cli(*args)
        assert again.returncode == 0, again.stderr
        assert "Traceback" not in again.stderr
        assert digests(dest) == originals
        assert proxy.dropped > cuts_after_verify
    assert home.cli("verify").returncode == 0


def vault_objects(home) -> list[Path]:
    """The recovered machine's vault (recover writes a config with the default vault, in the state folder)."""
    folder = home.state / "vault" / "objects"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
