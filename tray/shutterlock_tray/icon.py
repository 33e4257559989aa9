"""The pystray adapter: the icon, its menu and the actions behind it; the only module that needs a display.

Why this shape: pystray raises at import without a display, so it is imported only after we have
checked for a display and a tray host (and failed with exit 2 and one line otherwise). The icon's
loop owns the main thread (macOS requires it); the status feed and the actions run on background
threads and reach the icon only through pystray's thread-safe setters. The daemon is never part of
this process: the tray starts it as a process of its own (``launch``) and follows it over the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from shutterlock import config as config_module
from shutterlock.config import Paths, resolve_paths
from shutterlock.errors import ControlError, DaemonNotRunning, ShutterlockError
from shutterlock.status import Status

from shutterlock_tray import icons, launch, menu
from shutterlock_tray.client import StatusFeed
from shutterlock_tray.notify import Disk, Notice, Notices
from shutterlock_tray.settings import SettingsFile
from shutterlock_tray.window import TextWindow

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE = 0, 2
TRAY_HOST_WAIT = 5.0
START_WAIT = 60.0  # how long a daemon started here may take to answer before the tray says so
SETTINGS_FOLLOW = 30 * 60.0  # after "Edit settings", how long the config file is looked at closely
SETTINGS_POLL = 1.0


def run(config_path: Path | None) -> int:
    """``shutterlock tray``: returns the exit code (0 after Quit or SIGTERM, 2 cannot run here)."""
    problem = desktop_problem()
    if problem:
        return _fail(problem, EXIT_USAGE)
    try:
        pystray = _import_pystray()
    except Exception as error:
        return _fail(f"no usable tray backend: {_one_line(error)}", EXIT_USAGE)
    return Tray(config_path, resolve_paths(config_path), pystray).run()


def _fail(message: str, code: int) -> int:
    print(f"shutterlock: {message}", file=sys.stderr)
    return code


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --------------------------------------------------------------------------- the desktop


def desktop_problem(env: dict[str, str] | None = None, wait: float = TRAY_HOST_WAIT) -> str | None:
    """Why no tray icon can be shown here, or None. Waits briefly for a tray host (a panel starting at login)."""
    if sys.platform in ("win32", "darwin"):
        return None
    env = dict(os.environ) if env is None else env
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return "no display: DISPLAY and WAYLAND_DISPLAY are unset (the tray needs a desktop session)"
    deadline = time.monotonic() + wait
    while True:
        problem = _tray_host_problem(env)
        if problem is None or problem.startswith("cannot open display") or time.monotonic() >= deadline:
            return problem
        time.sleep(0.25)


def _tray_host_problem(env: dict[str, str]) -> str | None:
    """An XEMBED tray (the ``_NET_SYSTEM_TRAY_Sn`` selection) or a StatusNotifier watcher on the session bus."""
    display_name = env.get("DISPLAY")
    if display_name:
        try:
            from Xlib import X
            from Xlib import display as xdisplay

            connection = xdisplay.Display(display_name)
        except ImportError:
            connection = None
        except Exception as error:
            return f"cannot open display {display_name}: {_one_line(error)}"
        if connection is not None:
            try:
                atom = connection.intern_atom(f"_NET_SYSTEM_TRAY_S{connection.get_default_screen()}")
                if connection.get_selection_owner(atom) != X.NONE:
                    return None
            finally:
                connection.close()
    if env.get("DBUS_SESSION_BUS_ADDRESS") and _status_notifier_watcher():
        return None
    return "no system tray: nothing on this desktop hosts tray icons (no XEMBED tray, no StatusNotifier watcher)"


def _status_notifier_watcher() -> bool:
    try:
        import gi

        gi.require_version("Gio", "2.0")
        from gi.repository import Gio, GLib

        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                              "NameHasOwner", GLib.Variant("(s)", ("org.kde.StatusNotifierWatcher",)),
                              None, Gio.DBusCallFlags.NONE, 2000, None)
        return bool(reply.unpack()[0])
    except Exception:
        return False


def _import_pystray() -> ModuleType:
    """Import pystray now that a display is known to exist; name the program for the window manager first.

    ``GDK_GL=disable``: an icon and a menu never need OpenGL, and GTK's start-up probe for it maps the
    GL driver (Mesa's llvmpipe alone is ~60 MB of RSS).
    """
    if sys.platform not in ("win32", "darwin"):
        os.environ.setdefault("GDK_GL", "disable")
        with contextlib.suppress(Exception):
            from gi.repository import GLib

            GLib.set_prgname("shutterlock-tray")
            GLib.set_application_name("Shutterlock")
    import pystray

    return pystray


CLIPBOARD_TOOLS = (["wl-copy"], ["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"],
                   ["pbcopy"], ["clip"])


def copy_text(text: str) -> None:
    """Put text on the desktop clipboard: GTK's own where the tray runs on GTK, else the usual tool."""
    if "gi.repository.Gtk" in sys.modules:
        from gi.repository import Gdk, GLib, Gtk

        def put() -> bool:
            clipboard = Gtk.Clipboard.get(Gdk.SELECTION_CLIPBOARD)
            clipboard.set_text(text, -1)
            clipboard.store()
            return False

        GLib.idle_add(put)
        return
    for tool in CLIPBOARD_TOOLS:
        if shutil.which(tool[0]):
            subprocess.run(tool, input=text.encode(), check=True, timeout=10, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            return
    raise RuntimeError("no clipboard available (install wl-clipboard or xclip)")


def open_path(path: str) -> None:
    """Hand a folder or file to the desktop's default application, without waiting for it (OSError: no opener)."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    process = subprocess.Popen([opener, path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=process.wait, name="opener", daemon=True).start()


# --------------------------------------------------------------------------- the icon


class Tray:
    """The icon and its menu, redrawn from the status feed; actions run off the icon loop."""

    def __init__(self, config_path: Path | None, paths: Paths, pystray: ModuleType):
        self.config_path, self.paths, self.pystray = config_path, paths, pystray
        self.notices = Notices()
        self.feed = StatusFeed(paths.socket, self._on_status, on_tick=self._on_tick)
        self.settings = SettingsFile(paths.config_file)
        # pystray's GTK and AppIndicator backends run GLib's loop: a window costs nothing more there.
        gtk = pystray.Icon.__module__ in ("pystray._gtk", "pystray._appindicator")
        self.problems_window = TextWindow("Shutterlock — recent problems") if gtk else None
        self._lock = threading.Lock()
        self._daemon_problem = ""  # why a daemon started here stopped; outranks the feed's plainer reason
        self._config_problem = ""  # the config file does not load (shown while no daemon runs)
        self._feed_reason = ""
        self._answered = threading.Event()
        self._quitting = threading.Event()
        self._follow_until = 0.0
        self._follower: threading.Thread | None = None
        self._view = self._with_config(menu.View(status=None, config_file=str(paths.config_file)))
        self._shown: tuple[Any, ...] = ()
        self._ready = threading.Event()
        self.icon = pystray.Icon("shutterlock", icons.draw(menu.DISCONNECTED), menu.headline(self._view),
                                 menu=pystray.Menu(self._items))

    def run(self) -> int:
        """Block in the icon loop until Quit (or SIGTERM/SIGHUP). The daemon, if any, keeps running."""
        _stop_on_signals(self.quit)
        failure = None
        try:
            self.icon.run(setup=self._setup)
        except Exception as error:
            failure = error
        self._quitting.set()
        self.feed.stop()
        if failure is not None and not self._ready.is_set():
            return _fail(f"the tray icon could not start: {_one_line(failure)}", EXIT_USAGE)
        if failure is not None:
            log.debug("the icon loop ended with %s", _one_line(failure))
        return EXIT_OK

    def quit(self) -> None:
        self._quitting.set()
        self.icon.stop()

    def _setup(self, icon: Any) -> None:
        """In pystray's setup thread: show the icon, then find the daemon (or start one) and follow it."""
        icon.visible = True
        self._ready.set()
        try:
            self.feed.offer(self.feed.call("status"))
        except DaemonNotRunning:
            self._in_background("start_daemon", self.start_daemon)
        except (ControlError, OSError, ValueError, TypeError) as error:
            log.warning("the daemon did not answer: %s", error)
        self.feed.start()

    def _with_config(self, view: menu.View) -> menu.View:
        """The folders from the config file, so they open with no daemon; or why the file does not load."""
        try:
            config = config_module.load(self.config_path)
        except ShutterlockError as error:
            self._config_problem = f"settings: {error}"
            return view
        self._config_problem = ""
        return replace(view, vault=str(config.vault.path), outbox=str(config.derive.outbox))

    # ------------------------------------------------------------------ state → icon

    def _on_status(self, status: Status | None, reason: str) -> None:
        with self._lock:
            if status is not None:
                self._daemon_problem = ""
                self._answered.set()
                self._view = replace(self._view, status=status, starting=False, problem="")
            else:
                self._feed_reason = reason
                self._view = replace(self._view, status=None, problem=self._problem())
            view = self._view
        log.info("tray: %s", menu.headline(view))
        self._refresh()
        if status is not None:
            self._show(self.notices.observe(status, time.time(), self._disks(status)))
        self._check_settings()

    def _on_tick(self, status: Status) -> None:
        """A long-poll ended with no change: time-based notices (bucket offline for N minutes), disk space,
        and a cheap look at the config file's mtime (edits made outside the tray)."""
        self._show(self.notices.observe(status, time.time(), self._disks(status)))
        self._check_settings()

    def _problem(self) -> str:
        """Called with the lock held: the most useful reason no daemon answers."""
        return self._daemon_problem or self._config_problem or self._feed_reason

    def _refresh(self) -> None:
        with self._lock:
            view = self._view
            state = menu.icon_state(view)
            progress = menu.progress(view.status) if view.status is not None and state == "working" else None
            title, tip = menu.headline(view), menu.tooltip(view)
            shown, self._shown = self._shown, (state, icons.quantise(progress), title, tip)
        if shown[:2] != self._shown[:2]:
            self.icon.icon = icons.draw(state, progress)
        if shown[2:3] != (title,):
            self.icon.title = title
        if shown[3:] != (tip,):
            self._set_tooltip(tip)
        self.icon.update_menu()

    def _set_tooltip(self, text: str) -> None:
        """pystray's GTK backend sets only the icon's title; the hover tooltip needs the status icon itself."""
        status_icon = getattr(self.icon, "_status_icon", None)
        if status_icon is not None:
            from gi.repository import GLib

            GLib.idle_add(status_icon.set_tooltip_text, text)

    def _items(self) -> Iterator[Any]:
        """pystray calls this each time it builds the menu (after ``update_menu``)."""
        with self._lock:
            view = self._view
        yield from self._menu_items(menu.build(view))

    def _menu_items(self, entries: Iterable[menu.Entry]) -> Iterator[Any]:
        pystray = self.pystray
        for entry in entries:
            if entry.separator:
                yield pystray.Menu.SEPARATOR
                continue
            if entry.children:
                yield pystray.MenuItem(entry.label, pystray.Menu(*self._menu_items(entry.children)),
                                       enabled=entry.enabled, visible=entry.visible)
                continue
            action = self._action(entry.key, entry.arg) if entry.key else None
            checked = entry.checked
            yield pystray.MenuItem(entry.label, action, checked=None if checked is None else (lambda _, c=checked: c),
                                   enabled=entry.enabled, visible=entry.visible)

    def _show(self, notices: list[Notice]) -> None:
        for notice in notices:
            self._tell(notice.title, notice.message)

    def _tell(self, title: str, message: str) -> None:
        log.info("notification: %s — %s", title, message)
        if self.icon.HAS_NOTIFICATION:
            try:
                self.icon.notify(message, title)
            except Exception as error:
                log.debug("notification not shown: %s", error)

    @staticmethod
    def _disks(status: Status) -> list[Disk]:
        """Free space of the vault's and the outbox's file systems (each file system once)."""
        disks, seen = [], set()
        for label, path in (("vault", status.vault.path), ("outbox", status.outbox)):
            try:
                device = os.stat(path).st_dev
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            if device not in seen:
                seen.add(device)
                disks.append(Disk(label, path, usage.free, usage.total))
        return disks

    # ------------------------------------------------------------------ actions

    def _action(self, key: str, arg: str = "") -> Callable[[Any, Any], None]:
        handlers: dict[str, Callable[[], None]] = {
            menu.COPY_LINK: lambda: self.copy_link(arg),
            menu.SHOW_QR: lambda: self.show_qr(arg),
            menu.PAUSE: self.toggle_pause,
            menu.RESCAN: lambda: self._command("rescan"),
            menu.RETRY: lambda: self._command("retry"),
            menu.OPEN_OUTBOX: lambda: self._open(self._view_path("outbox")),
            menu.OPEN_VAULT: lambda: self._open(self._view_path("vault")),
            menu.PROBLEMS: self.show_problems,
            menu.SETTINGS: self.edit_settings,
            menu.RELOAD: self.reload_settings,
            menu.START_DAEMON: self.start_daemon,
            menu.STOP_DAEMON: lambda: self._command("stop"),
            menu.QUIT: self.quit,
        }
        handler = handlers[key]
        return lambda _icon, _item: self._in_background(key, handler)

    def _in_background(self, name: str, handler: Callable[[], None]) -> None:
        """Off the icon loop: a socket call or a daemon start must not freeze the menu."""

        def guarded() -> None:
            try:
                handler()
            except Exception as error:
                log.warning("%s failed: %s", name, _one_line(error))

        threading.Thread(target=guarded, name=f"action-{name}", daemon=True).start()

    def toggle_pause(self) -> None:
        with self._lock:
            paused = self._view.status is not None and self._view.status.paused
        self._command("resume" if paused else "pause")

    def _command(self, op: str) -> Status:
        log.info("tray: %s", op)
        return self.feed.command(op)

    def _share(self, name: str) -> dict[str, Any]:
        """The share's link and QR code files, asked of the daemon (the status never carries a link)."""
        share: dict[str, Any] = self.feed.client.request("share_link", name=name)["share"]
        return share

    def copy_link(self, name: str) -> None:
        link = str(self._share(name)["link"])
        log.info("tray: copying the link of share %r", name)  # never the link itself: it holds the key
        copy_text(link)

    def show_qr(self, name: str) -> None:
        self._open(str(self._share(name)["qr_png"]))

    def _view_path(self, name: str) -> str:
        with self._lock:
            view = self._view
        if view.status is not None:
            return view.status.outbox if name == "outbox" else view.status.vault.path
        return view.outbox if name == "outbox" else view.vault

    def _open(self, path: str) -> None:
        log.info("tray: opening %s", path)
        try:
            open_path(path)
        except OSError as error:
            self._tell("Shutterlock: nothing opens files here", f"{path} ({_one_line(error)})")

    def show_problems(self) -> None:
        """A window on GTK; elsewhere a notification carrying the same report."""
        with self._lock:
            status = self._view.status
        if status is None:
            return
        report = menu.problems_report(status)
        if self.problems_window is not None:
            self.problems_window.show(report)
        else:
            self._tell("Shutterlock: recent problems", report)

    # ------------------------------------------------------------------ settings

    def edit_settings(self) -> None:
        """Open the config file, then watch it closely for a while: each save is sent to the daemon."""
        self._open(str(self.paths.config_file))
        with self._lock:
            self._follow_until = time.monotonic() + SETTINGS_FOLLOW
            if self._follower is not None:
                return
            self._follower = threading.Thread(target=self._follow_settings, name="settings", daemon=True)
            self._follower.start()

    def _follow_settings(self) -> None:
        while not self._quitting.wait(SETTINGS_POLL):
            self._check_settings()
            with self._lock:
                if time.monotonic() >= self._follow_until:
                    self._follower = None
                    return

    def _check_settings(self) -> None:
        """One stat: when the file was saved, the daemon reloads it (or, with none running, the tray re-reads it)."""
        if not self.settings.changed():
            return
        if self.feed.status is not None:
            self._in_background("reload", self.reload_settings)
            return
        with self._lock:
            self._view = self._with_config(self._view)
            self._view = replace(self._view, problem=self._problem())
        self._refresh()

    def reload_settings(self) -> None:
        """Ask the daemon to re-read the config, and say what it could not apply without a restart."""
        self.settings.changed()  # this version is being applied: do not send it twice
        try:
            status = self._command("reload")
        except ControlError as error:
            self._tell("Shutterlock: settings not applied", str(error).removeprefix("the daemon refused 'reload': "))
            return
        if status.restart_needed:
            self._tell("Shutterlock: settings reloaded; restart needed", "\n".join(status.restart_needed))
        else:
            self._tell("Shutterlock: settings reloaded", "All changes are in effect.")

    # ------------------------------------------------------------------ the daemon

    def start_daemon(self) -> None:
        """Start the daemon as its own process (see ``launch``); the status feed then finds it."""
        with self._lock:
            if self._view.starting:
                return
            self._daemon_problem = ""
            self._answered.clear()
            self._view = replace(self._view, starting=True, problem="")
        self._refresh()
        try:
            how = launch.start_daemon(self.config_path, self.paths, self._daemon_failed)
        except ShutterlockError as error:
            self._daemon_failed(None, str(error))
            return
        log.info("started the daemon: %s", how)
        self.feed.wake()
        if not self._answered.wait(START_WAIT):
            self._daemon_failed(None, f"it does not answer on {self.paths.socket} after {START_WAIT:.0f} s")

    def _daemon_failed(self, pid: int | None, reason: str) -> None:
        """A daemon started here could not start or stopped with an error: say why while none answers."""
        with self._lock:
            status = self._view.status
            if status is not None and status.pid != pid:
                log.info("a daemon started here stopped (%s); pid %s answers", reason, status.pid)
                return
            self._daemon_problem = f"the daemon stopped: {reason}"
            if status is None:  # else the feed is about to see it gone and shows this reason then
                self._view = replace(self._view, starting=False, problem=self._problem())
        log.warning("%s", self._daemon_problem)
        self._refresh()
        self.feed.wake()


def _stop_on_signals(callback: Callable[[], None]) -> None:
    """SIGTERM/SIGHUP end the tray cleanly, whichever loop holds the main thread.

    Python runs signal handlers only between bytecodes of the main thread: PyGObject's loop wakes for
    them, a loop in C may not, so the C handler's wake-up byte is also read on a helper thread.
    """
    fired = threading.Event()

    def fire() -> None:
        if not fired.is_set():
            fired.set()
            log.info("signal received: quitting")
            threading.Thread(target=callback, name="signal-stop", daemon=True).start()

    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    try:
        signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        return
    wanted = {getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)}
    for signum in wanted:
        signal.signal(signum, lambda *_: fire())

    def watch() -> None:
        with receiver, sender:  # the sockets must live as long as the wake-up fd points at them
            while not fired.is_set():
                if any(byte in wanted for byte in receiver.recv(64)):
                    fire()

    threading.Thread(target=watch, name="signals", daemon=True).start()
