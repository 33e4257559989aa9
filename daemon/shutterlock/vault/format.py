"""The sealed object format (docs/FORMAT.md is its specification; keep the two in step).

An object is one original, encrypted with libsodium's secretstream in fixed-size chunks:

    prelude   magic "SHUTRLK\\0" | version u8 | 3 zero bytes | chunk_size u32be      (16 bytes)
    header    secretstream header                                                  (24 bytes)
    meta_len  u32be length of the next ciphertext
    meta      secretstream message (TAG_MESSAGE, additional data = prelude):
              u32be json_len | UTF-8 JSON metadata | zero padding to a multiple of 256
    body      chunk_size plaintext bytes per message (+17 bytes each), the last one shorter
              (possibly empty); version 1: tagged TAG_FINAL; version 2: tagged TAG_PUSH and followed
              by padding messages of zeros, the last one TAG_FINAL, so that the whole object's size
              is a Padmé bucket and the bucket does not learn the original's exact size

The object's name is its content id: keyed BLAKE2b-256 of the plaintext. Readers recompute it,
so a swapped, truncated or altered object is refused.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.hashlib

from shutterlock.errors import ShutterlockError
from shutterlock.names import b64, from_b64, is_text, to_bytes

MAGIC = b"SHUTRLK\x00"
VERSION = 2  # written; version 1 objects (no padding) are read forever
VERSIONS = (1, 2)
PRELUDE = struct.Struct(">8sB3xI")
PRELUDE_SIZE = PRELUDE.size
HEADER_SIZE = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_PUSH = sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
META_PAD = 256
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 64 << 20
MAX_META = 1 << 20

# Labels for keys derived from the master key: subkey = BLAKE2b-256(key=master, message=label).
LABEL_CONTENT_ID = b"shutterlock/v1/content-id"
LABEL_OBJECT = b"shutterlock/v1/object"
LABEL_CATALOG = b"shutterlock/v1/catalog-snapshot"
LABEL_KEY_ID = b"shutterlock/v1/key-id"
LABEL_ENVELOPE_MAC = b"shutterlock/v2/envelope-mac"


class FormatError(ShutterlockError):
    """An object failed to parse or authenticate; the message says how."""


@dataclass(frozen=True)
class ObjectMeta:
    """What an object says about the original it holds (encrypted inside the object)."""

    source: str
    path: str
    size: int
    mtime_ns: int
    sealed_at: float
    capture_time: str | None = None

    def to_json(self) -> bytes:
        """UTF-8 JSON; a path that is not UTF-8 keeps its exact bytes in ``path_b64`` (``path`` then shows it
        with U+FFFD for the undecodable bytes)."""
        # vars(), not asdict(): the same keys in the same order, without asdict's deep copy (which cost more
        # than sealing a small file's bytes).
        fields = vars(self)
        if not is_text(self.path):
            fields = {**fields, "path": to_bytes(self.path).decode("utf-8", "replace"), "path_b64": b64(self.path)}
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ObjectMeta:
        try:
            raw = json.loads(data)
            path = from_b64(raw["path_b64"]) if "path_b64" in raw else str(raw["path"])
            return cls(source=str(raw["source"]), path=path, size=int(raw["size"]),
                       mtime_ns=int(raw["mtime_ns"]), sealed_at=float(raw["sealed_at"]),
                       capture_time=raw.get("capture_time"))
        except (ValueError, KeyError, TypeError) as error:
            raise FormatError(f"metadata is not valid: {error}") from None


def derive_key(master: bytes, label: bytes) -> bytes:
    return nacl.hashlib.blake2b(label, digest_size=32, key=master).digest()


@dataclass(frozen=True)
class Keys:
    """The subkeys an object needs; built once from the master key (which is not kept)."""

    content_id: bytes
    object: bytes
    catalog: bytes
    envelope_mac: bytes  # vouches for this key's envelopes (docs/FORMAT.md section 2)
    key_id: str  # names the master key without saying anything about it
    retired: tuple[Keys, ...] = ()  # older master keys whose objects a key rotation has not replaced yet

    @classmethod
    def from_master(cls, master: bytes, retired: tuple[bytes, ...] = ()) -> Keys:
        return cls(content_id=derive_key(master, LABEL_CONTENT_ID), object=derive_key(master, LABEL_OBJECT),
                   catalog=derive_key(master, LABEL_CATALOG), envelope_mac=derive_key(master, LABEL_ENVELOPE_MAC),
                   key_id=derive_key(master, LABEL_KEY_ID)[:16].hex(),
                   retired=tuple(cls.from_master(old) for old in retired))

    def hasher(self) -> nacl.hashlib.blake2b:
        return nacl.hashlib.blake2b(digest_size=32, key=self.content_id)


def prelude(chunk_size: int) -> bytes:
    return PRELUDE.pack(MAGIC, VERSION, chunk_size)


def padme(length: int) -> int:
    """The Padmé size for ``length`` (Nikitin et al., PETS 2019): at most 12 % more, and a size reveals only
    O(log log n) bits instead of the exact length."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    low = exponent - exponent.bit_length()
    mask = (1 << low) - 1
    return (length + mask) & ~mask


