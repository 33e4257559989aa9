"""Starting the daemon as a process of its own, so that sealing never lives or dies with the tray.

Why not a thread in the tray, as the first cut did: a GTK or X crash stopped sealing, and a failed start
left engine threads behind in the tray. Like maestral's GUI, the tray hands the daemon to the service
manager when the user unit is installed for this config (``systemctl --user start shutterlock``), and
otherwise starts ``python -m shutterlock run`` in a session of its own, stdin from /dev/null and its log in
the state directory. Either way it then talks to the daemon over the control socket only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from shutterlock.config import Paths
from shutterlock.errors import OperationFailed

UNIT = "shutterlock.service"
LOG_NAME = "daemon.log"
SYSTEMCTL_TIMEOUT = 150.0  # the unit's TimeoutStartSec is 120 s; a start waits for READY=1


#: Called with the pid and the reason when a daemon started here exits with an error.
OnFailure = Callable[[int, str], None]


def start_daemon(config_path: Path | None, paths: Paths, on_failure: OnFailure) -> str:
    """Start a daemon for this config and return how, for the log; raises OperationFailed if it cannot.

    ``on_failure`` is called from a helper thread if a daemon started here exits with an error (the
    service manager reports its own failures through ``systemctl``).
    """
    if user_unit_runs(paths.config_file):
        result = subprocess.run(["systemctl", "--user", "start", UNIT], capture_output=True, text=True,
                                timeout=SYSTEMCTL_TIMEOUT)
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
            raise OperationFailed(f"systemctl --user start {UNIT}: {reason[0]}")
        return f"systemctl --user start {UNIT}"
    log_file = paths.state_dir / LOG_NAME
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        os.replace(log_file, log_file.with_name(LOG_NAME + ".1"))  # the previous run's log, and no more
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(daemon_command(config_path), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    except OSError as error:
        raise OperationFailed(f"cannot start {sys.executable}: {error.strerror or error}") from None
    finally:
        os.close(log)
    threading.Thread(target=_reap, args=(process, log_file, on_failure), name="daemon-exit", daemon=True).start()
    return f"pid {process.pid}, logging to {log_file}"


def daemon_command(config_path: Path | None) -> list[str]:
    """This very interpreter, so the daemon runs the same installation as the tray."""
    config = ["--config", str(config_path)] if config_path is not None else []
    return [sys.executable, "-m", "shutterlock", *config, "run"]


def user_unit_runs(config_file: Path) -> bool:
    """Whether systemd --user is reachable and has our unit, running this config file (or the default)."""
    if sys.platform in ("win32", "darwin") or shutil.which("systemctl") is None:
        return False
    try:
        result = subprocess.run(["systemctl", "--user", "show", "--property=LoadState,ExecStart", UNIT],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.returncode != 0 or facts.get("LoadState") != "loaded":
        return False
    argv = re.search(r"argv\[\]=([^;]*)", facts.get("ExecStart", ""))
    words = argv.group(1).split() if argv else []
    if "--config" not in words:
        return True
    index = words.index("--config") + 1
    return index < len(words) and Path(words[index]) == config_file.absolute()


def _reap(process: subprocess.Popen[bytes], log_file: Path, on_failure: OnFailure) -> None:
    """Wait for the daemon (no zombie while the tray lives) and say why, if it stopped with an error."""
    code = process.wait()
    if code != 0:
        on_failure(process.pid, last_line(log_file) or f"exit code {code}")


def last_line(log_file: Path) -> str:
    """The daemon's last words (the CLI's one-line error comes last)."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return last.removeprefix("shutterlock: ")
