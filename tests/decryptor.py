"""An independent reader of the vault format, written from docs/FORMAT.md with ``nacl.bindings`` only.

It shares no code with the program on purpose: if FORMAT.md is incomplete or wrong, these tests fail.
"""

from __future__ import annotations

import base64
import json
import struct
import unicodedata

import nacl.bindings as sodium

TAG_MESSAGE, TAG_PUSH, TAG_FINAL = 0, 1, 3


def kek(passphrase: str, envelope: dict) -> bytes:
    """Section 2: NFC-normalised UTF-8 passphrase through Argon2id."""
    return sodium.crypto_pwhash_alg(32, unicodedata.normalize("NFC", passphrase).encode(),
                                    base64.b64decode(envelope["salt"]), envelope["opslimit"], envelope["memlimit"],
                                    sodium.crypto_pwhash_ALG_ARGON2ID13)


def open_envelope(data: bytes, passphrase: str) -> bytes:
    """Section 2.1: the master key (raises nacl's CryptoError for a wrong passphrase)."""
    envelope = json.loads(data)
    ad = b"shutterlock/v1/key-envelope"
    if envelope["version"] == 2:
        ad = b"shutterlock/v2/key-envelope" + struct.pack(">QQ", envelope["generation"], envelope["created_at"])
    else:
        assert envelope["version"] == 1
    master = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        base64.b64decode(envelope["wrapped_key"]), ad, base64.b64decode(envelope["nonce"]), kek(passphrase, envelope))
    if envelope["version"] == 2:  # section 2.2: the MAC and the key id agree with the key inside
        mac_key = subkey(master, b"shutterlock/v2/envelope-mac")
        message = ad + base64.b64decode(envelope["salt"]) + base64.b64decode(envelope["nonce"]) + \
            base64.b64decode(envelope["wrapped_key"]) + bytes.fromhex(envelope["key_id"]) + \
            struct.pack(">QQ", envelope["opslimit"], envelope["memlimit"])
        assert base64.b64decode(envelope["mac"]) == sodium.crypto_generichash_blake2b_salt_personal(
            message, digest_size=32, key=mac_key)
        assert envelope["key_id"] == subkey(master, b"shutterlock/v1/key-id")[:16].hex()
    return master


def subkey(master: bytes, label: bytes) -> bytes:
    return sodium.crypto_generichash_blake2b_salt_personal(label, digest_size=32, key=master)


def content_id(master: bytes, plaintext: bytes) -> str:
    return sodium.crypto_generichash_blake2b_salt_personal(plaintext, digest_size=32,
                                                            key=subkey(master, b"shutterlock/v1/content-id")).hex()


def path_bytes(meta: dict) -> bytes:
    """Section 4: the exact bytes of the path."""
    return base64.b64decode(meta["path_b64"]) if "path_b64" in meta else meta["path"].encode()


def decrypt_object(raw: bytes, master: bytes) -> tuple[dict, bytes]:
    """Section 4: (metadata, plaintext) of a version 1 or 2 object; raises on anything that does not check."""
    assert raw[:8] == b"SHUTRLK\x00" and raw[9:12] == b"\0\0\0"
    version = raw[8]
    assert version in (1, 2), version
    (chunk_size,) = struct.unpack(">I", raw[12:16])
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, raw[16:40], subkey(master, b"shutterlock/v1/object"))
    (meta_len,) = struct.unpack(">I", raw[40:44])
    padded, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, raw[44:44 + meta_len], raw[:16])
    assert tag == TAG_MESSAGE and len(padded) % 256 == 0
    (json_len,) = struct.unpack(">I", padded[:4])
    meta = json.loads(padded[4:4 + json_len])
    body, offset, size = [], 44 + meta_len, 0
    while True:  # the data: chunk_size bytes per message; version 2 knows the last one's length from "size"
        want = chunk_size if version == 1 else min(chunk_size, meta["size"] - size)
        piece = raw[offset:offset + want + 17]
        offset += len(piece)
        plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, piece, None)
        body.append(plain)
        size += len(plain)
        if tag == (TAG_FINAL if version == 1 else TAG_PUSH):
            break
        assert tag == TAG_MESSAGE and len(plain) == chunk_size
    while version == 2:  # the padding: zeros in messages of chunk_size, the last one final and maybe shorter
        piece = raw[offset:offset + chunk_size + 17]
        offset += len(piece)
        plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, piece, None)
        assert plain == bytes(len(plain))
        if tag == TAG_FINAL:
            break
        assert tag == TAG_MESSAGE and len(plain) == chunk_size
    assert offset == len(raw), "bytes after the final chunk"
    plaintext = b"".join(body)
    assert len(plaintext) == meta["size"]
    return meta, plaintext


def open_blob(raw: bytes, master: bytes, label: bytes) -> tuple[int, int, bytes]:
    """Section 5: (generation, created_at, plaintext) of a sealed blob, version 1 or 2."""
    assert raw[:8] == b"SHUTRLKB" and raw[8] in (1, 2)
    plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        raw[33:], raw[:9] + label, raw[9:33], subkey(master, b"shutterlock/v1/catalog-snapshot"))
    if raw[8] == 1:
        return 0, 0, plain
    generation, created = struct.unpack(">QQ", plain[:16])
    return generation, created, plain[16:]
