"""systemd units for Shutterlock: rendered here, written by ``shutterlock service install``.

This module is the single source of truth for both units. The files in the repository's
``systemd/`` folder are these units rendered for the reference paths (:data:`REFERENCE`), and a
test keeps them equal, so there is no template outside the package that a wheel could lose.

Two shapes:

* ``user``: a workstation login. It leaves the state, cache and runtime directories to
  platformdirs so the CLI, the tray and the service agree on one catalog and one socket.
* ``system``: a home server, a dedicated ``shutterlock`` user, systemd-managed directories,
  credentials from the credential store and a read-only view of the machine except the vault and
  the outbox.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shutterlock.config import MODELS_DIR_ENV, Config, Credential
from shutterlock.fsutil import atomic_write_bytes

UNIT_NAME = "shutterlock.service"
# The rendered reference units in the repository's systemd/ folder (two names, one folder).
REFERENCE_FILES = {"user": "shutterlock.service", "system": "shutterlock-system.service"}
SCOPES = ("user", "system")
SYSTEM_USER = "shutterlock"
# The credential names the daemon looks for in $CREDENTIALS_DIRECTORY.
CREDENTIALS = tuple(Credential)
# ProtectHome= hides these; a configured path below one of them needs ProtectHome=read-only.
HOME_ROOTS = ("/home", "/root", "/run/user")
# PrivateTmp= gives the service its own, empty, /tmp and /var/tmp.
TMP_ROOTS = ("/tmp", "/var/tmp")
# Set in the installing shell, these move the models (both units) or the catalog and the socket (user unit);
# the units carry them so the service and the CLI agree (the service manager's environment lacks them).
SYSTEM_ENVIRONMENT = (MODELS_DIR_ENV,)
USER_ENVIRONMENT = ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", *SYSTEM_ENVIRONMENT)
# Landlock's system calls, which the derive worker uses to confine itself: systemd 252's @system-service
# group lacks them (later releases add them), and a filtered call fails with EPERM.
LANDLOCK_SYSCALLS = "SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self"
# The daemon stops within 10 s (engine drain 7 s + teardown); systemd waits a little longer before SIGKILL.
STOP_TIMEOUT = "15s"
# The main loop pings at least once a second while the workers progress; a hung loop or a worker stuck
# for [engine] stall_seconds is killed (SIGABRT, then restarted) this long after the last ping.
WATCHDOG = "60s"


@dataclass(frozen=True)
class UnitSpec:
    """Everything that differs between installations; the rest of a unit is fixed policy."""

    executable: str
    config_file: str | None  # None: the platform default (reference user unit), so no --config
    read_write: tuple[str, ...] = ()  # vault, outbox (system unit)
    read_only: tuple[str, ...] = ()  # sources, models (system unit)
    protect_home: str = "yes"
    environment: tuple[tuple[str, str], ...] = ()  # (name, value) the service must share with the CLI


# The paths the reference units in systemd/ are rendered for: a pipx install for the user unit; a venv
# in /opt and photos under /srv for the system unit (its config file names the sources, vault and outbox).
REFERENCE: dict[str, UnitSpec] = {
    "user": UnitSpec(executable="%h/.local/bin/shutterlock", config_file=None),
    "system": UnitSpec(
        executable="/opt/shutterlock/bin/shutterlock",
        config_file="/etc/shutterlock/config.toml",
        read_write=("/srv/photos/vault", "/srv/photos/outbox"),
        read_only=("/srv/photos/import",),
    ),
}


# --------------------------------------------------------------------------- rendering


def _escape(value: str) -> str:
    """One unit-file word: ``%`` is a specifier and ``$`` a variable, quotes only where needed."""
    value = value.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'" for c in value):
        return '"' + value.replace('"', '\\"') + '"'
    return value


def _command(spec: UnitSpec, *args: str) -> str:
    # The executable keeps its specifiers (%h in the reference user unit); everything else is literal.
    words = [spec.executable if spec.executable.startswith("%h/") else _escape(spec.executable)]
    if spec.config_file is not None:
        words += ["--config", _escape(spec.config_file)]
    return " ".join([*words, *args])


def _common_service(spec: UnitSpec) -> list[str]:
    return [
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_command(spec, 'run')}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WatchdogSec={WATCHDOG}",
        "TimeoutStartSec=120s",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "Restart=on-failure",
        "RestartSec=10s",
        "# Exit code 2 is a configuration or key problem: restarting cannot fix it.",
        "RestartPreventExitStatus=2",
        "# A background guardian: let interactive work go first.",
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
    ]


def _unit_section(description_suffix: str, *extra: str) -> list[str]:
    return [
        "[Unit]",
        f"Description=Shutterlock: seal original photos and make share-ready derivatives ({description_suffix})",
        *extra,
        "# Restart=on-failure, but give up after 5 failed starts in 15 minutes.",
        "StartLimitIntervalSec=15min",
        "StartLimitBurst=5",
    ]


def _header(scope: str) -> list[str]:
    return [
        f"# Shutterlock {scope} unit, installed as {UNIT_NAME}.",
        "# Rendered by `shutterlock service install --" + scope + "` (daemon/shutterlock/units.py);",
        "# edit with `systemctl" + (" --user" if scope == "user" else "") + " edit shutterlock` rather than here.",
    ]


def render_user(spec: UnitSpec) -> str:
    """A workstation login unit; only the hardening that works without privileges."""
    lines = [
        *_header("user"),
        "",
        *_unit_section("user session"),
        "",
        *_common_service(spec),
        "# State, cache and socket stay where the CLI and the tray look for them (platformdirs).",
        *(f"Environment={_escape(f'{name}={value}')}" for name, value in spec.environment),
        "NoNewPrivileges=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        LANDLOCK_SYSCALLS,
        "SystemCallErrorNumber=EPERM",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def render_system(spec: UnitSpec) -> str:
    """A home-server unit: a dedicated user and everything read-only but the vault and the outbox."""
    paths = sorted({*spec.read_write, *spec.read_only})
    lines = [
        *_header("system"),
        "",
        *_unit_section("home server",
                       "Wants=network-online.target",
                       "After=network-online.target",
                       *([f"RequiresMountsFor={' '.join(_escape(p) for p in paths)}"] if paths else [])),
        "",
        *_common_service(spec),
        f"User={SYSTEM_USER}",
        f"Group={SYSTEM_USER}",
        "# Catalog and keys in /var/lib/shutterlock, scratch and model weights in /var/cache/shutterlock,",
        "# control socket in /run/shutterlock, logs in /var/log/shutterlock.",
        "StateDirectory=shutterlock",
        "CacheDirectory=shutterlock",
        "RuntimeDirectory=shutterlock",
        "LogsDirectory=shutterlock",
        "StateDirectoryMode=0700",
        "CacheDirectoryMode=0700",
        "RuntimeDirectoryMode=0750",
        "LogsDirectoryMode=0700",
        "Environment=XDG_CACHE_HOME=%C",
        *(f"Environment={_escape(f'{name}={value}')}" for name, value in spec.environment),
        "UMask=0077",
        "# The master key (or the passphrase) and the S3 keys, each optional, encrypted at rest with",
        "# systemd-creds in /etc/credstore.encrypted/: the service reads them in clear from",
        "# $CREDENTIALS_DIRECTORY and never needs access to the store.",
        *(f"LoadCredentialEncrypted={name}" for name in CREDENTIALS),
        "",
        "# Everything is read-only except the vault, the outbox and the directories above;",
        "# the sources are read, never written.",
        "ProtectSystem=strict",
        *([f"ReadWritePaths={' '.join(_escape(p) for p in spec.read_write)}"] if spec.read_write else []),
        *([f"ReadOnlyPaths={' '.join('-' + _escape(p) for p in spec.read_only)}"] if spec.read_only else []),
        f"ProtectHome={spec.protect_home}",
        "PrivateTmp=yes",
        "PrivateIPC=yes",
        "PrivateMounts=yes",
        "# Not PrivateDevices= (it would hide GPUs) nor MemoryDenyWriteExecute= (torch and cffi need W+X pages).",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        LANDLOCK_SYSCALLS,
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render(scope: str, spec: UnitSpec) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return render_user(spec) if scope == "user" else render_system(spec)


def write_reference(folder: Path) -> list[Path]:
    """Regenerate the repository's systemd/ files from this module (they are checked by a test)."""
    written = []
    for scope, name in REFERENCE_FILES.items():
        path = folder / name
        path.write_text(render(scope, REFERENCE[scope]))
        written.append(path)
    return written


