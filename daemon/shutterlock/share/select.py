"""Which pictures a share may contain: the protected derivatives of the originals a pattern selects.

Patterns select sealed originals exactly as ``restore`` does. An original without a current
derivative gets one on the spot, through the derive lane's own code (the same killable worker,
the same outbox, the same catalog record). Then every picture must pass: derivative written, its
file present, and cloaked unless the photographer allowed otherwise for this share. One that does
not is named with its reason, and nothing is published.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shutterlock.catalog import Catalog, Job, Version
from shutterlock.config import Config
from shutterlock.engine import StageError, WorkerState
from shutterlock.errors import OperationFailed
from shutterlock.restore import matches
from shutterlock.vault.format import Keys
from shutterlock.vault.local import LocalStore

DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Progress = Callable[[int, int, str], None]


class SelectionError(OperationFailed):
    """Nothing can be published as asked; the message lists every picture and why."""


@dataclass(frozen=True)
class Picture:
    file_id: int
    label: str  # source/relpath, for messages
    name: str  # the original's file name, shown to the client
    derivative: Path
    cloaked: bool
    date: str  # capture date from the outbox layout (YYYY-MM-DD), or ""


def select(config: Config, catalog: Catalog, keys: Keys, patterns: list[str], *, allow_uncloaked: bool,
           progress: Progress | None = None) -> tuple[list[Picture], list[str]]:
    """The pictures to publish and notes about originals left out on purpose (videos, the other half of a pair).

    Raises :class:`SelectionError` naming every original that would have to be published unprotected.
    """
    versions = [v for v in catalog.latest_versions() if matches(v, patterns)]
    if not versions:
        what = " ".join(patterns) if patterns else "anything (the catalog is empty)"
        raise SelectionError(f"nothing in the catalog matches {what}")
    files = _file_ids(catalog, versions)
    missing = [file_id for file_id, content_id in files.values() if _needs_derivative(catalog, file_id, content_id)]
    if missing:
        _derive(config, catalog, keys, missing, progress)
    pictures: list[Picture] = []
    problems: list[str] = []
    notes: list[str] = []
    for version in versions:
        label = f"{version.source}/{version.relpath}"
        file_id, _ = files[(version.source, version.relpath)]
        record = catalog.derivative_of(file_id)
        status = record["status"] if record else "missing"
        reason = (record or {}).get("reason") or ""
        if status == "skipped":
            notes.append(f"{label}: left out ({reason})")
            continue
        if status != "written" or record is None:
            problems.append(f"{label}: no protected derivative ({status}: {reason or 'not made'})")
            continue
        output = Path(record["output"] or "")
        if not record["output"] or not output.is_file():
            problems.append(f"{label}: its derivative {output} is missing from the outbox")
            continue
        cloaked = bool(record["cloaked"])
        if not cloaked and not allow_uncloaked:
            problems.append(f"{label}: its derivative is not cloaked ({reason or 'cloak strength off'}); "
                            "allow uncloaked images for this share to publish it anyway")
            continue
        pictures.append(Picture(file_id=file_id, label=label, name=PurePosixPath(version.relpath).name,
                                derivative=output, cloaked=cloaked,
                                date=output.parent.name if DATED.match(output.parent.name) else ""))
    if problems:
        raise SelectionError("not published, because these would leave unprotected:\n  " + "\n  ".join(problems))
    if not pictures:
        raise SelectionError("no picture to publish: " + "; ".join(notes))
    return pictures, notes


def _file_ids(catalog: Catalog, versions: list[Version]) -> dict[tuple[str, str], tuple[int, str]]:
    out: dict[tuple[str, str], tuple[int, str]] = {}
    with catalog.transaction() as db:
        for version in versions:
            row = db.execute("SELECT id, content_id FROM files WHERE source = ? AND relpath = ?",
                             (version.source, version.relpath)).fetchone()
            if row is not None and row["content_id"]:
                out[(version.source, version.relpath)] = (row["id"], row["content_id"])
    return out


def _needs_derivative(catalog: Catalog, file_id: int, content_id: str) -> bool:
    record = catalog.derivative_of(file_id)
    if record is None or record["content_id"] != content_id:
        return True
    if record["status"] == "written":
        return not (record["output"] and Path(record["output"]).is_file())
    return record["status"] == "held"  # the cloak may work now


def _derive(config: Config, catalog: Catalog, keys: Keys, file_ids: list[int], progress: Progress | None) -> None:
    """Make derivatives now, with the derive lane's code: worker process, outbox, catalog record."""
    from shutterlock.derive.lane import DeriveStage

    stage = DeriveStage(config, catalog, keys, LocalStore(config.vault.path))
    worker = WorkerState("share")
    try:
        for done, file_id in enumerate(file_ids):
            if progress is not None:
                progress(done, len(file_ids), "making derivatives")
            with contextlib.suppress(StageError):  # the outcome is in the catalog; the caller names it
                stage.process(Job(id=0, kind="derive", subject=str(file_id), size=0, attempts=0), worker)
        if progress is not None:
            progress(len(file_ids), len(file_ids), "making derivatives")
    finally:
        stage.close()
