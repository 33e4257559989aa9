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
from shutterlock.vault.format import FormatError, Keys, open_blob, seal_blob

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


def write_key_file(path: Path, master: bytes, retired: tuple[bytes, ...] = ()) -> None:
    """One base64 key per line: the current master key first, then keys a rotation is replacing."""
    atomic_write_bytes(path, b"".join(base64.b64encode(key) + b"\n" for key in (master, *retired)), mode=0o600)


def _decode_key(data: bytes, origin: str) -> bytes:
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyProblem(f"{origin}: not a Shutterlock key file")
    return key


def read_key_file(path: Path) -> bytes:
    return read_key_ring(path)[0]


def read_key_ring(path: Path) -> tuple[bytes, ...]:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyProblem(f"no key file at {path}: run `shutterlock init` (or `shutterlock recover`)") from None
    if os.name == "posix" and info.st_mode & 0o077:
        raise KeyProblem(f"{path}: key file is readable by others (mode {info.st_mode & 0o777:o}); "
                        f"run `chmod 600 {path}`")
    try:
        lines = path.read_bytes().split()
    except OSError as error:
        raise KeyProblem(f"{path}: cannot read key file: {error.strerror}") from None
    if not lines:
        raise KeyProblem(f"{path}: not a Shutterlock key file")
    return tuple(_decode_key(line, str(path)) for line in lines)


def write_envelope(path: Path, envelope: Envelope) -> None:
    atomic_write_bytes(path, envelope.to_json(), mode=0o600)


def read_envelope(path: Path) -> Envelope:
    try:
        return Envelope.from_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise KeyProblem(f"no key envelope at {path}: run `shutterlock init`") from None


def load_master_key(paths: Paths) -> bytes:
    return load_keys(paths)[0]


def load_keys(paths: Paths) -> tuple[bytes, ...]:
    """Unattended start: systemd credentials first (key, then passphrase), then the key file. The current
    master key first, then the retired ones of an unfinished rotation."""
    settle_rotation(paths)
    credential = paths.credential(Credential.MASTER_KEY)
    if credential is not None:
        return (_decode_key(credential.read_bytes(), str(credential)),)
    credential = paths.credential(Credential.PASSPHRASE)
    if credential is not None:
        master = unwrap(read_envelope(paths.envelope_file), read_passphrase_file(credential))
        return (master, *read_retired(paths.retired_keys, Keys.from_master(master)))
    return read_key_ring(paths.key_file)


# --------------------------------------------------------------------------- key rotation
#
# The commit point of a rotation is the key file: written with the new key first and the old one after it.
# Before it, the new envelope waits beside the current one (``.next``) and the retired-keys blob (the old
# key, sealed under the new one, so the new passphrase alone reaches both) is written; after it, the new
# envelope takes the current one's place. A crash anywhere leaves the old key in use, or the new one with
# everything it needs; :func:`settle_rotation` finishes or undoes the half-done step at the next start.

RETIRED_LABEL = b"retired-keys"


def next_envelope(paths: Paths) -> Path:
    return paths.envelope_file.with_name(paths.envelope_file.name + ".next")


def seal_retired(keys: Keys, retired: tuple[bytes, ...], generation: int) -> bytes:
    return seal_blob(keys.catalog, b"".join(retired), RETIRED_LABEL, generation=generation)


def open_retired(keys: Keys, blob: bytes) -> tuple[bytes, ...]:
    data = open_blob(keys.catalog, blob, RETIRED_LABEL)
    if len(data) % KEY_BYTES:
        raise KeyProblem("the retired-keys blob is damaged")
    return tuple(data[i:i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES))


def read_retired(path: Path, keys: Keys) -> tuple[bytes, ...]:
    try:
        return open_retired(keys, path.read_bytes())
    except FileNotFoundError:
        return ()
    except FormatError as error:
        raise KeyProblem(f"{path}: {error}") from None


def settle_rotation(paths: Paths) -> None:
    """Finish (or undo) a rotation step a crash interrupted: see the comment above."""
    pending = next_envelope(paths)
    if not pending.exists() or not paths.key_file.exists():
        return
    ring = read_key_ring(paths.key_file)
    current = Keys.from_master(ring[0])
    try:
        envelope = Envelope.from_json(pending.read_bytes(), str(pending))
    except KeyProblem:
        envelope = None
    if envelope is not None and envelope.vouched_by(current):
        os.replace(pending, paths.envelope_file)  # committed: the new envelope takes its place
    else:
        pending.unlink()  # never committed: the old key stays, the rotation can be started again
        if len(ring) == 1:
            paths.retired_keys.unlink(missing_ok=True)


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
