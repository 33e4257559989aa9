"""File names as the file system has them: bytes, which need not be UTF-8.

Cards written by cameras or by Windows in a legacy code page (FAT, SMB) carry names that are not
valid UTF-8. Python hands them over as ``str`` with the undecodable bytes as lone surrogates
(``surrogateescape``); that form opens the right file and turns back into the exact bytes, so it is
the one form used inside the program. Where a name must be stored as text (SQLite, JSON) or shown to
a person (logs, status), the helpers here keep the bytes exactly or escape them, never drop them.
"""

from __future__ import annotations

import base64
import re

_ESCAPED = re.compile(r"[\udc80-\udcff\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def to_bytes(name: str) -> bytes:
    """The exact bytes of a name as the file system has it."""
    return name.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    """The program's form of a name read as bytes (the inverse of :func:`to_bytes`)."""
    return raw.decode("utf-8", "surrogateescape")


def is_text(name: str) -> bool:
    """True when the name is valid UTF-8 (so it can be stored as text unchanged)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def b64(name: str) -> str:
    """Standard base64 (RFC 4648 §4, with padding) of a name's bytes, for JSON."""
    return base64.b64encode(to_bytes(name)).decode()


def from_b64(text: str) -> str:
    return from_bytes(base64.b64decode(text, validate=True))


def display(text: str) -> str:
    """One printable line: undecodable bytes as ``\\xNN``, control characters escaped (a newline in a
    file name must not split a log line or a status line)."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in _CONTROL_NAMES:
            return _CONTROL_NAMES[char]
        code = ord(char)
        return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"

    return _ESCAPED.sub(escape, text)
