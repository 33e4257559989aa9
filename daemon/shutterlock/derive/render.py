"""One original in, one encoded derivative (or a recorded reason why not) out — inside the worker process.

decode → look (colour, size, orientation) → cloak → watermark → metadata → JPEG bytes. Plain data in
(:class:`DeriveJob`), plain data out (:class:`Rendered`); :func:`render` never raises for bad input, so a
hostile file costs one "failed" record and nothing else. It writes nothing: the daemon places the bytes in
the outbox (``outbox.place``), so the process that parses untrusted files needs no access to it.
"""

from __future__ import annotations

import contextlib
import enum
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig

from . import look, metadata, watermark
from .decode import DeriveError, classify, decode_inspected, file_time, inspect
from .rating import rating


class Outcome(enum.StrEnum):
    """What became of one original's derivative (the catalog keeps these values)."""

    WRITTEN = "written"  # rendered (and, once placed, in the outbox)
    HELD = "held"  # not cloaked, held back by policy until the cloak can run
    FAILED = "failed"
    SKIPPED = "skipped"  # not an image, or the other half of a RAW+JPEG pair


@dataclass(frozen=True)
class DeriveJob:
    """Everything one derivative needs; picklable, so it can cross into the runner's worker process.

    ``seed``: per-original seed, added to ``cloak.seed`` so a re-derive reproduces the same cloak.
    ``min_rating``: skip originals rated lower (the source's ``derive_min_rating``); ``sidecar``: an XMP file
    beside the original whose rating wins.
    """

    source: Path
    derive: DeriveConfig
    watermark: WatermarkConfig
    rights: RightsConfig
    cloak: CloakConfig
    seed: int = 0
    min_rating: int = 0
    sidecar: Path | None = None


@dataclass(frozen=True)
class Rendered:
    """What happened to one original; ``jpeg`` holds the encoded derivative when ``outcome`` is WRITTEN.

    ``reason``: empty when written and cloaked (or cloak off); otherwise why (failure, hold, skip, or
    "not cloaked: …" for a released uncloaked derivative). ``cloak_error``: why the cloak did not run
    ("strength off" when switched off). ``capture_time``: EXIF capture time, else the file's mtime
    (naive local time; it picks the dated folder). ``timings``: seconds per stage (decode, look,
    cloak, watermark, encode) and the worker's CPU seconds (cpu), for diagnostics and the benchmark.
    """

    source: Path
    outcome: Outcome
    jpeg: bytes | None = None
    reason: str = ""
    cloaked: bool = False
    cloak_strength: str = "off"
    cloak_error: str = ""
    watermark: str = ""
    resized_to: int = 0  # the long edge when the original was scaled down, else 0
    rating: int | None = None  # the original's stars (-1 rejected … 5), None when nothing says
    width: int = 0
    height: int = 0
    capture_time: datetime | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def render(job: DeriveJob, original: BinaryIO | None = None, sidecar: BinaryIO | None = None, *,
           progress: Callable[[float], None] | None = None) -> Rendered:
    """Run the whole pipeline for one original; every outcome is a result, never an exception.

    ``original``, ``sidecar``: the files, already open (the runner's worker may open no path); without
    them ``job.source`` and ``job.sidecar`` are opened here. ``job.source`` still names the original (its
    extension picks the decoder).
    """
    started = time.monotonic()
    cpu_started = time.process_time()
    timings: dict[str, float] = {}
    source = job.source
    kind = classify(source)
    if kind in ("video", "sidecar"):
        return Rendered(source, Outcome.SKIPPED, reason=f"not an image ({kind})", cloak_strength=job.cloak.strength)
    if original is None:
        try:
            with source.open("rb") as opened, _open_sidecar(job.sidecar) as side:
                return render(job, opened, side, progress=progress)
        except OSError as error:
            return _failed(job, Outcome.FAILED, f"cannot read file: {error.strerror or error}", None, started)
    max_bytes = (job.derive.memory_limit << 20) // 4
    try:
        inspect(source, original, max_bytes)  # before the rating's header parse sees a hostile file
    except DeriveError as error:
        return _failed(job, Outcome.FAILED, str(error), None, started)
    stars = rating(original, sidecar)  # cheap (headers only); the catalog keeps it for the site too
    if job.min_rating and (stars or 0) < job.min_rating:
        rated = f"rated {stars}" if stars is not None else "not rated"
        return Rendered(source, Outcome.SKIPPED, cloak_strength=job.cloak.strength, rating=stars,
                        reason=f"{rated}; this source makes derivatives of {job.min_rating}+ stars")
    capture: datetime | None = None
    size = job.derive.size
    try:
        mark = time.monotonic()
        decoded = decode_inspected(source, original, long_edge=look.decode_edge(size),
                                   max_pixels=job.derive.max_pixels, draft_tolerance=job.derive.draft_tolerance)
        capture = decoded.capture_time or file_time(source, original)
        timings["decode"] = time.monotonic() - mark

        mark = time.monotonic()
        if size.width:  # fit crops and scales to the width: the sharpening comes after it
            image = look.sharpen(look.fit(look.prepare(decoded), size), job.derive.sharpen)
        else:  # the prepared image has its final size already
            image = look.fit(look.prepare(decoded, job.derive.sharpen), size)
        resized_to = max(image.size) if max(image.size) < decoded.full_edge else 0
        del decoded
        timings["look"] = time.monotonic() - mark

        mark = time.monotonic()
        image, cloaked, strength, cloak_error = _cloak(image, job, progress)
        timings["cloak"] = time.monotonic() - mark
        hold = not cloaked and strength != "off" and not job.derive.release_uncloaked
        if hold:
            why = f"not cloaked ({cloak_error}); held back because release_uncloaked is off"
            return Rendered(
                source, Outcome.HELD, reason=why,
                cloaked=False, cloak_strength=strength, cloak_error=cloak_error, width=image.width,
                height=image.height, capture_time=capture, seconds=time.monotonic() - started,
                timings=timings, rating=stars)

        mark = time.monotonic()
        creator = job.rights.creator
        image, mark_description = watermark.apply(image, job.watermark, creator=creator, year=capture.year)
        timings["watermark"] = time.monotonic() - mark

        mark = time.monotonic()
        creator = creator.strip()
        copyright_text = metadata.copyright_notice(job.rights, capture.year)
        encoded = io.BytesIO()
        metadata.write_jpeg(
            image, encoded, quality=job.derive.jpeg_quality,
            xmp=metadata.build_xmp(job.rights, copyright_text=copyright_text),
            exif=metadata.build_exif(creator, copyright_text, capture if job.derive.keep_capture_date else None),
            iptc=metadata.build_iptc(creator, copyright_text))
        timings["encode"] = time.monotonic() - mark
        timings["cpu"] = time.process_time() - cpu_started
    except DeriveError as error:
        reason = str(error)
        outcome = Outcome.FAILED
        if kind == "unknown" and reason == "not a recognised image format":
            outcome, reason = Outcome.SKIPPED, "not an image (unrecognised format)"
        return _failed(job, outcome, reason, capture, started)
    except MemoryError:
        return _failed(job, Outcome.FAILED, "out of memory", capture, started)
    except Exception as error:  # a pipeline bug must cost one record, not the lane
        return _failed(job, Outcome.FAILED, f"internal error: {type(error).__name__}: {error}", capture, started)
    reason = ""
    if not cloaked and strength != "off":
        reason = f"not cloaked ({cloak_error}); released (release_uncloaked)"
    return Rendered(source, Outcome.WRITTEN, jpeg=encoded.getvalue(), reason=reason, cloaked=cloaked,
                    cloak_strength=strength, cloak_error=cloak_error, watermark=mark_description,
                    resized_to=resized_to, width=image.width, height=image.height, capture_time=capture,
                    seconds=time.monotonic() - started, timings=timings, rating=stars)


