"""The ``[site]`` table: where the portfolio goes and what it says about the photographer."""

from __future__ import annotations

from dataclasses import dataclass

THEMES = ("auto", "dark", "light")


@dataclass(frozen=True)
class SiteConfig:
    """``url``: ``s3://BUCKET/PREFIX`` or a folder (for rsync or any static host); empty: publish refuses.

    ``base_url``: the address the site is served from (``https://ada.example``); makes the TDMRep policy
    links absolute, as the protocol asks. ``include``: patterns choosing originals (default: all that
    have a protected derivative). ``captions``: (pattern, caption) pairs, first match wins.
    ``widths``: the responsive sizes made below the full derivative.
    """

    url: str = ""
    endpoint: str = ""
    base_url: str = ""
    title: str = ""
    tagline: str = ""
    about: str = ""
    email: str = ""
    links: tuple[str, ...] = ()
    theme: str = "auto"
    include: tuple[str, ...] = ()
    captions: tuple[tuple[str, str], ...] = ()
    widths: tuple[int, ...] = (480, 960, 1600)
