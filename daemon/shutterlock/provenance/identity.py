"""The photographer's signing identity: a private key and the certificate chain that names them.

By default Shutterlock makes one itself (``create``): an ECDSA P-256 key (ES256, what C2PA readers
expect) certified by a self-issued CA. Readers then say "valid, signer not on a trust list", which is
the truth: the signature proves the image is unchanged since *this key* signed it, and the key is the
photographer's. A certificate from a real CA can be used instead (``load_user``).

The key stays beside the master key: owner-only files in the state directory. A copy is sealed with
the master key into the vault and the bucket (``seal`` / ``open_sealed``), so a recovery brings the
same identity back and old derivatives keep verifying against it. The key never appears in a repr,
a log line or an error message.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shutterlock.errors import UsageError
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.vault.format import FormatError, open_blob, seal_blob
from shutterlock.vault.local import VAULT_MARKER

KEY_FILE = "signing-key.pem"
CHAIN_FILE = "signing-chain.pem"
SEALED_NAME = "signing-identity"  # the sealed copy's name in the vault folder and under the bucket prefix
SEAL_LABEL = b"signing-identity"
CA_YEARS = 30
LEAF_YEARS = 25  # no timestamp authority offline: the leaf must outlive the images it signs
BACKDATE = datetime.timedelta(hours=1)  # tolerate a reader whose clock is a little behind


class IdentityError(UsageError):
    """The signing identity is missing, unreadable or unusable; the message names the file (exit 2)."""


@dataclass(frozen=True, repr=False)
class SigningIdentity:
    """A private key (PKCS#8 PEM) and its chain (PEM: the signing certificate first, then its issuers)."""

    key_pem: bytes
    chain_pem: bytes

    def __repr__(self) -> str:
        return f"SigningIdentity(subject={self.subject!r}, issuer={self.issuer!r})"

    @property
    def certificates(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.chain_pem)

    @property
    def subject(self) -> str:
        return _common_name(self.certificates[0].subject)

    @property
    def issuer(self) -> str:
        return _common_name(self.certificates[0].issuer)

    @property
    def not_after(self) -> datetime.datetime:
        return self.certificates[0].not_valid_after_utc

    @property
    def anchor_pem(self) -> bytes:
        """The last certificate of the chain: what a reader can be told to trust to recognise this signer."""
        return self.certificates[-1].public_bytes(serialization.Encoding.PEM)

    def algorithm(self) -> str:
        """The C2PA signing algorithm this key implies (RSA keys sign with PSS)."""
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
            if key.curve.name not in by_curve:
                raise IdentityError(f"unsupported elliptic curve {key.curve.name} (use P-256, P-384 or P-521)")
            return by_curve[key.curve.name]
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        if isinstance(key, rsa.RSAPrivateKey):
            return "ps256"
        raise IdentityError(f"unsupported key type {type(key).__name__}")


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def create(name: str, *, now: datetime.datetime | None = None) -> SigningIdentity:
    """A fresh ES256 key certified by a fresh self-issued CA, both naming ``name`` (the creator)."""
    name = name.strip() or "Shutterlock photographer"
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (Shutterlock signing CA)"[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name[:64])])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(key_cert_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64]),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, name[:64])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=365 * LEAF_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    del ca_key  # the CA signs once; nothing can issue another certificate for this name later
    pem = serialization.Encoding.PEM
    return SigningIdentity(
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem))


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=key_cert_sign, encipher_only=False, decipher_only=False)


def write(directory: Path, identity: SigningIdentity) -> None:
    """Store the identity owner-only (directory 0700, files 0600), atomically."""
    ensure_dir(directory, 0o700)
    atomic_write_bytes(directory / CHAIN_FILE, identity.chain_pem, mode=0o600)
    atomic_write_bytes(directory / KEY_FILE, identity.key_pem, mode=0o600)


def load(directory: Path) -> SigningIdentity:
    """The identity ``write`` stored; refuses a key file others can read."""
    return load_user(directory / CHAIN_FILE, directory / KEY_FILE)


def exists(directory: Path) -> bool:
    return (directory / KEY_FILE).exists() and (directory / CHAIN_FILE).exists()


