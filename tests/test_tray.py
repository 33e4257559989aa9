"""The tray (issues 7, 11 and 13): the menu, tooltip, notices and problems report built from real statuses
(``facade.read_status`` on a real catalog), the icons, autostart, then the real thing: Xvfb + trayer +
pystray's GTK backend on a D-Bus session with a real notification server (dunst), driven with xdotool
against real daemon processes — pause and resume, settings reloaded, the daemon killed and back, a daemon
started from the menu that outlives the tray killed mid-import, the "cloak unavailable" notice and the
problems window. Screenshots are kept in test-artifacts/tray/.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, SAMPLES, Home, stop, wait_for
from PIL import Image
from shutterlock import autostart, facade
from shutterlock import config as config_module
from shutterlock.catalog import Catalog, Discovery, SealedFile
from shutterlock.control import ControlClient
from shutterlock.errors import DaemonNotRunning
from shutterlock.status import LaneStatus, ProcessFacts, ReplicaStatus, Status
from shutterlock_tray import icons, launch, menu
from shutterlock_tray.client import StatusFeed
from shutterlock_tray.notify import Disk, Notices, Rules
from shutterlock_tray.settings import SettingsFile

ARTIFACTS = ROOT / "test-artifacts" / "tray"
PACKAGING = ROOT / "packaging"
PHOTO = SAMPLES / "exif-samples" / "jpg" / "gps" / "DSCN0010.jpg"
GB = 10**9
STATUS_ROW = 28  # pixels: the first menu row, where the one-line status is
PROBLEMS_TITLE = "Shutterlock — recent problems"


# --------------------------------------------------------------------------- real statuses, no daemon


class Catalogued:
    """A real config and a real catalog filled through the catalog's own operations; every status comes
    from ``facade.read_status``, the producer the daemon and ``shutterlock status`` use."""

    def __init__(self, base: Path, *, derive: bool = True):
        (base / "src").mkdir(parents=True)
        file = base / "config.toml"
        file.write_text(f'[[source]]\npath = "{base / "src"}"\n\n[vault]\npath = "{base / "vault"}"\n\n'
                        f'[derive]\nenabled = {str(derive).lower()}\noutbox = "{base / "outbox"}"\n\n'
                        '[rights]\ncreator = "Ada Lovelace"\n')
        self.config = config_module.load(file)
        self.catalog = Catalog(base / "catalog.sqlite3")
        self.derive = derive
        self._count = 0

    def discover(self, count: int, size: int = 25_000_000) -> None:
        found = []
        for _ in range(count):
            self._count += 1
            found.append(Discovery("src", f"IMG_{self._count:04}.jpg", size, self._count))
        self.catalog.discover_many(found)

    def seal(self, count: int) -> None:
        """Seal ``count`` waiting originals as the seal lane does (each queues its derivative)."""
        self.catalog.record_seal_batch([
            SealedFile(file=file, content_id=hashlib.sha256(file.relpath.encode()).hexdigest(), size=file.size,
                       mtime_ns=file.mtime_ns, stored_size=file.size + 40,
                       follow_up=[("derive", str(file.id), file.size)] if self.derive else [])
            for file in self.catalog.claim_batch(count, max_bytes=1 << 62)])

    def fail(self, count: int, error: str) -> None:
        for file in self.catalog.claim_batch(count, max_bytes=1 << 62):
            self.catalog.fail_file(file, error)
            self.catalog.record_event("error", f"{file.source}/{file.relpath}", error)

    def make_derivatives(self, count: int, outcome: str = "written", reason: str = "") -> None:
        """Finish derive jobs as the derive lane does; a held one waits out its delay (the cloak may return)."""
        for _ in range(count):
            job = self.catalog.claim_job("derive")
            assert job is not None
            file = self.catalog.file_by_id(int(job.subject))
            assert file is not None and file.content_id is not None
            self.catalog.record_derivative(file.id, file.content_id, status=outcome, reason=reason, cloaked=False,
                                           strength="standard", watermark="",
                                           output=f"/o/{file.relpath}" if outcome == "written" else None)
            if outcome == "held":
                self.catalog.retry_job(job, reason, delay=3600, count=False)
            else:
                self.catalog.finish_job(job)

    def status(self, **live: Any) -> Status:
        """The offline reader's status, or (with live facts) a running daemon's."""
        if not live:
            return facade.read_status(self.config, self.catalog)
        facts = {"pid": 4242, "version": 1, "uptime": 60.0, "pending": 0, "lanes": [], "healthy": True,
                 "process": ProcessFacts(rss_mb=60.0, torch_loaded=False, threads=9), "sources": [],
                 "replica": None, "cloak_problem": None, **live}
        return facade.read_status(self.config, self.catalog, facade.LiveFacts(**facts))


@pytest.fixture
def catalogued(tmp_path: Path) -> Iterator[Catalogued]:
    made = Catalogued(tmp_path)
    yield made
    made.catalog.close()


def by_key(entries: list[menu.Entry]) -> dict[str, menu.Entry]:
    return {e.key: e for e in entries if e.key}


def info_lines(entries: list[menu.Entry]) -> list[str]:
    return [e.label for e in entries if not e.key and not e.separator and e.visible]


def clock(at: float | None) -> str:
    assert at is not None
    return time.strftime("%H:%M", time.localtime(at))


# --------------------------------------------------------------------------- the menu model


def test_menu_of_an_idle_daemon(catalogued):
    catalogued.discover(12)
    catalogued.seal(12)
    catalogued.make_derivatives(12)
    status = catalogued.status(version=3)
    assert status.state == "idle"
    entries = menu.build(menu.View(status))
    assert info_lines(entries) == ["Shutterlock: all 12 originals sealed",
                                   f"Sealed today: 12 · last at {clock(status.last_sealed_at)}"]
    items = by_key(entries)
    assert items[menu.PAUSE].checked is False and items[menu.PAUSE].enabled
    assert items[menu.RESCAN].enabled and items[menu.RELOAD].enabled and items[menu.QUIT].enabled
    assert not items[menu.PROBLEMS].enabled and not items[menu.RETRY].enabled  # nothing failed, nothing held
    assert [e.label for e in entries if e.key and e.visible] == [
        "Pause", "Rescan now", "Retry now", "Open outbox", "Open vault folder", "Show recent problems", "Edit settings",
        "Reload settings", "Stop daemon", "Quit tray"]
    assert all(not e.enabled for e in entries if not e.key and e.visible and not e.children)  # info lines
    assert menu.icon_state(menu.View(status)) == "idle"
    assert menu.tooltip(menu.View(status)).splitlines() == info_lines(entries)


def test_progress_n_of_m_with_the_time_left_per_lane(catalogued):
    """The lanes' batch figures are what only the running engine knows; the counts come from the catalog."""
    catalogued.discover(214)
    catalogued.seal(40)
    catalogued.make_derivatives(10)
    lanes = [LaneStatus(name="seal", waiting=174, waiting_bytes=174 * 25_000_000, done=40, rate=1.0,
                        eta_seconds=174.0, current=["src/IMG_0041.jpg"]),
             LaneStatus(name="derive", waiting=30, done=10, rate=0.5, eta_seconds=60.0,
                        current=["derivative of src/IMG_0011.jpg"])]
    status = catalogued.status(lanes=lanes, version=9)
    assert status.state == "working"
    view = menu.View(status)
    lines = info_lines(menu.build(view, now=status.last_sealed_at))
    assert lines[0].startswith("Shutterlock: sealing 41 of 214 (")
    assert lines[1:] == ["Sealing 41 of 214 — about 3 min left", "Making derivatives 11 of 40 — about 60 s left",
                         f"Sealed today: 40 · last at {clock(status.last_sealed_at)}"]
    assert menu.tooltip(view).splitlines() == lines
    assert menu.progress(status) == pytest.approx(50 / 254)
    yesterday = status.last_sealed_at + 86400  # seen a day later, the time says which day
    assert menu.sealed_line(status, now=yesterday).startswith("Sealed today: 40 · last on ")


