"""Star ratings, for sources that make derivatives only of the keepers (``derive_min_rating``).

Read from the image's own XMP (``xmp:Rating``) or EXIF (Rating, 0x4746), and from an XMP sidecar next to
it (what Lightroom, Capture One and darktable write for RAW files; it wins, being the newer word). This
runs in the worker process: the files are untrusted, so the XMP is matched, not parsed by an XML engine,
and only the first 256 KB are looked at.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from PIL import Image

XMP_RATING = re.compile(rb"xmp:Rating(?:=[\"']|>)\s*(-?\d+)")
EXIF_RATING = 0x4746
SCAN_BYTES = 256 * 1024


def rating(original: BinaryIO, sidecar: BinaryIO | None = None) -> int | None:
    """The rating (−1 rejected, 0 unrated … 5 stars), or None when nothing says. Both files are open
    already (the worker may open no path); the original is left at its start, for the decoder."""
    if sidecar is not None:
        found = _from_xmp(_head(sidecar))
        if found is not None:
            return found
    try:
        with Image.open(original) as image:  # reads the header only; no pixels are decoded
            found = _from_xmp(image.info.get("xmp") or b"")
            if found is None:
                value = image.getexif().get(EXIF_RATING)
                found = int(value) if isinstance(value, int) else None
    except Exception:  # a RAW Pillow cannot open, or a broken file: the decode step reports the latter
        found = _from_xmp(_head(original))
    original.seek(0)
    return found


def _head(handle: BinaryIO) -> bytes:
    try:
        handle.seek(0)
        return handle.read(SCAN_BYTES)
    except OSError:
        return b""


def _from_xmp(data: bytes | str) -> int | None:
    match = XMP_RATING.search(data.encode() if isinstance(data, str) else data)
    return int(match.group(1)) if match else None
