"""One status document, the same for ``status --json``, the tray and systemd's STATUS= line."""

from __future__ import annotations

from typing import Any

IDLE, WORKING, PAUSED, OFFLINE, DEGRADED, ERROR = "idle", "working", "paused", "offline", "degraded", "error"


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def derive_state(status: dict[str, Any]) -> str:
    """The headline state, in order of what the photographer most needs to know."""
    if status.get("paused"):
        return PAUSED
    if status["files"].get("failed") or status.get("vault_error"):
        return ERROR
    replica = status.get("replica") or {}
    if replica.get("configured") and not replica.get("online", True):
        return OFFLINE
    if status["backlog"]["items"] or status.get("current") or status.get("pending"):
        return WORKING
    if (status.get("cloak") or {}).get("error") or any(s.get("warning") for s in status.get("sources", [])):
        return DEGRADED
    return IDLE


def summary(status: dict[str, Any]) -> str:
    """One line, e.g. "working: 214 photos (5.2 GB) to seal" or "offline: 50 objects / 1.2 GB waiting"."""
    state = status["state"]
    backlog = status["backlog"]
    replica = status.get("replica") or {}
    sealed = status["files"].get("sealed", 0)
    waiting = backlog["items"] + status.get("pending", 0)
    if state == PAUSED:
        return f"paused: {waiting} waiting" if waiting else "paused"
    if state == ERROR:
        failed = status["files"].get("failed", 0)
        return f"error: {status['vault_error']}" if status.get("vault_error") else \
            f"error: {failed} original(s) could not be sealed"
    if state == OFFLINE:
        return f"offline: {replica.get('waiting', 0)} objects / {human_bytes(replica.get('waiting_bytes', 0))} waiting"
    if state == WORKING:
        if waiting:
            return f"working: {waiting} to seal ({human_bytes(backlog['bytes'])})"
        derive_waiting = (status.get("derive") or {}).get("waiting", 0)
        return f"working: {replica.get('waiting', 0)} to replicate, {derive_waiting} to derive"
    if state == DEGRADED:
        cloak_error = (status.get("cloak") or {}).get("error")
        return f"all sealed ({sealed}); {cloak_error}" if cloak_error else f"all sealed ({sealed}); watching degraded"
    return f"all sealed ({sealed} originals)"