def test_menu_when_paused_with_a_backlog_and_problems(catalogued):
    catalogued.discover(30)
    catalogued.seal(5)
    catalogued.make_derivatives(4)
    catalogued.make_derivatives(1, "held", "not cloaked (surrogate weights missing); held back")
    catalogued.fail(1, "permission denied")
    catalogued.catalog.record_event("warning", "src/IMG_0007.jpg", "changed while read; retrying")
    catalogued.catalog.set_setting("paused", "1")
    status = catalogued.status()
    assert status.state == "paused" and status.failed_files and status.cloak.held == 1
    entries = menu.build(menu.View(status))
    lines = info_lines(entries)
    assert lines[0] == "Shutterlock: paused with 24 originals waiting to be sealed"
    assert "Sealing: 24 waiting (paused)" in lines
    assert lines[-1] == f"Last error: {clock(status.errors[1].at)} src/IMG_0006.jpg: permission denied"
    items = by_key(entries)
    assert items[menu.PAUSE].checked is True and items[menu.PROBLEMS].enabled
    assert items[menu.RETRY].enabled  # one original failed, one derivative is held back
    report = menu.problems_report(status)
    assert "cloak unavailable, 1 derivative held back: not cloaked (surrogate weights missing)" in report
    assert "src/IMG_0006.jpg: permission denied" in report
    assert "warning: src/IMG_0007.jpg: changed while read; retrying" in report


