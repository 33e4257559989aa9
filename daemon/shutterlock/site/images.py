"""The images of the site: the protected derivative itself, and smaller renditions of it, each signed.

A derivative goes on the site only when it is provably protected: cloaked (unless the photographer
switched the cloak off) and carrying a valid manifest signed by *this* photographer's key that forbids
all four training and mining uses. Only then are its pixels decoded here, in the daemon: the bytes
are authenticated as our own output, not an untrusted file. Each smaller rendition gets the same
allow-list metadata as the derivative and its own signed manifest (resizing drops the original one).

Names are content-addressed (``img/<id>-<width>.jpg``, the id a hash of the derivative's bytes), so a
rendition made once is reused by every later build and never uploaded twice.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shutterlock.config import RightsConfig
from shutterlock.derive.metadata import build_xmp, data_mining_uri, write_jpeg
from shutterlock.fsutil import atomic_write_bytes
from shutterlock.provenance import TRUSTED, Credit, SigningIdentity, Treatment, sign_jpeg, verify_bytes

RENDITIONS = "1"  # bump when renditions are made differently, so new names replace the old files
WEB_QUALITY = 84


class LeftOut(Exception):
    """This derivative must not be published; the message says why."""


@dataclass(frozen=True)
class Rendition:
    path: str  # relative to the site root
    width: int
    height: int


@dataclass(frozen=True)
class Protection:
    """What the catalog knows about how a derivative was protected."""

    cloaked: bool
    cloak_strength: str
    cloak_off: bool  # the photographer switched the cloak off: an uncloaked derivative is then expected
    watermark: str = ""


def renditions(derivative: Path, out: Path, protection: Protection, *, identity: SigningIdentity,
               rights: RightsConfig, widths: tuple[int, ...]) -> tuple[Rendition, ...]:
    """Ascending sizes, the last the derivative itself; raises :class:`LeftOut` for anything unprotected."""
    if not protection.cloaked and not protection.cloak_off:
        raise LeftOut("not cloaked")
    try:
        data = derivative.read_bytes()
    except OSError as error:
        raise LeftOut(f"cannot read {derivative}: {error.strerror}") from None
    verdict = verify_bytes(data, anchor=identity.anchor_pem)
    if verdict.state != TRUSTED:
        detail = "; ".join(verdict.problems) or f"signed by {verdict.signer or 'someone else'}, not by your key"
        raise LeftOut(f"provenance {verdict.state}: {detail}")
    if not verdict.forbids_all:
        raise LeftOut("its manifest does not forbid every AI training and mining use")
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        width, height = image.size
        ident = hashlib.blake2b(data + RENDITIONS.encode(), digest_size=10).hexdigest()
        made = []
        for target in sorted(w for w in set(widths) if w < width):
            rendition = Rendition(f"img/{ident}-{target}.jpg", target, max(1, round(height * target / width)))
            if not (out / rendition.path).exists():
                _make(image, rendition, out, protection, verdict.creator, verdict.copyright, identity, rights)
            made.append(rendition)
    full = Rendition(f"img/{ident}-{width}.jpg", width, height)
    if not (out / full.path).exists():
        atomic_write_bytes(out / full.path, data, mode=0o644)
    return (*made, full)


def _make(image: Image.Image, rendition: Rendition, out: Path, protection: Protection, creator: str,
          copyright_text: str, identity: SigningIdentity, rights: RightsConfig) -> None:
    small = image.convert("RGB").resize((rendition.width, rendition.height), Image.Resampling.LANCZOS,
                                        reducing_gap=3.0)
    buffer = io.BytesIO()
    xmp = build_xmp(rights, creator=creator, copyright_text=copyright_text)
    write_jpeg(small, buffer, quality=WEB_QUALITY, xmp=xmp)
    treatment = Treatment(resized_to=max(rendition.width, rendition.height),
                          cloak_strength=protection.cloak_strength if protection.cloaked else "",
                          watermark=protection.watermark)
    credit = Credit(creator=creator, copyright=copyright_text, web_statement=rights.web_statement,
                    data_mining=data_mining_uri(rights.data_mining))
    signed = sign_jpeg(buffer.getvalue(), identity, treatment, credit)
    if verify_bytes(signed, anchor=identity.anchor_pem).state != TRUSTED:
        raise LeftOut(f"the signed {rendition.width} px rendition does not verify")
    atomic_write_bytes(out / rendition.path, signed, mode=0o644)