def padding_sizes(written: int, chunk_size: int) -> list[int]:
    """Plaintext sizes of the padding messages that bring an object of ``written`` bytes (without padding)
    to a Padmé size: full chunks, the last one (final) possibly shorter, so a reader finds their bounds
    the way it finds the chunks of a version 1 body. A size that cannot be split so takes the next bucket."""
    record = chunk_size + ABYTES
    target = padme(written + ABYTES)
    while 0 < (target - written) % record < ABYTES:
        target = padme(target + 1)
    full, rest = divmod(target - written, record)
    return [chunk_size] * full + ([rest - ABYTES] if rest else [])


def _pad_meta(meta: ObjectMeta) -> bytes:
    body = meta.to_json()
    framed = struct.pack(">I", len(body)) + body
    return framed + b"\x00" * (-len(framed) % META_PAD)


@dataclass(frozen=True)
class SealResult:
    content_id: str
    plain_size: int
    stored_size: int


def seal_stream(keys: Keys, meta: ObjectMeta, source: BinaryIO, out: BinaryIO,
                chunk_size: int = DEFAULT_CHUNK, progress: Callable[[], None] | None = None) -> SealResult:
    """Encrypt ``source`` into ``out``, hashing as it goes; memory stays at two chunks."""
    if not 0 < chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size out of range: {chunk_size}")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, keys.object)
    pre = prelude(chunk_size)
    meta_ct = sodium.crypto_secretstream_xchacha20poly1305_push(state, _pad_meta(meta), pre, TAG_MESSAGE)
    out.write(pre + header + struct.pack(">I", len(meta_ct)) + meta_ct)
    written = PRELUDE_SIZE + HEADER_SIZE + 4 + len(meta_ct)
    hasher = keys.hasher()
    total = 0
    push = sodium.crypto_secretstream_xchacha20poly1305_push
    current = _read_full(source, chunk_size)
    while True:
        following = _read_full(source, chunk_size) if len(current) == chunk_size else b""
        final = not following
        hasher.update(current)
        total += len(current)
        ciphertext = push(state, current, None, TAG_PUSH if final else TAG_MESSAGE)
        out.write(ciphertext)
        written += len(ciphertext)
        if progress is not None:
            progress()
        if final:
            break
        current = following
    sizes = padding_sizes(written, chunk_size)
    zeros = bytes(max(sizes))
    for index, size in enumerate(sizes):
        ciphertext = push(state, zeros[:size], None, TAG_FINAL if index == len(sizes) - 1 else TAG_MESSAGE)
        out.write(ciphertext)
        written += len(ciphertext)
    return SealResult(content_id=hasher.hexdigest(), plain_size=total, stored_size=written)