# --------------------------------------------------------------------------- this installation


def current_executable() -> str:
    """The ``shutterlock`` of the running installation: next to the interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "shutterlock"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("shutterlock")
    if found:
        return str(Path(found).absolute())
    raise FileNotFoundError("cannot find the `shutterlock` command of this installation; install the package "
                            "(pip install shutterlock) so that it has one")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    pure = PurePosixPath(path)
    return any(pure == PurePosixPath(root) or PurePosixPath(root) in pure.parents for root in roots)


def spec_for(config: Config, scope: str, executable: str | None = None) -> UnitSpec:
    """The paths a unit for this config needs; for the system unit, what must stay writable or readable.

    A vault left at its default lives in the state directory, which the system unit already provides.
    """
    executable = executable or current_executable()
    # Always explicit: $SHUTTERLOCK_CONFIG or --config in this shell is unknown to the service manager.
    config_file = str(config.paths.config_file.absolute())
    names = USER_ENVIRONMENT if scope == "user" else SYSTEM_ENVIRONMENT
    environment = tuple((name, os.environ[name]) for name in names if os.environ.get(name))
    if scope == "user":
        return UnitSpec(executable=executable, config_file=config_file, environment=environment)
    read_write: list[str] = []
    if config.vault.path != config.paths.state_dir / "vault":
        read_write.append(str(config.vault.path))
    if config.derive.enabled:
        read_write.append(str(config.derive.outbox))
    read_only = [str(s.path) for s in config.sources]
    if config.cloak.models_dir is not None:
        read_only.append(str(config.cloak.models_dir))
    everything = [executable, config_file, *read_write, *read_only]
    return UnitSpec(
        executable=executable,
        config_file=config_file,
        read_write=tuple(dict.fromkeys(read_write)),
        read_only=tuple(p for p in dict.fromkeys(read_only) if p not in read_write),
        protect_home="read-only" if any(_under(p, HOME_ROOTS) for p in everything) else "yes",
        environment=environment,
    )


def unit_path(scope: str) -> Path:
    if scope == "user":
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def _warnings(spec: UnitSpec) -> list[str]:
    notes = []
    for path in (spec.config_file, *spec.read_write, *spec.read_only):
        if path and _under(path, TMP_ROOTS):
            notes.append(f"warning: {path} is under a temporary directory, which the service sees empty "
                         "(PrivateTmp=yes); move it")
    if spec.protect_home == "read-only":
        notes.append("note: some paths are in home directories, so the unit uses ProtectHome=read-only and the "
                     f"`{SYSTEM_USER}` user needs permission to read them (and to write the vault and outbox)")
    return notes


def _next_steps_user(path: Path, written: bool) -> str:
    where = f"written to {path}" if written else f"not written; save it as {path}"
    return "\n".join([
        f"# Unit {where}. Next:",
        "#   shutterlock init                     # once: config and key, if not done yet",
        "#   systemctl --user daemon-reload",
        "#   systemctl --user enable --now shutterlock.service",
        "#   loginctl enable-linger \"$USER\"       # optional: keep it running when you are logged out",
        "# Then: `shutterlock status`, `journalctl --user -u shutterlock -f`,",
        "# `systemctl --user reload shutterlock` after editing the config.",
    ])


def _next_steps_system(spec: UnitSpec, path: Path, written: bool) -> str:
    where = f"written to {path}" if written else f"not written; save it as {path}"
    dirs = " ".join(_escape(p) for p in spec.read_write)
    as_service = (f"sudo -u {SYSTEM_USER} env STATE_DIRECTORY=/var/lib/shutterlock "
                  f"RUNTIME_DIRECTORY=/run/shutterlock {_command(spec)}")
    steps = [
        f"# Unit {where}. Next, as root:",
        f"#   useradd --system --user-group --home-dir /var/lib/shutterlock --shell /usr/sbin/nologin {SYSTEM_USER}",
        f"#   install -d -o {SYSTEM_USER} -g {SYSTEM_USER} -m 0700 /var/lib/shutterlock"
        + (f" {dirs}" if dirs else ""),
        "# The passphrase, typed at a prompt (never on a command line, never in clear on disk), encrypted",
        "# for this machine (its TPM2 if it has one) into the credential store the unit reads:",
        "#   install -d -m 0700 /etc/credstore.encrypted",
        "#   systemd-ask-password -n 'Shutterlock passphrase:' | systemd-creds encrypt "
        "--name=shutterlock.passphrase - /etc/credstore.encrypted/shutterlock.passphrase",
        "# Once, the key envelope, made with that credential (so no master.key is written):",
        f"#   systemd-run --wait --pipe -p User={SYSTEM_USER} -p StateDirectory=shutterlock "
        f"-p LoadCredentialEncrypted=shutterlock.passphrase {_command(spec)} init",
        "# The S3 replica's keys likewise, as s3.access_key_id and s3.secret_access_key.",
        "#   systemctl daemon-reload",
        "#   systemctl enable --now shutterlock.service",
        f"# Then: `{as_service} status`, `journalctl -u shutterlock -f`,",
        "# `systemctl reload shutterlock` after editing the config.",
    ]
    return "\n".join(steps + [f"# {note}" for note in _warnings(spec)])


def install_unit(config: Config, scope: str, *, print_only: bool) -> str:
    """Render the unit for this installation; write it unless ``print_only``; say what to do next.

    The returned text is a valid unit file either way (the explanation is in comments), so
    ``shutterlock service install --system --print > shutterlock.service`` works.
    """
    spec = spec_for(config, scope)
    text = render(scope, spec)
    path = unit_path(scope)
    if not print_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode(), mode=0o644)
    steps = _next_steps_user(path, not print_only) if scope == "user" else _next_steps_system(
        spec, path, not print_only)
    return text + "\n" + steps if print_only else steps
