"""One original in, one derivative (or a recorded reason why not) out.

decode → look (colour, size, orientation) → cloak slot → watermark → metadata → outbox.
Plain data in (:class:`DeriveJob`), plain data out (:class:`DeriveResult`); :func:`derive_file` never
raises for bad input, so a hostile file costs one "failed" record and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image

from shutterlock.config import CloakConfig, DeriveConfig, RightsConfig, WatermarkConfig

from . import look, metadata, outbox, watermark
from .decode import RAW_EXTENSIONS, DeriveError, classify, decode, file_time

WRITTEN, HELD, FAILED, SKIPPED = "written", "held", "failed", "skipped"
LAYOUTS = ("dated", "flat")
# The non-RAW halves of a camera's RAW+image pair (some bodies shoot RAW+HEIF instead of RAW+JPEG).
PAIR_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".heic", ".heif", ".hif")


@dataclass(frozen=True)
class DeriveJob:
    """Everything one derivative needs; picklable, so it can cross into the runner's worker process.

    ``previous_output``: the derivative the catalog holds for this original (replaced, never another file).
    ``seed``: per-original seed, added to ``cloak.seed`` so a re-derive reproduces the same cloak.
    ``layout``: ``"dated"`` (``derive.outbox/YYYY/YYYY-MM-DD/``) or ``"flat"`` (``derive.outbox/``).
    ``check_pair``: skip this file when its RAW+JPEG partner is the one to derive (looked up on disk).
    ``preview``: also render the cloak preview picture (``shutterlock protect --preview``).
    """

    source: Path
    derive: DeriveConfig
    watermark: WatermarkConfig
    rights: RightsConfig
    cloak: CloakConfig
    previous_output: Path | None = None
    seed: int = 0
    layout: str = "dated"
    check_pair: bool = True
    preview: bool = False


@dataclass(frozen=True)
class DeriveResult:
    """What happened to one original; ``status`` is one of written, held, failed, skipped.

    ``reason``: empty when written and cloaked (or cloak off); otherwise why (failure, hold, skip, or
    "not cloaked: …" for a released uncloaked derivative). ``cloak_error``: why the cloak did not run
    ("strength off" when switched off). ``capture_time``: EXIF capture time, else the file's mtime
    (naive local time; it picks the dated folder). ``timings``: seconds per stage (decode, look,
    cloak, watermark, write) and the worker's CPU seconds (cpu), for diagnostics and the benchmark.
    ``preview``: the cloak preview as PNG bytes when the job asked for one and the cloak ran.
    """

    source: Path
    status: str
    output: Path | None = None
    reason: str = ""
    cloaked: bool = False
    cloak_strength: str = "off"
    cloak_error: str = ""
    watermark: str = ""
    width: int = 0
    height: int = 0
    capture_time: datetime | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    preview: bytes = b""


def pair_partner(path: Path, candidates: Collection[Path] | None = None) -> Path | None:
    """The other half of a RAW+JPEG pair: same folder, same stem, extension compared case-insensitively.

    Without ``candidates`` the disk is probed for the lower-, upper- and title-case spellings of each
    partner extension (what cameras write); with them, only those paths are considered.
    """
    kind = classify(path)
    suffix = path.suffix.lower()
    if kind == "raw":
        wanted: Collection[str] = PAIR_IMAGE_EXTENSIONS
    elif kind == "image" and suffix in PAIR_IMAGE_EXTENSIONS:
        wanted = RAW_EXTENSIONS
    else:
        return None
    if candidates is not None:
        matches = sorted(c for c in candidates if c != path and c.parent == path.parent
                         and c.stem == path.stem and c.suffix.lower() in wanted)
        return matches[0] if matches else None
    for extension in sorted(wanted):
        for spelling in dict.fromkeys((extension, extension.upper(), extension.capitalize())):
            candidate = path.with_name(path.stem + spelling)
            if candidate != path and candidate.is_file():
                return candidate
    return None


def should_derive(path: Path, pair_preference: str = "jpeg",
                  candidates: Collection[Path] | None = None) -> bool:
    """False for non-images and for the half of a RAW+JPEG pair that the preference does not pick."""
    kind = classify(path)
    if kind in ("video", "sidecar"):
        return False
    if pair_partner(path, candidates) is None:
        return True
    return (kind == "raw") == (pair_preference == "raw")


def derive_file(job: DeriveJob, *, progress: Callable[[float], None] | None = None) -> DeriveResult:
    """Run the whole pipeline for one original; every outcome is a result, never an exception."""
    started = time.monotonic()
    cpu_started = time.process_time()
    timings: dict[str, float] = {}
    source = job.source
    kind = classify(source)
    if kind in ("video", "sidecar"):
        return DeriveResult(source, SKIPPED, reason=f"not an image ({kind})",
                            cloak_strength=job.cloak.strength)
    if job.check_pair and not should_derive(source, job.derive.pair_preference):
        partner = pair_partner(source)
        name = partner.name if partner else "its partner"
        return DeriveResult(source, SKIPPED, reason=f"RAW+JPEG pair: {name} is derived instead",
                            cloak_strength=job.cloak.strength)
    capture: datetime | None = None
    try:
        mark = time.monotonic()
        decoded = decode(source, long_edge=job.derive.long_edge, max_pixels=job.derive.max_pixels,
                         draft_tolerance=job.derive.draft_tolerance)
        capture = decoded.capture_time or file_time(source)
        timings["decode"] = time.monotonic() - mark

        mark = time.monotonic()
        image = look.prepare(decoded)
        del decoded
        timings["look"] = time.monotonic() - mark

        mark = time.monotonic()
        image, cloaked, strength, cloak_error, preview = _cloak(image, job, progress)
        timings["cloak"] = time.monotonic() - mark
        hold = not cloaked and strength != "off" and not job.derive.release_uncloaked
        if hold:
            why = f"not cloaked ({cloak_error}); held back because release_uncloaked is off"
            return DeriveResult(
                source, HELD, reason=why,
                cloaked=False, cloak_strength=strength, cloak_error=cloak_error, width=image.width,
                height=image.height, capture_time=capture, seconds=time.monotonic() - started,
                timings=timings)

        mark = time.monotonic()
        creator = job.rights.creator
        image, mark_description = watermark.apply(image, job.watermark, creator=creator, year=capture.year)
        timings["watermark"] = time.monotonic() - mark

        mark = time.monotonic()
        copyright_text = job.rights.copyright
        if not copyright_text and creator.strip():
            copyright_text = f"© {capture.year} {creator.strip()}"
        xmp = metadata.build_xmp(job.rights, copyright_text=copyright_text)
        root = job.derive.outbox
        directory = root if job.layout == "flat" else outbox.dated_dir(root, capture)
        final = image
        output = outbox.write_atomic(
            directory, source.stem,
            lambda handle: metadata.write_jpeg(final, handle, quality=job.derive.jpeg_quality, xmp=xmp),
            previous=_own_previous(job))
        timings["write"] = time.monotonic() - mark
        timings["cpu"] = time.process_time() - cpu_started
    except DeriveError as error:
        reason = str(error)
        status = FAILED
        if kind == "unknown" and reason == "not a recognised image format":
            status, reason = SKIPPED, "not an image (unrecognised format)"
        return _failed(job, status, reason, capture, started)
    except MemoryError:
        return _failed(job, FAILED, "out of memory", capture, started)
    except OSError as error:
        return _failed(job, FAILED, f"cannot write derivative: {error.strerror or error}", capture, started)
    except Exception as error:  # a pipeline bug must cost one record, not the lane
        return _failed(job, FAILED, f"internal error: {type(error).__name__}: {error}", capture, started)
    reason = ""
    if not cloaked and strength != "off":
        reason = f"not cloaked ({cloak_error}); released (release_uncloaked)"
    return DeriveResult(source, WRITTEN, output=output, reason=reason, cloaked=cloaked,
                        cloak_strength=strength, cloak_error=cloak_error, watermark=mark_description,
                        width=final.width, height=final.height, capture_time=capture,
                        seconds=time.monotonic() - started, timings=timings, preview=preview)


def _own_previous(job: DeriveJob) -> Path | None:
    """The previous derivative is only ever replaced or removed inside this job's outbox."""
    previous = job.previous_output
    if previous is None or not previous.is_relative_to(job.derive.outbox):
        return None
    return previous


