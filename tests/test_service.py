"""Issue 8: the daemon as a systemd service (units, sd_notify, systemd directories and credentials)
and as an installable wheel."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w
from conftest import ROOT, SAMPLES, Home, copy_tree, s3_config, wait_for
from packaging.requirements import Requirement
from shutterlock import __version__, units
from shutterlock import config as config_module

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
VENV_EXECUTABLE = Path(sys.executable).parent / "shutterlock"
WATCHDOG_USEC = 2_000_000  # the daemon pings every WATCHDOG_USEC / 2 = 1 s


# --------------------------------------------------------------------------- the unit files


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def verify(unit: Path, *, user_home: Path | None = None) -> None:
    """`systemd-analyze verify` exits 0 even on warnings: anything on stderr is a failure."""
    env = None
    args = ["verify", str(unit)]
    if user_home is not None:
        runtime = user_home / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {"HOME": str(user_home), "XDG_RUNTIME_DIR": str(runtime)}
        args.insert(1, "--user")
    result = analyze(*args, env=env)
    assert result.returncode == 0 and not result.stderr.strip(), f"{unit.name}:\n{result.stderr}"


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", "--threshold=20", str(unit))
    line = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    print(f"\n{unit}: {line.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    return float(re.search(r":\s*([0-9.]+)", line).group(1))


def as_unit(text: str, folder: Path) -> Path:
    """A unit is verified under its installed name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / units.UNIT_NAME
    path.write_text(text)
    return path


def test_reference_units_are_what_units_py_renders():
    for scope, name in units.REFERENCE_FILES.items():
        assert (ROOT / "systemd" / name).read_text() == units.render(scope, units.REFERENCE[scope]), (
            f"systemd/{name} is stale; regenerate it with: python -c \"from pathlib import Path; "
            "from shutterlock.units import write_reference; write_reference(Path('systemd'))\"")


@needs_systemd_analyze
def test_reference_units_verify_and_the_system_unit_is_hardened(tmp_path):
    # The user unit runs %h/.local/bin/shutterlock: give it a home where that exists.
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "shutterlock").symlink_to(VENV_EXECUTABLE)
    verify(as_unit((ROOT / "systemd" / "shutterlock.service").read_text(), tmp_path / "user"), user_home=home)
    # The system unit's /opt/shutterlock does not exist here: the real venv's command stands in for it.
    system = (ROOT / "systemd" / "shutterlock-system.service").read_text()
    system = system.replace(units.REFERENCE["system"].executable, str(VENV_EXECUTABLE))
    unit = as_unit(system, tmp_path / "system")
    verify(unit)
    assert exposure(unit) <= 2.0


