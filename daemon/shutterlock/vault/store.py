"""The storage interface every replica implements (the local vault, an S3 bucket).

A store only moves opaque, already-sealed bytes around under content ids; it never sees a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from shutterlock.errors import ShutterlockError

OBJECT_ID = re.compile(r"^[0-9a-f]{64}$")


class StoreError(ShutterlockError):
    """The store could not complete an operation; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = True):
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StoreError):
    def __init__(self, object_id: str, where: str):
        super().__init__(f"object {object_id[:12]}… is missing from {where}", transient=False)


def check_id(object_id: str) -> str:
    if not OBJECT_ID.match(object_id):
        raise ValueError(f"not a content id: {object_id!r}")
    return object_id


class Store(Protocol):
    """Content-addressed, write-once storage of sealed objects."""

    name: str

    def put_file(self, object_id: str, sealed: Path, *, replace: bool = False) -> bool:
        """Store the sealed file under ``object_id``; False if it was already there (idempotent). ``replace``
        overwrites a copy known to be damaged."""
        ...

    def open(self, object_id: str) -> BinaryIO:
        """A readable stream of the sealed bytes; raises ObjectMissing."""
        ...

    def exists(self, object_id: str) -> bool: ...

    def list(self) -> Iterator[str]: ...

    def delete(self, object_id: str) -> None:
        """Remove an object (key rotation replaces objects); a missing one is not an error."""
        ...


class NamedBlobs(Protocol):
    """Small sealed files under fixed names beside the objects (catalog snapshots, the signing identity):
    the bucket and the local vault both keep them, so either is enough to recover from."""

    def put_bytes(self, name: str, data: bytes) -> None: ...
    def get_bytes(self, name: str) -> bytes: ...
    def list_names(self, under: str) -> list[str]: ...
    def delete_name(self, name: str) -> None: ...

    def get_bytes_if_any(self, name: str) -> bytes | None:
        """The blob, or None when there is none by that name (other failures still raise)."""
        try:
            return self.get_bytes(name)
        except ObjectMissing:
            return None