def _read_full(handle: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the stream ends first (pipes return short reads)."""
    data = handle.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    remaining = size - len(data)
    while remaining:
        more = handle.read(remaining)
        if not more:
            break
        parts.append(more)
        remaining -= len(more)
    return b"".join(parts)


HEAD_SIZE = PRELUDE_SIZE + HEADER_SIZE + 4  # prelude, stream header, meta_len


@dataclass(frozen=True)
class Head:
    """The clear-text start of an object: everything needed to find its parts without a key."""

    prelude: bytes
    version: int
    chunk_size: int
    stream_header: bytes
    meta_len: int

    @property
    def body_offset(self) -> int:
        return HEAD_SIZE + self.meta_len

    @property
    def record_size(self) -> int:
        """Bytes one full body chunk takes on disk."""
        return self.chunk_size + ABYTES


def parse_head(raw: bytes) -> Head:
    """Validate the first HEAD_SIZE bytes of an object (the one parser of the object header)."""
    if len(raw) < HEAD_SIZE:
        raise FormatError("truncated before the metadata")
    magic, version, chunk_size = PRELUDE.unpack(raw[:PRELUDE_SIZE])
    if magic != MAGIC:
        raise FormatError("not a Shutterlock object (bad magic)")
    if version not in VERSIONS:
        raise FormatError(f"unsupported object version {version}")
    if not 0 < chunk_size <= MAX_CHUNK:
        raise FormatError(f"chunk size out of range: {chunk_size}")
    (meta_len,) = struct.unpack(">I", raw[PRELUDE_SIZE + HEADER_SIZE:HEAD_SIZE])
    if not ABYTES < meta_len <= MAX_META + ABYTES:
        raise FormatError(f"metadata length out of range: {meta_len}")
    return Head(prelude=raw[:PRELUDE_SIZE], version=version, chunk_size=chunk_size,
                stream_header=raw[PRELUDE_SIZE:PRELUDE_SIZE + HEADER_SIZE], meta_len=meta_len)


class ObjectReader:
    """Streams an object's plaintext, refusing anything that does not authenticate."""

    def __init__(self, keys: Keys, handle: BinaryIO, expected_id: str | None = None):
        self._handle, self._expected = handle, expected_id
        head = parse_head(_read_full(handle, HEAD_SIZE))
        self.chunk_size, self.version = head.chunk_size, head.version
        meta_ct = _read_full(handle, head.meta_len)
        if len(meta_ct) != head.meta_len:
            raise FormatError("truncated inside the metadata")
        for candidate in (keys, *keys.retired):  # during a key rotation, objects under the old key too
            self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, head.stream_header, candidate.object)
            try:
                padded, tag = self._pull(meta_ct, head.prelude)
            except FormatError:
                continue
            self.keys = candidate  # the key this object is sealed under
            break
        else:
            raise FormatError("authentication failed (altered, reordered or foreign data)")
        if tag != TAG_MESSAGE or len(padded) < 4:
            raise FormatError("metadata block is malformed")
        (json_len,) = struct.unpack(">I", padded[:4])
        if json_len > len(padded) - 4:
            raise FormatError("metadata length is inconsistent")
        self.meta = ObjectMeta.from_json(padded[4:4 + json_len])

    def _pull(self, ciphertext: bytes, ad: bytes | None = None) -> tuple[bytes, int]:
        try:
            return sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, ciphertext, ad)
        except Exception as error:  # nacl raises RuntimeError/CryptoError depending on version
            raise FormatError("authentication failed (altered, reordered or foreign data)") from error

    def chunks(self) -> Iterator[bytes]:
        """Yield plaintext chunks; raises FormatError on damage, truncation or a wrong content id."""
        hasher = self.keys.hasher()
        size = 0
        while True:
            # Version 2: the data's last chunk is followed by padding, so its length comes from the metadata.
            wanted = self.chunk_size if self.version == 1 else min(self.chunk_size, max(0, self.meta.size - size))
            ciphertext = _read_full(self._handle, wanted + ABYTES)
            if len(ciphertext) < ABYTES:
                raise FormatError("truncated: the final chunk is missing")
            plain, tag = self._pull(ciphertext)
            hasher.update(plain)
            size += len(plain)
            if tag == (TAG_FINAL if self.version == 1 else TAG_PUSH):
                if self.version > 1:
                    self._skip_padding()
                if self._handle.read(1):
                    raise FormatError("data after the final chunk")
                break
            if tag != TAG_MESSAGE or len(plain) != self.chunk_size:
                raise FormatError("short or misplaced chunk before the end")
            yield plain
        actual = hasher.hexdigest()
        if self._expected is not None and actual != self._expected:
            raise FormatError(f"content does not match its id (holds {actual[:12]}…)")
        if size != self.meta.size:
            raise FormatError(f"size {size} differs from the recorded {self.meta.size}")
        self.content_id = actual
        yield plain

    def _skip_padding(self) -> None:
        """Version 2: authenticated messages of zeros after the data, the last one final."""
        while True:
            ciphertext = _read_full(self._handle, self.chunk_size + ABYTES)
            if len(ciphertext) < ABYTES:
                raise FormatError("truncated: the final chunk is missing")
            plain, tag = self._pull(ciphertext)
            if plain.count(0) != len(plain):
                raise FormatError("padding is not zeros")
            if tag == TAG_FINAL:
                return
            if tag != TAG_MESSAGE:
                raise FormatError("misplaced tag in the padding")

    def copy_to(self, out: BinaryIO, progress: Callable[[int], None] | None = None) -> int:
        total = 0
        for chunk in self.chunks():
            out.write(chunk)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return total


