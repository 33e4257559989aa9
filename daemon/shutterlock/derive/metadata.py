"""Metadata written from scratch: an allow-list, not a scrub of the original's.

A derivative is a fresh JPEG of fresh pixels. It carries exactly: the JFIF header Pillow writes,
one sRGB ICC profile and one XMP packet with the rights statement. Nothing is copied from the
original, so EXIF, GPS, maker notes, serials, thumbnails, MPF, IPTC IIM, Photoshop resources,
comments, XMP history and face regions cannot leak whatever the original contained.
"""

from __future__ import annotations

import re
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


def write_jpeg(image: Image.Image, target: BinaryIO, *, quality: int, xmp: bytes) -> None:
    """Encode with nothing but JFIF, the sRGB profile and ``xmp``.

    ``image.info`` is cleared first: Pillow's JPEG writer falls back to it for the comment.
    """
    image.info = {}
    image.save(target, "JPEG", quality=quality, optimize=False, progressive=False,
               icc_profile=srgb_icc_bytes(), xmp=xmp)
