"""Share-ready derivatives: decode, look right, cloak slot, watermark, rights metadata, outbox.

Public API (plain data in and out):

- :class:`DeriveJob` / :class:`DeriveResult` and :func:`derive_file` (in-process, never raises);
- :class:`DeriveRunner`: the same in a killable child process with a per-image time limit;
- :func:`should_derive` / :func:`pair_partner`: non-images and RAW+JPEG pairs;
- :func:`protect`: the one-shot ``shutterlock protect`` command.

Status values: ``written``, ``held`` (not cloaked, held back by policy), ``failed``, ``skipped``.
"""

from __future__ import annotations

from .decode import DeriveError, classify
from .pipeline import (
    FAILED,
    HELD,
    SKIPPED,
    WRITTEN,
    DeriveJob,
    DeriveResult,
    derive_file,
    pair_partner,
    should_derive,
)
from .protect import protect
from .runner import DeriveRunner

__all__ = [
    "FAILED",
    "HELD",
    "SKIPPED",
    "WRITTEN",
    "DeriveError",
    "DeriveJob",
    "DeriveResult",
    "DeriveRunner",
    "classify",
    "derive_file",
    "pair_partner",
    "protect",
    "should_derive",
]
