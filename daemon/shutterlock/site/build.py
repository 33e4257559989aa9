"""Build the static portfolio: albums of protected derivatives, an about page, the rights policy and
every no-AI signal, into a folder this module owns.

Builds are incremental and deterministic: renditions are content-addressed and reused, pages are
rewritten only when their text changes (no dates or counters in them), and files from an earlier
build that are no longer part of the site are removed. A folder holding anything Shutterlock did not
build is never written into.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from shutterlock.config import RightsConfig, SiteConfig
from shutterlock.errors import OperationFailed
from shutterlock.fsutil import atomic_write_bytes, ensure_dir
from shutterlock.provenance import ProvenanceError, SigningIdentity

from . import signals
from .images import LeftOut, Protection, Rendition, renditions

INDEX_FILE = ".shutterlock-site.json"
FIRST_EAGER = 6  # images above the fold load at once; the rest lazily


class SiteError(OperationFailed):
    """The site cannot be built or published; the message names the folder or bucket and why."""


@dataclass(frozen=True)
class Candidate:
    """One original's protected derivative, offered for the site by the catalog.

    ``key`` (``source/relative path``) orders the photos and matches caption patterns; it is never
    published. ``album`` is the album's title (by default the original's folder).
    """

    key: str
    derivative: Path
    album: str
    protection: Protection
    caption: str = ""


@dataclass
class BuildReport:
    out: Path
    photos: int = 0
    albums: int = 0
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path → sha256 of everything in the site


@dataclass(frozen=True)
class Photo:
    id: str
    caption: str
    renditions: tuple[Rendition, ...]

    @property
    def full(self) -> Rendition:
        return self.renditions[-1]

    def src(self, near: int) -> Rendition:
        """The smallest rendition at least ``near`` pixels wide (else the largest)."""
        return next((r for r in self.renditions if r.width >= near), self.full)

    def srcset(self, root: str) -> str:
        return ", ".join(f"{root}{r.path} {r.width}w" for r in self.renditions)


@dataclass(frozen=True)
class Album:
    title: str
    slug: str
    photos: tuple[Photo, ...]


def build(candidates: Iterable[Candidate], out: Path, *, site: SiteConfig, rights: RightsConfig,
          identity: SigningIdentity) -> BuildReport:
    """Build (or bring up to date) the site in ``out``; unprotected derivatives are left out and reported."""
    out = out.expanduser()
    previous = _claim(out)
    report = BuildReport(out=out)
    grouped: dict[str, list[Photo]] = {}
    for candidate in sorted(candidates, key=lambda c: c.key):
        try:
            made = renditions(candidate.derivative, out, candidate.protection, identity=identity, rights=rights,
                              widths=site.widths)
        except (LeftOut, ProvenanceError) as error:
            report.left_out.append((candidate.key, str(error)))
            continue
        except OSError as error:
            report.left_out.append((candidate.key, f"cannot write its renditions: {error.strerror or error}"))
            continue
        photo_id = made[-1].path.rsplit("/", 1)[-1].rsplit("-", 1)[0]
        grouped.setdefault(candidate.album, []).append(Photo(photo_id, candidate.caption.strip(), made))
    albums = _albums(grouped)
    pages = _pages(albums, site, rights)
    files: dict[str, str] = {}
    for path, text in pages.items():
        data = text.encode()
        target = out / path
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data, mode=0o644)
            report.written.append(path)
        files[path] = hashlib.sha256(data).hexdigest()
    for album in albums:
        for photo in album.photos:
            for rendition in photo.renditions:
                files[rendition.path] = _sha256(out / rendition.path)
    leftovers = {str(p.relative_to(out)) for p in (out / "img").glob("*") if p.is_file()} if (out / "img").is_dir() \
        else set()
    for stale in sorted((set(previous) | leftovers) - set(files)):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()
        report.removed.append(stale)
    _prune_empty_dirs(out)
    atomic_write_bytes(out / INDEX_FILE, json.dumps(files, indent=1, sort_keys=True).encode(), mode=0o644)
    report.photos = sum(len(a.photos) for a in albums)
    report.albums = len(albums)
    report.files = files
    return report


def _claim(out: Path) -> dict[str, str]:
    """The previous build's file list; refuses a non-empty folder that Shutterlock did not build."""
    index = out / INDEX_FILE
    if index.exists():
        try:
            previous = json.loads(index.read_text())
            if isinstance(previous, dict):
                return {str(k): str(v) for k, v in previous.items() if _safe_relative(str(k))}
        except (ValueError, OSError):
            pass
        raise SiteError(f"{index}: unreadable build index; remove the folder or choose another")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SiteError(f"{out}: not empty and not a Shutterlock site; choose an empty or new folder")
    ensure_dir(out, 0o755)
    return {}


def _safe_relative(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prune_empty_dirs(out: Path) -> None:
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-") or "photos"


def _albums(grouped: dict[str, list[Photo]]) -> list[Album]:
    albums, taken = [], set()
    for title in sorted(grouped, key=str.casefold):
        slug = base = slugify(title)
        counter = 2
        while slug in taken:
            slug, counter = f"{base}-{counter}", counter + 1
        taken.add(slug)
        albums.append(Album(title, slug, tuple(grouped[title])))
    return albums


def _environment() -> Environment:
    return Environment(loader=PackageLoader("shutterlock.site", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _pages(albums: list[Album], site: SiteConfig, rights: RightsConfig) -> dict[str, str]:
    """Every text file of the site, by path."""
    env = _environment()
    creator = rights.creator.strip()
    title = site.title.strip() or creator or "Portfolio"
    common: dict[str, Any] = {
        "site": site, "title": title, "creator": creator, "albums": albums, "eager": FIRST_EAGER,
        "notice": rights.copyright.strip() or (f"© {creator}" if creator else ""),
        "robots": signals.ROBOTS_META, "paragraphs": _paragraphs,
    }

    def page(template: str, root: str, **extra: Any) -> str:
        return env.get_template(template).render(
            **common, root=root, policy=signals.policy_url(site.base_url, root), **extra)

    out = {
        "index.html": page("index.html", ""),
        "about.html": page("about.html", ""),
        signals.POLICY_PAGE: page("rights.html", "", crawlers=signals.crawlers()),
        "site.css": env.get_template("site.css").render(),
        "robots.txt": signals.robots_txt(),
        "ai.txt": signals.ai_txt(),
        ".well-known/tdmrep.json": signals.tdmrep_json(site.base_url),
    }
    for album in albums:
        out[f"albums/{album.slug}/index.html"] = page("album.html", "../../", album=album)
        for index, photo in enumerate(album.photos):
            # No position or count on a photo page: adding a photo must not change every page of its album.
            previous = album.photos[index - 1] if index else None
            following = album.photos[index + 1] if index + 1 < len(album.photos) else None
            out[f"albums/{album.slug}/{photo.id}.html"] = page(
                "photo.html", "../../", album=album, photo=photo, previous=previous, following=following)
    return out


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
