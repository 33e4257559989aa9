"""When a share ends, from what the photographer typed: ``36h``, ``14d``, ``2w``, ``2026-12-24`` or a date-time.

A bare date means the end of that day in local time (23:59:59), as proofing galleries do: "until
the 24th" includes the 24th. Every share ends; the longest is five years.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from shutterlock.errors import UsageError

UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
LONGEST = 5 * 365 * 86400


class ExpiryError(UsageError):
    """Not an expiry this program understands; the message shows what would be (exit 2)."""


def parse_expiry(text: str, now: float | None = None) -> float:
    """Seconds since the epoch at which the share ends."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    match = re.fullmatch(r"(\d+)\s*([hdw])", value)
    if match:
        when = now + int(match[1]) * UNITS[match[2]]
    else:
        try:
            moment = datetime.fromisoformat(value.upper())
        except ValueError:
            raise ExpiryError(f"expiry {text!r}: use a duration (36h, 14d, 2w) or a date (2026-12-24, "
                              "2026-12-24T18:00)") from None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment += timedelta(days=1, seconds=-1)
        when = moment.timestamp()
    if when <= now:
        raise ExpiryError(f"expiry {text!r} is in the past")
    if when - now > LONGEST:
        raise ExpiryError(f"expiry {text!r} is more than five years away")
    return when
