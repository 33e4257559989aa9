"""Issue 16 item 6: the key comes only from a secret, and neither it nor the state sits on the data volume.

No Docker engine runs here, so the container is checked statically: Debian's docker-compose (1.29) parses
and resolves the compose file (``config`` needs no engine), hadolint lints the Dockerfile, and the
compose file is read for where the secret, the state and the data live. What the container's
entrypoint does on its first start -- ``init`` with the passphrase secret -- runs here for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from conftest import ROOT, SAMPLES

PACKAGING = ROOT / "packaging"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (packaging/bootstrap.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def test_compose_file_takes_the_secret_from_the_system_disk_and_keeps_state_off_the_data(tmp_path: Path) -> None:
    compose = yaml.safe_load((PACKAGING / "docker-compose.yml").read_text())
    service = compose["services"]["shutterlock"]
    mounts = {target: source for source, target, *_ in (volume.split(":") for volume in service["volumes"])}
    assert mounts["/state"] in compose["volumes"], "state must be a named volume, not a folder on the data disk"
    data_roots = {PurePosixPath(mounts[target]).parts[1] for target in ("/import", "/vault", "/outbox")}
    secret = PurePosixPath(compose["secrets"]["shutterlock.passphrase"]["file"])
    assert secret.parts[1] not in data_roots, f"the passphrase file {secret} is on the data volume"
    assert service["secrets"] == ["shutterlock.passphrase"] and "environment" in service
    assert not any("PASSPHRASE" in name or "KEY" in name for name in service["environment"])
    # docker-compose resolves it (with the secret's file made where this test may write).
    (tmp_path / "passphrase").write_text("not the real one\n")
    text = (PACKAGING / "docker-compose.yml").read_text().replace(str(secret), str(tmp_path / "passphrase"))
    checked = PACKAGING / f".compose-check-{os.getpid()}.yml"
    checked.write_text(text)
    try:
        result = subprocess.run([_tool("docker-compose"), "-f", str(checked), "config"], capture_output=True,
                                text=True, timeout=60)
    finally:
        checked.unlink()
    assert result.returncode == 0, result.stderr
    assert "shutterlock-state:/state:rw" in result.stdout


def test_dockerfile_lints_clean_and_runs_unprivileged() -> None:
    dockerfile = PACKAGING / "Dockerfile"
    result = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "USER ${UID}:${GID}" in text and "CREDENTIALS_DIRECTORY=/run/secrets" in text
    assert "master.key" not in text


def test_first_start_with_a_passphrase_secret_writes_no_key_file(make_home) -> None:
    """The container's first start (``init --passphrase-file $CREDENTIALS_DIRECTORY/...``) and every start
    after it: the key envelope is made and unwrapped from the secret; no master.key appears."""
    home = make_home()
    for item in ("master.key", "key-envelope.json"):
        (home.state / item).unlink()
    secrets = home.base / "secrets"
    secrets.mkdir(mode=0o700)
    shutil.copy(home.passphrase_file, secrets / "shutterlock.passphrase")
    env = {"CREDENTIALS_DIRECTORY": str(secrets)}
    result = home.cli("init", "--passphrase-file", str(secrets / "shutterlock.passphrase"), env=env, check=True)
    assert f"from {secrets}, no key file kept" in result.stdout
    assert (home.state / "key-envelope.json").is_file() and not (home.state / "master.key").exists()
    shutil.copy(SAMPLES / "exif-samples" / "jpg" / "gps" / "DSCN0010.jpg", home.sources[0])
    sealed = home.cli("run", "--once", env=env)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    assert not (home.state / "master.key").exists()
    assert home.cli("run", "--once").returncode == 2, "without the secret there is no key"
