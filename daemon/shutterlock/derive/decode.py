"""Decode any supported original into a Pillow image, refusing hostile input before it costs memory.

Every failure is a :class:`DeriveError` whose message is a short human reason that ends up in the
catalog and in ``status`` ("decompression bomb: … pixels > limit …", "truncated image data", …).
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from shutterlock.errors import ShutterlockError

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".hif", ".avif",
    ".gif", ".bmp", ".ico",
})
RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
    ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".mos", ".rwl", ".raw",
})
VIDEO_EXTENSIONS = frozenset({
    ".mov", ".mp4", ".m4v", ".avi", ".mts", ".m2ts", ".mkv", ".3gp", ".mpg", ".mpeg", ".wmv", ".webm",
})
SIDECAR_EXTENSIONS = frozenset({".xmp", ".aae", ".thm", ".pp3", ".dop", ".cos", ".json", ".txt", ".xml"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
HEIF_BRANDS = frozenset({b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif", b"ftyphevc"})

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_CREATE_DATE = 0x9004
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class DeriveError(ShutterlockError):
    """This original cannot be derived; the message is the reason recorded for it."""


@dataclass
class Decoded:
    """A decoded original: pixels plus the few facts the rest of the pipeline needs from its metadata."""

    image: Image.Image
    orientation: int  # EXIF orientation still to apply (1 = none)
    icc_profile: bytes | None
    capture_time: datetime | None  # from EXIF, naive camera-local time
    target_edge: int = 0  # the derivative's long edge: min(requested, the original's full-size long edge)
    full_edge: int = 0  # the original's full-size long edge (the camera's, for a RAW file)


def classify(path: Path) -> str:
    """``"image"``, ``"raw"``, ``"video"``, ``"sidecar"`` or ``"unknown"``, by extension (any case)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in SIDECAR_EXTENSIONS:
        return "sidecar"
    return "unknown"


def decode(path: Path, *, long_edge: int, max_pixels: int, draft_tolerance: float = 0.0,
           handle: BinaryIO | None = None, max_bytes: int = 1 << 30) -> Decoded:
    """Decode ``path`` at the smallest scale that still covers ``long_edge`` (JPEG draft, RAW preview).

    ``handle``: the file, already open (the confined worker may open no path); else ``path`` is opened.
    ``draft_tolerance``: how far (as a fraction) a JPEG's reduced decode may fall short of
    ``long_edge``; the shortfall is then made up by a slight upscale of the reduced decode (the
    result is still far below the original's resolution). 0 means the reduced decode must cover it.
    ``max_bytes``: see :func:`inspect`.
    """
    if handle is None:
        try:
            with path.open("rb") as opened:
                return decode(path, long_edge=long_edge, max_pixels=max_pixels, draft_tolerance=draft_tolerance,
                              handle=opened, max_bytes=max_bytes)
        except OSError as error:
            raise DeriveError(f"cannot read file: {error.strerror or error}") from None
    inspect(path, handle, max_bytes)
    return decode_inspected(path, handle, long_edge=long_edge, max_pixels=max_pixels,
                            draft_tolerance=draft_tolerance)


def inspect(path: Path, handle: BinaryIO, max_bytes: int) -> None:
    """Refuse what can be refused before any library parses the file: an empty file, one too large to be
    read whole (``max_bytes``: JPEG, mapped whole for the stream check; HEIF and RAW, whose libraries read
    the whole file into memory; every other format is read as it decodes, within ``max_pixels`` and the
    worker's memory limit), and a JPEG whose entropy-coded data is corrupt."""
    try:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(16)
        handle.seek(0)
    except OSError as error:
        raise DeriveError(f"cannot read file: {error.strerror or error}") from None
    if size == 0:
        raise DeriveError("empty file")
    jpeg = head.startswith(b"\xff\xd8")
    kind = "RAW" if classify(path) == "raw" else "HEIF" if _is_heif(path, head) else "JPEG" if jpeg else ""
    if kind and size > max_bytes:
        raise DeriveError(f"file too large: {size:,} bytes; a {kind} file is read whole, and the limit is "
                          f"{max_bytes:,} bytes (a quarter of [derive] memory_limit)")
    if jpeg and kind == "JPEG":
        # The stream check walks a read-only map of the file: the page cache holds it, not the heap.
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                problem = jpeg_stream_problem(data)
        except (OSError, ValueError) as error:
            if getattr(error, "errno", None) == errno.ENOMEM:
                raise DeriveError("out of memory while mapping the file") from None
            raise DeriveError(f"cannot read file: {error}") from None
        if problem:
            raise DeriveError(problem)


def decode_inspected(path: Path, handle: BinaryIO, *, long_edge: int, max_pixels: int,
                     draft_tolerance: float = 0.0) -> Decoded:
    """:func:`decode`, for a file :func:`inspect` has passed."""
    if classify(path) == "raw":
        return _decode_raw(handle, long_edge=long_edge, max_pixels=max_pixels)
    head = handle.read(16)
    handle.seek(0)
    if _is_heif(path, head):
        _register_heif()
    return _decode_pillow(handle, long_edge=long_edge, max_pixels=max_pixels, draft_tolerance=draft_tolerance)


