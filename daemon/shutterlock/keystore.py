"""The master key: created once, wrapped by the passphrase, unwrapped unattended from a key file.

The passphrase never touches disk. The envelope (master key encrypted under an Argon2id key)
is safe to store next to the data, in the vault and in the bucket; the key file (the raw
master key, owner-only) lets the daemon start without a human.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import struct
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.hashlib
import nacl.pwhash

from shutterlock.config import Credential, Paths
from shutterlock.errors import KeyProblem
from shutterlock.fsutil import atomic_write_bytes
from shutterlock.vault.format import Keys

ENVELOPE_VERSION = 2
KEY_BYTES = 32
ENVELOPE_AD_V1 = b"shutterlock/v1/key-envelope"
ENVELOPE_AD_V2 = b"shutterlock/v2/key-envelope"

@dataclass(frozen=True)
class Envelope:
    """The wrapped master key and everything needed to unwrap it with the passphrase.

    Version 2 adds a generation (one more on every re-wrap) and its creation time to the authenticated
    data, and a MAC under a key derived from the master key, so a daemon that holds the key but not the
    passphrase can tell a newer envelope of its own key from an older or a foreign one.
    """

    salt: bytes
    opslimit: int
    memlimit: int
    nonce: bytes
    wrapped: bytes
    version: int = ENVELOPE_VERSION
    generation: int = 0
    created_at: int = 0
    key_id: str = ""
    mac: bytes = b""

    @property
    def ad(self) -> bytes:
        if self.version == 1:
            return ENVELOPE_AD_V1
        return ENVELOPE_AD_V2 + struct.pack(">QQ", self.generation, self.created_at)

    def mac_for(self, keys: Keys) -> bytes:
        message = self.ad + self.salt + self.nonce + self.wrapped + bytes.fromhex(self.key_id) + \
            struct.pack(">QQ", self.opslimit, self.memlimit)
        return nacl.hashlib.blake2b(message, digest_size=32, key=keys.envelope_mac).digest()

    def vouched_by(self, keys: Keys) -> bool:
        """True when this envelope wraps the master key of ``keys`` (checked without the passphrase)."""
        return self.version == 2 and self.key_id == keys.key_id and hmac.compare_digest(self.mac, self.mac_for(keys))

    def to_json(self) -> bytes:
        b64 = base64.b64encode
        fields: dict[str, object] = {
            "version": self.version,
            "kdf": "argon2id13",
            "opslimit": self.opslimit,
            "memlimit": self.memlimit,
            "salt": b64(self.salt).decode(),
            "aead": "xchacha20poly1305-ietf",
            "nonce": b64(self.nonce).decode(),
            "wrapped_key": b64(self.wrapped).decode(),
        }
        if self.version == 2:
            fields |= {"generation": self.generation, "created_at": self.created_at, "key_id": self.key_id,
                       "mac": b64(self.mac).decode()}
        return json.dumps(fields, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, origin: str) -> Envelope:
        try:
            raw = json.loads(data)
            version = raw.get("version")
            if version not in (1, 2) or raw.get("kdf") != "argon2id13":
                raise KeyProblem(f"{origin}: unsupported key envelope (version {version!r})")
            extra: dict[str, object] = {}
            if version == 2:
                extra = {"generation": int(raw["generation"]), "created_at": int(raw["created_at"]),
                         "key_id": str(raw["key_id"]), "mac": base64.b64decode(raw["mac"], validate=True)}
                bytes.fromhex(str(raw["key_id"]))
            return cls(salt=base64.b64decode(raw["salt"]), opslimit=int(raw["opslimit"]),
                       memlimit=int(raw["memlimit"]), nonce=base64.b64decode(raw["nonce"]),
                       wrapped=base64.b64decode(raw["wrapped_key"]), version=version, **extra)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise KeyProblem(f"{origin}: key envelope is damaged: {error}") from None


def normalise(passphrase: bytes) -> bytes:
    """NFC, so the same passphrase typed on another system (which may compose accents differently) still
    opens the envelope; bytes that are not UTF-8 are used as they are."""
    try:
        return unicodedata.normalize("NFC", passphrase.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return passphrase


def _kek(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def wrap(master: bytes, passphrase: bytes, *, generation: int = 1,
         opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
         memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE) -> Envelope:
    if not passphrase:
        raise KeyProblem("the passphrase is empty")
    salt = secrets.token_bytes(nacl.pwhash.argon2id.SALTBYTES)
    nonce = secrets.token_bytes(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    keys = Keys.from_master(master)
    unsigned = Envelope(salt=salt, opslimit=opslimit, memlimit=memlimit, nonce=nonce, wrapped=b"",
                        generation=generation, created_at=int(time.time()), key_id=keys.key_id)
    kek = _kek(normalise(passphrase), salt, opslimit, memlimit)
    wrapped = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(master, unsigned.ad, nonce, kek)
    envelope = replace(unsigned, wrapped=wrapped)
    return replace(envelope, mac=envelope.mac_for(keys))


def unwrap(envelope: Envelope, passphrase: bytes) -> bytes:
    """The master key; the passphrase as typed is tried too, for envelopes written before normalisation."""
    for candidate in dict.fromkeys((normalise(passphrase), passphrase)):
        kek = _kek(candidate, envelope.salt, envelope.opslimit, envelope.memlimit)
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(envelope.wrapped, envelope.ad, envelope.nonce,
                                                                       kek)
        except nacl.exceptions.CryptoError:
            continue
    raise KeyProblem("wrong passphrase (the key envelope did not open)")


def new_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def read_passphrase_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyProblem(f"{path}: cannot read passphrase file: {error.strerror}") from None
    passphrase = data.rstrip(b"\r\n")
    if not passphrase:
        raise KeyProblem(f"{path}: passphrase file is empty")
    return passphrase


def write_key_file(path: Path, master: bytes) -> None:
    atomic_write_bytes(path, base64.b64encode(master) + b"\n", mode=0o600)


def _decode_key(data: bytes, origin: str) -> bytes:
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyProblem(f"{origin}: not a Shutterlock key file")
    return key


def read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyProblem(f"no key file at {path}: run `shutterlock init` (or `shutterlock recover`)") from None
    if os.name == "posix" and info.st_mode & 0o077:
        raise KeyProblem(f"{path}: key file is readable by others (mode {info.st_mode & 0o777:o}); "
                        f"run `chmod 600 {path}`")
    try:
        return _decode_key(path.read_bytes(), str(path))
    except OSError as error:
        raise KeyProblem(f"{path}: cannot read key file: {error.strerror}") from None


def write_envelope(path: Path, envelope: Envelope) -> None:
    atomic_write_bytes(path, envelope.to_json(), mode=0o600)


def read_envelope(path: Path) -> Envelope:
    try:
        return Envelope.from_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise KeyProblem(f"no key envelope at {path}: run `shutterlock init`") from None


def load_master_key(paths: Paths) -> bytes:
    """Unattended start: systemd credentials first (key, then passphrase), then the key file."""
    credential = paths.credential(Credential.MASTER_KEY)
    if credential is not None:
        return _decode_key(credential.read_bytes(), str(credential))
    credential = paths.credential(Credential.PASSPHRASE)
    if credential is not None:
        return unwrap(read_envelope(paths.envelope_file), read_passphrase_file(credential))
    return read_key_file(paths.key_file)


@dataclass(frozen=True)
class EnvelopeCopies:
    """Which copy of the key envelope wins, and which copies must be rewritten with it."""

    winner: bytes
    stale: list[str]  # places (keys of the ``copies`` given) that are missing, damaged or older
    problem: str = ""  # why a newer-looking copy was left alone, or ""


def reconcile_envelopes(copies: dict[str, bytes | None], keys: Keys) -> EnvelopeCopies:
    """The copy with the highest generation that this key vouches for wins (docs/FORMAT.md section 2).

    Version 1 copies carry no MAC and count as generation 0. A newer copy this key does not vouch for (a
    key rotated on another machine, or something planted) is never overwritten, only reported: an old
    machine must not put its older envelope back over a newer one.
    """
    parsed: dict[str, Envelope | None] = {}
    for place, data in copies.items():
        try:
            parsed[place] = Envelope.from_json(data, place) if data is not None else None
        except KeyProblem:
            parsed[place] = None
    good = {place: env for place, env in parsed.items() if env is not None and (env.version == 1
                                                                               or env.vouched_by(keys))}
    if not good:
        raise KeyProblem("no copy of the key envelope belongs to this key: " + ", ".join(copies))
    best = max(good, key=lambda place: good[place].generation)  # type: ignore[union-attr]
    top = good[best].generation  # type: ignore[union-attr]
    stale, problems = [], []
    for place, env in parsed.items():
        if env is None:
            stale.append(place)
        elif place in good:
            if env.generation < top:
                stale.append(place)  # equal generations that differ (two re-wraps at once) are both left
        elif env.generation > top:
            problems.append(f"the key envelope in {place} (generation {env.generation}) is newer than this "
                            f"key's (generation {top}) and does not wrap this key; left as it is")
        else:
            stale.append(place)
    return EnvelopeCopies(winner=copies[best], stale=stale, problem="; ".join(problems))  # type: ignore[arg-type]
