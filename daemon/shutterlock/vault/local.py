"""The local vault: sealed objects as files under ``objects/<2 hex>/<content id>``.

Objects are written to ``tmp/`` first and renamed into place only once complete and durable, so a crash
leaves at worst temp files, which the next start removes. Objects are committed in groups: one flush makes
a whole group's data durable, then the renames, then one flush makes the new names durable.

A vault is recognised by its marker file. A vault that is known to exist (the catalog remembers it) and
whose marker is missing is a drive that is not mounted: it is reported as :class:`VaultMissing`, never
replaced by a new, empty vault on whatever disk holds the mount point.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from shutterlock.fsutil import (
    TEMP_PREFIX,
    atomic_write_bytes,
    ensure_dir,
    flush,
    remove_stale_temps,
    start_write_back,
)
from shutterlock.vault.store import OBJECT_ID, NamedBlobs, ObjectMissing, StoreError, check_id

VAULT_MARKER = "shutterlock-vault.json"
ENVELOPE_NAME = "key-envelope.json"
WRITE_BACK_STEP = 8 << 20  # bytes of an object written before the kernel is asked to start writing them out


class VaultMissing(StoreError):
    """The vault's folder (its marker file) is not there: typically its drive is not mounted."""

    def __init__(self, root: Path):
        super().__init__(f"the vault is missing: {root} (is its drive mounted?)", transient=True)


class VaultFull(StoreError):
    """The vault's file system has no space left."""


def describe_os_error(error: OSError, action: str, path: Path) -> str:
    reason = error.strerror or str(error)
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"vault is not writable: cannot {action} {path}: {reason}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"vault disk is full: cannot {action} {path}"
    return f"cannot {action} {path}: {reason}"


