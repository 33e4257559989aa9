"""An independent reader (and feedback writer) of the share format, written from docs/SHARING.md only.

The tests use it to check what a link really gives access to, without going through the code that
wrote the share: if this and the browser both open a gallery, the document describes the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hkdf(ikm: bytes, salt: bytes, label: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, ("shutterlock-share/v1/" + label).encode()).derive(ikm)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read()


def open_box(key: bytes, kind: str, sid: str, name: str, blob: bytes, offset: int = 0) -> tuple[bytes, int]:
    magic, found, nonce, length = struct.unpack(">4sc12sI", blob[offset:offset + 21])
    assert magic == b"SLS1" and found == kind.encode()
    plain = AESGCM(key).decrypt(nonce, blob[offset + 21:offset + 21 + length],
                                b"SLS1" + kind.encode() + f"{sid}/{name}".encode())
    (size,) = struct.unpack(">I", plain[:4])
    assert not any(plain[4 + size:])
    return plain[4:4 + size], offset + 21 + length


@dataclass
class Opened:
    link: str
    sid: str
    page_url: str
    manifest: dict[str, Any]
    secret: bytes
    share_key: bytes

    def blob(self, ref: dict[str, str]) -> bytes:
        data = fetch(ref.get("u") or urljoin(self.page_url, ref["n"]))
        return open_box(hkdf(self.share_key, self.sid.encode(), "blob"), "B", self.sid, ref["n"], data)[0]


def page_config(page: bytes) -> dict[str, Any]:
    match = re.search(rb'<script id="share-config" type="application/json">(.*?)</script>', page, re.S)
    assert match, "no share-config in the page"
    config: dict[str, Any] = json.loads(match[1])
    return config


def open_link(link: str, password: str | None = None) -> Opened:
    page_url, _, fragment = link.partition("#")
    secret = b64d(parse_qs(fragment)["k"][0])
    config = page_config(fetch(page_url))
    sid = config["sid"]
    blob = fetch(urljoin(page_url, config["manifest"]))
    lock_data, offset = open_box(hkdf(secret, sid.encode(), "lock"), "L", sid, "m", blob)
    lock = json.loads(lock_data)
    ikm = secret
    if lock["password"]:
        assert password is not None
        import unicodedata

        ikm += hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFC", password).encode(), b64d(lock["salt"]),
                                   lock["iterations"], 32)
    share_key = hkdf(ikm, sid.encode(), "share")
    body, _ = open_box(hkdf(share_key, sid.encode(), "manifest"), "M", sid, "m", blob, offset)
    return Opened(link, sid, page_url, json.loads(body), secret, share_key)


def padme(length: int) -> int:
    exponent = length.bit_length() - 1
    mask = (1 << (exponent - exponent.bit_length())) - 1
    return (length + mask) & ~mask


def feedback_message(opened: Opened, message: dict[str, Any]) -> bytes:
    """What a viewer posts: encrypted to the share's feedback key, keyed with the link holder's secret."""
    fb = opened.manifest["feedback"]
    recipient = b64d(fb["key"])
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ephemeral_raw = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    shared = ephemeral.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), recipient))
    auth = hkdf(opened.share_key, opened.sid.encode(), "feedback-auth")
    key = HKDF(hashes.SHA256(), 32, ephemeral_raw + recipient,
               b"shutterlock-share/v1/feedback").derive(shared + auth)
    data = json.dumps(message).encode()
    framed = struct.pack(">I", len(data)) + data
    framed += bytes(max(1024, padme(len(framed))) - len(framed))
    nonce = os.urandom(12)
    return b"SLF1" + ephemeral_raw + nonce + AESGCM(key).encrypt(nonce, framed, b"SLF1" + opened.sid.encode())


def post_form(opened: Opened, key: str, body: bytes) -> int:
    """A real multipart POST of the share's feedback form, with the key chosen by the caller."""
    import urllib3

    fb = opened.manifest["feedback"]
    fields: dict[str, Any] = {**fb["post"]["fields"], "key": key, "file": ("blob", body)}
    return urllib3.PoolManager().request("POST", fb["post"]["url"], fields=fields).status


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
