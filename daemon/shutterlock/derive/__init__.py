"""Share-ready derivatives: decode, look right, cloak, watermark, rights metadata, outbox.

Public API (plain data in and out):

- :class:`DeriveJob` → :func:`render` → :class:`Rendered` (encoded JPEG bytes or a reason; never raises);
- :class:`DeriveRunner`: ``render`` in a killable child process with a per-image time limit;
- :func:`signing.sign_rendered`: the daemon-side C2PA signature on the rendered bytes;
- :func:`outbox.place`: the daemon-side atomic, no-clobber write of the rendered bytes;
- :func:`pairs.skip_reason`: non-images and the skipped half of RAW+JPEG pairs;
- :func:`protect.protect`: the one-shot ``shutterlock protect`` command;
- :class:`lane.DeriveStage`: the daemon's derive lane.
"""

from __future__ import annotations

from .render import DeriveJob, Outcome, Rendered, render
from .runner import DeriveRunner

__all__ = ["DeriveJob", "DeriveRunner", "Outcome", "Rendered", "render"]
