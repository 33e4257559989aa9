"""The derive lane: turns a sealed original into its share-ready derivative in the outbox.

The heavy work (decoding, the cloak) runs in a separate, low-priority child process with a per-image
time limit, so neither a pathological file nor torch can stall or bloat the daemon; the child returns the
encoded bytes and this lane, in the daemon, signs them (C2PA, with a key the child never sees) and places
them in the outbox. If the original has changed or
gone from the source since it was sealed, the derivative is made from the sealed object instead,
decrypted into an owner-only temp folder and deleted right after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from shutterlock.catalog import Catalog, FileRow, Job
from shutterlock.config import Config, DeriveConfig, SourceConfig
from shutterlock.derive.signing import identity_for, sign_rendered
from shutterlock.engine import JobQueue, Periodic, StageError, WorkerState
from shutterlock.errors import ShutterlockError
from shutterlock.fsutil import ensure_dir
from shutterlock.provenance import SigningIdentity
from shutterlock.status import IsolationStatus
from shutterlock.vault.format import FormatError, Keys, ObjectReader
from shutterlock.vault.local import LocalStore

from . import outbox
from .decode import classify
from .pairs import skip_reason
from .render import DeriveJob, Outcome, Rendered
from .runner import DeriveRunner, Work

log = logging.getLogger(__name__)

HELD_RETRY = 3600.0  # seconds before a held-back (uncloaked) derivative is tried again anyway
CLOAK_PROBE = 10.0  # while derivatives are held back, how often to look whether the cloak can run again
KILL_GRACE = 60.0  # beyond the per-image limit, how long a derive worker may look stuck to the watchdog


def worker_count(derive: DeriveConfig) -> int:
    """``[derive] workers``; 0 means one per core, but no more than fit in memory at ``memory_limit`` each
    (a 2-core box with 24 GB runs two; a 4 GB NAS one, so two cloaks cannot exhaust it)."""
    if derive.workers:
        return derive.workers
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(os.cpu_count() or 1, memory // (derive.memory_limit << 20)))


def settings_fingerprint(config: Config) -> str:
    """What the derivative's bytes depend on; a derivative made under another fingerprint is stale."""
    derive = config.derive
    relevant = {
        "size": dataclasses.astuple(derive.size), "sharpen": derive.sharpen, "quality": derive.jpeg_quality,
        "date": derive.keep_capture_date, "pair": derive.pair_preference,
        "watermark": dataclasses.asdict(config.watermark), "rights": dataclasses.asdict(config.rights),
        "cloak": (config.cloak.strength, config.cloak.seed),
    }
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def sidecar_of(original: Path) -> Path | None:
    """The XMP sidecar editors write beside an original: IMG_1.xmp (Lightroom, Capture One) or IMG_1.CR2.xmp
    (darktable), in either case."""
    for name in (original.stem, original.name):
        for suffix in (".xmp", ".XMP"):
            candidate = original.with_name(name + suffix)
            if candidate.is_file():
                return candidate
    return None


def weights_problem(config: Config) -> str:
    """Why the cloak cannot run from the weights on this machine ("" when every file is there and verified).

    Cheap and torch-free (a hash of a few MB), so the daemon can ask while derivatives are held back.
    """
    from shutterlock.cloak import WeightsError
    from shutterlock.cloak.models import REGISTRY, resolve_weights

    for name in REGISTRY:
        try:
            resolve_weights(name, config.cloak.models_dir, offline=True)
        except WeightsError as error:
            return str(error)
    return ""


