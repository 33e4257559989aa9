"""The two sizes of a shared picture, both made from its protected derivative, never from the original.

The share size is the derivative's bytes unchanged (so its watermark, rights XMP and any signed
provenance survive). The grid thumbnail is a smaller re-encode of those same pixels that carries the
derivative's own XMP packet, so it keeps ``plus:DataMining`` too. Our own JPEGs are decoded here, in
the daemon, with a pixel limit; originals are only ever decoded by the derive worker.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shutterlock.derive.metadata import write_jpeg

THUMB_QUALITY = 80
MAX_PIXELS = 80_000_000  # a derivative is at most long_edge² (65535 px), far below this in practice


class ImageProblem(Exception):
    """A derivative cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class Prepared:
    full: bytes
    thumb: bytes
    width: int
    height: int
    thumb_width: int
    thumb_height: int


def prepare(derivative: Path, thumb_edge: int) -> Prepared:
    try:
        full = derivative.read_bytes()
    except OSError as error:
        raise ImageProblem(f"{derivative}: cannot read the derivative: {error.strerror or error}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(full)) as image:
                if image.format != "JPEG":
                    raise ImageProblem(f"{derivative}: not a JPEG derivative ({image.format})")
                if image.width * image.height > MAX_PIXELS:
                    raise ImageProblem(f"{derivative}: {image.width}x{image.height} is too large for a derivative")
                width, height = image.size
                xmp = image.info.get("xmp", b"")
                image.draft("RGB", (thumb_edge, thumb_edge))
                small = image.convert("RGB")
    except ImageProblem:
        raise
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageProblem(f"{derivative}: unreadable derivative: {error}") from None
    if not xmp:
        raise ImageProblem(f"{derivative}: the derivative has no rights metadata (XMP); it was not made by "
                           "Shutterlock's pipeline")
    small.thumbnail((thumb_edge, thumb_edge), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    write_jpeg(small, out, quality=THUMB_QUALITY, xmp=xmp if isinstance(xmp, bytes) else xmp.encode())
    return Prepared(full=full, thumb=out.getvalue(), width=width, height=height, thumb_width=small.width,
                    thumb_height=small.height)
