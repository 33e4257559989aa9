"""RAW+JPEG pairs: cameras shooting both write two files per frame, and only one of them gets a derivative.

The one place that decides which half is derived; the derive lane, ``protect`` and sharing all ask it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from .decode import RAW_EXTENSIONS, classify

# The non-RAW halves of a camera's RAW+image pair (some bodies shoot RAW+HEIF instead of RAW+JPEG).
PAIR_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".heic", ".heif", ".hif")


def pair_partner(path: Path, candidates: Collection[Path] | None = None) -> Path | None:
    """The other half of a RAW+JPEG pair: same folder, same stem, extension compared case-insensitively.

    Without ``candidates`` the disk is probed for the lower-, upper- and title-case spellings of each
    partner extension (what cameras write); with them, only those paths are considered.
    """
    kind = classify(path)
    suffix = path.suffix.lower()
    if kind == "raw":
        wanted: Collection[str] = PAIR_IMAGE_EXTENSIONS
    elif kind == "image" and suffix in PAIR_IMAGE_EXTENSIONS:
        wanted = RAW_EXTENSIONS
    else:
        return None
    if candidates is not None:
        matches = sorted(c for c in candidates if c != path and c.parent == path.parent
                         and c.stem == path.stem and c.suffix.lower() in wanted)
        return matches[0] if matches else None
    for extension in sorted(wanted):
        for spelling in dict.fromkeys((extension, extension.upper(), extension.capitalize())):
            candidate = path.with_name(path.stem + spelling)
            if candidate != path and candidate.is_file():
                return candidate
    return None


def skip_reason(path: Path, pair_preference: str = "jpeg", candidates: Collection[Path] | None = None) -> str:
    """Why ``path`` gets no derivative ("" when it gets one): not an image, or the half the preference skips."""
    kind = classify(path)
    if kind in ("video", "sidecar"):
        return f"not an image ({kind})"
    partner = pair_partner(path, candidates)
    if partner is None or (kind == "raw") == (pair_preference == "raw"):
        return ""
    return f"RAW+JPEG pair: {partner.name} is derived instead"
