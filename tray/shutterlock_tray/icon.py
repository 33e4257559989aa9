"""The pystray adapter: the icon, its menu and the actions behind it; the only module that needs a display.

Why this shape: pystray raises at import without a display, so it is imported only after we have
checked for a display and a tray host (and failed with exit 2 and one line otherwise). The icon's
loop owns the main thread (macOS requires it); the status feed, actions and a daemon started here
(workstation mode) run on background threads and reach the icon only through pystray's thread-safe
setters.
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
from shutterlock.config import Config, ConfigError
from shutterlock.control import DaemonNotRunning
from shutterlock.fsutil import atomic_write_bytes, ensure_dir

from shutterlock_tray import autostart as autostart_module
from shutterlock_tray import icons, menu
from shutterlock_tray.client import StatusFeed
from shutterlock_tray.notify import Disk, Notice, Notices

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE = 0, 2
TRAY_HOST_WAIT = 5.0
DAEMON_STOP_WAIT = 20.0


def run(config_path: Path | None, autostart: str | None) -> int:
    """``shutterlock tray``: returns the exit code (0 after Quit or SIGTERM, 2 cannot run here)."""
    if autostart is not None:
        return _set_autostart(config_path, autostart == "on")
    try:
        config = config_module.load(config_path)
    except ConfigError as error:
        return _fail(str(error), EXIT_USAGE)
    problem = desktop_problem()
    if problem:
        return _fail(problem, EXIT_USAGE)
    try:
        pystray = _import_pystray()
    except Exception as error:
        return _fail(f"no usable tray backend: {_one_line(error)}", EXIT_USAGE)
    return Tray(config, pystray).run()


def _fail(message: str, code: int) -> int:
    print(f"shutterlock: {message}", file=sys.stderr)
    return code


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _set_autostart(config_path: Path | None, on: bool) -> int:
    if not autostart_module.supported():
        return _fail("--autostart manages XDG autostart (Linux/BSD desktops); on macOS use Login Items, "
                     "on Windows the Startup folder", EXIT_USAGE)
    if on:
        path = autostart_module.install(autostart_module.command(config_path))
        print(f"autostart: installed {path}")
    else:
        removed = autostart_module.remove()
        print(f"autostart: removed {removed}" if removed else "autostart: was not installed")
    return EXIT_OK


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


def open_path(path: str) -> None:
    """Hand a folder or file to the desktop's default application, without waiting for it."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    process = subprocess.Popen([opener, path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=process.wait, name="opener", daemon=True).start()


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


# --------------------------------------------------------------------------- workstation mode


class EmbeddedDaemon:
    """The daemon inside the tray process, on a background thread (signals stay with the main thread)."""

    def __init__(self, config: Config, on_exit: Callable[[str], None]):
        self.config = config
        self._on_exit = on_exit
        self._daemon: Any = None
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from shutterlock.daemon import AlreadyRunning, Daemon

        error = ""
        try:
            self._daemon = Daemon(self.config)
            if not self._stop_requested.is_set():
                self._daemon.run(install_signals=False)
        except AlreadyRunning:
            log.info("another daemon took the lock first; using it")
        except Exception as exc:
            log.exception("the daemon stopped with an error")
            error = _one_line(exc)
        finally:
            self._on_exit(error)

    def stop(self, wait: float = DAEMON_STOP_WAIT) -> None:
        """Ask the daemon to finish its in-flight work and stop; wait for it (bounded)."""
        self._stop_requested.set()
        if self._daemon is not None:
            self._daemon.request_stop()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)


# --------------------------------------------------------------------------- the icon