def _failed(job: DeriveJob, status: str, reason: str, capture: datetime | None,
            started: float) -> DeriveResult:
    return DeriveResult(job.source, status, reason=reason, cloak_strength=job.cloak.strength,
                        capture_time=capture, seconds=time.monotonic() - started)


def _cloak(image: Image.Image, job: DeriveJob,
           progress: Callable[[float], None] | None) -> tuple[Image.Image, bool, str, str, bytes]:
    """The cloak slot: returns (image, cloaked, strength, why-not, preview PNG). Torch loads only past
    this point. The cloak is fitted to the output JPEG quality, which is how its targets are measured."""
    strength = job.cloak.strength
    if strength == "off":
        return image, False, strength, "strength off", b""
    try:
        from shutterlock.cloak import CloakError, cloak_image
    except ImportError as error:
        return image, False, strength, f"cloak unavailable: {error}", b""
    try:
        result = cloak_image(
            image, strength, seed=job.cloak.seed + job.seed, threads=job.cloak.threads or None,
            time_budget=job.cloak.time_budget, progress=progress, models_dir=job.cloak.models_dir,
            offline=job.cloak.offline, jpeg_quality=job.derive.jpeg_quality)
        cloaked_image = result.image if result.image.mode == "RGB" else result.image.convert("RGB")
        preview = b""
        if job.preview:
            from shutterlock.cloak import preview as cloak_preview

            preview = cloak_preview.png_bytes(cloak_preview.render(
                image, cloaked_image, strength=strength, jpeg_quality=job.derive.jpeg_quality,
                models_dir=job.cloak.models_dir, offline=job.cloak.offline))
    except CloakError as error:
        return image, False, strength, f"cloak failed: {error}", b""
    except ImportError as error:
        return image, False, strength, f"cloak unavailable: {error}", b""
    except MemoryError:
        return image, False, strength, "cloak failed: out of memory", b""
    except Exception as error:  # a cloak bug must not lose the derivative's record
        return image, False, strength, f"cloak error: {type(error).__name__}: {error}", b""
    return cloaked_image, True, result.strength, "", preview
