"""QR codes of a share's link: a PNG to send, an SVG to print, and a rendering for the terminal.

The code holds the whole link, key fragment included, so the files are as secret as the link:
written atomically, owner-only. Error correction M survives a crease or a smudge on a print and
keeps a presigned link (about 450 characters) scannable by any phone camera.
"""

from __future__ import annotations

import io
from pathlib import Path

import segno

from shutterlock.fsutil import atomic_write_bytes

SCALE = 8
BORDER = 4


def _code(link: str) -> segno.QRCode:
    return segno.make(link, error="m", micro=False)


def write(link: str, directory: Path, stem: str) -> tuple[Path, Path]:
    code = _code(link)
    paths = directory / f"{stem}.qr.png", directory / f"{stem}.qr.svg"
    for path, kind in zip(paths, ("png", "svg"), strict=True):
        out = io.BytesIO()
        code.save(out, kind=kind, scale=SCALE, border=BORDER, dark="#000", light="#fff")
        atomic_write_bytes(path, out.getvalue(), mode=0o600)
    return paths


def terminal(link: str) -> str:
    """Half blocks, one module wide and two high per cell: a presigned link (version 15) is 81 columns wide."""
    out = io.StringIO()
    _code(link).terminal(out=out, compact=True, border=2)
    return out.getvalue()