def _is_heif(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in HEIF_EXTENSIONS or head[4:12] in HEIF_BRANDS


def _register_heif() -> None:
    """pillow-heif is imported only when a HEIF file shows up (it is a heavy native module)."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def _bomb(pixels: int, max_pixels: int) -> DeriveError:
    return DeriveError(f"decompression bomb: {pixels} pixels > limit {max_pixels}")


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb check uses a process-wide limit: set it to ours for one call, then restore it,
    and make its "over the limit" warning an error."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_checked(source: BinaryIO | Path, max_pixels: int) -> Image.Image:
    """Open (headers only) and refuse images over the pixel limit before anything is decoded.

    Pillow's own check (inside ``Image.open``) covers formats whose header it trusts; the explicit
    size check after it covers the rest.
    """
    try:
        with _pixel_limit(max_pixels):
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        match = _BOMB_PIXELS.search(str(error))
        if match:
            raise _bomb(int(match.group(1)), max_pixels) from None
        raise DeriveError(f"decompression bomb: over the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise DeriveError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as error:
        raise DeriveError(_reason(error)) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DeriveError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise _bomb(width * height, max_pixels)
    return image


def _decode_pillow(source: BinaryIO, *, long_edge: int, max_pixels: int,
                   draft_tolerance: float = 0.0) -> Decoded:
    image = open_checked(source, max_pixels)
    exif = _safe_exif(image)
    icc = image.info.get("icc_profile") or None
    full_edge = max(image.size)
    target_edge = min(long_edge, full_edge)
    if image.format == "JPEG":
        _draft(image, long_edge, draft_tolerance)
    try:
        with _pixel_limit(max_pixels):
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DeriveError(f"decompression bomb: over the limit of {max_pixels} pixels") from None
    except MemoryError:
        raise DeriveError("out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, RuntimeError, struct.error) as error:
        raise DeriveError(_reason(error)) from None
    return Decoded(image=image, orientation=_orientation(exif), icc_profile=icc,
                   capture_time=_capture_time(exif), target_edge=target_edge, full_edge=full_edge)


def _reason(error: BaseException) -> str:
    """Turn Pillow's and libjpeg's wording into a stable, specific reason."""
    text = str(error) or type(error).__name__
    lowered = text.lower()
    if "truncated" in lowered or isinstance(error, EOFError) or "premature end" in lowered:
        return "truncated image data"
    if "cannot identify" in lowered:
        return "not a recognised image format"
    if "broken data stream" in lowered or "corrupt" in lowered:
        return f"corrupt image data ({text})"
    return f"cannot decode: {text}"


def _draft(image: Image.Image, long_edge: int, tolerance: float) -> None:
    """Let libjpeg scale by 1/2, 1/4 or 1/8 while decoding (much faster) when the reduced image still
    covers the long edge, or falls short of it by no more than ``tolerance``."""
    width, height = image.size
    need = long_edge * (1.0 - max(0.0, tolerance))
    scale = next((s for s in (8, 4, 2) if -(-max(width, height) // s) >= need), 1)
    if scale == 1:
        return
    image.draft(image.mode if image.mode in ("RGB", "L") else None, (width // scale, height // scale))


def _safe_exif(image: Image.Image) -> Image.Exif | None:
    """Broken EXIF must never cost the derivative: treat unreadable EXIF as absent."""
    try:
        return image.getexif()
    except Exception:  # any parser failure means "no usable EXIF"
        return None


def _orientation(exif: Image.Exif | None) -> int:
    if exif is None:
        return 1
    try:
        value = int(exif.get(0x0112, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _capture_time(exif: Image.Exif | None) -> datetime | None:
    if exif is None:
        return None
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # broken sub-IFD: no date, not a failure
        return None
    for tag in (_DATETIME_ORIGINAL, _CREATE_DATE):
        parsed = parse_exif_datetime(sub.get(tag))
        if parsed is not None:
            return parsed
    return None


def parse_exif_datetime(value: object) -> datetime | None:
    """``"2024:05:17 10:11:12"`` (or dashes, trailing NULs, missing seconds) → datetime; junk → None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    match = re.match(r"\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?", value)
    if not match:
        return None
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    if not 1900 <= year <= 2200:
        return None
    try:
        return datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return None


def file_time(path: Path, handle: BinaryIO | None = None) -> datetime:
    """The fallback capture time: the file's mtime (now, if the file has vanished meanwhile)."""
    try:
        info = os.fstat(handle.fileno()) if handle is not None else os.stat(path)
        return datetime.fromtimestamp(info.st_mtime)
    except (OSError, ValueError, OverflowError):
        return datetime.now()


# --------------------------------------------------------------------------- JPEG stream check

# Markers that may legitimately follow a scan's entropy-coded data.
_AFTER_SCAN = frozenset(range(0xC0, 0xD0)) | frozenset(range(0xD8, 0xF0)) | {0xFE}


def jpeg_stream_problem(data: bytes) -> str | None:
    """Find corrupt entropy-coded data that libjpeg would silently paper over with grey garbage.

    Pillow does not surface libjpeg's "Corrupt JPEG data" warnings, so this walks the marker
    structure: inside a scan a 0xFF byte may only be stuffing (FF 00), fill, a restart marker in
    sequence, or a real marker ending the scan. It costs a few milliseconds per 10 MB.
    """
    n = len(data)
    pos = 2
    restart_interval = 0
    while pos + 1 < n:
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                return None
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 4 > n:
            return "truncated image data"
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return "truncated image data"
        if marker == 0xDD and length >= 4:
            restart_interval = int.from_bytes(data[pos + 4:pos + 6], "big")
        if marker != 0xDA:
            pos = end
            continue
        pos, problem = _scan_entropy(data, end, restart_interval)
        if problem:
            return problem
    return None


def _scan_entropy(data: bytes, pos: int, restart_interval: int) -> tuple[int, str | None]:
    n = len(data)
    expected = 0
    while True:
        index = data.find(b"\xff", pos)
        if index < 0 or index + 1 >= n:
            return n, "truncated image data"
        follower = data[index + 1]
        if follower == 0x00:
            pos = index + 2
        elif follower == 0xFF:
            pos = index + 1
        elif 0xD0 <= follower <= 0xD7:
            if restart_interval and follower - 0xD0 != expected:
                return n, (f"corrupt JPEG data: restart marker RST{follower - 0xD0} "
                           f"where RST{expected} was expected")
            expected = (expected + 1) % 8
            pos = index + 2
        elif follower in _AFTER_SCAN:
            return index, None
        else:
            return n, f"corrupt JPEG data: invalid marker 0x{follower:02X} inside the image data"


# --------------------------------------------------------------------------- RAW


def _decode_raw(handle: BinaryIO, *, long_edge: int, max_pixels: int) -> Decoded:
    """The embedded preview when it covers the long edge (fast, camera-rendered), else a demosaic."""
    try:
        import rawpy
    except ImportError:
        raise DeriveError("camera RAW support (rawpy) is not installed") from None
    try:
        raw = rawpy.imread(handle)
    except (rawpy.LibRawError, OSError, ValueError) as error:
        raise DeriveError(f"cannot decode camera RAW: {_raw_reason(error)}") from None
    with raw:
        sizes = raw.sizes
        pixels = int(sizes.raw_width) * int(sizes.raw_height)
        if pixels > max_pixels:
            raise _bomb(pixels, max_pixels)
        full_edge = max(int(sizes.width), int(sizes.height))
        preview = _raw_preview(raw, min(long_edge, full_edge), max_pixels)
        if preview is not None:
            if preview.capture_time is None:
                preview.capture_time = _raw_capture_time(handle)
            preview.full_edge = full_edge
            return preview
        try:
            half = full_edge // 2 >= long_edge
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)
        except (rawpy.LibRawError, MemoryError, ValueError) as error:
            raise DeriveError(f"cannot decode camera RAW: {_raw_reason(error)}") from None
    image = Image.fromarray(rgb, "RGB")
    return Decoded(image=image, orientation=1, icc_profile=None, capture_time=_raw_capture_time(handle),
                   target_edge=min(long_edge, max(image.size)), full_edge=full_edge)


