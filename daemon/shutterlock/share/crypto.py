"""The share's cryptography (docs/SHARING.md is its specification; keep the two in step).

Everything here must be reproducible with the browser's WebCrypto alone, which is why it uses
AES-256-GCM, HKDF-SHA256, PBKDF2-HMAC-SHA256 and ECDH on P-256 rather than libsodium's
primitives: the viewer decrypts and encrypts with exactly these, and nothing else runs there.

- A share has a 32-byte link secret ``S`` that travels only in the URL fragment.
- ``S`` (with a password: ``S`` and the PBKDF2 output together) gives the share key, from which
  the manifest and blob keys are derived with HKDF, each bound to the share id.
- Every stored object is a sealed box (magic, kind, nonce, length, AES-GCM ciphertext) whose
  additional data names the share and the object, so the host cannot swap objects around.
- Plaintexts are framed with their length and padded (Padmé) so sizes say little.
- Client feedback is encrypted to a per-share P-256 key whose private half never leaves this
  machine, and keyed with a secret only link holders have, so it is both private and authentic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
BOX_MAGIC = b"SLS1"
FEEDBACK_MAGIC = b"SLF1"
BOX_HEADER = struct.Struct(">4sc12sI")  # magic, kind, nonce, ciphertext length
KIND_LOCK, KIND_MANIFEST, KIND_BLOB = b"L", b"M", b"B"
LOCK_MIN = 256  # every lock pads to this, so a password-protected share looks like any other
MANIFEST_MIN = 4096
FEEDBACK_MIN = 1024
POINT_BYTES = 65  # an uncompressed P-256 point
PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
LABEL = "shutterlock-share/v1/"


class CryptoError(Exception):
    """A box or a feedback message failed to parse or authenticate."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hkdf(ikm: bytes, salt: bytes, label: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, (LABEL + label).encode()).derive(ikm)


def password_bytes(password: str) -> bytes:
    """NFC so that the same password typed on a Mac and on a phone gives the same key."""
    return unicodedata.normalize("NFC", password).encode("utf-8")


def stretch_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password_bytes(password), salt, iterations, 32)


# --------------------------------------------------------------------------- padding and framing


def padme(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): at most 12 % overhead, leaks O(log log n) bits of the size."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    size_bits = exponent.bit_length()
    mask = (1 << (exponent - size_bits)) - 1
    return (length + mask) & ~mask


def frame(data: bytes, minimum: int = 0) -> bytes:
    """u32 length, the data, zeros up to the padded size."""
    framed = struct.pack(">I", len(data)) + data
    return framed + bytes(max(minimum, padme(len(framed))) - len(framed))


def unframe(padded: bytes) -> bytes:
    if len(padded) < 4:
        raise CryptoError("framed plaintext too short")
    (length,) = struct.unpack(">I", padded[:4])
    if length > len(padded) - 4 or any(padded[4 + length:]):
        raise CryptoError("bad framing or padding")
    return padded[4:4 + length]


# --------------------------------------------------------------------------- boxes


def box_ad(kind: bytes, sid: str, name: str) -> bytes:
    return BOX_MAGIC + kind + f"{sid}/{name}".encode()


def seal_box(key: bytes, kind: bytes, sid: str, name: str, data: bytes, minimum: int = 0) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, frame(data, minimum), box_ad(kind, sid, name))
    return BOX_HEADER.pack(BOX_MAGIC, kind, nonce, len(ciphertext)) + ciphertext


# --------------------------------------------------------------------------- share keys