def test_menu_without_a_daemon_offers_to_start_one(catalogued):
    view = menu.View(None, outbox="/o", vault="/v", config_file="/c")
    entries = menu.build(view)
    assert info_lines(entries) == ["Shutterlock: daemon not running"]
    items = by_key(entries)
    assert not items[menu.PAUSE].enabled and not items[menu.RESCAN].enabled and not items[menu.RELOAD].enabled
    assert items[menu.START_DAEMON].visible and items[menu.START_DAEMON].enabled
    assert not items[menu.STOP_DAEMON].visible
    assert items[menu.OPEN_OUTBOX].enabled and items[menu.SETTINGS].enabled  # from the config, no daemon needed
    assert menu.icon_state(view) == menu.DISCONNECTED
    starting = menu.build(menu.View(None, starting=True))
    assert info_lines(starting) == ["Shutterlock: starting the daemon…"]
    assert not by_key(starting)[menu.START_DAEMON].enabled
    why = "the daemon stopped: no key file at /home/ann/.local/share/shutterlock/master.key: run `shutterlock init`"
    failed = menu.View(None, problem=why)
    title = menu.headline(failed)
    assert title.startswith("Shutterlock: the daemon stopped: no key file") and len(title) == menu.LABEL_WIDTH
    assert info_lines(menu.build(failed)) == menu.tooltip(failed).splitlines() == [
        "Shutterlock: daemon not running", "the daemon stopped: no key file at",
        "/home/ann/.local/share/shutterlock/master.key: run", "`shutterlock init`"]


def test_what_a_reload_could_not_apply_is_in_the_menu(catalogued):
    why = "[engine] seal_workers changes after a restart"
    status = catalogued.status(restart_needed=[why])
    assert info_lines(menu.build(menu.View(status)))[-1] == why


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


def test_a_batch_is_announced_once_when_it_finishes_never_per_file(catalogued):
    catalogued.discover(10)
    catalogued.seal(10)
    catalogued.make_derivatives(10, "skipped", "not an image")
    notices = Notices()
    assert notices.observe(catalogued.status(), now=0) == []
    catalogued.discover(60)
    said = []
    for step in range(15):
        catalogued.seal(4)
        catalogued.make_derivatives(3)
        said += notices.observe(catalogued.status(), now=1 + step)
    assert said == []
    catalogued.make_derivatives(7)
    catalogued.make_derivatives(8, "skipped", "sidecar")
    finished = notices.observe(catalogued.status(), now=100)
    assert [(n.kind, n.message) for n in finished] == [("batch", "60 sealed, 52 derivatives ready")]
    assert notices.observe(catalogued.status(), now=101) == []


def test_batches_close_together_are_merged(tmp_path):
    made = Catalogued(tmp_path, derive=False)
    notices = Notices(Rules(batch_every=300))
    notices.observe(made.status(), now=0)

    def batch(count: int, busy_at: float, done_at: float) -> list[str]:
        made.discover(count)
        notices.observe(made.status(), now=busy_at)
        made.seal(count)
        return [n.message for n in notices.observe(made.status(), now=done_at)]

    assert batch(5, 1, 2) == ["5 sealed"]
    assert batch(3, 10, 20) == []  # within 5 min of the last one: kept
    assert batch(2, 200, 210) == []
    assert [n.message for n in notices.observe(made.status(), now=400)] == ["5 sealed"]  # 3 + 2, on the next tick
    made.catalog.close()


def test_bucket_offline_is_told_after_the_threshold_then_rarely(catalogued):
    """Whether the bucket answers is a live fact of the daemon's replicate lane."""
    rules = Rules(offline_after=1800, repeat_after=6 * 3600, episode_gap=1800)
    notices = Notices(rules)
    replica = ReplicaStatus(configured=True, url="s3://photos/vault", online=False, error="connection refused",
                            offline_since=1000.0, waiting=50, waiting_bytes=1_200_000_000)
    offline = catalogued.status(replica=replica)
    assert offline.state == "offline"
    assert notices.observe(offline, now=1000 + 1799) == []
    told = notices.observe(offline, now=1000 + 7500)
    assert [n.kind for n in told] == ["offline"]
    assert "2 h 5 min" in told[0].message and "50 objects (1.2 GB)" in told[0].message
    assert notices.observe(offline, now=1000 + 7600) == []
    assert [n.kind for n in notices.observe(offline, now=1000 + 7500 + 6 * 3600)] == ["offline"]  # a reminder
    online = catalogued.status(replica=replace(replica, online=True, error="", offline_since=None))
    assert notices.observe(online, now=40000) == []
    assert "bucket: connection refused" in menu.problems_report(offline)