class Tray:
    """The icon and its menu, redrawn from the status feed; actions run off the icon loop."""

    def __init__(self, config: Config, pystray: ModuleType):
        self.config = config
        self.pystray = pystray
        self.notices = Notices()
        self.feed = StatusFeed(config.paths.socket, self._on_status, on_tick=self._on_tick)
        self.embedded: EmbeddedDaemon | None = None
        self._lock = threading.Lock()
        self._view = menu.View(status=None, connected=False, vault=str(config.vault.path),
                               outbox=str(config.derive.outbox), config_file=str(config.paths.config_file))
        self._shown: tuple[Any, ...] = ()
        self._ready = threading.Event()
        self.icon = pystray.Icon("shutterlock", icons.draw(menu.DISCONNECTED), menu.headline(self._view),
                                 menu=pystray.Menu(self._items))

    def run(self) -> int:
        """Block in the icon loop until Quit (or SIGTERM/SIGHUP); then stop a daemon we started."""
        _stop_on_signals(self.quit)
        failure = None
        try:
            self.icon.run(setup=self._setup)
        except Exception as error:
            failure = error
        self.feed.stop()
        if self.embedded is not None and self.embedded.running:
            log.info("stopping the daemon started by the tray")
            self.embedded.stop()
        if failure is not None and not self._ready.is_set():
            return _fail(f"the tray icon could not start: {_one_line(failure)}", EXIT_USAGE)
        if failure is not None:
            log.debug("the icon loop ended with %s", _one_line(failure))
        return EXIT_OK

    def quit(self) -> None:
        self.icon.stop()

    def _setup(self, icon: Any) -> None:
        """In pystray's setup thread: show the icon, then find or start the daemon and follow it."""
        icon.visible = True
        self._ready.set()
        try:
            self.feed.offer(self.feed.client.call("status"))
        except DaemonNotRunning:
            self.start_daemon()
        except (OSError, RuntimeError, ValueError) as error:
            log.warning("the daemon did not answer: %s", error)
        self.feed.start()

    # ------------------------------------------------------------------ state → icon

    def _on_status(self, status: dict[str, Any] | None, reason: str) -> None:
        with self._lock:
            view = self._view
            if status is not None:
                view = replace(view, status=status, connected=True, starting=False, problem="",
                               owns_daemon=self.embedded is not None and status.get("pid") == os.getpid())
            else:
                # Keep "the daemon could not run: …" (from our own daemon) over the feed's plainer reason.
                own_problem = view.problem if view.problem.startswith("the daemon") else ""
                view = replace(view, status=None, connected=False, owns_daemon=False, problem=own_problem or reason)
            self._view = view
        log.info("tray: %s", menu.headline(view))
        self._refresh()
        if status is not None:
            self._show(self.notices.observe(status, time.time(), self._disks(status)))

    def _on_tick(self, status: dict[str, Any]) -> None:
        """A long-poll ended with no change: time-based notices (bucket offline for N minutes) and disk space."""
        self._show(self.notices.observe(status, time.time(), self._disks(status)))

    def _refresh(self) -> None:
        with self._lock:
            view = self._view
            state = menu.tray_state(view)
            progress = icons.quantise(self.notices.progress(view.status)) \
                if state == "working" and view.status else None
            title = menu.headline(view)
            shown, self._shown = self._shown, (state, progress, title)
        if shown[:2] != (state, progress):
            self.icon.icon = icons.draw(state, progress)
        if not shown or shown[2] != title:
            self.icon.title = title
            self._set_tooltip(title)
        self.icon.update_menu()

    def _set_tooltip(self, title: str) -> None:
        """pystray's GTK backend sets only the icon's title; its hover tooltip needs the status icon itself."""
        status_icon = getattr(self.icon, "_status_icon", None)
        if status_icon is not None:
            from gi.repository import GLib

            GLib.idle_add(status_icon.set_tooltip_text, title)

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
            log.info("notification: %s — %s", notice.title, notice.message)
            if self.icon.HAS_NOTIFICATION:
                try:
                    self.icon.notify(notice.message, notice.title)
                except Exception as error:
                    log.debug("notification not shown: %s", error)

    def _disks(self, status: dict[str, Any]) -> list[Disk]:
        """Free space of the vault's and the outbox's file systems (each file system once)."""
        disks, seen = [], set()
        for label, key in (("vault", "vault"), ("outbox", "outbox")):
            path = status.get(key)
            if not path:
                continue
            try:
                device = os.stat(path).st_dev
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            if device not in seen:
                seen.add(device)
                disks.append(Disk(label, str(path), usage.free, usage.total))
        return disks

    # ------------------------------------------------------------------ actions

    def _action(self, key: str, arg: str = "") -> Callable[[Any, Any], None]:
        handlers: dict[str, Callable[[], None]] = {
            menu.COPY_LINK: lambda: self.copy_link(arg),
            menu.SHOW_QR: lambda: self.show_qr(arg),
            menu.PAUSE: self.toggle_pause,
            menu.RESCAN: lambda: self._command("rescan"),
            menu.OPEN_OUTBOX: lambda: self._open(self._path("outbox")),
            menu.OPEN_VAULT: lambda: self._open(self._path("vault")),
            menu.PROBLEMS: self.show_problems,
            menu.SETTINGS: lambda: self._open(self._path("config_file")),
            menu.START_DAEMON: self.start_daemon,
            menu.STOP_DAEMON: self.stop_daemon,
            menu.QUIT: self.quit,
        }
        handler = handlers[key]

        def activate(_icon: Any, _item: Any) -> None:
            # Off the icon loop: a socket call or a daemon shutdown must not freeze the menu.
            threading.Thread(target=self._guarded, args=(key, handler), name=f"action-{key}", daemon=True).start()

        return activate

    @staticmethod
    def _guarded(key: str, handler: Callable[[], None]) -> None:
        try:
            handler()
        except Exception as error:
            log.warning("%s failed: %s", key, _one_line(error))

    def toggle_pause(self) -> None:
        with self._lock:
            paused = bool(self._view.status and self._view.status.get("paused"))
        self._command("resume" if paused else "pause")

    def _command(self, op: str) -> None:
        log.info("tray: %s", op)
        self.feed.command(op)

    def _path(self, key: str) -> str:
        with self._lock:
            view = self._view
        return str((view.status or {}).get(key) or getattr(view, key))

    def _open(self, path: str) -> None:
        log.info("tray: opening %s", path)
        open_path(path)

    def show_problems(self) -> None:
        with self._lock:
            status = self._view.status
        if not status:
            return
        report = self.config.paths.runtime_dir / "recent-problems.txt"
        ensure_dir(report.parent)
        atomic_write_bytes(report, menu.problems_report(status).encode())
        self._open(str(report))

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

    def start_daemon(self) -> None:
        """Workstation mode: run the daemon in this process."""
        if self.embedded is not None and self.embedded.running:
            return
        with self._lock:
            self._view = replace(self._view, starting=True, problem="")
        self._refresh()
        log.info("no daemon answers on %s: starting one in the tray", self.config.paths.socket)
        self.embedded = EmbeddedDaemon(self.config, self._daemon_exited)
        self.embedded.start()
        self.feed.wake()

    def _daemon_exited(self, error: str) -> None:
        with self._lock:
            self._view = replace(self._view, starting=False,
                                 problem=f"the daemon could not run: {error}" if error else "")
        self._refresh()
        self.feed.wake()

    def stop_daemon(self) -> None:
        if self.embedded is not None:
            log.info("tray: stopping the daemon")
            self.embedded.stop()


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