class DeriveStage:
    """One job per sealed original (its file id); one long-lived worker process per lane thread."""

    name = "derive"

    def __init__(self, config: Config, catalog: Catalog, keys: Keys, vault: LocalStore, *, work: Work | None = None):
        """``work``: what the workers run per job (default: ``render``)."""
        self.catalog, self.keys, self.vault = catalog, keys, vault
        self._work = work
        self.queue = JobQueue(catalog, self.name)
        self.workers = worker_count(config.derive)
        self._local = threading.local()
        self._runners: list[DeriveRunner] = []
        # Why the cloak could not run on the latest attempt: "" once it runs, None before the first attempt.
        self.cloak_problem: str | None = None
        self._signer: SigningIdentity | None = None
        self._signer_lock = threading.Lock()
        self.reload(config)

    def reload(self, config: Config) -> str:
        """Settings are read per job, and each runner follows the time limit; only the worker count waits."""
        self.config = config
        with self._signer_lock:
            self._signer = None  # [provenance] may name another certificate now
        self.attempts = config.engine.max_attempts
        self.stall_limit = max(config.engine.stall_seconds, config.derive.time_limit + KILL_GRACE)
        for runner in self._runners:
            runner.time_limit = config.derive.time_limit
        if worker_count(config.derive) != self.workers:
            return "[derive] workers changes after a restart"
        return ""

    def subject(self, file_id: int, content_id: str) -> str | None:
        return str(file_id)

    def schedule(self) -> list[Periodic]:
        return [Periodic("cloak-probe", CLOAK_PROBE, self.probe_cloak)]

    def probe_cloak(self) -> None:
        """Held-back derivatives are made as soon as the cloak can run again (weights placed or fetched)."""
        if self.config.cloak.strength == "off" or not self.catalog.derivative_counts().get(Outcome.HELD):
            return
        if weights_problem(self.config):
            return
        log.info("the cloak's weights are in place; retrying the derivatives held back")
        self.queue.expedite()

    def describe(self, job: Job) -> str:
        file = self.catalog.file_by_id(int(job.subject))
        return f"derivative of {file.source}/{file.relpath}" if file else f"derivative #{job.subject}"

    def _runner(self) -> DeriveRunner:
        """One long-lived worker process per lane thread, started on first use."""
        runner: DeriveRunner | None = getattr(self._local, "runner", None)
        if runner is None:
            config = self.config
            guarded = [config.vault.path, config.derive.outbox, *(source.path for source in config.sources)]
            runner = self._local.runner = DeriveRunner(config.derive.time_limit, work=self._work, guarded=guarded)
            self._runners.append(runner)
        return runner

    @property
    def isolation(self) -> IsolationStatus | None:
        """How the lane's workers are confined, as the latest one reported (None before the first job)."""
        reports = [runner.isolation for runner in self._runners if runner.isolation is not None]
        if not reports:
            return None
        return IsolationStatus(active=list(reports[-1].active), missing=list(reports[-1].missing))

    def process(self, job: Job, worker: WorkerState) -> None:
        file = self.catalog.file_by_id(int(job.subject))
        if file is None or file.content_id is None:
            return
        source = self.config.source_by_name(file.source)
        original = source.path / file.relpath if source else Path(PurePosixPath(file.relpath).name)
        previous = self.catalog.derivative_of(file.id)
        previous_output = Path(previous["output"]) if previous and previous.get("output") else None
        if classify(original) == "sidecar":
            self._sidecar_changed(file)
        if reason := self._not_chosen(source, file.relpath, original):
            self._remove_own(previous_output)
            self._record(file, Outcome.SKIPPED, reason)
            return
        with self._input_for(file, original) as path:
            rendered = self._runner().run(DeriveJob(
                source=path, derive=self.config.derive, watermark=self.config.watermark,
                rights=self.config.rights, cloak=self.config.cloak, seed=int(file.content_id[:8], 16),
                min_rating=source.derive_min_rating if source else 0,
                sidecar=sidecar_of(original) if source else None))
            worker.tick()
        if rendered.outcome is Outcome.SKIPPED:
            self._remove_own(previous_output)  # e.g. rated down after it was shared: it leaves the outbox
        self._note_cloak(rendered)
        output = previous_output if rendered.outcome is Outcome.HELD else None  # the earlier one stays
        if rendered.outcome is Outcome.WRITTEN:
            output = self._place(rendered, PurePosixPath(file.relpath).stem, previous_output)
        self._record(file, rendered.outcome, rendered.reason, output, rendered)
        if rendered.outcome is Outcome.FAILED:
            raise StageError(rendered.reason, transient=False)
        if rendered.outcome is Outcome.HELD:
            # Not a lost cause: the cloak may work once its weights are there. Try again later.
            raise StageError(rendered.reason, transient=True, delay=HELD_RETRY, count=False)
        log.info("derivative of %s/%s: %s", file.source, file.relpath, output or rendered.reason)

    def _not_chosen(self, source: SourceConfig | None, relpath: str, original: Path) -> str:
        """Why this original gets no derivative ("" when it gets one), before any decoding."""
        if source is None:
            return ""
        if reason := skip_reason(original, self.config.derive.pair_preference):
            return reason
        folders = source.derive_folders
        if folders and not any(fnmatch.fnmatch(relpath, f"{f.rstrip('/')}/*") for f in folders):
            return f"not below {', '.join(folders)} (this source's derive_folders)"
        return ""

    def _sidecar_changed(self, sidecar: FileRow) -> None:
        """A rating may have changed in a sidecar: its image is looked at again (made, or taken back)."""
        path = PurePosixPath(sidecar.relpath)
        folder = "" if str(path.parent) == "." else str(path.parent)
        for image in self.catalog.files_named(sidecar.source, folder, path.stem):
            if image.id != sidecar.id and image.content_id and classify(Path(image.relpath)) in ("image", "raw"):
                self.catalog.enqueue(self.name, str(image.id), image.size)

    def _remove_own(self, previous: Path | None) -> None:
        """Take back a derivative this original no longer gets — only ever a file inside our outbox."""
        if previous is not None and previous.is_relative_to(self.config.derive.outbox):
            with contextlib.suppress(FileNotFoundError):
                previous.unlink()
                log.info("removed %s: its original no longer gets a derivative", previous)

    def _note_cloak(self, rendered: Rendered) -> None:
        """Status shows the cloak's current state, not its first failure; a working cloak releases held items."""
        if rendered.outcome is Outcome.HELD:
            if self.cloak_problem != rendered.cloak_error:
                log.warning("derivatives are held back, not shared uncloaked: %s", rendered.cloak_error)
            self.cloak_problem = rendered.cloak_error
        elif rendered.cloaked:
            if self.cloak_problem:
                log.info("the cloak runs again; retrying the derivatives held back")
                self.queue.expedite()
            self.cloak_problem = ""

    def _sign(self, rendered: Rendered) -> bytes:
        """The rendered bytes with their signed manifest; an unsigned derivative never reaches the outbox."""
        try:
            with self._signer_lock:
                if self._signer is None:
                    self._signer, created = identity_for(self.config, lambda: self.keys, self.vault.root)
                    if created:
                        log.info("created the signing identity for C2PA manifests (%s)", self._signer.subject)
            return sign_rendered(rendered, self._signer, self.config.rights)
        except ShutterlockError as error:
            raise StageError(f"cannot sign the derivative: {error}", transient=False) from None

    def _place(self, rendered: Rendered, stem: str, previous: Path | None) -> Path:
        """Sign the rendered bytes and write them into the outbox; the previous derivative is replaced only
        inside it."""
        root = self.config.derive.outbox
        signed = self._sign(rendered)
        assert rendered.capture_time is not None
        if previous is not None and not previous.is_relative_to(root):
            previous = None
        try:
            return outbox.place(signed, outbox.dated_dir(root, rendered.capture_time), stem, previous=previous)
        except OSError as error:
            raise StageError(f"cannot write the derivative into {root}: {error.strerror or error}",
                             transient=True) from None

    def _record(self, file: FileRow, outcome: Outcome, reason: str, output: Path | None = None,
                rendered: Rendered | None = None) -> None:
        self.catalog.record_derivative(
            file.id, file.content_id or "", status=outcome, output=str(output) if output else None, reason=reason,
            cloaked=bool(rendered and rendered.cloaked), strength=rendered.cloak_strength if rendered else "",
            watermark=rendered.watermark if rendered else "", settings=settings_fingerprint(self.config),
            rating=rendered.rating if rendered else None)

    @contextlib.contextmanager
    def _input_for(self, file: FileRow, original: Path) -> Iterator[Path]:
        """The original if it is still the sealed version, else a temporary decrypted copy."""
        try:
            info = os.stat(original)
            if (info.st_size, info.st_mtime_ns) == (file.size, file.mtime_ns):
                yield original
                return
        except OSError:
            pass
        scratch = ensure_dir(self.config.paths.cache_dir / "derive")
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            target = Path(folder) / PurePosixPath(file.relpath).name
            try:
                with self.vault.open(file.content_id or "") as handle, open(target, "wb") as out:
                    ObjectReader(self.keys, handle, file.content_id).copy_to(out)
            except FormatError as error:
                raise StageError(f"sealed object failed authentication: {error}", transient=False) from None
            os.utime(target, ns=(file.mtime_ns, file.mtime_ns))  # the capture-date fallback
            yield target

    def close(self) -> None:
        for runner in self._runners:
            runner.close()
        self._runners.clear()
