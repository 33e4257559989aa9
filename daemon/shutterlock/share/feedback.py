"""Client feedback: fetch what the viewers posted, decrypt it, keep each visitor's latest, delete it remotely.

A message that does not decrypt (not from a link holder, damaged, or not ours), is too large or
does not follow the schema is counted as rejected and deleted; its content is never logged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shutterlock.share.crypto import CryptoError, load_private, open_feedback
from shutterlock.share.host import ShareHost
from shutterlock.share.state import Item, Secrets, ShareRow, ShareState

VISITOR = re.compile(r"^[0-9a-f]{16,64}$")
MAX_MESSAGE = 256 * 1024  # far above what the form accepts; anything bigger is not a viewer's message
LIMITS = {"name": 200, "note": 8000, "comment": 4000, "sent": 40}


class Invalid(Exception):
    pass


def collect(host: ShareHost, state: ShareState, row: ShareRow, secrets: Secrets, items: dict[str, Item]) -> int:
    """Returns the number of messages that brought something new."""
    private = load_private(secrets.feedback_private)
    auth = secrets.keys.feedback_auth
    new = rejected = 0
    done: list[str] = []
    for key, size in host.list(f"{row.sid}/f/"):
        done.append(key)
        try:
            if size > MAX_MESSAGE:
                raise Invalid("too large")
            message = _parse(open_feedback(private, auth, row.sid, host.get(key)), items)
        except (CryptoError, Invalid, ValueError, UnicodeDecodeError):
            rejected += 1
            continue
        new += state.record_feedback(row, **message)
    if rejected:
        state.add_rejected(row, rejected)
    if done:
        host.delete(done)
    return new


def _text(value: Any, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid("bad text")
    return value.strip()


def _parse(data: bytes, items: dict[str, Item]) -> dict[str, Any]:
    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise Invalid("unknown version")
    visitor, seq = raw.get("visitor"), raw.get("seq")
    if not isinstance(visitor, str) or not VISITOR.match(visitor) or not isinstance(seq, int) or seq < 0:
        raise Invalid("bad visitor")
    favourites, comments = raw.get("favourites", []), raw.get("comments", {})
    if not isinstance(favourites, list) or not isinstance(comments, dict):
        raise Invalid("bad selection")
    return {
        "visitor": visitor, "seq": seq,
        "client_name": _text(raw.get("name", ""), LIMITS["name"]),
        "note": _text(raw.get("note", ""), LIMITS["note"]),
        "sent_at": _text(raw.get("sent", ""), LIMITS["sent"]),
        "favourites": list(dict.fromkeys(i for i in favourites if isinstance(i, str) and i in items)),
        "comments": {i: _text(t, LIMITS["comment"]) for i, t in comments.items() if i in items and t},
    }