def test_disk_nearly_full_with_hysteresis_and_cloak_unavailable_once(catalogued):
    notices = Notices(Rules(disk_free_bytes=2 * GB, disk_free_fraction=0.03, episode_gap=1800))
    status = catalogued.status()
    full = [Disk("vault", "/v", 1 * GB, 500 * GB)]
    assert [n.title for n in notices.observe(status, 0, full)] == ["Shutterlock: vault disk nearly full"]
    assert notices.observe(status, 10, [Disk("vault", "/v", 16 * GB, 500 * GB)]) == []  # 16 < 1.5 × 15: same episode
    assert notices.observe(status, 20, [Disk("vault", "/v", 100 * GB, 500 * GB)]) == []  # recovered
    assert notices.observe(status, 30, full) == []  # a new episode too soon after the last notice
    assert [n.kind for n in notices.observe(status, 2000, full)] == ["disk"]
    catalogued.discover(1)
    catalogued.seal(1)
    catalogued.make_derivatives(1, "held", "not cloaked (surrogate weights missing); held back")
    held = catalogued.status()
    assert held.state == "degraded"  # a held derivative waits for the cloak; the lane itself is idle
    told = {n.kind: n for n in notices.observe(held, 3000)}
    assert [told["batch"].message, told["cloak"].title] == ["1 sealed", "Shutterlock: cloak unavailable"]
    assert told["cloak"].message == held.cloak.error and "1 derivative held back" in held.cloak.error
    assert notices.observe(held, 3100) == []


def test_notices_are_capped_per_hour(tmp_path):
    made = Catalogued(tmp_path, derive=False)
    notices = Notices(Rules(per_hour=2, batch_every=0, episode_gap=0))
    notices.observe(made.status(), now=0)
    told = []
    for minute in range(1, 30):
        made.discover(3 if minute == 1 else 2)
        notices.observe(made.status(), now=minute * 60)
        made.seal(3 if minute == 1 else 2)
        told += notices.observe(made.status(), now=minute * 60 + 30)
    assert [n.message for n in told] == ["3 sealed", "2 sealed"]
    later = notices.observe(made.status(), now=4000)
    assert [n.message for n in later] == ["54 sealed"]  # nothing was lost, only held back
    made.catalog.close()


# --------------------------------------------------------------------------- settings, launching


