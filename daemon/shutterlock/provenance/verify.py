"""Reading a derivative's manifest back: who signed it, whether it holds, and what it forbids.

This is what any C2PA reader would conclude, done with the same library. A self-issued signer is
reported as valid but not trusted (no public trust list knows the photographer's own CA); pass the
photographer's own CA as ``anchor`` to have it recognised. Nothing is fetched from the network.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import FORBIDDEN_USES, JPEG, SETTINGS, TRAINING_MINING, ProvenanceError

MISSING, INVALID, VALID, TRUSTED = "missing", "invalid", "valid", "trusted"
UNTRUSTED = "signingCredential.untrusted"
MEDIA_TYPES = {".jpg": JPEG, ".jpeg": JPEG, ".png": "image/png", ".webp": "image/webp", ".tif": "image/tiff",
               ".tiff": "image/tiff", ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif"}


@dataclass(frozen=True)
class Verdict:
    """The reader's conclusion. ``state``: missing, invalid, valid (signer untrusted) or trusted."""

    state: str
    signer: str = ""
    issuer: str = ""
    problems: tuple[str, ...] = ()  # failure codes and explanations (the untrusted signer is not one)
    forbidden: tuple[str, ...] = ()  # training-and-data-mining uses marked notAllowed
    actions: tuple[str, ...] = ()
    creator: str = ""
    copyright: str = ""
    ingredients: int = 0
    thumbnails: int = 0

    @property
    def ok(self) -> bool:
        return self.state in (VALID, TRUSTED)

    @property
    def forbids_all(self) -> bool:
        """Every predefined training and mining use is refused."""
        return set(FORBIDDEN_USES) <= set(self.forbidden)


def verify_bytes(data: bytes, media_type: str = JPEG, *, anchor: bytes | None = None) -> Verdict:
    """Read and validate the manifest embedded in ``data``."""
    import c2pa

    settings: dict[str, Any] = {**SETTINGS}
    if anchor is not None:
        settings["trust"] = {"user_anchors": anchor.decode()}
        settings["verify"] = {**SETTINGS["verify"], "verify_trust": True}
    try:
        context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
        with c2pa.Reader(media_type, io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError as error:
        if "ManifestNotFound" in type(error).__name__ or "no JUMBF" in str(error):
            return Verdict(MISSING, problems=("no C2PA manifest",))
        return Verdict(INVALID, problems=(f"unreadable manifest: {error}",))
    return _verdict(store)


def verify_file(path: Path, *, anchor: bytes | None = None) -> Verdict:
    media_type = MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise ProvenanceError(f"{path}: not an image type that carries a manifest ({path.suffix or 'no extension'})")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProvenanceError(f"{path}: cannot read: {error.strerror}") from None
    return verify_bytes(data, media_type, anchor=anchor)


def _verdict(store: dict[str, Any]) -> Verdict:
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = [f"{item.get('code')}: {item.get('explanation', '')}".rstrip(": ")
                for item in results.get("failure", []) if item.get("code") != UNTRUSTED]
    state = {"Trusted": TRUSTED, "Valid": VALID}.get(store.get("validation_state", ""), INVALID)
    if failures or not active:
        state = INVALID
    assertions = {a.get("label"): a.get("data", {}) for a in active.get("assertions", [])}
    entries = assertions.get(TRAINING_MINING, {}).get("entries", {})
    forbidden = tuple(use for use in FORBIDDEN_USES if entries.get(use, {}).get("use") == "notAllowed")
    forbidden += tuple(sorted(use for use, entry in entries.items()
                              if use not in FORBIDDEN_USES and entry.get("use") == "notAllowed"))
    actions = tuple(a.get("action", "") for label, data in assertions.items()
                    if label and label.startswith("c2pa.actions") for a in data.get("actions", []))
    metadata = assertions.get("cawg.metadata", {})
    creators = metadata.get("dc:creator", [])
    signature = active.get("signature_info", {})
    return Verdict(
        state=state, signer=signature.get("common_name", ""), issuer=signature.get("issuer", ""),
        problems=tuple(failures) or (() if active else ("no active manifest",)), forbidden=forbidden,
        actions=actions, creator=", ".join(creators) if isinstance(creators, list) else str(creators),
        copyright=str(metadata.get("dc:rights", "")), ingredients=len(active.get("ingredients", [])),
        thumbnails=int("thumbnail" in active) + sum("thumbnail" in i for i in active.get("ingredients", [])))