@dataclass(frozen=True)
class Lock:
    """What the viewer must know before it can derive the share key: is there a password, and how to stretch it."""

    password: bool
    salt: bytes = b""
    iterations: int = 0

    def to_json(self) -> bytes:
        if not self.password:
            return b'{"v":1,"password":false}'
        return json.dumps({"v": 1, "password": True, "kdf": "pbkdf2-sha256", "iterations": self.iterations,
                           "salt": b64url(self.salt)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Lock:
        raw = json.loads(data)
        if raw.get("v") != 1:
            raise CryptoError("unknown lock version")
        if not raw["password"]:
            return cls(False)
        if raw.get("kdf") != "pbkdf2-sha256":
            raise CryptoError(f"unknown password KDF {raw.get('kdf')!r}")
        return cls(True, unb64url(raw["salt"]), int(raw["iterations"]))


@dataclass(frozen=True)
class ShareKeys:
    """The keys of one share, all derived from the link secret (and the password, when there is one)."""

    sid: str
    secret: bytes  # S: in the fragment only
    share_key: bytes  # from S (and the password); never stored anywhere but the sealed catalog row
    lock: Lock

    @classmethod
    def new(cls, sid: str, password: str | None, iterations: int = PBKDF2_ITERATIONS) -> ShareKeys:
        secret = os.urandom(SECRET_BYTES)
        lock = Lock(True, os.urandom(16), iterations) if password else Lock(False)
        return cls(sid, secret, share_key_for(sid, secret, lock, password), lock)

    @property
    def lock_key(self) -> bytes:
        return hkdf(self.secret, self.sid.encode(), "lock")

    @property
    def manifest_key(self) -> bytes:
        return hkdf(self.share_key, self.sid.encode(), "manifest")

    @property
    def blob_key(self) -> bytes:
        return hkdf(self.share_key, self.sid.encode(), "blob")

    @property
    def feedback_auth(self) -> bytes:
        return hkdf(self.share_key, self.sid.encode(), "feedback-auth")

    @property
    def fragment(self) -> str:
        return "k=" + b64url(self.secret)


def share_key_for(sid: str, secret: bytes, lock: Lock, password: str | None) -> bytes:
    if not lock.password:
        return hkdf(secret, sid.encode(), "share")
    if password is None:
        raise CryptoError("this share needs its password")
    return hkdf(secret + stretch_password(password, lock.salt, lock.iterations), sid.encode(), "share")


def seal_manifest(keys: ShareKeys, manifest: dict[str, Any]) -> bytes:
    """The manifest object: the lock box (key from S alone), then the manifest box (share key)."""
    body = json.dumps(manifest, ensure_ascii=False, separators=(",", ":")).encode()
    return (seal_box(keys.lock_key, KIND_LOCK, keys.sid, "m", keys.lock.to_json(), LOCK_MIN)
            + seal_box(keys.manifest_key, KIND_MANIFEST, keys.sid, "m", body, MANIFEST_MIN))


def seal_blob(keys: ShareKeys, name: str, data: bytes) -> bytes:
    return seal_box(keys.blob_key, KIND_BLOB, keys.sid, name, data)


# --------------------------------------------------------------------------- feedback


def new_feedback_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_point(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private(data: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(data, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError("not a P-256 private key")
    return key


def feedback_key(shared: bytes, auth: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, ephemeral + recipient, (LABEL + "feedback").encode()).derive(shared + auth)


def open_feedback(private: ec.EllipticCurvePrivateKey, auth: bytes, sid: str, blob: bytes) -> bytes:
    """Decrypt one client's message: only this machine has ``private``, only link holders have ``auth``."""
    head = len(FEEDBACK_MAGIC) + POINT_BYTES + NONCE_BYTES
    if len(blob) < head + TAG_BYTES or not blob.startswith(FEEDBACK_MAGIC):
        raise CryptoError("not a feedback message")
    ephemeral = blob[4:4 + POINT_BYTES]
    nonce = blob[4 + POINT_BYTES:head]
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ephemeral)
        shared = private.exchange(ec.ECDH(), peer)
    except ValueError:
        raise CryptoError("bad ephemeral key") from None
    key = feedback_key(shared, auth, ephemeral, public_point(private))
    try:
        padded = AESGCM(key).decrypt(nonce, blob[head:], FEEDBACK_MAGIC + sid.encode())
    except InvalidTag:
        raise CryptoError("authentication failed") from None
    return unframe(padded)
