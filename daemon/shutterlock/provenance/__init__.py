"""Signed provenance: a C2PA manifest on every derivative, saying who made it and that AI training,
generative training, data mining and inference are not allowed.

- :mod:`.identity`: the signing key and certificate chain (self-issued, or the user's own from a CA);
- :mod:`.manifest`: what the manifest says, and signing JPEG bytes with it (daemon side only);
- :mod:`.verify`: reading a manifest back the way any C2PA reader does.

Which identity signs a rendered derivative, and the signing itself, are the derive side's
(:mod:`shutterlock.derive.signing`).
"""

from __future__ import annotations

from . import identity
from .identity import IdentityError, SigningIdentity
from .manifest import FORBIDDEN_USES, Credit, ProvenanceError, Treatment, sign_jpeg
from .verify import INVALID, MISSING, TRUSTED, VALID, Verdict, verify_bytes, verify_file

__all__ = [
    "FORBIDDEN_USES",
    "INVALID",
    "MISSING",
    "TRUSTED",
    "VALID",
    "Credit",
    "IdentityError",
    "ProvenanceError",
    "SigningIdentity",
    "Treatment",
    "Verdict",
    "identity",
    "sign_jpeg",
    "verify_bytes",
    "verify_file",
]
