"""The master key: created once, wrapped by the passphrase, unwrapped unattended from a key file.

The passphrase never touches disk. The envelope (master key encrypted under an Argon2id key)
is safe to store next to the data, in the vault and in the bucket; the key file (the raw
master key, owner-only) lets the daemon start without a human.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash

from shutterlock.config import Credential, Paths
from shutterlock.errors import KeyProblem
from shutterlock.fsutil import atomic_write_bytes

ENVELOPE_VERSION = 1
KEY_BYTES = 32
ENVELOPE_AD = b"shutterlock/v1/key-envelope"


@dataclass(frozen=True)
class Envelope:
    """The wrapped master key and everything needed to unwrap it with the passphrase."""

    salt: bytes
    opslimit: int
    memlimit: int
    nonce: bytes
    wrapped: bytes

    def to_json(self) -> bytes:
        b64 = base64.b64encode
        return json.dumps({
            "version": ENVELOPE_VERSION,
            "kdf": "argon2id13",
            "opslimit": self.opslimit,
            "memlimit": self.memlimit,
            "salt": b64(self.salt).decode(),
            "aead": "xchacha20poly1305-ietf",
            "nonce": b64(self.nonce).decode(),
            "wrapped_key": b64(self.wrapped).decode(),
        }, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, origin: str) -> Envelope:
        try:
            raw = json.loads(data)
            if raw.get("version") != ENVELOPE_VERSION or raw.get("kdf") != "argon2id13":
                raise KeyProblem(f"{origin}: unsupported key envelope (version {raw.get('version')!r})")
            return cls(salt=base64.b64decode(raw["salt"]), opslimit=int(raw["opslimit"]),
                       memlimit=int(raw["memlimit"]), nonce=base64.b64decode(raw["nonce"]),
                       wrapped=base64.b64decode(raw["wrapped_key"]))
        except (ValueError, KeyError, TypeError) as error:
            raise KeyProblem(f"{origin}: key envelope is damaged: {error}") from None


def _kek(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def wrap(master: bytes, passphrase: bytes, *, opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
         memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE) -> Envelope:
    if not passphrase:
        raise KeyProblem("the passphrase is empty")
    salt = secrets.token_bytes(nacl.pwhash.argon2id.SALTBYTES)
    nonce = secrets.token_bytes(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    kek = _kek(passphrase, salt, opslimit, memlimit)
    wrapped = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(master, ENVELOPE_AD, nonce, kek)
    return Envelope(salt=salt, opslimit=opslimit, memlimit=memlimit, nonce=nonce, wrapped=wrapped)


def unwrap(envelope: Envelope, passphrase: bytes) -> bytes:
    kek = _kek(passphrase, envelope.salt, envelope.opslimit, envelope.memlimit)
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(envelope.wrapped, ENVELOPE_AD, envelope.nonce,
                                                                   kek)
    except nacl.exceptions.CryptoError:
        raise KeyProblem("wrong passphrase (the key envelope did not open)") from None


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
