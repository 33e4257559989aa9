"""Every opt-out signal a crawler is known to read, generated for the site root.

- ``robots.txt``: the AI-training crawlers of ``ai_crawlers.toml`` disallowed everywhere; everything
  else (search engines) allowed, so the portfolio can still be found.
- ``ai.txt``: Spawning's robots-style file that data-set tools consult before downloading media.
- ``.well-known/tdmrep.json``: the W3C TDM Reservation Protocol's site-wide rule (rights reserved).
- per page: ``<meta name="robots" content="noai, noimageai">`` and the TDMRep ``tdm-reservation`` /
  ``tdm-policy`` meta tags (in the page templates, with :data:`ROBOTS_META`).

None of this is enforcement: see docs/PUBLISHING.md for who honours what.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

ROBOTS_META = "noai, noimageai"
POLICY_PAGE = "rights.html"
IMAGE_TYPES = ("jpg", "jpeg", "png", "gif", "webp", "avif", "heic", "tif", "tiff", "svg")


@dataclass(frozen=True)
class Crawler:
    user_agent: str
    operator: str
    purpose: str
    honours_robots: str
    source: str


@cache
def crawlers() -> tuple[Crawler, ...]:
    """The known AI-training crawlers, from the one data file that lists them with their sources."""
    text = resources.files(__package__).joinpath("ai_crawlers.toml").read_text(encoding="utf-8")
    return tuple(Crawler(**entry) for entry in tomllib.loads(text)["crawler"])


def robots_txt(sitemap_url: str = "") -> str:
    lines = ["# AI training and data-set crawlers may not use anything on this site.",
             "# The list and its sources: docs/PUBLISHING.md in Shutterlock.", ""]
    for crawler in crawlers():
        lines += [f"# {crawler.operator}: {crawler.purpose}", f"User-agent: {crawler.user_agent}", "Disallow: /", ""]
    lines += ["# Everyone else (search engines) may index the portfolio.", "User-agent: *", "Allow: /", ""]
    if sitemap_url:
        lines += [f"Sitemap: {sitemap_url}", ""]
    return "\n".join(lines)


def ai_txt() -> str:
    """Spawning's ai.txt: no file of this site may go into an AI data set."""
    lines = ["# ai.txt: no part of this site, its images above all, may be used to train AI models.",
             "User-Agent: *"]
    lines += [f"Disallow: *.{kind}" for kind in IMAGE_TYPES]
    lines += ["Disallow: *.html", "Disallow: /", ""]
    return "\n".join(lines)


def policy_url(base_url: str, relative_root: str = "/") -> str:
    """Where the human-readable rights policy lives: absolute with a known base URL (as TDMRep asks)."""
    if base_url:
        return base_url.rstrip("/") + "/" + POLICY_PAGE
    return relative_root + POLICY_PAGE


def tdmrep_json(base_url: str) -> str:
    rule = {"location": "/", "tdm-reservation": 1, "tdm-policy": policy_url(base_url)}
    return json.dumps([rule], indent=2) + "\n"
