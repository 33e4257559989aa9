"""The tray menu, tooltip and problems report as plain data, built from one typed status.

Why a pure model: every label, check mark and greyed-out item follows from the daemon's :class:`Status`
and a few facts about the tray itself (is it starting a daemon, what went wrong), so all of it is
unit-tested without a display; ``icon`` only maps entries onto pystray items and keys onto actions.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass

from shutterlock.status import Event, LaneStatus, Status, duration

#: The icon's state while no daemon answers (the others are the daemon's ``Status.state``).
DISCONNECTED = "disconnected"

LABEL_WIDTH = 60

# Action keys: ``icon`` binds each to a callable.
PAUSE, RESCAN, RETRY, OPEN_OUTBOX, OPEN_VAULT, PROBLEMS, SETTINGS, RELOAD = (
    "pause", "rescan", "retry", "open_outbox", "open_vault", "problems", "settings", "reload")
START_DAEMON, STOP_DAEMON, QUIT = "start_daemon", "stop_daemon", "quit"
COPY_LINK, SHOW_QR = "copy_link", "show_qr"  # their ``arg`` is the share's name

_VERBS = {"seal": "Sealing", "replicate": "Uploading", "derive": "Making derivatives"}


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
    """What the menu shows: the daemon's last status (None while none answers) and the tray's own situation.

    The folders and the config file come from the config, so they can be opened with no daemon running.
    """

    status: Status | None
    starting: bool = False
    problem: str = ""
    vault: str = ""
    outbox: str = ""
    config_file: str = ""


def icon_state(view: View) -> str:
    return str(view.status.state) if view.status is not None else DISCONNECTED


def headline(view: View) -> str:
    """The one-line summary: the icon's title, and the first menu line."""
    if view.status is not None:
        return _shorten(f"Shutterlock: {view.status.summary}")
    if view.starting:
        return "Shutterlock: starting the daemon…"
    if view.problem:
        return _shorten(f"Shutterlock: {view.problem}")
    return "Shutterlock: daemon not running"


def lane_line(lane: LaneStatus, status: Status) -> str:
    """ "Sealing 40 of 214 — about 3 min left" for a lane with work."""
    verb = _VERBS.get(lane.name, lane.name.capitalize())
    if status.paused:
        return f"{verb}: {lane.waiting:,} waiting (paused)"
    if lane.name == "replicate" and status.replica.configured and not status.replica.online:
        return f"{verb}: {lane.waiting:,} waiting (bucket offline)"
    line = f"{verb} {lane.position:,} of {lane.total:,}"
    if lane.eta_seconds is not None and lane.waiting > 1:
        line += f" — about {duration(lane.eta_seconds)} left"
    return line


def progress_lines(status: Status) -> list[str]:
    return [lane_line(lane, status) for lane in status.lanes if lane.waiting or lane.current]


def sealed_line(status: Status, now: float | None = None) -> str:
    """How many today and when the last one was sealed: the quiet proof that the guardian works."""
    if status.last_sealed_at is None:
        return "Nothing sealed yet"
    return f"Sealed today: {status.sealed_today:,} · last {_when(status.last_sealed_at, now)}"


def progress(status: Status) -> float | None:
    """Share of the current batches done, over the lanes with work (the working icon's ring)."""
    busy = [lane for lane in status.lanes if lane.waiting or lane.current]
    total = sum(lane.total for lane in busy)
    return sum(lane.done for lane in busy) / total if total else None


def retryable(status: Status | None) -> bool:
    """Something failed or is held back that `retry` would try again at once."""
    if status is None:
        return False
    made = status.derive.by_status
    return bool(status.files.failed or status.cloak.held or made.get("failed") or status.replica.failed)


def status_lines(view: View, now: float | None = None) -> list[str]:
    """The greyed lines atop the menu, and the tooltip: the headline, progress per lane, the last seal,
    the last error and what waits for a restart; with no daemon, the whole reason, wrapped."""
    status = view.status
    if status is None:
        if view.starting or not view.problem:
            return [headline(view)]
        return ["Shutterlock: daemon not running",
                *textwrap.wrap(view.problem, LABEL_WIDTH, max_lines=4, placeholder=" …")]
    lines = [headline(view), *progress_lines(status), sealed_line(status, now)]
    error = last_error(status)
    if error is not None:
        lines.append(f"Last error: {_event_line(error, short=True)}")
    lines += status.restart_needed
    return [_shorten(line) for line in lines]


def tooltip(view: View, now: float | None = None) -> str:
    return "\n".join(status_lines(view, now))


def last_error(status: Status) -> Event | None:
    """The newest error-level event (events arrive newest first)."""
    return next((event for event in status.errors if event.level == "error"), None)