@needs_systemd_analyze
def test_service_install_renders_units_for_this_installation(make_home, tmp_path):
    home = make_home(derive=True)
    printed = home.cli("service", "install", "--system", "--print", check=True).stdout
    assert f"ExecStart={VENV_EXECUTABLE} --config {home.config_file} run" in printed
    assert f"ReadWritePaths={home.vault} {home.outbox}" in printed
    assert f"ReadOnlyPaths=-{home.sources[0]}" in printed
    assert "systemctl enable --now shutterlock.service" in printed and "/etc/credstore" in printed
    unit = as_unit(printed, tmp_path / "system")
    verify(unit)
    assert exposure(unit) <= 2.0

    # --user writes into the user's systemd folder and explains the next steps.
    result = home.cli("service", "install", "--user", check=True)
    written = Path(home.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / units.UNIT_NAME
    assert f"written to {written}" in result.stdout and "systemctl --user enable --now" in result.stdout
    text = written.read_text()
    assert f"ExecStart={VENV_EXECUTABLE} --config {home.config_file} run" in text
    # The service manager knows nothing of this shell's XDG_* overrides: the unit carries them.
    assert f"Environment=XDG_DATA_HOME={home.env['XDG_DATA_HOME']}" in text
    verify(as_unit(text, tmp_path / "user"), user_home=Path(home.env["HOME"]))

    assert home.cli("service", "install").returncode == 2


def test_system_unit_paths_follow_the_config(make_home):
    home = make_home(derive=True)
    with _environment(home.env):
        spec = units.spec_for(config_module.load(home.config_file), "system", executable="/usr/bin/shutterlock")
    assert spec.read_write == (str(home.vault), str(home.outbox))
    # The models directory set in this shell ($SHUTTERLOCK_MODELS_DIR) is readable and passed on.
    models = home.env["SHUTTERLOCK_MODELS_DIR"]
    assert spec.read_only == (str(home.sources[0]), models)
    assert spec.environment == (("SHUTTERLOCK_MODELS_DIR", models),)
    assert spec.protect_home == "yes"
    home.write_config(derive=False)
    with _environment(home.env):
        spec = units.spec_for(config_module.load(home.config_file), "system", executable="/usr/bin/shutterlock")
    assert spec.read_write == (str(home.vault),)
    awkward = units.render("system", units.UnitSpec(executable="/opt/my photos/bin/shutterlock",
                                                    config_file="/etc/100%.toml", read_write=("/home/a b",),
                                                    protect_home="read-only"))
    assert 'ExecStart="/opt/my photos/bin/shutterlock" --config /etc/100%%.toml run' in awkward
    assert 'ReadWritePaths="/home/a b"' in awkward and "ProtectHome=read-only" in awkward


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """spec_for reads the installing shell's environment: make it the home's."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------- sd_notify


@dataclass
class NotifySocket:
    """What systemd would be: an AF_UNIX datagram socket, recording every message with its arrival time."""

    address: str
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    on_message: list = field(default_factory=list)

    def fields(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(at, msg) for at, msg in list(self.messages) if key in msg]

    def wait_for(self, key: str, value: str | None = None, *, after: float = 0.0, timeout: float = 60) -> float:
        def seen() -> float | None:
            return next((at for at, msg in self.fields(key) if at >= after and (value is None or msg[key] == value)),
                        None)

        wait_for(lambda: seen() is not None, timeout, 0.05, f"{key}={value or '…'} from the daemon")
        return seen()


@pytest.fixture
def notify_socket(request, tmp_path) -> Iterator[NotifySocket]:
    """Either address kind systemd uses: abstract (``@name``, the default) or a path in the file system."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if getattr(request, "param", "abstract") == "abstract":
        name = f"shutterlock-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(0.2)
    recorder = NotifySocket(address)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            for hook in recorder.on_message:
                hook(message)
            recorder.messages.append((time.monotonic(), message))

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    yield recorder
    stop.set()
    thread.join()
    sock.close()


def start_under_systemd(home: Home, notify: NotifySocket, *extra: tuple[str, str]) -> subprocess.Popen[bytes]:
    """`shutterlock run` the way systemd starts a Type=notify service with WatchdogSec=."""
    env = {**home.env, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC), **dict(extra)}
    with open(home.base / "daemon.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "shutterlock", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def pings(notify: NotifySocket, start: float, end: float) -> list[float]:
    return [at for at, _ in notify.fields("WATCHDOG") if start <= at <= end]


@pytest.mark.parametrize("notify_socket", ["abstract", "path"], indirect=True)
def test_sd_notify_ready_status_watchdog_reload_stop(make_home, notify_socket):
    home = make_home()
    # READY=1 promises a listening control socket: check it the moment READY arrives.
    socket_at_ready: list[bool] = []
    notify_socket.on_message.append(lambda m: m.get("READY") == "1" and socket_at_ready.append(home.socket.exists()))
    process = start_under_systemd(home, notify_socket)
    try:
        ready = notify_socket.wait_for("READY", "1")
        assert socket_at_ready[0], "READY=1 before the control socket listened"
        notify_socket.wait_for("STATUS", after=ready, timeout=10)
        time.sleep(4.5)
        beats = pings(notify_socket, ready, time.monotonic())
        assert len(beats) >= 3, beats
        assert max(b - a for a, b in itertools.pairwise(beats)) < WATCHDOG_USEC / 1e6, beats
        # STATUS= follows the work: files arrive, get sealed, and the summary line changes.
        first = [m["STATUS"] for _, m in notify_socket.fields("STATUS")]
        samples = copy_tree(SAMPLES / "exif-samples" / "jpg" / "gps", home.sources[0])
        wait_for(lambda: home.status()["files"].get("sealed", 0) == len(samples), 60, message="sealing")
        time.sleep(1.5)
        statuses = [m["STATUS"] for _, m in notify_socket.fields("STATUS")]
        assert len(statuses) > len(first) and statuses[-1] != first[-1], statuses
        assert all(a != b for a, b in itertools.pairwise(statuses)), "STATUS= repeated without a change"

        before = time.monotonic()
        process.send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING", "1", after=before, timeout=10)
        message = next(m for at, m in notify_socket.fields("RELOADING") if at == reloading)
        # MONOTONIC_USEC is CLOCK_MONOTONIC, the clock systemd compares it with.
        assert abs(int(message["MONOTONIC_USEC"]) / 1e6 - reloading) < 2.0, message
        ready_again = notify_socket.wait_for("READY", "1", after=reloading, timeout=10)
        notify_socket.wait_for("WATCHDOG", "1", after=ready_again, timeout=5)

        before = time.monotonic()
        process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING", "1", after=before, timeout=10)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - before < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_stuck_worker_stops_the_watchdog_pings(make_home, notify_socket, loop_mount):
    """A real hang, no test hook: the vault's file system is frozen (writes block in the kernel), so the
    seal worker makes no progress; after stall_seconds the pings stop, and they resume when it thaws."""
    home = make_home()
    vault = loop_mount.mountpoint / "vault"
    home.config_file.write_text(home.config_file.read_text().replace(f'path = "{home.vault}"', f'path = "{vault}"')
                                + "stall_seconds = 2\n")  # appended to the [engine] table
    assert "stall_seconds = 2" in home.config_file.read_text().split("[engine]")[1]
    process = start_under_systemd(home, notify_socket)
    try:
        ready = notify_socket.wait_for("READY", "1")
        time.sleep(3)
        assert len(pings(notify_socket, ready, time.monotonic())) >= 2, "no pings while idle"

        loop_mount.freeze()
        dropped = time.monotonic()
        (home.sources[0] / "stuck.jpg").write_bytes(os.urandom(3 << 20))
        # settle 0.5 s + stall 2 s, then no more pings however long we look.
        wait_for(lambda: not pings(notify_socket, time.monotonic() - 3, time.monotonic()), 30, 0.2,
                 "the watchdog pings to stop")
        silent_since = time.monotonic()
        time.sleep(4)
        assert not pings(notify_socket, silent_since - 3, time.monotonic())
        assert pings(notify_socket, dropped, silent_since), "pings stopped before the file arrived"
        assert home.status()["healthy"] is False

        loop_mount.thaw()
        thawed = time.monotonic()
        notify_socket.wait_for("WATCHDOG", "1", after=thawed, timeout=10)
        wait_for(lambda: home.status()["files"]["sealed"] == 1, 20, message="sealed once the disk is back")
        assert home.status()["healthy"] is True

        before = time.monotonic()
        process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING", "1", after=before, timeout=10)
        process.wait(timeout=float(units.STOP_TIMEOUT.rstrip("s")))
    finally:
        loop_mount.thaw()
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- systemd directories and credentials


def _credentials(home: Home, files: dict[str, bytes]) -> Path:
    folder = home.base / "credentials"
    folder.mkdir(mode=0o700)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o400)
    return folder


