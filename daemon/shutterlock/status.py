"""The status document: one typed definition, the same for ``status --json``, the tray and systemd's STATUS=.

The daemon and the offline reader both produce it (``facade.read_status``); the CLI and the tray consume it.
It crosses the control socket as JSON (:meth:`Status.to_dict` / :meth:`Status.from_dict`), and this module
imports nothing heavy so the tray can use it without the engine.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.filesize import decimal as human_bytes

__all__ = ["Backlog", "CloakStatus", "DeriveStatus", "Event", "FailedFile", "FileCounts", "IsolationStatus",
           "LaneStatus", "ProcessFacts", "ReplicaStatus", "RotationStatus", "ScrubReport", "ShareStatus",
           "SourceStatus", "State", "Status", "UnsettledFile", "VaultStatus", "human_bytes"]


class State(enum.StrEnum):
    """The headline state, ordered by what the photographer most needs to know first."""

    PAUSED = "paused"
    ERROR = "error"
    OFFLINE = "offline"
    WORKING = "working"
    DEGRADED = "degraded"
    IDLE = "idle"


@dataclass(frozen=True)
class FileCounts:
    """Originals per seal state."""

    discovered: int = 0
    sealing: int = 0
    sealed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Backlog:
    items: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class LaneStatus:
    """One lane (seal, replicate, derive): its queue, what it is doing, and how far the current batch is.

    A batch starts when the lane finds work after being idle; ``done`` counts items finished since, so
    "N of M" is ``done`` of ``done + waiting``. ``rate`` is items per second over the last minutes.
    """

    name: str
    waiting: int = 0
    waiting_bytes: int = 0
    done: int = 0
    rate: float | None = None
    eta_seconds: float | None = None
    current: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.waiting

    @property
    def position(self) -> int:
        """The item being worked on, counted from 1 (the "40" of "40 of 214"); ``done`` between items."""
        return self.done + 1 if self.current else self.done


@dataclass(frozen=True)
class SourceStatus:
    name: str
    path: str
    watch_mode: str  # native | polling | missing | unavailable (the configured mode while no daemon runs)
    configured_mode: str = "auto"
    warning: str = ""
    skipped: list[str] = field(default_factory=list)  # folders and links the last walk could not or would not enter

    @property
    def problem(self) -> str:
        """The one thing to say about this source, if any."""
        if self.warning:
            return self.warning
        if self.skipped:
            count = len(self.skipped)
            return f"source {self.name}: {self.skipped[0]}" + (f" (and {count - 1} more skipped)" if count > 1 else "")
        return ""


@dataclass(frozen=True)
class UnsettledFile:
    """A new file held back because it keeps changing; ``reason`` says so in words."""

    source: str
    relpath: str
    reason: str


@dataclass(frozen=True)
class ScrubReport:
    at: float
    checked: int
    bad: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReplicaStatus:
    configured: bool = False
    url: str = ""
    online: bool = True
    error: str = ""
    offline_since: float | None = None
    waiting: int = 0
    waiting_bytes: int = 0
    failed: int = 0
    last_snapshot: float | None = None
    scrub: ScrubReport | None = None
    lost: int = 0  # objects the bucket lost (found by a reconcile) that are not uploaded again yet
    snapshot_generation: int = 0  # of the newest catalog snapshot this catalog put in the bucket
    problem: str = ""  # the key envelope or the catalog snapshot could not be kept current, and why


@dataclass(frozen=True)
class IsolationStatus:
    """How the derive worker, which parses untrusted files, is confined: the layers this system applied
    (``active``) and those it refused (``missing``), as the latest worker reported them."""

    active: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeriveStatus:
    enabled: bool = True
    waiting: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    isolation: IsolationStatus | None = None  # None: no worker has started since the daemon did


@dataclass(frozen=True)
class CloakStatus:
    """``error`` is set while derivatives are held back because the cloak cannot run *now*."""

    strength: str = "standard"
    held: int = 0
    error: str = ""


@dataclass(frozen=True)
class RotationStatus:
    """A key rotation under way: objects looked at (re-encrypted or already under the new key) of all."""

    done: int
    total: int


@dataclass(frozen=True)
class VaultStatus:
    path: str
    error: str = ""


@dataclass(frozen=True)
class Event:
    at: float
    level: str
    subject: str
    message: str


@dataclass(frozen=True)
class FailedFile:
    source: str
    relpath: str
    error: str


@dataclass(frozen=True)
class ProcessFacts:
    """What the daemon costs: resident memory, and whether torch is loaded (it should not be when idle)."""

    rss_mb: float | None
    torch_loaded: bool
    threads: int


@dataclass(frozen=True)
class ShareStatus:
    """One private share, as the tray lists it; the link itself is a secret and never in the status."""

    name: str
    state: str  # publishing | active | expired | revoked
    images: int
    expires_at: float
    visitors: int = 0
    new_feedback: int = 0  # visitors whose latest selection the photographer has not looked at


@dataclass(frozen=True)
class Status:
    """Everything a user interface shows about the daemon; ``state`` and ``summary`` follow from the rest."""

    running: bool
    paused: bool
    files: FileCounts
    objects: int
    sealed_today: int
    last_sealed_at: float | None
    backlog: Backlog
    replica: ReplicaStatus
    derive: DeriveStatus
    cloak: CloakStatus
    vault: VaultStatus
    sources: list[SourceStatus]
    errors: list[Event]
    failed_files: list[FailedFile]
    outbox: str
    config_file: str
    warnings: list[str] = field(default_factory=list)  # settings that work but surprise (an empty watermark)
    lanes: list[LaneStatus] = field(default_factory=list)
    pending: int = 0  # candidates still settling in the stability gate
    restart_needed: list[str] = field(default_factory=list)
    pid: int | None = None
    version: int = 0
    uptime: float | None = None
    healthy: bool = True
    process: ProcessFacts | None = None
    catalog_error: str = ""  # why the catalog cannot be written right now (its disk is full)
    unsettled: list[UnsettledFile] = field(default_factory=list)
    scanning: list[str] = field(default_factory=list)  # sources being walked for new files right now
    shares: list[ShareStatus] = field(default_factory=list)
    rotation: RotationStatus | None = None
    state: State = field(init=False)
    summary: str = field(init=False)

    def __post_init__(self) -> None:
        state = headline_state(self)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "summary", summarise(self, state))

    @property
    def current(self) -> list[str]:
        return [item for lane in self.lanes for item in lane.current]

    def lane(self, name: str) -> LaneStatus | None:
        return next((lane for lane in self.lanes if lane.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["current"] = self.current
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        """Rebuild a status sent over the socket; unknown keys (a newer daemon) are ignored."""
        return _build(cls, data)


def headline_state(status: Status) -> State:
    if status.paused:
        return State.PAUSED
    if status.files.failed or status.vault.error or status.catalog_error:
        return State.ERROR
    if status.replica.configured and not status.replica.online:
        return State.OFFLINE
    if status.backlog.items or status.pending or status.scanning or status.replica.lost or \
            any(lane.waiting or lane.current for lane in status.lanes):
        return State.WORKING
    if status.cloak.error or status.replica.problem or status.warnings or \
            any(source.problem for source in status.sources):
        return State.DEGRADED
    return State.IDLE


def summarise(status: Status, state: State) -> str:
    """One line for people, e.g. "sealing 40 of 214 (5.2 GB left)" or "all 1,204 originals sealed"."""
    sealed = status.files.sealed
    waiting = status.backlog.items + status.pending
    if state is State.PAUSED:
        return f"paused with {_count(waiting, 'original')} waiting to be sealed" if waiting else "paused"
    if state is State.ERROR:
        if status.catalog_error:
            return status.catalog_error
        if status.vault.error:
            return status.vault.error
        return f"{_count(status.files.failed, 'original')} could not be sealed"
    if state is State.OFFLINE:
        replica = status.replica
        return (f"bucket unreachable: {_count(replica.waiting, 'object')} "
                f"({human_bytes(replica.waiting_bytes)}) waiting to be uploaded")
    if state is State.WORKING:
        parts = []
        for lane in status.lanes:
            if lane.waiting or lane.current:
                parts.append(_lane_phrase(lane))
        if status.pending and not any(lane.name == "seal" and lane.waiting for lane in status.lanes):
            parts.insert(0, f"{_count(status.pending, 'new file')} settling")
        if status.replica.lost:
            parts.insert(0, f"the bucket lost {_count(status.replica.lost, 'object')}; re-uploading")
        if status.scanning:
            parts.insert(0, f"looking for new files in {', '.join(status.scanning)}")
        if status.unsettled:
            first = status.unsettled[0]
            others = len(status.unsettled) - 1
            parts.append(f"{first.source}/{first.relpath} {first.reason}" + (f" (and {others} more)" if others else ""))
        return "; ".join(parts) or f"sealing {_count(waiting, 'original')}"
    if state is State.DEGRADED:
        if status.cloak.error:
            return f"{_all_sealed(sealed)}; {status.cloak.error}"
        problem = next((source.problem for source in status.sources if source.problem), "")
        if problem:  # a missing source or a skipped folder may hold originals not sealed: no "all" here
            return f"{_count(sealed, 'original')} sealed; {problem}"
        if status.replica.problem:
            return f"{_all_sealed(sealed)}; {status.replica.problem}"
        return f"{_all_sealed(sealed)}; {status.warnings[0]}"
    return _all_sealed(sealed)


def _all_sealed(sealed: int) -> str:
    if sealed == 0:
        return "watching; nothing to seal yet"
    return "the one original is sealed" if sealed == 1 else f"all {sealed:,} originals sealed"


_LANE_VERBS = {"seal": "sealing", "replicate": "uploading", "derive": "making derivatives:",
               "rotate": "re-encrypting under the new key"}


def _lane_phrase(lane: LaneStatus) -> str:
    verb = _LANE_VERBS.get(lane.name, lane.name)
    phrase = f"{verb} {lane.position} of {lane.total}"
    if lane.waiting_bytes and lane.name != "derive":
        phrase += f" ({human_bytes(lane.waiting_bytes)} left)"
    if lane.eta_seconds is not None and lane.waiting > 1:
        phrase += f", about {duration(lane.eta_seconds)} to go"
    return phrase


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """Rounded for people: "40 s", "3 min", "2 h 5 min"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --------------------------------------------------------------------------- JSON → dataclasses

T = TypeVar("T")


def _build(kind: type[T], data: dict[str, Any]) -> T:
    hints = typing.get_type_hints(kind)
    values = {}
    for item in dataclasses.fields(kind):  # type: ignore[arg-type]
        if item.init and item.name in data:
            values[item.name] = _convert(hints[item.name], data[item.name])
    return kind(**values)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, element) for element in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {key: _convert(item, element) for key, element in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    return value
