"""Which desktop notifications to show, decided from successive statuses — pure logic, no display.

Why so careful: a photographer imports hundreds of files at once, so anything per file is spam. The
tray tells about a whole batch when the daemon falls idle ("212 sealed, 198 derivatives ready"), about
conditions that last (bucket offline past a threshold, a disk nearly full, the cloak unavailable) once
per episode with a slow reminder, about a client's new selection on a share, and never more than a few
times an hour in total.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shutterlock.status import Status, human_bytes


@dataclass(frozen=True)
class Notice:
    """``key`` is what rate limits count per (the kind, or the kind and a path)."""

    kind: str
    title: str
    message: str
    key: str = field(default="", compare=False)


class Disk(NamedTuple):
    """Free space where the daemon writes (the icon measures it; tests make it up)."""

    label: str
    path: str
    free: int
    total: int


@dataclass(frozen=True)
class Rules:
    batch_every: float = 300.0
    offline_after: float = 30 * 60.0
    disk_free_fraction: float = 0.03
    disk_free_bytes: int = 2 * 10**9
    repeat_after: float = 6 * 3600.0
    episode_gap: float = 30 * 60.0
    per_hour: int = 6


@dataclass
class _Batch:
    """Counts when the daemon was last idle; what finished since then and was not yet announced."""

    sealed: int = 0
    written: int = 0
    busy: bool = False
    unsent_sealed: int = 0
    unsent_written: int = 0
    started: bool = False


@dataclass
class Notices:
    """Feed it every status (and periodically the same one: thresholds are about time) and show what it returns."""

    rules: Rules = field(default_factory=Rules)
    _batch: _Batch = field(default_factory=_Batch)
    _active: dict[str, float] = field(default_factory=dict)
    _sent: dict[str, float] = field(default_factory=dict)
    _episode_sent: set[str] = field(default_factory=set)
    _recent: deque[float] = field(default_factory=deque)
    _feedback_seen: dict[str, int] = field(default_factory=dict)

    def observe(self, status: Status, now: float, disks: Sequence[Disk] = ()) -> list[Notice]:
        candidates = [self._batch_notice(status, now)]
        candidates += self._conditions(status, now, disks)
        candidates += self._feedback(status)
        return [notice for notice in candidates if notice is not None and self._admit(notice, now)]

    # ------------------------------------------------------------------ batches

    def _batch_notice(self, status: Status, now: float) -> Notice | None:
        batch = self._batch
        sealed, written = status.files.sealed, status.derive.by_status.get("written", 0)
        if not batch.started or sealed < batch.sealed or written < batch.written:
            # First sight, or another catalog: these are the counts to measure from.
            self._batch = _Batch(sealed=sealed, written=written, busy=_busy(status), started=True)
            return None
        batch.busy = _busy(status)
        if batch.busy:
            return None
        batch.unsent_sealed += sealed - batch.sealed
        batch.unsent_written += written - batch.written
        batch.sealed, batch.written = sealed, written
        if not (batch.unsent_sealed or batch.unsent_written):
            return None
        if now - self._sent.get("batch", float("-inf")) < self.rules.batch_every:
            return None  # kept: told with the next batch
        parts = [f"{batch.unsent_sealed} sealed"]
        if batch.unsent_written:
            parts.append(f"{batch.unsent_written} derivative{'' if batch.unsent_written == 1 else 's'} ready")
        return Notice("batch", "Shutterlock: batch finished", ", ".join(parts), key="batch")

    # ------------------------------------------------------------------ lasting conditions

    def _conditions(self, status: Status, now: float, disks: Sequence[Disk]) -> list[Notice | None]:
        """Conditions present now (a notice once past any threshold); an episode ends when its condition does."""
        present: dict[str, Notice | None] = {}
        replica = status.replica
        if replica.configured and not replica.online:
            since = replica.offline_since or self._active.get("offline", now)
            present["offline"] = None if now - since < self.rules.offline_after else Notice(
                "offline", "Shutterlock: bucket offline",
                f"The bucket has been unreachable for {_duration(now - since)}; "
                f"{replica.waiting:,} objects ({human_bytes(replica.waiting_bytes)}) wait.",
                key="offline")
        for disk in disks:
            key = f"disk:{disk.path}"
            if self._nearly_full(disk, key):
                share = disk.free / disk.total if disk.total else 0.0
                present[key] = Notice("disk", f"Shutterlock: {disk.label} disk nearly full",
                                      f"{human_bytes(disk.free)} free ({share:.0%}) at {disk.path}", key=key)
        if status.cloak.error:
            present["cloak"] = Notice("cloak", "Shutterlock: cloak unavailable", status.cloak.error, key="cloak")
        for key in [k for k in self._active if k not in present]:
            del self._active[key]
            self._episode_sent.discard(key)
        for key in present:
            self._active.setdefault(key, now)
        return [self._due(notice, now) for notice in present.values() if notice is not None]

    def _nearly_full(self, disk: Disk, key: str) -> bool:
        """Below the threshold; once warned, stay "full" until 1.5× the threshold is free (no flapping)."""
        threshold = max(self.rules.disk_free_bytes, self.rules.disk_free_fraction * disk.total)
        if key in self._active:
            threshold *= 1.5
        return disk.free < threshold

    def _due(self, notice: Notice, now: float) -> Notice | None:
        """Once per episode, a reminder after ``repeat_after``; a new episode waits ``episode_gap``."""
        last = self._sent.get(notice.key, float("-inf"))
        wait = self.rules.repeat_after if notice.key in self._episode_sent else self.rules.episode_gap
        return notice if now - last >= wait else None

    # ------------------------------------------------------------------ client feedback

    def _feedback(self, status: Status) -> list[Notice | None]:
        """A client sent a selection the photographer has not looked at: once per new selection, per share."""
        notices: list[Notice | None] = []
        for share in status.shares:
            if share.new_feedback > self._feedback_seen.get(share.name, 0):
                count = share.new_feedback
                notices.append(Notice("feedback", "Shutterlock: client feedback",
                                      f"{share.name}: {count} new selection{'' if count == 1 else 's'} "
                                      f"(shutterlock share feedback {share.name})", key=f"feedback:{share.name}"))
            self._feedback_seen[share.name] = share.new_feedback
        return notices

    # ------------------------------------------------------------------ the overall cap

    def _admit(self, notice: Notice, now: float) -> bool:
        while self._recent and now - self._recent[0] >= 3600:
            self._recent.popleft()
        if len(self._recent) >= self.rules.per_hour:
            return False
        self._recent.append(now)
        self._sent[notice.key] = now
        if notice.key == "batch":
            self._batch.unsent_sealed = self._batch.unsent_written = 0
        elif notice.kind != "feedback":  # feedback is counted per selection, not per episode
            self._episode_sent.add(notice.key)
        return True


def _busy(status: Status) -> bool:
    """Still working on the batch (paused or not): anything settling, waiting or in flight in any lane."""
    return bool(status.pending or status.backlog.items or any(lane.waiting or lane.current for lane in status.lanes))


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
