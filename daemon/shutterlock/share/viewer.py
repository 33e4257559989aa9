"""The static viewer page each share serves, and the page that replaces it when the share ends.

Style and script are inlined (one request before the manifest, which matters for the first
thumbnail) and pinned by their SHA-256 in a Content-Security-Policy meta tag: no other script can
run, and the page can talk only to its own origin and the feedback form's, so even a hostile
title could not carry the key away. There is no third-party code at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from importlib import resources
from urllib.parse import urlsplit


def _asset(name: str) -> str:
    return resources.files("shutterlock.share").joinpath("viewer", name).read_text("utf-8")


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""


def page(sid: str, manifest_url: str, post_url: str = "") -> bytes:
    """The share's index.html: the generic viewer plus where its manifest is (a presigned URL or ``m``)."""
    css, js = _asset("viewer.css"), _asset("viewer.js")
    origins = sorted({o for o in (_origin(manifest_url), _origin(post_url)) if o})
    csp = (f"default-src 'none'; script-src {_hash(js)}; style-src {_hash(css)}; img-src blob:; "
           f"connect-src 'self' {' '.join(origins)}".rstrip() + "; base-uri 'none'; form-action 'none'")
    config = json.dumps({"v": 1, "sid": sid, "manifest": manifest_url}).replace("</", "<\\/")
    html = _asset("page.html")
    for placeholder, value in (("{csp}", csp), ("{css}", css), ("{config}", config), ("{js}", js)):
        html = html.replace(placeholder, value)
    return html.encode()


@cache
def ended_page() -> bytes:
    """One constant page for every ended share: it names nothing and holds no key."""
    css = _asset("viewer.css")
    return _asset("ended.html").replace("{style_hash}", _hash(css)).replace("{css}", css).encode()
