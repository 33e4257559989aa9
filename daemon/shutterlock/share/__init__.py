"""Private shares: end-to-end encrypted client galleries on the photographer's own bucket.

Public API (plain data in and out; docs/SHARING.md is the format and the threat model):

- :class:`Shares`: create, add, remove, revoke, list, show, feedback, and ``maintain`` for the
  daemon's schedule (expiry, renewed feedback forms, clean-up);
- :func:`parse_expiry`: ``36h`` / ``14d`` / ``2w`` / ``2026-12-24``;
- :func:`doctor`: checks the bucket and says exactly what to change.
"""

from __future__ import annotations

from .doctor import Check, doctor
from .expiry import parse_expiry
from .shares import ShareError, ShareInfo, Shares

__all__ = ["Check", "ShareError", "ShareInfo", "Shares", "doctor", "parse_expiry"]