def _seal_with(home: Home, env: dict[str, str]) -> None:
    copy_tree(SAMPLES / "exif-samples" / "jpg" / "gps", home.sources[0])
    result = home.cli("run", "--once", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"all [\d,]+ originals sealed", result.stdout), result.stdout
    assert home.cli("verify", env=env).returncode == 0


def test_master_key_from_credentials_directory(make_home):
    home = make_home()
    key = (home.state / "master.key").read_bytes()
    (home.state / "master.key").unlink()
    credentials = _credentials(home, {"shutterlock.key": key})
    assert home.cli("run", "--once").returncode == 2, "ran without any key"
    _seal_with(home, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert not (home.state / "master.key").exists()


def test_passphrase_from_credentials_directory(make_home):
    home = make_home()
    (home.state / "master.key").unlink()
    credentials = _credentials(home, {"shutterlock.passphrase": home.passphrase_file.read_bytes()})
    _seal_with(home, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert not (home.state / "master.key").exists()


def test_wrong_passphrase_credential_is_a_configuration_error(make_home):
    home = make_home()
    (home.state / "master.key").unlink()
    credentials = _credentials(home, {"shutterlock.passphrase": b"not it\n"})
    result = home.cli("run", "--once", env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.returncode == 2 and "passphrase" in result.stderr


def test_state_cache_and_runtime_directories(make_home, notify_socket):
    """systemd's StateDirectory=/CacheDirectory=/RuntimeDirectory=; it passes lists, the first is ours."""
    home = make_home()
    state, cache, runtime = (home.base / name for name in ("lib", "cache-dir", "rundir"))
    for folder in (state, cache, runtime):
        folder.mkdir(mode=0o700)
    for item in ("master.key", "key-envelope.json"):
        shutil.copy2(home.state / item, state / item)
    env = {"STATE_DIRECTORY": f"{state}:{home.base / 'other'}", "CACHE_DIRECTORY": str(cache),
           "RUNTIME_DIRECTORY": str(runtime)}
    copy_tree(SAMPLES / "exif-samples" / "jpg" / "gps", home.sources[0])
    process = start_under_systemd(home, notify_socket, *env.items())
    try:
        notify_socket.wait_for("READY", "1")
        assert (runtime / "control.sock").exists() and not home.socket.exists()
        assert (state / "catalog.sqlite3").exists() and not (home.state / "catalog.sqlite3").exists()
        wait_for(lambda: '"running": true' in home.cli("status", "--json", env=env).stdout, 10,
                 message="status over the socket in RUNTIME_DIRECTORY")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_s3_credentials_from_credentials_directory(make_home, s3_server, tmp_path):
    """The replica's keys come from $CREDENTIALS_DIRECTORY when nothing else in boto3's chain has any."""
    nowhere = str(tmp_path / "no-aws-config")
    no_aws = {"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_EC2_METADATA_DISABLED": "true",
              "AWS_DEFAULT_REGION": "us-east-1"}
    homes = {}
    for name in ("without", "with"):
        home = homes[name] = make_home(name=name)
        home.env = {**{k: v for k, v in home.env.items() if not k.startswith("AWS_")}, **no_aws}
        home.write_config(s3_config(s3_server, prefix=name))
        shutil.copy2(SAMPLES / "exif-samples" / "jpg" / "Canon_40D.jpg", home.sources[0])

    # The control: no credentials directory, no keys anywhere; sealed locally, not replicated.
    assert homes["without"].cli("run", "--once").returncode == 1
    assert any("no S3 credentials" in e["message"] for e in homes["without"].status()["errors"])
    assert not s3_server.all_objects("photos")

    home = homes["with"]
    secret = "credentials-directory-secret"
    credentials = _credentials(home, {"s3.access_key_id": b"AKIDFROMCREDENTIALS\n",
                                      "s3.secret_access_key": secret.encode() + b"\n"})
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    result = home.cli("run", "--once", env=env)
    status = home.cli("status", "--json", env=env).stdout
    assert result.returncode == 0, result.stdout + result.stderr + status
    assert any(key.startswith("with/") for key in s3_server.all_objects("photos"))
    assert home.cli("verify", "--remote", env=env).returncode == 0
    assert secret not in result.stdout + result.stderr + status


# --------------------------------------------------------------------------- the wheel


def _package_tree(dest: Path) -> Path:
    """The files `python -m build` needs, copied so the build leaves no build/ or egg-info in the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("daemon", "tray"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(make_home, tmp_path):
    """Build the sdist and, from it, the wheel (`python -m build`); install the wheel alone into a fresh venv
    and use its `shutterlock` command.

    To keep CI time sane the dependencies (torch among them) are not downloaded again: a .pth file makes the
    project venv's site-packages importable *after* the fresh venv's own. What is tested is the wheel itself:
    its files, its entry point and its metadata (the declared dependencies must be satisfiable).
    """
    source = _package_tree(tmp_path / "source")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir",
                            str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(dist.glob(f"shutterlock-{__version__}-py3-none-any.whl"))
    assert next(dist.glob(f"shutterlock-{__version__}.tar.gz"))
    # Every file of both packages is in the wheel: data files (fonts, icons) need package-data.
    packaged = set(zipfile.ZipFile(wheel).namelist())
    for tree in ("daemon", "tray"):
        for path in (source / tree).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                assert path.relative_to(source / tree).as_posix() in packaged, f"{path} is not in the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    project_site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_project_dependencies.pth").write_text(project_site + "\n")

    # The package and the command come from the wheel, not from the checkout.
    where = subprocess.run([str(python), "-c", "import shutterlock, shutterlock_tray, shutterlock.units; "
                            "print(shutterlock.__file__); print(shutterlock_tray.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(site) for line in where.stdout.split()), where.stdout
    # Every dependency the wheel declares is satisfied (pip check reads the wheel's metadata).
    check = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"],
                           capture_output=True, text=True, timeout=120)
    assert "shutterlock" not in check.stdout and "ERROR" not in check.stderr, check.stdout + check.stderr
    requires = subprocess.run([str(python), "-c", "import importlib.metadata as m; print('\\n'.join(m.requires("
                               "'shutterlock')))"], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = [Requirement(line) for line in requires.splitlines() if "extra ==" not in line]
    assert {(r.name, r.specifier) for r in runtime} == {(r.name, r.specifier) for r in map(Requirement, declared)}

    command = venv / "bin" / "shutterlock"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and __version__ in version.stdout, version.stdout + version.stderr

    home = make_home()
    for item in ("master.key", "key-envelope.json"):
        (home.state / item).unlink()
    home.config_file.unlink()
    env = {k: v for k, v in home.env.items() if k != "PYTHONPATH"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(command), *args], env=env, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    init = cli("init", "--source", str(home.sources[0]), "--vault", str(home.vault), "--outbox", str(home.outbox),
               "--passphrase-file", str(home.passphrase_file))
    assert init.returncode == 0, init.stdout + init.stderr
    assert (home.state / "key-envelope.json").exists()
    # Derivatives too (PIL, the metadata writer, the outbox), but without the cloak's minutes of torch.
    document = tomllib.loads(home.config_file.read_text())
    document.setdefault("cloak", {})["strength"] = "off"
    home.config_file.write_text(tomli_w.dumps(document))

    samples = sorted((SAMPLES / "exif-samples" / "jpg" / "gps").glob("*.jpg"))[:4]
    for sample in samples:
        shutil.copy2(sample, home.sources[0] / sample.name)
    run = cli("run", "--once")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"all [\d,]+ originals sealed", run.stdout), run.stdout
    listing = cli("ls", "--json")
    assert listing.returncode == 0 and len(json.loads(listing.stdout)) == len(samples)
    assert len([p for p in home.outbox.rglob("*.jpg")]) == len(samples)