def _raw_preview(raw: object, needed_edge: int, max_pixels: int) -> Decoded | None:
    import rawpy

    try:
        thumb = raw.extract_thumb()  # type: ignore[attr-defined]
    except (rawpy.LibRawError, ValueError, MemoryError):
        return None
    flip = {3: 3, 5: 8, 6: 6}.get(int(raw.sizes.flip), 1)  # type: ignore[attr-defined]
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            decoded = _decode_pillow(io.BytesIO(thumb.data), long_edge=needed_edge, max_pixels=max_pixels)
        except DeriveError:
            return None
        if decoded.orientation == 1:
            decoded.orientation = flip
    elif thumb.format == rawpy.ThumbFormat.BITMAP:
        image = Image.fromarray(thumb.data, "RGB")
        decoded = Decoded(image=image, orientation=flip, icc_profile=None, capture_time=None,
                          target_edge=min(needed_edge, max(image.size)))
    else:
        return None
    return decoded if decoded.target_edge >= needed_edge else None


def _raw_capture_time(handle: BinaryIO) -> datetime | None:
    """TIFF-based RAWs (DNG, NEF, ARW, …) carry EXIF that Pillow's TIFF reader can get at."""
    try:
        handle.seek(0)
        with Image.open(handle) as image:
            return _capture_time(image.getexif())
    except Exception:  # no readable EXIF: fall back to the file time
        return None


def _raw_reason(error: BaseException) -> str:
    """LibRaw's messages arrive as bytes reprs; name the two common cases plainly."""
    name = type(error).__name__
    if name == "LibRawFileUnsupportedError":
        return "unsupported format or not a camera RAW file"
    if name in ("LibRawIOError", "LibRawDataError"):
        return "unreadable or truncated RAW data"
    detail = error.args[0] if error.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return f"{name}: {detail}" if detail else name