def load_user(certificate: Path, key: Path) -> SigningIdentity:
    """A chain (PEM, signing certificate first) and its unencrypted private key, checked against each other."""
    key_pem = _read(key, private=True)
    chain_pem = _read(certificate, private=False)
    identity = SigningIdentity(key_pem=key_pem, chain_pem=chain_pem)
    check(identity, f"{certificate} with {key}")
    return identity


def _read(path: Path, *, private: bool) -> bytes:
    try:
        info = path.stat()
        if private and os.name == "posix" and info.st_mode & 0o077:
            raise IdentityError(f"{path}: signing key is readable by others (mode {info.st_mode & 0o777:o}); "
                                f"run `chmod 600 {path}`")
        return path.read_bytes()
    except FileNotFoundError:
        what = "signing key" if private else "signing certificate"
        raise IdentityError(f"{path}: no {what} there (run `shutterlock init` to create one)") from None
    except OSError as error:
        raise IdentityError(f"{path}: cannot read: {error.strerror}") from None


def check(identity: SigningIdentity, origin: str) -> None:
    """The key must parse, match the first certificate, and that certificate must be valid today."""
    try:
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
    except TypeError:
        raise IdentityError(f"{origin}: the private key is encrypted; give an unencrypted PEM key") from None
    except ValueError:
        raise IdentityError(f"{origin}: the private key is not a PEM private key") from None
    try:
        certificates = identity.certificates
    except ValueError:
        raise IdentityError(f"{origin}: the certificate file is not a PEM certificate chain") from None
    if not certificates:
        raise IdentityError(f"{origin}: the certificate file holds no certificate")
    leaf = certificates[0]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise IdentityError(f"{origin}: the private key does not belong to the first certificate of the chain")
    if len(certificates) > 1 and not _issued_by(leaf, certificates[1]):
        raise IdentityError(f"{origin}: the second certificate did not issue the first; put the chain in order")
    now = datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise IdentityError(f"{origin}: the signing certificate is not valid now "
                            f"({leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d})")
    identity.algorithm()  # raises for a key type C2PA cannot sign with


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def seal(key: bytes, identity: SigningIdentity) -> bytes:
    """The identity as a sealed blob (docs/FORMAT.md section 5, label ``signing-identity``)."""
    payload = json.dumps({"version": 1, "key": identity.key_pem.decode(), "chain": identity.chain_pem.decode()})
    return seal_blob(key, payload.encode(), SEAL_LABEL)


def open_sealed(key: bytes, blob: bytes, origin: str) -> SigningIdentity:
    try:
        raw = json.loads(open_blob(key, blob, SEAL_LABEL))
        if raw.get("version") != 1:
            raise IdentityError(f"{origin}: unsupported signing identity version {raw.get('version')!r}")
        identity = SigningIdentity(key_pem=raw["key"].encode(), chain_pem=raw["chain"].encode())
    except FormatError as error:
        raise IdentityError(f"{origin}: {error}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IdentityError(f"{origin}: the sealed signing identity is malformed") from None
    return identity



def folder(state_dir: Path) -> Path:
    """Where the identity lives: beside the master key, in its own owner-only folder."""
    return state_dir / "provenance"


def ensure(state_dir: Path, creator: str, seal_key: bytes, vault_root: Path) -> tuple[SigningIdentity, bool]:
    """The installation's identity, created on first use; its sealed copy is (re)written into the vault when
    the vault is there (an unmounted drive's empty mount point is never written into: the next call writes it).

    Returns (identity, created). ``seal_key`` is the master key's catalog subkey (docs/FORMAT.md 5).
    """
    home = folder(state_dir)
    created = not exists(home)
    identity = create(creator) if created else load(home)
    if created:
        write(home, identity)
    sealed = vault_root / SEALED_NAME
    if (created or not sealed.exists()) and (vault_root / VAULT_MARKER).is_file():
        atomic_write_bytes(sealed, seal(seal_key, identity), mode=0o600)
    return identity, created


def restore(state_dir: Path, seal_key: bytes, blob: bytes, origin: str) -> SigningIdentity:
    """Recovery: put the sealed identity from the bucket back in place (an existing one is kept)."""
    identity = open_sealed(seal_key, blob, origin)
    home = folder(state_dir)
    if not exists(home):
        write(home, identity)
    return load(home)
