"""Issue 7: the tray — the pure menu model, icons, notification rules and autostart files, then the real
thing: Xvfb + trayer + pystray's GTK backend under a D-Bus session, driven with xdotool against a real
daemon (pause, resume, kill and restart), with screenshots kept in test-artifacts/tray/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, Home, stop, wait_for
from PIL import Image
from shutterlock_tray import autostart, icons, menu
from shutterlock_tray.client import StatusFeed
from shutterlock_tray.notify import Disk, Notices, Rules

ARTIFACTS = ROOT / "test-artifacts" / "tray"
PACKAGING = ROOT / "packaging"
GB = 10**9
STATUS_ROW = 28  # pixels: the first menu row, where the one-line status is


def make_status(**overrides: Any) -> dict[str, Any]:
    """A status document shaped like the daemon's (``shutterlock status --json``)."""
    status: dict[str, Any] = {
        "running": True, "paused": False, "pid": 4242, "version": 1, "state": "idle",
        "summary": "all sealed (12 originals)",
        "files": {"discovered": 0, "sealing": 0, "sealed": 12, "failed": 0}, "sealed_today": 3,
        "backlog": {"items": 0, "bytes": 0}, "pending": 0, "current": [], "errors": [], "failed_files": [],
        "sources": [], "replica": {"configured": False, "online": True, "waiting": 0, "waiting_bytes": 0},
        "derive": {"waiting": 0, "by_status": {}, "cloak_error": ""}, "cloak": {"strength": "standard", "error": ""},
        "vault": "/v", "outbox": "/o", "config_file": "/c/config.toml",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(status.get(key), dict):
            status[key] = {**status[key], **value}
        else:
            status[key] = value
    return status


def by_key(entries: list[menu.Entry]) -> dict[str, menu.Entry]:
    return {e.key: e for e in entries if e.key}


def info_lines(entries: list[menu.Entry]) -> list[str]:
    return [e.label for e in entries if not e.key and not e.separator and e.visible]


# --------------------------------------------------------------------------- the menu model


def test_menu_follows_an_idle_status():
    entries = menu.build(menu.View(make_status(), connected=True))
    assert info_lines(entries) == ["Shutterlock: all sealed (12 originals)", "Sealed today: 3",
                                   "Backlog: 0 items (0 B)", "Derivatives waiting: 0"]
    items = by_key(entries)
    assert items[menu.PAUSE].checked is False and items[menu.PAUSE].enabled
    assert items[menu.RESCAN].enabled and items[menu.QUIT].enabled
    assert not items[menu.PROBLEMS].enabled
    assert not items[menu.STOP_DAEMON].visible and not items[menu.START_DAEMON].visible
    assert [e.label for e in entries if e.key and e.visible] == [
        "Pause", "Rescan now", "Open outbox", "Open vault folder", "Show recent problems", "Edit settings", "Quit tray"]
    assert all(not e.enabled for e in entries if not e.key)


def test_menu_when_paused_working_and_failing():
    status = make_status(paused=True, state="paused", summary="paused: 214 waiting", backlog={"items": 200, "bytes":
                         5_200_000_000}, pending=14, derive={"waiting": 7},
                         errors=[{"at": 0, "level": "warning", "subject": "a.jpg", "message": "retrying"},
                                 {"at": 0, "level": "error", "subject": "replica", "message": "connection refused"}])
    entries = menu.build(menu.View(status, connected=True))
    lines = info_lines(entries)
    assert lines[0] == "Shutterlock: paused: 214 waiting"
    assert "Backlog: 214 items (5.2 GB)" in lines and "Derivatives waiting: 7" in lines
    assert lines[-1].startswith("Last error: ") and lines[-1].endswith("replica: connection refused")
    items = by_key(entries)
    assert items[menu.PAUSE].checked is True and items[menu.PROBLEMS].enabled


def test_menu_when_disconnected_and_when_the_tray_owns_the_daemon():
    view = menu.View(None, connected=False, problem="daemon not running", outbox="/o", vault="/v", config_file="/c")
    entries = menu.build(view)
    assert info_lines(entries) == ["Shutterlock: daemon not running"]
    items = by_key(entries)
    assert not items[menu.PAUSE].enabled and not items[menu.RESCAN].enabled
    assert items[menu.START_DAEMON].visible and items[menu.START_DAEMON].enabled
    assert not items[menu.STOP_DAEMON].visible
    assert items[menu.OPEN_OUTBOX].enabled and items[menu.SETTINGS].enabled  # from the config, no daemon needed
    starting = menu.build(menu.View(None, connected=False, starting=True))
    assert info_lines(starting) == ["Shutterlock: starting the daemon…"]
    assert not by_key(starting)[menu.START_DAEMON].enabled
    owned = by_key(menu.build(menu.View(make_status(), connected=True, owns_daemon=True)))
    assert owned[menu.STOP_DAEMON].visible and not owned[menu.START_DAEMON].visible


def test_headline_is_one_short_line_and_states_map_to_icons():
    long = make_status(summary="error: " + "x" * 200 + "\nsecond line")
    title = menu.headline(menu.View(long, connected=True))
    assert len(title) <= menu.LABEL_WIDTH and "\n" not in title and title.endswith("…")
    assert menu.tray_state(menu.View(make_status(), connected=True)) == "idle"
    assert menu.tray_state(menu.View(make_status(derive={"cloak_error": "no model"}), connected=True)) == "degraded"
    assert menu.tray_state(menu.View(make_status(), connected=False)) == menu.DISCONNECTED
    report = menu.problems_report(make_status(
        errors=[{"at": 0, "level": "error", "subject": "s/a.jpg", "message": "boom"}],
        failed_files=[{"source": "s", "relpath": "b.nef", "error": "unreadable"}]))
    assert "s/a.jpg: boom" in report and "s/b.nef: unreadable" in report


# --------------------------------------------------------------------------- icons


def dominant_state(image: Image.Image, tolerance: int = 60) -> str | None:
    """Which state colour most opaque pixels of ``image`` are closest to (None if none is near any)."""
    palette = {state: colour for state, colour in icons.COLOURS.items() if state != "degraded"}
    pixels = np.asarray(image.convert("RGBA"), dtype=float).reshape(-1, 4)
    pixels = pixels[pixels[:, 3] >= 200][:, :3]
    names = list(palette)
    distances = np.stack([np.linalg.norm(pixels - np.array(palette[n], dtype=float), axis=1) for n in names])
    nearest, close = distances.argmin(axis=0), distances.min(axis=0) < tolerance
    counts = np.bincount(nearest[close], minlength=len(names))
    return names[int(counts.argmax())] if counts.any() else None


@pytest.mark.parametrize("state", ["idle", "working", "paused", "offline", "error", menu.DISCONNECTED])
def test_each_state_has_its_own_icon(state):
    image = icons.draw(state, 0.5)
    assert image.size == (icons.SIZE, icons.SIZE) and image.mode == "RGBA"
    assert dominant_state(image) == state
    assert np.asarray(image)[0, 0, 3] == 0  # round icon, transparent corners


def test_working_icon_shows_progress_in_steps():
    def white(progress: float) -> int:
        pixels = np.asarray(icons.draw("working", progress))
        return int(((pixels[..., :3].min(axis=2) > 240) & (pixels[..., 3] > 200)).sum())

    assert white(0.0) < white(0.3) < white(0.6) < white(1.0)
    assert icons.draw("working", 0.51) is icons.draw("working", 0.52)  # quantised: no redraw per file
    assert icons.quantise(1.7) == 1.0 and icons.quantise(None) is None
    assert dominant_state(icons.draw("no-such-state")) == "error"
    distinct = {icons.draw(s).tobytes() for s in ("idle", "working", "paused", "offline", "error", menu.DISCONNECTED)}
    assert len(distinct) == 6


# --------------------------------------------------------------------------- notifications


def busy(sealed: int, backlog: int, written: int = 0, **extra: Any) -> dict[str, Any]:
    return make_status(files={"sealed": sealed}, backlog={"items": backlog, "bytes": backlog * 10**7},
                       derive={"waiting": backlog, "by_status": {"written": written}}, **extra)


def test_a_batch_is_announced_once_when_it_finishes_never_per_file():
    notices = Notices()
    assert notices.observe(busy(10, 0), now=0) == []
    said = []
    for done in range(0, 212):
        said += notices.observe(busy(10 + done, 212 - done, written=done * 198 // 212), now=1 + done * 0.1)
    assert said == []
    assert notices.progress(busy(10 + 106, 106)) == pytest.approx(0.5)
    finished = notices.observe(busy(222, 0, written=198), now=100)
    assert [(n.kind, n.message) for n in finished] == [("batch", "212 sealed, 198 derivatives ready")]
    assert notices.observe(busy(222, 0, written=198), now=101) == []


def test_batches_close_together_are_merged():
    notices = Notices(Rules(batch_every=300))
    notices.observe(busy(0, 0), now=0)
    notices.observe(busy(0, 5), now=1)
    assert [n.message for n in notices.observe(busy(5, 0), now=2)] == ["5 sealed"]
    notices.observe(busy(5, 3), now=10)
    assert notices.observe(busy(8, 0), now=20) == []  # within 5 min of the last one: kept
    notices.observe(busy(8, 2), now=200)
    assert notices.observe(busy(10, 0), now=210) == []
    assert [n.message for n in notices.observe(busy(10, 0), now=400)] == ["5 sealed"]  # 3 + 2, on the next tick


def test_bucket_offline_is_told_after_the_threshold_then_rarely():
    rules = Rules(offline_after=1800, repeat_after=6 * 3600, episode_gap=1800)
    notices = Notices(rules)
    offline = make_status(replica={"configured": True, "online": False, "offline_since": 1000.0, "waiting": 50,
                                   "waiting_bytes": 1_200_000_000})
    assert notices.observe(offline, now=1000 + 1799) == []
    told = notices.observe(offline, now=1000 + 7500)
    assert [n.kind for n in told] == ["offline"]
    assert "2 h 5 min" in told[0].message and "50 objects (1.2 GB)" in told[0].message
    assert notices.observe(offline, now=1000 + 7600) == []
    assert [n.kind for n in notices.observe(offline, now=1000 + 7500 + 6 * 3600)] == ["offline"]  # a reminder
    online = make_status(replica={"configured": True, "online": True})
    assert notices.observe(online, now=40000) == []


def test_disk_nearly_full_with_hysteresis_and_cloak_unavailable_once():
    notices = Notices(Rules(disk_free_bytes=2 * GB, disk_free_fraction=0.03, episode_gap=1800))
    status = make_status()
    full = [Disk("vault", "/v", 1 * GB, 500 * GB)]
    assert [n.title for n in notices.observe(status, 0, full)] == ["Shutterlock: vault disk nearly full"]
    assert notices.observe(status, 10, [Disk("vault", "/v", 16 * GB, 500 * GB)]) == []  # 16 < 1.5 × 15: same episode
    assert notices.observe(status, 20, [Disk("vault", "/v", 100 * GB, 500 * GB)]) == []  # recovered
    assert notices.observe(status, 30, full) == []  # a new episode too soon after the last notice
    assert [n.kind for n in notices.observe(status, 2000, full)] == ["disk"]
    cloak = make_status(derive={"cloak_error": "surrogate weights missing"})
    assert [n.kind for n in notices.observe(cloak, 3000)] == ["cloak"]
    assert notices.observe(cloak, 3100) == []


def test_notices_are_capped_per_hour():
    notices = Notices(Rules(per_hour=2, batch_every=0, episode_gap=0))
    notices.observe(busy(0, 0), now=0)
    told = []
    for minute in range(1, 30):
        notices.observe(busy(minute * 10, 5), now=minute * 60)
        told += notices.observe(busy(minute * 10 + 5, 0), now=minute * 60 + 30)
    assert len(told) == 2
    assert [n.message for n in told] == ["15 sealed", "10 sealed"]
    later = notices.observe(busy(500, 0), now=4000)
    assert [n.message for n in later] == ["475 sealed"]  # nothing was lost, only held back


# --------------------------------------------------------------------------- autostart


def test_exec_line_quotes_by_the_desktop_entry_rules():
    assert autostart.exec_line(["/usr/bin/python3", "-m", "shutterlock", "tray"]) == \
        "/usr/bin/python3 -m shutterlock tray"
    assert autostart.exec_line(["/opt/My Apps/py", "--config", "/a/100%.toml"]) == \
        '"/opt/My Apps/py" --config /a/100%%.toml'
    assert autostart.exec_line(['a"b$c\\d']) == '"a\\\\"b\\\\$c\\\\\\\\d"'


def test_autostart_on_and_off_through_the_cli(make_home):
    home = make_home()
    directory = Path(home.env["XDG_CONFIG_HOME"]) / "autostart"
    result = home.cli("--config", str(home.config_file), "tray", "--autostart", "on", env={"DISPLAY": ""},
                      check=True)
    entry_file = directory / autostart.FILE_NAME
    assert str(entry_file) in result.stdout
    installed = autostart.parse(entry_file.read_text())
    packaged = autostart.parse((PACKAGING / "shutterlock-tray-autostart.desktop").read_text())
    assert {k: v for k, v in installed.items() if k != "Exec"} == {k: v for k, v in packaged.items() if k != "Exec"}
    assert installed["Exec"] == autostart.exec_line(
        [sys.executable, "-m", "shutterlock", "--config", str(home.config_file.resolve()), "tray"])
    assert packaged["Exec"].endswith("tray") and installed["Type"] == "Application"
    assert home.cli("tray", "--autostart", "on", check=True).returncode == 0  # idempotent
    assert "removed" in home.cli("tray", "--autostart", "off", check=True).stdout
    assert not entry_file.exists()
    assert "was not installed" in home.cli("tray", "--autostart", "off", check=True).stdout


def test_packaged_application_entry():
    entry = autostart.parse((PACKAGING / "shutterlock-tray.desktop").read_text())
    assert entry["Type"] == "Application" and entry["Exec"] == "shutterlock tray"
    assert entry["StartupWMClass"] == "shutterlock-tray" and entry["Categories"].endswith(";")


# --------------------------------------------------------------------------- headless


def test_without_a_display_the_tray_exits_2_fast(make_home):
    home = make_home()
    started = time.monotonic()
    result = home.cli("tray", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""}, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0]
    assert elapsed < 10


def test_status_feed_follows_a_real_daemon_through_a_restart(make_home):
    """The connection loop alone: long-poll, commands, loss and reconnection (no display needed)."""
    home = make_home()
    daemon = home.start_daemon()
    seen: list[tuple[dict[str, Any] | None, str]] = []
    changed = threading.Condition()

    def listener(status: dict[str, Any] | None, reason: str) -> None:
        with changed:
            seen.append((status, reason))
            changed.notify_all()

    def wait_seen(predicate: Any, timeout: float = 30) -> None:
        with changed:
            assert changed.wait_for(lambda: any(predicate(s, r) for s, r in seen), timeout), seen

    feed = StatusFeed(home.socket, listener, watch_seconds=20, retry_max=1.0)
    feed.start()
    try:
        wait_seen(lambda s, _: s is not None and s["pid"] == daemon.pid)
        assert feed.command("pause")["paused"] is True
        wait_seen(lambda s, _: s is not None and s["paused"])
        calls_before = len(seen)
        time.sleep(1.0)
        assert len(seen) == calls_before  # idle: the long-poll does not wake anyone
        feed.command("resume")
        stop(daemon, signal.SIGKILL)
        wait_seen(lambda s, r: s is None and r == "daemon not running")
        restarted = home.start_daemon()
        wait_seen(lambda s, _: s is not None and s["pid"] == restarted.pid and not s["paused"])
        stop(restarted)
    finally:
        feed.stop()
        with contextlib.suppress(Exception):
            stop(daemon, signal.SIGKILL)


# --------------------------------------------------------------------------- the real desktop


@dataclass
class Desktop:
    display: str
    artifacts: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}

    def x(self, *args: str, timeout: float = 20) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def windows(self) -> list[tuple[str, str, str, int, int, int, int]]:
        """(id, name, class, width, height, abs x, abs y) of every window."""
        found = []
        pattern = re.compile(r'^\s*(0x[0-9a-f]+) (?:"(.*)"|\(has no name\)): \((?:"([^"]*)" "[^"]*")?\)\s+'
                             r'(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+\+?(-?\d+)\+?(-?\d+)')
        for line in self.x("xwininfo", "-root", "-tree").splitlines():
            match = pattern.match(line)
            if match:
                wid, name, klass, w, h, ax, ay = match.groups()
                found.append((wid, name or "", klass or "", int(w), int(h), int(ax), int(ay)))
        return found

    def tray_icon(self) -> tuple[str, int, int, int, int] | None:
        """The embedded icon: its title and where it is (trayer names it after our tooltip)."""
        for _, name, klass, w, h, ax, ay in self.windows():
            if klass == "shutterlock-tray" and name.startswith("Shutterlock:") and ay >= 0:
                return name, ax, ay, w, h
        return None

    def icon_title(self) -> str:
        icon = self.tray_icon()
        return icon[0] if icon else ""

    def menu_window(self) -> tuple[int, int, int, int] | None:
        for wid, _, klass, w, h, ax, ay in self.windows():
            if klass == "shutterlock-tray" and w >= 100 and h >= 100 and \
                    "IsViewable" in self.x("xwininfo", "-id", wid):
                return ax, ay, w, h
        return None

    def screenshot(self, name: str) -> Image.Image:
        path = self.artifacts / f"{name}.png"
        self.x("import", "-window", "root", str(path))
        return Image.open(path).convert("RGB")

    def icon_state(self, name: str) -> str | None:
        icon = self.tray_icon()
        assert icon is not None
        _, ax, ay, w, h = icon
        return dominant_state(self.screenshot(name).crop((ax, ay, ax + w, ay + h)))

    def wait_icon_state(self, name: str, expected: str) -> None:
        """The icon's pixels show ``expected`` (the panel repaints a moment after the title changes)."""
        wait_for(lambda: self.icon_state(name) == expected, 20, message=f"the {expected} icon")

    def open_menu(self, name: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
        icon = self.tray_icon()
        assert icon is not None
        _, ax, ay, w, h = icon
        self.x("xdotool", "mousemove", str(ax + w // 2), str(ay + h // 2), "click", "3")
        geometry = poll(self.menu_window, 20, "the tray menu to open")
        mx, my, mw, mh = geometry

        def painted() -> Image.Image | None:  # the menu maps before GTK has painted it
            shot = self.screenshot(name)
            return shot if text_pixels(shot.crop((mx, my, mx + mw, my + STATUS_ROW))) > 50 else None

        shot = poll(painted, 20, "the menu to be painted with its status line")
        shot.crop((mx, my, mx + mw, my + mh)).save(self.artifacts / f"{name}-menu.png")
        return shot, geometry

    def click_item(self, name: str, geometry: tuple[int, int, int, int], *keys: str) -> None:
        """Highlight an item with the keyboard (``Down`` = the first enabled one, ``Up`` = the last), find the
        highlighted row on screen and click it with the mouse."""
        mx, my, mw, mh = geometry
        for key in keys:
            self.x("xdotool", "key", key)
        rows = poll(lambda: highlighted_rows(self.screenshot(name).crop((mx, my, mx + mw, my + mh))), 10,
                    "the highlighted menu row")
        self.x("xdotool", "mousemove", str(mx + mw // 3), str(my + (rows[0] + rows[-1]) // 2), "click", "1")
        wait_for(lambda: self.menu_window() is None, 10, message="the menu to close")


def poll(probe: Any, timeout: float, message: str, interval: float = 0.2) -> Any:
    """Like ``wait_for``, but returns the probe's first truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def highlighted_rows(image: Image.Image) -> list[int]:
    """Rows mostly in the theme's selection blue."""
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    blue = (pixels[..., 2] > 150) & (pixels[..., 2] - pixels[..., 0] > 100)
    return [int(y) for y in np.nonzero(blue.sum(axis=1) > image.width // 2)[0]]


def text_pixels(image: Image.Image) -> int:
    return int((np.asarray(image.convert("RGB")).max(axis=2) < 200).sum())


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    for tool in ("Xvfb", "trayer", "dbus-run-session", "xdotool", "xwininfo", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        number = reader.readline().strip()  # Xvfb picks a free display itself: no races with other tests
    assert number, "Xvfb did not report a display"
    desktop = Desktop(display=f":{number}", artifacts=ARTIFACTS)
    trayer = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width",
                               "200", "--height", "32", "--transparent", "false"], env=desktop.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(name == "panel" for _, name, *_ in desktop.windows()), 20, message="trayer")
        yield desktop
    finally:
        for process in (trayer, xvfb):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()


def start_tray(home: Home, desktop: Desktop, log: Path, opener_log: Path | None = None) -> subprocess.Popen[bytes]:
    """The real command under a fresh D-Bus session; ``opener_log`` puts an ``xdg-open`` on PATH that records
    what the tray asked the desktop to open (this machine has no file manager to open it with)."""
    env = {**home.env, "DISPLAY": desktop.display, "PYSTRAY_BACKEND": "gtk", "NO_AT_BRIDGE": "1"}
    if opener_log is not None:
        bin_dir = home.base / "bin"
        bin_dir.mkdir(exist_ok=True)
        opener = bin_dir / "xdg-open"
        opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{opener_log}"\n')
        opener.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with open(log, "ab") as stderr:
        return subprocess.Popen(["dbus-run-session", "--", sys.executable, "-m", "shutterlock", "tray"], env=env,
                                stdout=stderr, stderr=stderr)


def tray_pid(tray: subprocess.Popen[bytes]) -> int:
    """The tray's own process: the child of dbus-run-session."""
    children = subprocess.run(["pgrep", "-P", str(tray.pid), "-f", "shutterlock tray"], capture_output=True,
                              text=True).stdout.split()
    assert len(children) == 1, children
    return int(children[0])


def stop_tray(tray: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM the tray itself (not dbus-run-session), as a session logout would; return its exit code."""
    os.kill(tray_pid(tray), signal.SIGTERM)
    try:
        return tray.wait(timeout)
    except subprocess.TimeoutExpired:
        tray.kill()
        raise


def test_tray_on_a_real_desktop_pauses_resumes_and_survives_a_daemon_restart(make_home, desktop):
    home = make_home()
    daemon = home.start_daemon()
    log = home.base / "tray.log"
    opened = home.base / "opened.txt"
    tray = start_tray(home, desktop, log, opener_log=opened)
    try:
        summary = home.status()["summary"]
        wait_for(lambda: desktop.icon_title() == f"Shutterlock: {summary}", 60,
                 message=f"the icon in the tray\n{log.read_text()}")
        desktop.wait_icon_state("1-idle", "idle")

        shot, geometry = desktop.open_menu("2-menu-idle")
        mx, my, mw, _ = geometry
        first_row_idle = shot.crop((mx, my, mx + mw, my + STATUS_ROW))
        assert text_pixels(first_row_idle) > 50, "no status line at the top of the menu"
        desktop.click_item("3-pause-highlighted", geometry, "Down")
        wait_for(lambda: home.status()["paused"], 20, message="the daemon to pause")
        wait_for(lambda: desktop.icon_title() == "Shutterlock: paused", 20, message="the paused title")
        desktop.wait_icon_state("4-paused", "paused")

        shot, geometry = desktop.open_menu("5-menu-paused")
        first_row_paused = shot.crop((mx, my, mx + mw, my + STATUS_ROW))
        assert first_row_paused.tobytes() != first_row_idle.tobytes(), "the status line did not change"
        desktop.click_item("6-resume-highlighted", geometry, "Down")
        wait_for(lambda: not home.status()["paused"], 20, message="the daemon to resume")
        wait_for(lambda: desktop.icon_title() == f"Shutterlock: {summary}", 20, message="the resumed title")

        stop(daemon, signal.SIGKILL)
        wait_for(lambda: desktop.icon_title() == "Shutterlock: daemon not running", 20,
                 message="the tray to notice the daemon died")
        desktop.wait_icon_state("7-daemon-killed", menu.DISCONNECTED)
        daemon = home.start_daemon()
        wait_for(lambda: desktop.icon_title() == f"Shutterlock: {summary}", 30, message="the tray to reconnect")
        desktop.wait_icon_state("8-reconnected", "idle")
        assert home.status()["pid"] == daemon.pid  # it followed the new daemon, did not start its own
        _, geometry = desktop.open_menu("9-menu-reconnected")
        desktop.click_item("10-open-outbox-highlighted", geometry, "Down", "Down", "Down")
        wait_for(lambda: opened.exists() and str(home.outbox) in opened.read_text(), 20,
                 message="Open outbox to hand the folder to the desktop's opener")

        assert stop_tray(tray) == 0
        assert home.status()["running"]  # the tray does not stop a daemon it did not start
    finally:
        if tray.poll() is None:
            tray.kill()
        stop(daemon)


def test_workstation_mode_the_tray_runs_the_daemon_and_its_menu_stops_it(make_home, desktop):
    home = make_home(name="workstation")
    log = home.base / "tray.log"
    tray = start_tray(home, desktop, log)
    try:
        wait_for(lambda: desktop.icon_title().startswith("Shutterlock: all sealed"), 60,
                 message=f"the icon in the tray\n{log.read_text()}")
        status = home.status()
        assert status["running"] and status["pid"] == tray_pid(tray)  # the daemon lives in the tray process
        _, geometry = desktop.open_menu("11-menu-workstation")
        desktop.click_item("12-stop-daemon-highlighted", geometry, "Up", "Up")  # the last but one: Stop daemon
        wait_for(lambda: not home.status()["running"], 30, message="Stop daemon to stop the in-process daemon")
        wait_for(lambda: desktop.icon_title() == "Shutterlock: daemon not running", 20, message="the stopped title")
        _, geometry = desktop.open_menu("13-menu-daemon-stopped")
        desktop.click_item("14-quit-highlighted", geometry, "Up")  # the last: Quit tray
        assert tray.wait(30) == 0
        assert "stopping the daemon" in log.read_text()
    finally:
        if tray.poll() is None:
            tray.kill()


def test_without_a_tray_host_the_tray_exits_2(make_home):
    """A display but no panel: a clear one-line reason instead of an icon nobody can see."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    home = make_home()
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as reader:
            display = ":" + reader.readline().strip()
        result = home.cli("tray", env={"DISPLAY": display, "PYSTRAY_BACKEND": "gtk"}, timeout=60)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("shutterlock: no system tray"), lines
    finally:
        xvfb.terminate()
        xvfb.wait(10)
