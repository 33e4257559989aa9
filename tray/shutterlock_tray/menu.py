"""The tray menu as plain data, built from one status document.

Why a pure model: every label, check mark and greyed-out item follows from the status and two facts
about the tray itself (is it connected, did it start the daemon), so all of it is unit-tested without a
display; ``app`` only maps entries onto pystray items and keys onto actions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from shutterlock.status import human_bytes

#: The tray's own state when no daemon answers (the status states come from ``shutterlock.status``).
DISCONNECTED = "disconnected"

LABEL_WIDTH = 60

# Action keys: ``app`` binds each to a callable.
PAUSE, RESCAN, OPEN_OUTBOX, OPEN_VAULT, PROBLEMS, SETTINGS = (
    "pause", "rescan", "open_outbox", "open_vault", "problems", "settings")
START_DAEMON, STOP_DAEMON, QUIT = "start_daemon", "stop_daemon", "quit"
COPY_LINK, SHOW_QR = "copy_link", "show_qr"  # their ``arg`` is the share's name


@dataclass(frozen=True)
class Entry:
    """One menu row. ``key`` is empty for information lines; ``checked`` is None when not checkable."""

    key: str
    label: str
    checked: bool | None = None
    enabled: bool = True
    visible: bool = True
    separator: bool = False
    arg: str = ""  # what the action is about (a share's name)
    children: tuple[Entry, ...] = ()  # a submenu


SEPARATOR = Entry("", "", enabled=False, separator=True)


@dataclass(frozen=True)
class View:
    """Everything the menu depends on: the last status (None before the first) and the tray's situation."""

    status: dict[str, Any] | None
    connected: bool
    owns_daemon: bool = False
    starting: bool = False
    problem: str = ""
    vault: str = ""
    outbox: str = ""
    config_file: str = ""


def tray_state(view: View) -> str:
    """The icon's state: the daemon's headline state, or ``disconnected``.

    The daemon reports an unavailable cloak under ``derive.cloak_error``; count it as degraded too.
    """
    if not view.connected or view.status is None:
        return DISCONNECTED
    state = str(view.status.get("state", "idle"))
    if state == "idle" and cloak_error(view.status):
        return "degraded"
    return state


def cloak_error(status: dict[str, Any]) -> str:
    return str((status.get("cloak") or {}).get("error") or (status.get("derive") or {}).get("cloak_error") or "")


def headline(view: View) -> str:
    """The one-line summary used as title and tooltip, and as the first menu line."""
    if view.connected and view.status is not None:
        return _shorten(f"Shutterlock: {view.status.get('summary', view.status.get('state', ''))}")
    if view.starting:
        return "Shutterlock: starting the daemon…"
    if view.problem:
        return _shorten(f"Shutterlock: {view.problem}")
    return "Shutterlock: daemon not running"


def last_error(status: dict[str, Any]) -> dict[str, Any] | None:
    """The newest error-level event (events arrive newest first)."""
    return next((e for e in status.get("errors") or [] if e.get("level") == "error"), None)


def has_problems(status: dict[str, Any] | None) -> bool:
    return bool(status and (status.get("errors") or status.get("failed_files")))


def build(view: View) -> list[Entry]:
    """The whole menu, top to bottom; invisible entries stay in the list so positions are stable."""
    status = view.status if view.connected else None
    entries = [Entry("", headline(view), enabled=False)]
    if status is not None:
        backlog = status.get("backlog") or {}
        items = int(backlog.get("items", 0)) + int(status.get("pending", 0))
        derive = status.get("derive") or {}
        error = last_error(status)
        entries += [
            Entry("", f"Sealed today: {status.get('sealed_today', 0)}", enabled=False),
            Entry("", f"Backlog: {items} item{'' if items == 1 else 's'} ({human_bytes(backlog.get('bytes', 0))})",
                  enabled=False),
            Entry("", f"Derivatives waiting: {derive.get('waiting', 0)}", enabled=False),
            Entry("", _shorten(f"Last error: {_error_line(error)}") if error else "Last error: none", enabled=False,
                  visible=error is not None),
        ]
    connected = status is not None
    outbox = str(status.get("outbox") if status else "") or view.outbox
    vault = str(status.get("vault") if status else "") or view.vault
    config_file = str(status.get("config_file") if status else "") or view.config_file
    shares = shares_menu(status)
    entries += [
        SEPARATOR,
        Entry(PAUSE, "Pause", checked=bool(status and status.get("paused")), enabled=connected),
        Entry(RESCAN, "Rescan now", enabled=connected),
        SEPARATOR,
        Entry(OPEN_OUTBOX, "Open outbox", enabled=bool(outbox)),
        Entry(OPEN_VAULT, "Open vault folder", enabled=bool(vault)),
        Entry(PROBLEMS, "Show recent problems", enabled=has_problems(status)),
        Entry(SETTINGS, "Edit settings", enabled=bool(config_file)),
        shares,
        SEPARATOR,
        Entry(START_DAEMON, "Start daemon", enabled=not view.starting, visible=not connected),
        Entry(STOP_DAEMON, "Stop daemon", visible=connected and view.owns_daemon),
        Entry(QUIT, "Quit tray"),
    ]
    return entries


def shares_menu(status: dict[str, Any] | None) -> Entry:
    """"Shares": one submenu per active share (copy its link, show its QR code), with new feedback counted."""
    shares = (status or {}).get("shares") or []
    new = sum(int(share.get("new_feedback", 0)) for share in shares)
    children = []
    for share in shares:
        name = str(share.get("name", ""))
        fresh = int(share.get("new_feedback", 0))
        count = int(share.get("images", 0))
        facts = f"{count} photo{'' if count == 1 else 's'}, until {_when(share.get('expires_at'), day=True)}"
        children.append(Entry("", _shorten(name + (f" — {fresh} new" if fresh else "")), children=(
            Entry("", facts, enabled=False),
            Entry(COPY_LINK, "Copy link", arg=name),
            Entry(SHOW_QR, "Show QR code", arg=name),
            Entry("", _shorten(f"{fresh} new selection{'' if fresh == 1 else 's'}: shutterlock share feedback "
                               f"{name}"), enabled=False, visible=fresh > 0),
        )))
    return Entry("", f"Shares ({new} new)" if new else "Shares", visible=bool(children), children=tuple(children))


def problems_report(status: dict[str, Any]) -> str:
    """The text behind "Show recent problems": newest events and the originals that could not be sealed."""
    lines = ["Shutterlock — recent problems", ""]
    events = status.get("errors") or []
    lines.append("Events (newest first):" if events else "No recent events.")
    lines += [f"  {_when(e.get('at'))}  {e.get('level', '?'):7}  {e.get('subject', '')}: {e.get('message', '')}"
              for e in events]
    failed = status.get("failed_files") or []
    if failed:
        lines += ["", "Originals that could not be sealed:"]
        lines += [f"  {f.get('source', '')}/{f.get('relpath', '')}: {f.get('error', '')}" for f in failed]
    return "\n".join(lines) + "\n"


def _error_line(error: dict[str, Any]) -> str:
    subject = error.get("subject") or ""
    return f"{_when(error.get('at'), short=True)} {subject + ': ' if subject else ''}{error.get('message', '')}"


def _when(at: Any, short: bool = False, day: bool = False) -> str:
    if not isinstance(at, int | float):
        return "?"
    return time.strftime("%Y-%m-%d" if day else "%H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(at))


def _shorten(text: str) -> str:
    """Keep menu rows and tooltips to one readable line."""
    text = " ".join(text.split())
    return text if len(text) <= LABEL_WIDTH else text[:LABEL_WIDTH - 1] + "…"