def has_problems(status: Status | None) -> bool:
    """Whether "Show recent problems" has something to show (the same facts as :func:`problems_report`)."""
    return bool(status is not None and (
        status.errors or status.failed_files or status.cloak.held or status.cloak.error
        or status.derive.by_status.get("failed") or status.replica.error or status.vault.error))


def build(view: View, now: float | None = None) -> list[Entry]:
    """The whole menu, top to bottom; invisible entries stay in the list so positions are stable."""
    status = view.status
    entries = [Entry("", line, enabled=False) for line in status_lines(view, now)]
    running = status is not None
    outbox = status.outbox if status is not None else view.outbox
    vault = status.vault.path if status is not None else view.vault
    config_file = status.config_file if status is not None else view.config_file
    entries += [
        SEPARATOR,
        Entry(PAUSE, "Pause", checked=bool(status and status.paused), enabled=running),
        Entry(RESCAN, "Rescan now", enabled=running),
        Entry(RETRY, "Retry now", enabled=running and retryable(status)),
        SEPARATOR,
        Entry(OPEN_OUTBOX, "Open outbox", enabled=bool(outbox)),
        Entry(OPEN_VAULT, "Open vault folder", enabled=bool(vault)),
        Entry(PROBLEMS, "Show recent problems", enabled=has_problems(status)),
        Entry(SETTINGS, "Edit settings", enabled=bool(config_file)),
        Entry(RELOAD, "Reload settings", enabled=running),
        shares_menu(status),
        SEPARATOR,
        Entry(START_DAEMON, "Start daemon", enabled=not view.starting, visible=not running),
        Entry(STOP_DAEMON, "Stop daemon", visible=running),
        Entry(QUIT, "Quit tray"),
    ]
    return entries


def shares_menu(status: Status | None) -> Entry:
    """"Shares": one submenu per active share (copy its link, show its QR code), with new feedback counted.

    The links are not in the status (they hold the key); the actions ask the daemon for them.
    """
    shares = status.shares if status is not None else []
    new = sum(share.new_feedback for share in shares)
    children = []
    for share in shares:
        fresh = share.new_feedback
        day = time.strftime("%Y-%m-%d", time.localtime(share.expires_at))
        children.append(Entry("", _shorten(share.name + (f" — {fresh} new" if fresh else "")), children=(
            Entry("", f"{share.images} photo{'' if share.images == 1 else 's'}, until {day}", enabled=False),
            Entry(COPY_LINK, "Copy link", arg=share.name),
            Entry(SHOW_QR, "Show QR code", arg=share.name),
            Entry("", _shorten(f"{fresh} new selection{'' if fresh == 1 else 's'}: shutterlock share feedback "
                               f"{share.name}"), enabled=False, visible=fresh > 0),
        )))
    return Entry("", f"Shares ({new} new)" if new else "Shares", visible=bool(children), children=tuple(children))


def problems_report(status: Status) -> str:
    """The text behind "Show recent problems": what went wrong, newest first, and what is held back."""
    lines: list[str] = []
    for problem in (status.vault.error, status.replica.error and f"bucket: {status.replica.error}"):
        if problem:
            lines.append(problem)
    made = status.derive.by_status
    if status.cloak.error:
        lines.append(status.cloak.error)
    if made.get("held") or made.get("failed"):
        counts = [f"{made.get(key, 0):,} {label}" for key, label in
                  (("written", "made"), ("held", "held back (not cloaked)"), ("failed", "failed")) if made.get(key)]
        lines.append(f"Derivatives: {', '.join(counts)}. Held-back ones are made once the cloak runs again.")
    if status.failed_files:
        lines += ["", "Originals that could not be sealed:"]
        lines += [f"  {f.source}/{f.relpath}: {f.error}" for f in status.failed_files]
    if status.errors:
        lines += ["", "Events (newest first):"]
        lines += [f"  {_event_line(event)}" for event in status.errors]
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines or ["No recent problems."]) + "\n"


def _event_line(event: Event, short: bool = False) -> str:
    stamp = time.strftime("%H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(event.at))
    level = "" if short else f"{event.level}: "
    return f"{stamp} {level}{event.subject + ': ' if event.subject else ''}{event.message}"


def _when(at: float, now: float | None = None) -> str:
    """"14:02" today, "3 May 14:02" before; absolute, so a menu left open never shows a stale "ago"."""
    moment = time.localtime(at)
    same_day = moment[:3] == time.localtime(time.time() if now is None else now)[:3]
    return time.strftime("at %H:%M", moment) if same_day else f"on {moment.tm_mday} {time.strftime('%b %H:%M', moment)}"


def _shorten(text: str) -> str:
    """Keep menu rows and titles to one readable line."""
    text = " ".join(text.split())
    return text if len(text) <= LABEL_WIDTH else text[:LABEL_WIDTH - 1] + "…"
