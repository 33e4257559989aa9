"""Which derivatives the site shows: the catalog's records, never the originals.

An original is offered when it matches the patterns (default: all) and its derivative was written.
Albums are the originals' folders (the source's name for files at its top); captions come from
``[site] captions`` patterns. Held and failed derivatives are reported, not silently dropped.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .build import Candidate
from .images import Protection


def matches(key: str, patterns: Sequence[str]) -> bool:
    """``key`` is ``source/relative path``; patterns match it, the relative path or the file name."""
    if not patterns:
        return True
    relpath = key.split("/", 1)[-1]
    names = (key, relpath, PurePosixPath(relpath).name)
    return any(fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern.rstrip("/") + "/")
               for pattern in patterns for name in names)


def candidates(derivatives: Iterable[dict[str, Any]], *, patterns: Sequence[str] = (),
               captions: Sequence[tuple[str, str]] = (), cloak_strength: str = "standard", min_rating: int = 0,
               ) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """(what can go on the site, (key, why not) for matching originals that have no publishable derivative).

    ``derivatives``: :meth:`Catalog.derivatives` rows. ``cloak_strength``: the configured strength; an
    uncloaked derivative is acceptable only when it was made with the cloak off *and* it is still off.
    ``min_rating``: only originals rated at least this many stars (as the derive worker read them).
    """
    offered, missing = [], []
    for row in derivatives:
        key = f"{row['source']}/{row['relpath']}"
        if not matches(key, patterns) or row["status"] == "skipped" or (row.get("rating") or 0) < min_rating:
            continue
        if row["status"] != "written" or not row.get("output"):
            missing.append((key, f"no derivative ({row['status']}: {row.get('reason') or 'no reason recorded'})"))
            continue
        folder = PurePosixPath(row["relpath"]).parent
        album = folder.name if folder.parts else row["source"]
        caption = next((text for pattern, text in captions if matches(key, (pattern,))), "")
        protection = Protection(cloaked=bool(row["cloaked"]), cloak_strength=row.get("strength") or "",
                                cloak_off=row.get("strength") == "off" and cloak_strength == "off",
                                watermark=row.get("watermark") or "")
        offered.append(Candidate(key=key, derivative=Path(row["output"]), album=album, protection=protection,
                                 caption=caption))
    return offered, missing
