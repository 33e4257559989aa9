"""Start the tray at login on XDG desktops: a ``.desktop`` file in ``$XDG_CONFIG_HOME/autostart``.

Why not copy ``packaging/shutterlock-tray-autostart.desktop``: a pip or venv install is rarely on the
session's PATH, so the installed entry runs this very interpreter (and keeps an explicit ``--config``).
The other keys match the packaged file (a test holds them together).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from shutterlock.fsutil import atomic_write_bytes, ensure_dir

FILE_NAME = "shutterlock-tray.desktop"

KEYS: dict[str, str] = {
    "Type": "Application",
    "Name": "Shutterlock tray",
    "GenericName": "Photo vault status",
    "Comment": "Shows whether every original is sealed; pause, resume and open the outbox",
    "Terminal": "false",
    "StartupNotify": "false",
    "NoDisplay": "true",
    "X-GNOME-Autostart-enabled": "true",
    "X-GNOME-Autostart-Delay": "5",
}

_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def supported() -> bool:
    """XDG autostart is for Linux and the BSDs; macOS has Login Items, Windows the Startup folder."""
    return sys.platform not in ("win32", "darwin")


def autostart_dir(env: Mapping[str, str] = os.environ) -> Path:
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config_home) / "autostart"


def command(config_path: Path | None) -> list[str]:
    """The tray command for this installation."""
    args = [sys.executable, "-m", "shutterlock"]
    if config_path is not None:
        args += ["--config", str(config_path.expanduser().resolve())]
    return [*args, "tray"]


def exec_line(argv: Sequence[str]) -> str:
    """Quote argv by the Desktop Entry rules: quoting first, then the string escapes (so ``\\`` doubles twice)."""
    words = []
    for arg in argv:
        word = arg.replace("%", "%%")
        if not word or any(c in _RESERVED for c in word):
            word = '"' + "".join("\\" + c if c in '"`$\\' else c for c in word) + '"'
        words.append(word.replace("\\", "\\\\"))
    return " ".join(words)


def entry(argv: Sequence[str]) -> str:
    lines = ["[Desktop Entry]", *(f"{key}={value}" for key, value in KEYS.items()), f"Exec={exec_line(argv)}"]
    return "\n".join(lines) + "\n"


def install(argv: Sequence[str], directory: Path | None = None) -> Path:
    directory = directory or autostart_dir()
    ensure_dir(directory, 0o755)
    path = directory / FILE_NAME
    atomic_write_bytes(path, entry(argv).encode(), mode=0o644)
    return path


def remove(directory: Path | None = None) -> Path | None:
    """Remove the entry; returns its path, or None when there was none."""
    path = (directory or autostart_dir()) / FILE_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def parse(text: str) -> dict[str, str]:
    """The ``[Desktop Entry]`` group as a dict (enough for checking our own files)."""
    keys: dict[str, str] = {}
    group = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            group = line
        elif group == "[Desktop Entry]" and "=" in line:
            key, value = line.split("=", 1)
            keys[key.strip()] = value.strip()
    return keys