class StagedFile(io.RawIOBase):
    """A temp file being written in the vault: a failed write raises the vault's StoreError (full, missing,
    refused), so the caller never mistakes it for a problem with the data being written.

    Every few megabytes written, the kernel is asked to start writing them to the disk: the disk works
    while the next megabytes are encrypted, instead of all at once at the batch's flush.
    """

    def __init__(self, store: LocalStore, path: str, fd: int):
        super().__init__()
        self._store, self._path, self._fd = store, path, fd
        self._written = self._started = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            written = os.write(self._fd, data)
            self._written += written
            if self._written - self._started >= WRITE_BACK_STEP:
                start_write_back(self._fd, self._started, self._written - self._started)
                self._started = self._written
            return written
        except OSError as error:
            raise self._store.error(error, "write to", Path(self._path)) from None

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class Staging:
    """Temp files of one batch inside the vault (same file system, so committing one is a rename). Paths
    are plain strings here: a pathlib join costs as much as a small file's hash."""

    def __init__(self, store: LocalStore):
        self._store = store
        self._prefix = os.path.join(store.tmp, TEMP_PREFIX)
        self.paths: list[str] = []

    def open(self) -> tuple[str, StagedFile]:
        tmp = self._prefix + secrets.token_hex(8)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as error:
            raise self._store.error(error, "write to", self._store.tmp) from None
        self.paths.append(tmp)
        return tmp, StagedFile(self._store, tmp, fd)

    def discard(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def clean(self) -> None:
        for path in self.paths:
            self.discard(path)


class LocalStore(NamedBlobs):
    """A vault folder on a local or mounted file system."""

    name = "local"

    def __init__(self, root: Path):
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.marker = root / VAULT_MARKER
        self._folders: set[str] = set()  # fan-out folders known to exist (one mkdir each per process)

    def present(self) -> bool:
        """The vault is there (its marker is): False while its drive is not mounted."""
        return self.marker.is_file()

    def create(self) -> None:
        """Lay out a new, empty vault (``init``, or a first run before anything was sealed)."""
        try:
            ensure_dir(self.objects)
            ensure_dir(self.tmp)
            atomic_write_bytes(self.marker, json.dumps({"format": "shutterlock-vault", "version": 1}).encode())
        except OSError as error:
            raise StoreError(describe_os_error(error, "create a vault in", self.root), transient=False) from None

    def prepare(self, envelope_file: Path | None = None) -> None:
        """Ready an existing vault for writing: its folders, no temp files a crash left, a copy of the key
        envelope (the vault and the passphrase alone then suffice to recover)."""
        if not self.present():
            raise VaultMissing(self.root)
        try:
            ensure_dir(self.objects)
            ensure_dir(self.tmp)
            remove_stale_temps(self.tmp)
            if envelope_file is not None and not self.envelope_path.exists() and envelope_file.exists():
                atomic_write_bytes(self.envelope_path, envelope_file.read_bytes())
        except OSError as error:
            raise StoreError(describe_os_error(error, "prepare", self.root), transient=False) from None

    def error(self, error: OSError, action: str, path: Path) -> StoreError:
        """The store error an OS error while writing means: the vault gone, full, or otherwise refusing."""
        if not self.present():
            return VaultMissing(self.root)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return VaultFull(describe_os_error(error, action, path))
        return StoreError(describe_os_error(error, action, path),
                          transient=error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM))

    def path_of(self, object_id: str) -> Path:
        check_id(object_id)
        return self.objects / object_id[:2] / object_id

    @contextlib.contextmanager
    def staging_area(self) -> Iterator[Staging]:
        """Temp files for a batch; whatever was not committed is removed when the block ends."""
        area = Staging(self)
        try:
            yield area
        finally:
            area.clean()

    @contextlib.contextmanager
    def staging(self) -> Iterator[tuple[str, StagedFile]]:
        """One temp file inside the vault, removed when the block ends unless adopted."""
        with self.staging_area() as area:
            tmp, handle = area.open()
            with handle:
                yield tmp, handle

    def commit(self, staged: Sequence[tuple[str, str]], *, replace: bool = False) -> list[bool]:
        """Put complete staged files in place as objects, durably and as a group: one flush for their data,
        the renames, one flush for the folders. For each, True if it was put in place (False: it was already
        there; ``replace``: a damaged copy is replaced).
        """
        objects = str(self.objects)
        targets = [f"{objects}/{check_id(object_id)[:2]}/{object_id}" for _, object_id in staged]
        new = [replace or not os.path.exists(target) for target in targets]
        moving = [(tmp, target) for (tmp, _), target, is_new in zip(staged, targets, new, strict=True) if is_new]
        if not moving:
            return new
        try:
            folders = sorted({os.path.dirname(target) for _, target in moving})
            for folder in folders:
                if folder not in self._folders:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(folder, 0o700)
                    self._folders.add(folder)
            flush([tmp for tmp, _ in moving])
            for tmp, target in moving:
                os.rename(tmp, target)
            flush([], [*folders, objects])
        except OSError as error:
            self._folders.clear()  # the vault may have gone: make sure of its folders next time
            raise self.error(error, "store objects in", self.objects) from None
        return new

    def adopt(self, staged: str, object_id: str, *, replace: bool = False) -> bool:
        """Move one complete staged file into place; False if the object already existed (``replace``: a
        damaged copy is replaced)."""
        return self.commit([(staged, object_id)], replace=replace)[0]

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
            flush([], [path.parent])

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
        if not self.present():  # never a blob on the disk under an unmounted drive's mount point
            raise VaultMissing(self.root)
        try:
            atomic_write_bytes(self._named(name), data)
        except OSError as error:
            raise self.error(error, "write", self._named(name)) from None

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._named(name).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(name, f"the local vault ({self.root})") from None

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
            flush([], [path.parent])


def open_local_vault(root: Path, envelope_file: Path, *, create: bool = True) -> LocalStore:
    """The vault, ready for writing. A vault with no marker is created only with ``create``; without it,
    the vault is known to exist somewhere and missing here (:class:`VaultMissing`)."""
    vault = LocalStore(root)
    if not vault.present():
        if not create:
            raise VaultMissing(root)
        vault.create()
    vault.prepare(envelope_file)
    return vault
