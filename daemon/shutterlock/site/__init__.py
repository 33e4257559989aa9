"""The public portfolio: a static site of protected derivatives that refuses AI crawlers.

- :func:`build`: albums, responsive renditions (each signed), pages and every no-AI signal, into a
  folder; unprotected derivatives are left out and reported;
- :func:`publish`: send a built site to an S3 prefix or a folder, only what changed;
- :mod:`.signals`: robots.txt (from ``ai_crawlers.toml``), ai.txt, TDMRep.
"""

from __future__ import annotations

from .build import BuildReport, Candidate, SiteError, build
from .images import Protection
from .publish import PublishReport, publish

__all__ = ["BuildReport", "Candidate", "Protection", "PublishReport", "SiteError", "build", "publish"]
