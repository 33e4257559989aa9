"""Metadata written from scratch: an allow-list, not a scrub of the original's.

A derivative is a fresh JPEG of fresh pixels. It carries exactly: the JFIF header Pillow writes, one
sRGB ICC profile, one XMP packet with the rights statement, and — for sites that read only those — the
creator and copyright again in EXIF (IFD0 Artist, Copyright) and IPTC-IIM (By-line, CopyrightNotice), plus
the capture date only when the user keeps it. Nothing is copied from the original, so GPS, maker notes,
serials, thumbnails, MPF, Photoshop resources, comments, XMP history and face regions cannot leak.
"""

from __future__ import annotations

import re
import struct
from datetime import datetime
from typing import BinaryIO
from xml.sax.saxutils import escape

from PIL import Image

from shutterlock.config import RightsConfig

from .look import srgb_icc_bytes

PLUS_VOCAB = "http://ns.useplus.org/ldf/vocab/"
# XML 1.0 forbids most C0 controls even when escaped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def data_mining_uri(value: str) -> str:
    return value if value.startswith("http") else PLUS_VOCAB + value


def _text(value: str) -> str:
    return escape(_XML_INVALID.sub("", value), {'"': "&quot;"})


def _lang_alt(tag: str, value: str) -> str:
    return (f"   <{tag}>\n    <rdf:Alt>\n     <rdf:li xml:lang=\"x-default\">{_text(value)}</rdf:li>\n"
            f"    </rdf:Alt>\n   </{tag}>\n")


def copyright_notice(rights: RightsConfig, year: int) -> str:
    """``[rights] copyright``, or "© YEAR CREATOR" when only a creator is set (the XMP and the manifest agree)."""
    if rights.copyright.strip() or not rights.creator.strip():
        return rights.copyright.strip()
    return f"© {year} {rights.creator.strip()}"


def build_xmp(rights: RightsConfig, *, creator: str | None = None,
              copyright_text: str | None = None) -> bytes:
    """One rights packet: dc:creator, dc:rights, xmpRights:Marked and WebStatement, plus:DataMining and
    plus:OtherConstraints. ``creator``/``copyright_text`` override the config's values when given."""
    creator = (rights.creator if creator is None else creator).strip()
    copyright_text = (rights.copyright if copyright_text is None else copyright_text).strip()
    body = ""
    if creator:
        body += (f"   <dc:creator>\n    <rdf:Seq>\n     <rdf:li>{_text(creator)}</rdf:li>\n"
                 f"    </rdf:Seq>\n   </dc:creator>\n")
    if copyright_text:
        body += _lang_alt("dc:rights", copyright_text)
    body += "   <xmpRights:Marked>True</xmpRights:Marked>\n"
    if rights.web_statement.strip():
        body += f"   <xmpRights:WebStatement>{_text(rights.web_statement.strip())}</xmpRights:WebStatement>\n"
    body += f"   <plus:DataMining>{_text(data_mining_uri(rights.data_mining))}</plus:DataMining>\n"
    if rights.other_constraints.strip():
        body += _lang_alt("plus:OtherConstraints", rights.other_constraints.strip())
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/"\n'
        '    xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">\n'
        f"{body}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


EXIF_ARTIST, EXIF_COPYRIGHT, EXIF_IFD, EXIF_DATE_ORIGINAL = 0x013B, 0x8298, 0x8769, 0x9003


def build_exif(creator: str, copyright_text: str, capture: datetime | None) -> bytes:
    """IFD0 Artist and Copyright (ASCII by the standard: non-ASCII letters are kept as UTF-8, which every
    reader we know of shows correctly), and DateTimeOriginal only when ``capture`` is given."""
    exif = Image.Exif()
    if creator:
        exif[EXIF_ARTIST] = creator.encode()  # bytes: Pillow would turn non-ASCII letters into "?"
    if copyright_text:
        exif[EXIF_COPYRIGHT] = copyright_text.encode()
    if capture is not None:
        exif.get_ifd(EXIF_IFD)[EXIF_DATE_ORIGINAL] = capture.strftime("%Y:%m:%d %H:%M:%S")
    return exif.tobytes() if len(exif) or capture is not None else b""


def build_iptc(creator: str, copyright_text: str) -> bytes:
    """An APP13 segment with one IPTC-IIM block (Photoshop resource 0x0404): UTF-8, By-line, CopyrightNotice."""
    if not creator and not copyright_text:
        return b""

    def dataset(record: int, number: int, value: bytes) -> bytes:
        return struct.pack(">BBBH", 0x1C, record, number, len(value)) + value

    iim = dataset(1, 90, b"\x1b%G") + dataset(2, 0, b"\x00\x04")  # coded character set UTF-8; version 4
    if creator:
        iim += dataset(2, 80, _cut(creator, 32))  # the IIM limits, cut on a character boundary
    if copyright_text:
        iim += dataset(2, 116, _cut(copyright_text, 128))
    iim += b"\x00" * (len(iim) % 2)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    body = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def _cut(text: str, limit: int) -> bytes:
    return text.encode()[:limit].decode(errors="ignore").encode()


def write_jpeg(image: Image.Image, target: BinaryIO, *, quality: int, xmp: bytes, exif: bytes = b"",
               iptc: bytes = b"") -> None:
    """Encode with nothing but JFIF, the sRGB profile, ``xmp`` and the given EXIF and IPTC blocks.

    ``image.info`` is cleared first: Pillow's JPEG writer falls back to it for the comment.
    """
    image.info = {}
    image.save(target, "JPEG", quality=quality, optimize=False, progressive=False,
               icc_profile=srgb_icc_bytes(), xmp=xmp, exif=exif, extra=iptc)
