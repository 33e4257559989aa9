"""The local vault: sealed objects as files under ``objects/<2 hex>/<content id>``.

Objects are written to ``tmp/`` first and renamed into place only when complete and synced,
so a crash leaves at worst a temp file, which the next start removes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from shutterlock.fsutil import TEMP_PREFIX, atomic_write_bytes, ensure_dir, fsync_dir, remove_stale_temps, temp_path_in
from shutterlock.vault.store import OBJECT_ID, ObjectMissing, StoreError, check_id

VAULT_MARKER = "shutterlock-vault.json"
ENVELOPE_NAME = "key-envelope.json"


def describe_os_error(error: OSError, action: str, path: Path) -> str:
    reason = error.strerror or str(error)
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"vault is not writable: cannot {action} {path}: {reason}"
    if error.errno == errno.ENOSPC:
        return f"vault disk is full: cannot {action} {path}"
    return f"cannot {action} {path}: {reason}"


class LocalStore:
    """A vault folder on a local or mounted file system."""

    name = "local"

    def __init__(self, root: Path):
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        """Create the layout and sweep temp files a crash left; raises StoreError if not writable."""
        try:
            ensure_dir(self.objects)
            ensure_dir(self.tmp)
            marker = self.root / VAULT_MARKER
            if not marker.exists():
                atomic_write_bytes(marker, json.dumps({"format": "shutterlock-vault", "version": 1}).encode())
            remove_stale_temps(self.tmp)
        except OSError as error:
            raise StoreError(describe_os_error(error, "prepare", self.root), transient=False) from None

    def path_of(self, object_id: str) -> Path:
        check_id(object_id)
        return self.objects / object_id[:2] / object_id

    @contextlib.contextmanager
    def staging(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A temp file inside the vault (same file system, so adopting it is a rename)."""
        tmp = temp_path_in(self.tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise StoreError(describe_os_error(error, "write to", self.tmp), transient=False) from None
        try:
            with os.fdopen(fd, "wb", buffering=0) as handle:
                yield tmp, handle
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def adopt(self, staged: Path, object_id: str, *, replace: bool = False) -> bool:
        """Move a complete, synced staged file into place; False if the object already existed (``replace``:
        a damaged copy is replaced)."""
        target = self.path_of(object_id)
        if target.exists() and not replace:
            return False
        try:
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            created = not target.parent.exists()
            target.parent.mkdir(mode=0o700, exist_ok=True)
            if created:
                fsync_dir(self.objects)
            os.rename(staged, target)
            fsync_dir(target.parent)
        except OSError as error:
            raise StoreError(describe_os_error(error, "store object in", target.parent)) from None
        return True

    def put_file(self, object_id: str, sealed: Path, *, replace: bool = False) -> bool:
        if self.exists(object_id) and not replace:
            return False
        with self.staging() as (tmp, handle), open(sealed, "rb") as source:
            while chunk := source.read(1 << 20):
                handle.write(chunk)
            return self.adopt(tmp, object_id, replace=replace)

    def open(self, object_id: str) -> BinaryIO:
        try:
            return open(self.path_of(object_id), "rb")
        except FileNotFoundError:
            raise ObjectMissing(object_id, f"the local vault ({self.root})") from None

    def exists(self, object_id: str) -> bool:
        return self.path_of(object_id).is_file()

    def size(self, object_id: str) -> int:
        return self.path_of(object_id).stat().st_size

    def list(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for fan in sorted(self.objects.iterdir()):
            if fan.is_dir():
                for item in sorted(fan.iterdir()):
                    if OBJECT_ID.match(item.name):
                        yield item.name

    def delete(self, object_id: str) -> None:
        path = self.path_of(object_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    @property
    def envelope_path(self) -> Path:
        return self.root / ENVELOPE_NAME

    # Named blobs (catalog snapshots, the signing identity): the same names the bucket uses, as files below the
    # vault's root, so a vault on an external drive is enough to recover from, like the bucket.

    def _named(self, name: str) -> Path:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"not a blob name: {name!r}")
        return self.root.joinpath(*path.parts)

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            atomic_write_bytes(self._named(name), data)
        except OSError as error:
            raise StoreError(describe_os_error(error, "write", self._named(name))) from None

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._named(name).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(name, f"the local vault ({self.root})") from None

    def get_bytes_if_any(self, name: str) -> bytes | None:
        try:
            return self.get_bytes(name)
        except ObjectMissing:
            return None

    def list_names(self, under: str) -> list[str]:
        folder = self._named(under.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(path.relative_to(self.root).as_posix() for path in folder.rglob("*")
                      if path.is_file() and not path.name.startswith(TEMP_PREFIX))

    def delete_name(self, name: str) -> None:
        path = self._named(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)


def open_local_vault(root: Path, envelope_file: Path) -> LocalStore:
    """The vault, ready for writing, with a copy of the key envelope (vault + passphrase suffice)."""
    vault = LocalStore(root)
    vault.prepare()
    if not vault.envelope_path.exists() and envelope_file.exists():
        try:
            atomic_write_bytes(vault.envelope_path, envelope_file.read_bytes())
        except OSError as error:
            raise StoreError(f"cannot write the key envelope into the vault: {error.strerror}") from None
    return vault