def test_a_saved_config_file_is_noticed_once(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[engine]\n")
    watched = SettingsFile(path)
    assert not watched.changed()
    path.write_text("[engine]\nsettle_seconds = 3\n")
    assert watched.changed() and not watched.changed()
    replacement = tmp_path / "new.toml"  # an editor saving by rename
    replacement.write_text("[engine]\nsettle_seconds = 4\n")
    path.unlink()
    assert not watched.changed()  # missing mid-save: not a change
    replacement.rename(path)
    assert watched.changed()


def test_the_daemon_command_and_its_last_words(tmp_path):
    assert launch.daemon_command(None) == [sys.executable, "-m", "shutterlock", "run"]
    assert launch.daemon_command(Path("/c/x.toml"))[-3:] == ["--config", "/c/x.toml", "run"]
    log = tmp_path / "daemon.log"
    log.write_text("10:00:00 INFO    watching src\nshutterlock: another shutterlock daemon is running (pid 7)\n\n")
    assert launch.last_line(log) == "another shutterlock daemon is running (pid 7)"
    assert launch.last_line(tmp_path / "missing.log") == ""
    # No systemd --user here (a container): Start falls back to a detached process. The unit path is not
    # exercised by these tests; it needs a user session with systemd.
    assert not launch.user_unit_runs(tmp_path / "config.toml")


def test_the_tray_loads_nothing_of_the_daemon():
    """At run time too, not only in the import walk of test_house.py: no engine, catalog or file writing."""
    probe = ("import sys, shutterlock_tray.icon, shutterlock_tray.launch, shutterlock_tray.window; "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('shutterlock.'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert {"shutterlock.control", "shutterlock.status"} <= loaded
    assert loaded <= {"shutterlock.config", "shutterlock.control", "shutterlock.errors", "shutterlock.status"}, loaded


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


def live(home: Home) -> Status | None:
    """The running daemon's status over its socket, in this process (no CLI start-up per poll)."""
    try:
        return Status.from_dict(ControlClient(home.socket).call("status"))
    except DaemonNotRunning:
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that may never reap it (PID 1 in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_status_feed_follows_a_real_daemon_through_a_restart(make_home):
    """The connection loop alone: long-poll, commands, loss and reconnection (no display needed)."""
    home = make_home()
    daemon = home.start_daemon()
    seen: list[tuple[Status | None, str]] = []
    changed = threading.Condition()

    def listener(status: Status | None, reason: str) -> None:
        with changed:
            seen.append((status, reason))
            changed.notify_all()

    def wait_seen(predicate: Any, timeout: float = 30) -> None:
        with changed:
            assert changed.wait_for(lambda: any(predicate(s, r) for s, r in seen), timeout), seen

    feed = StatusFeed(home.socket, listener, watch_seconds=20, retry_max=1.0)
    feed.start()
    try:
        wait_seen(lambda s, _: s is not None and s.pid == daemon.pid)
        assert feed.command("pause").paused is True
        wait_seen(lambda s, _: s is not None and s.paused)
        calls_before = len(seen)
        time.sleep(1.0)
        assert len(seen) == calls_before  # idle: the long-poll does not wake anyone
        feed.command("resume")
        stop(daemon, signal.SIGKILL)
        wait_seen(lambda s, r: s is None and r == "")
        restarted = home.start_daemon()
        wait_seen(lambda s, _: s is not None and s.pid == restarted.pid and not s.paused)
        stop(restarted)
    finally:
        feed.stop()
        with contextlib.suppress(Exception):
            stop(daemon, signal.SIGKILL)


# --------------------------------------------------------------------------- the real desktop


Window = tuple[str, str, str, int, int, int, int]  # id, name, class, width, height, x, y


@dataclass
class Desktop:
    display: str
    bus: str
    artifacts: Path
    notifications: Path  # what dbus-monitor saw of Notify calls on the session bus

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display, "DBUS_SESSION_BUS_ADDRESS": self.bus}

    def x(self, *args: str, timeout: float = 20) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def windows(self) -> list[Window]:
        found = []
        pattern = re.compile(r'^\s*(0x[0-9a-f]+) (?:"(.*)"|\(has no name\)): \((?:"([^"]*)" "[^"]*")?\)\s+'
                             r'(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+\+?(-?\d+)\+?(-?\d+)')
        for line in self.window_tree().splitlines():
            match = pattern.match(line)
            if match:
                wid, name, klass, w, h, ax, ay = match.groups()
                found.append((wid, name or "", klass or "", int(w), int(h), int(ax), int(ay)))
        return found

    def window_tree(self) -> str:
        """``xwininfo -root -tree``; it exits 1 (BadWindow) when a window it is walking is destroyed meanwhile (a
        menu closing, the icon re-embedded after the daemon came back): then it is asked again."""
        for _ in range(5):
            try:
                return self.x("xwininfo", "-root", "-tree")
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        return self.x("xwininfo", "-root", "-tree")

    def viewable(self, wid: str) -> bool:
        """A window destroyed since it was listed is not viewable."""
        try:
            return "IsViewable" in self.x("xwininfo", "-id", wid)
        except subprocess.CalledProcessError:
            return False

    def tray_icon(self) -> tuple[str, int, int, int, int] | None:
        """The embedded icon: its title and where it is (trayer names it after our title)."""
        for _, name, klass, w, h, ax, ay in self.windows():
            if klass == "shutterlock-tray" and name.startswith("Shutterlock:") and ay >= 0:
                return name, ax, ay, w, h
        return None

    def icon_title(self) -> str:
        icon = self.tray_icon()
        return icon[0] if icon else ""

    def popup(self, min_height: int = 100) -> tuple[int, int, int, int] | None:
        """A popup of ours on screen, named after the application only: the menu (or, smaller, the tooltip)."""
        for wid, name, klass, w, h, ax, ay in self.windows():
            if klass == "shutterlock-tray" and name in ("", "Shutterlock") and w >= 100 and h >= min_height \
                    and self.viewable(wid):
                return ax, ay, w, h
        return None

    def named_window(self, title: str) -> tuple[int, int, int, int] | None:
        for wid, name, _, w, h, ax, ay in self.windows():
            if name == title and w >= 100 and self.viewable(wid):
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

    def wait_title(self, expected: str, timeout: float = 20) -> None:
        wait_for(lambda: self.icon_title() == expected, timeout,
                 message=f"the title {expected!r} (it is {self.icon_title()!r})")

    def open_menu(self, name: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
        icon = self.tray_icon()
        assert icon is not None
        _, ax, ay, w, h = icon
        self.x("xdotool", "mousemove", str(ax + w // 2), str(ay + h // 2), "click", "3")
        geometry = poll(self.popup, 20, "the tray menu to open")
        mx, my, mw, mh = geometry

        def painted() -> Image.Image | None:  # the menu maps before GTK has painted it
            shot = self.screenshot(name)
            return shot if text_pixels(shot.crop((mx, my, mx + mw, my + STATUS_ROW))) > 50 else None

        shot = poll(painted, 20, "the menu to be painted with its status line")
        shot.crop((mx, my, mx + mw, my + mh)).save(self.artifacts / f"{name}-menu.png")
        return shot, geometry

    def close_menu(self) -> None:
        self.x("xdotool", "key", "Escape")
        wait_for(lambda: self.popup() is None, 10, message="the menu to close")

    def click_item(self, name: str, geometry: tuple[int, int, int, int], *keys: str) -> None:
        """Highlight an item with the keyboard (``Down`` = the first enabled one, ``Up`` = the last), find the
        highlighted row on screen and click it with the mouse."""
        mx, my, mw, mh = geometry
        for key in keys:
            self.x("xdotool", "key", key)
        rows = poll(lambda: highlighted_rows(self.screenshot(name).crop((mx, my, mx + mw, my + mh))), 10,
                    "the highlighted menu row")
        self.x("xdotool", "mousemove", str(mx + mw // 3), str(my + (rows[0] + rows[-1]) // 2), "click", "1")
        wait_for(lambda: self.popup() is None, 10, message="the menu to close")

    def hover_tooltip(self, name: str) -> Image.Image:
        """Rest the pointer on the icon until GTK shows its tooltip; returns the tooltip's pixels."""
        icon = self.tray_icon()
        assert icon is not None
        _, ax, ay, w, h = icon
        self.x("xdotool", "mousemove", "400", "400")
        self.x("xdotool", "mousemove", str(ax + w // 2), str(ay + h // 2))
        tx, ty, tw, th = poll(lambda: self.popup(min_height=20), 10, "the tooltip")
        time.sleep(0.3)  # mapped before painted
        tip = self.screenshot(name).crop((tx, ty, tx + tw, ty + th))
        tip.save(self.artifacts / f"{name}-tooltip.png")
        self.x("xdotool", "mousemove", "400", "400")
        return tip

    def notified(self, text: str) -> bool:
        return text in self.notifications.read_text(errors="replace")


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


def _stop_processes(processes: list[subprocess.Popen[Any]]) -> None:
    for process in reversed(processes):
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def desktop() -> Iterator[Desktop]:
    """A virtual screen with a tray host, a session bus and a notification server on it.

    Its sockets live in a directory of its own, not in pytest's numbered temp dirs, which another
    pytest session on the machine may rotate away while this one runs.
    """
    for tool in ("Xvfb", "trayer", "dbus-daemon", "dbus-monitor", "dunst", "xdotool", "xwininfo", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (packaging/bootstrap.sh test installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    processes: list[subprocess.Popen[Any]] = []
    scratch = tempfile.TemporaryDirectory(prefix="shutterlock-desktop-")
    base = Path(scratch.name)
    try:
        read_fd, write_fd = os.pipe()
        # -noreset: an X server with no client left resets, refusing whoever connects meanwhile (trayer,
        # while xwininfo polls); a desktop's X server always has clients.
        processes.append(subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x600x24",
                                           "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        os.close(write_fd)
        with os.fdopen(read_fd) as reader:
            number = reader.readline().strip()  # Xvfb picks a free display itself: no races with other tests
        assert number, "Xvfb did not report a display"
        bus_path = base / "bus"
        processes.append(subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                                           f"--address=unix:path={bus_path}"], stdout=subprocess.DEVNULL))
        desktop = Desktop(display=f":{number}", bus=f"unix:path={bus_path}", artifacts=ARTIFACTS,
                          notifications=base / "notifications.txt")
        wait_for(bus_path.exists, 10, 0.05, message="the session bus")
        processes.append(subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "200", "--height",
             "32", "--transparent", "false"], env=desktop.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Notifications bottom-left, out of the way of the menu, which opens below the icon at the top right.
        dunstrc = base / "dunstrc"
        dunstrc.write_text("[global]\norigin = bottom-left\noffset = 10x10\nwidth = 420\nfont = Sans 9\n"
                           "[urgency_normal]\ntimeout = 30\n")
        processes.append(subprocess.Popen(["dunst", "-config", str(dunstrc)], env=desktop.env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with open(desktop.notifications, "wb") as monitor_log:
            processes.append(subprocess.Popen(
                ["dbus-monitor", "--address", desktop.bus,
                 "type='method_call',interface='org.freedesktop.Notifications',member='Notify'"],
                env=desktop.env, stdout=monitor_log, stderr=subprocess.DEVNULL))
        wait_for(lambda: any(name == "panel" for _, name, *_ in desktop.windows()), 20, message="trayer")
        wait_for(lambda: "org.freedesktop.Notifications" in desktop.x(
            "dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames"), 20, message="dunst on the session bus")
        yield desktop
    finally:
        _stop_processes(processes)
        scratch.cleanup()


def start_tray(home: Home, desktop: Desktop, log: Path, opener_log: Path | None = None) -> subprocess.Popen[bytes]:
    """The real command on the desktop's session bus; ``opener_log`` puts an ``xdg-open`` on PATH that records
    what the tray asked the desktop to open (this machine has no file manager to open it with)."""
    env = {**home.env, "DISPLAY": desktop.display, "DBUS_SESSION_BUS_ADDRESS": desktop.bus,
           "PYSTRAY_BACKEND": "gtk", "NO_AT_BRIDGE": "1"}
    if opener_log is not None:
        bin_dir = home.base / "bin"
        bin_dir.mkdir(exist_ok=True)
        opener = bin_dir / "xdg-open"
        opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{opener_log}"\n')
        opener.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with open(log, "ab") as stderr:
        return subprocess.Popen([sys.executable, "-m", "shutterlock", "tray"], env=env, stdout=stderr, stderr=stderr)


def stop_daemon_process(home: Home, pid: int) -> None:
    """A daemon the test did not start (the tray did): ask it over the socket, wait for the pid to go."""
    with contextlib.suppress(DaemonNotRunning):
        ControlClient(home.socket).call("stop")
    wait_for(lambda: not alive(pid), 30, message=f"daemon {pid} to stop")


def test_tray_on_a_real_desktop_pauses_resumes_reloads_and_follows_a_daemon_restart(make_home, desktop):
    home = make_home()
    for index in range(3):
        shutil.copy2(PHOTO, home.sources[0] / f"first-{index}.jpg")
    daemon = home.start_daemon()
    log, opened = home.base / "tray.log", home.base / "opened.txt"
    tray = start_tray(home, desktop, log, opener_log=opened)
    try:
        wait_for(lambda: (s := live(home)) is not None and s.files.sealed == 3, 30, message="3 sealed")
        desktop.wait_title("Shutterlock: all 3 originals sealed", 60)
        desktop.wait_icon_state("1-idle", "idle")

        shot, geometry = desktop.open_menu("2-idle")
        mx, my, mw, _ = geometry
        first_row_idle = shot.crop((mx, my, mx + mw, my + STATUS_ROW))
        desktop.click_item("3-pause-highlighted", geometry, "Down")
        wait_for(lambda: live(home).paused, 20, message="the daemon to pause")
        desktop.wait_title("Shutterlock: paused")
        desktop.wait_icon_state("4-paused", "paused")

        for index in range(5):
            shutil.copy2(PHOTO, home.sources[0] / f"while-paused-{index}.jpg")
        desktop.wait_title("Shutterlock: paused with 5 originals waiting to be sealed")
        tip = desktop.hover_tooltip("5-paused")
        assert tip.height >= 40 and text_pixels(tip) > 200, "a one-line tooltip: no progress lines in it"
        shot, geometry = desktop.open_menu("6-paused")
        assert shot.crop((mx, my, mx + mw, my + STATUS_ROW)).tobytes() != first_row_idle.tobytes()
        desktop.click_item("7-resume-highlighted", geometry, "Down")
        wait_for(lambda: live(home).files.sealed == 8, 20, message="the 5 to be sealed after Resume")
        desktop.wait_title("Shutterlock: all 8 originals sealed")

        # Edit settings: the opener gets the file; a save is sent to the daemon, which says what waits for a restart.
        _, geometry = desktop.open_menu("8-before-edit")
        desktop.click_item("9-edit-settings-highlighted", geometry, "Up", "Up", "Up", "Up")
        wait_for(lambda: opened.exists() and str(home.config_file) in opened.read_text(), 20,
                 message="Edit settings to hand the config file to the desktop's opener")
        home.config_file.write_text(home.config_file.read_text().replace("[engine]", "[engine]\nseal_workers = 7"))
        why = "[engine] seal_workers changes after a restart"
        wait_for(lambda: live(home).restart_needed == [why], 20, message="the tray to send reload")
        wait_for(lambda: desktop.notified("restart needed"), 20, message="the reload notice")
        desktop.open_menu("10-restart-needed")
        desktop.close_menu()

        stop(daemon, signal.SIGKILL)
        desktop.wait_title("Shutterlock: daemon not running")
        desktop.wait_icon_state("11-daemon-killed", menu.DISCONNECTED)
        desktop.open_menu("12-not-running")  # "Start daemon" instead of "Stop daemon"; Pause greyed out
        desktop.close_menu()
        daemon = home.start_daemon()
        desktop.wait_title("Shutterlock: all 8 originals sealed", 30)
        desktop.wait_icon_state("13-reconnected", "idle")
        assert live(home).pid == daemon.pid  # it followed the new daemon, did not start its own

        os.kill(tray.pid, signal.SIGTERM)
        assert tray.wait(30) == 0
        assert live(home).pid == daemon.pid  # quitting the tray leaves the daemon alone
    finally:
        if tray.poll() is None:
            tray.kill()
        stop(daemon)


def test_a_daemon_started_from_the_menu_outlives_the_tray_killed_mid_import(make_home, desktop):
    home = make_home(name="detached")
    log = home.base / "tray.log"
    tray = start_tray(home, desktop, log)
    daemon_pid = 0
    try:
        # No daemon answered, so the tray started one: a process of its own, in a session of its own.
        wait_for(lambda: live(home) is not None, 60, message=f"the daemon the tray starts\n{log.read_text()}")
        first = live(home).pid
        assert first != tray.pid and parent_of(first) == tray.pid and os.getsid(first) == first
        desktop.wait_title("Shutterlock: watching; nothing to seal yet", 30)

        _, geometry = desktop.open_menu("20-tray-started-daemon")
        desktop.click_item("21-stop-daemon-highlighted", geometry, "Up", "Up")
        wait_for(lambda: not alive(first), 30, message="Stop daemon to stop it over the socket")
        desktop.wait_title("Shutterlock: daemon not running")
        _, geometry = desktop.open_menu("22-stopped")
        desktop.click_item("23-start-daemon-highlighted", geometry, "Up", "Up")
        wait_for(lambda: live(home) is not None, 60, message=f"Start daemon\n{log.read_text()}")
        daemon_pid = live(home).pid
        assert daemon_pid != first and parent_of(daemon_pid) == tray.pid and os.getsid(daemon_pid) == daemon_pid
        assert (home.state / launch.LOG_NAME).exists()

        def import_photos() -> None:
            for index in range(50):
                shutil.copy2(PHOTO, home.sources[0] / f"card-{index:02}.jpg")
                if index == 24:
                    os.kill(tray.pid, signal.SIGKILL)
                time.sleep(0.02)

        importer = threading.Thread(target=import_photos)
        importer.start()
        importer.join()
        assert tray.wait(10) == -signal.SIGKILL
        wait_for(lambda: live(home).files.sealed == 50, 60, message="all 50 sealed after the tray died")
        status = live(home)
        assert status.pid == daemon_pid and alive(daemon_pid) and not status.failed_files
    finally:
        if tray.poll() is None:
            tray.kill()
        if daemon_pid:
            stop_daemon_process(home, daemon_pid)


def test_cloak_unavailable_notice_and_the_problems_window(make_home, desktop):
    home = make_home(name="no-weights", derive=True)
    empty = home.base / "no-weights"
    empty.mkdir()
    home.config_file.write_text(home.config_file.read_text()
                                + f'\n[cloak]\nstrength = "standard"\nmodels_dir = "{empty}"\noffline = true\n'
                                + '\n[rights]\ncreator = "Ada Lovelace"\n')
    home.env.pop("SHUTTERLOCK_MODELS_DIR")
    daemon = home.start_daemon()
    log = home.base / "tray.log"
    tray = start_tray(home, desktop, log)
    try:
        desktop.wait_title("Shutterlock: watching; nothing to seal yet", 60)
        shutil.copy2(PHOTO, home.sources[0] / "portrait.jpg")
        wait_for(lambda: live(home).cloak.error, 90, message="the derivative held back")
        assert "cloak unavailable, 1 derivative held back" in live(home).cloak.error
        wait_for(lambda: desktop.notified("Shutterlock: cloak unavailable"), 20,
                 message=f"the notice on the session bus\n{log.read_text()}")
        assert desktop.notified("1 derivative held back")
        desktop.screenshot("30-cloak-notice")  # dunst's popup, bottom left

        _, geometry = desktop.open_menu("31-problems")
        desktop.click_item("32-show-problems-highlighted", geometry, "Up", "Up", "Up", "Up", "Up")
        x, y, w, h = poll(lambda: desktop.named_window(PROBLEMS_TITLE), 20, "the problems window")
        time.sleep(0.3)
        window = desktop.screenshot("33-problems-window").crop((x, y, x + w, y + h))
        window.save(ARTIFACTS / "33-problems-window-only.png")
        assert text_pixels(window) > 500
        os.kill(tray.pid, signal.SIGTERM)
        assert tray.wait(30) == 0
    finally:
        if tray.poll() is None:
            tray.kill()
        stop(daemon)


def test_without_a_tray_host_the_tray_exits_2(make_home):
    """A display but no panel: a clear one-line reason instead of an icon nobody can see."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    home = make_home()
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "320x240x24", "-nolisten", "tcp",
                             "-noreset"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_the_tray_says_why_the_daemon_it_started_could_not_run(make_home, desktop):
    home = make_home(name="no-key")
    (home.state / "master.key").unlink()
    log = home.base / "tray.log"
    tray = start_tray(home, desktop, log)
    try:
        wait_for(lambda: desktop.icon_title().startswith("Shutterlock: the daemon stopped: "), 60,
                 message=f"the reason in the title\n{log.read_text()}")
        shown = menu.View(None, problem=f"the daemon stopped: {launch.last_line(home.state / launch.LOG_NAME)}")
        assert "no key file" in shown.problem and desktop.icon_title() == menu.headline(shown)
        desktop.wait_icon_state("40-daemon-could-not-run", menu.DISCONNECTED)
        desktop.open_menu("41-daemon-could-not-run")
        desktop.close_menu()
    finally:
        tray.kill()
        tray.wait(10)