def authenticate(keys: Keys, handle: BinaryIO, expected_id: str) -> ObjectMeta:
    """Read a whole object and check it; returns its metadata."""
    reader = ObjectReader(keys, handle, expected_id)
    for _ in reader.chunks():
        pass
    return reader.meta


# Sealed blobs (catalog snapshots, retired keys): one XChaCha20-Poly1305 AEAD message. Version 2 starts the
# plaintext with a generation and a creation time, so an older blob cannot pass for a newer one; they are
# encrypted too, so the bytes in the bucket say nothing about them.
BLOB_MAGIC = b"SHUTRLKB"
BLOB_VERSION = 2
BLOB_FACTS = struct.Struct(">QQ")  # generation, created_at (seconds since the epoch)


@dataclass(frozen=True)
class Blob:
    """An opened blob: what it says about itself (authenticated) and its plaintext."""

    generation: int
    created_at: int
    data: bytes


def seal_blob(key: bytes, data: bytes, label: bytes, *, generation: int = 0, created_at: int | None = None) -> bytes:
    header = BLOB_MAGIC + bytes([BLOB_VERSION])
    facts = BLOB_FACTS.pack(generation, int(time.time()) if created_at is None else created_at)
    nonce = os.urandom(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    return header + nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(facts + data, header + label, nonce,
                                                                               key)


def open_blob(key: bytes, blob: bytes, label: bytes) -> bytes:
    return open_dated_blob(key, blob, label).data


def open_dated_blob(key: bytes, blob: bytes, label: bytes) -> Blob:
    """Version 1 blobs (no generation, no date) read as generation 0."""
    npub = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
    if len(blob) < 9 + npub or blob[:8] != BLOB_MAGIC:
        raise FormatError("not a Shutterlock sealed blob")
    if blob[8] not in (1, BLOB_VERSION):
        raise FormatError(f"unsupported blob version {blob[8]}")
    try:
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(blob[9 + npub:], blob[:9] + label,
                                                                    blob[9:9 + npub], key)
    except Exception as error:
        raise FormatError("blob failed authentication") from error
    if blob[8] == 1:
        return Blob(generation=0, created_at=0, data=plain)
    if len(plain) < BLOB_FACTS.size:
        raise FormatError("blob is too short")
    generation, created = BLOB_FACTS.unpack(plain[:BLOB_FACTS.size])
    return Blob(generation=generation, created_at=created, data=plain[BLOB_FACTS.size:])