def _open_sidecar(path: Path | None) -> contextlib.AbstractContextManager[BinaryIO | None]:
    """The sidecar opened, or nothing: a sidecar that vanished simply says nothing about the rating."""
    try:
        return path.open("rb") if path is not None else contextlib.nullcontext()
    except OSError:
        return contextlib.nullcontext()


def _failed(job: DeriveJob, outcome: Outcome, reason: str, capture: datetime | None, started: float) -> Rendered:
    return Rendered(job.source, outcome, reason=reason, cloak_strength=job.cloak.strength,
                    capture_time=capture, seconds=time.monotonic() - started)


def _cloak(image: Image.Image, job: DeriveJob,
           progress: Callable[[float], None] | None) -> tuple[Image.Image, bool, str, str]:
    """The cloak slot: returns (image, cloaked, strength, why-not). Torch loads only past this point."""
    strength = job.cloak.strength
    if strength == "off":
        return image, False, strength, "strength off"
    try:
        from shutterlock.cloak import CloakError, cloak_image
    except ImportError as error:
        return image, False, strength, f"cloak unavailable: {error}"
    try:
        result = cloak_image(
            image, strength, seed=job.cloak.seed + job.seed, threads=job.cloak.threads or None,
            time_budget=job.cloak.time_budget, progress=progress, models_dir=job.cloak.models_dir,
            offline=job.cloak.offline)
    except CloakError as error:
        return image, False, strength, f"cloak failed: {error}"
    except ImportError as error:
        return image, False, strength, f"cloak unavailable: {error}"
    except MemoryError:
        return image, False, strength, "cloak failed: out of memory"
    except Exception as error:  # a cloak bug must not lose the derivative's record
        return image, False, strength, f"cloak error: {type(error).__name__}: {error}"
    cloaked_image = result.image if result.image.mode == "RGB" else result.image.convert("RGB")
    return cloaked_image, True, result.strength, ""
