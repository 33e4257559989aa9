"""The ``[share]`` table: where galleries are published and how long they live by default.

Kept in the share package until the configuration refactor lands; config.py will then parse the
table into this dataclass (defaults live here and nowhere else).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShareConfig:
    url: str  # s3://BUCKET/PREFIX
    endpoint: str = ""
    public_url: str = ""  # a public-read base serving PREFIX; empty: presigned links (at most 7 days)
    region: str = ""
    addressing_style: str = "auto"  # auto | path | virtual
    expires_days: float = 30.0  # a share with no --expires ends after this many days
    thumb_edge: int = 640  # long edge of the grid thumbnail, in pixels
    feedback_bytes: int = 65536  # the largest feedback message a client may post

    @property
    def bucket(self) -> str:
        return self.url[len("s3://"):].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.url[len("s3://"):].split("/", 1)
        return rest[1].strip("/") if len(rest) > 1 else ""
