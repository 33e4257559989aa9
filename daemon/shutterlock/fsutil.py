"""Crash-safe file writes: temp file, fsync, rename (or no-clobber link), fsync the directory.

Every file this program creates goes through here — config, keys, vault objects, restored originals,
derivatives — so a power cut leaves either the old file or the new one, never a torn one, and a leftover
temp file is recognisable by its prefix. Temp names are short and never contain the target's name, so a
target whose name is already at the file system's limit (255 bytes) can still be written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

TEMP_PREFIX = ".shutterlock-tmp-"


def fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc(name: str) -> Any:
    """A function of Linux's libc (syncfs, sync_file_range), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_syncfs = _libc("syncfs")  # since Linux 5.8 it reports write-back errors like fsync
_sync_file_range = _libc("sync_file_range")
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def start_write_back(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk now, without waiting (Linux; elsewhere the
    kernel does it in its own time). Durability still comes from :func:`flush`; this only makes it cheaper."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def flush(files: Sequence[str | Path], folders: Sequence[str | Path] = ()) -> None:
    """Make ``files`` and the entries of ``folders`` durable, all on one file system.

    On Linux one syncfs(2) of that file system does it: a single journal commit and disk cache flush for
    the whole group, where an fsync per file costs one each (≈0.4 ms here, the whole budget of a small
    file). Elsewhere every file and folder is fsynced.
    """
    if not files and not folders:
        return
    if _syncfs is not None:
        fd = os.open(files[0] if files else folders[0], os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), str(files[0] if files else folders[0]))
        finally:
            os.close(fd)
        return
    for path in files:
        fsync_file(Path(path))
    for folder in folders:
        fsync_dir(folder)


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (the nearest existing ancestor's)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def describe_free_space(path: Path) -> str:
    """E.g. "file system /mnt/vault: 12.3 kB free of 64.0 MB", for messages about a full disk."""
    from rich.filesize import decimal

    try:
        where = mount_point(path)
        info = os.statvfs(where)
    except OSError as error:
        return f"free space unknown: {error.strerror}"
    return f"file system {where}: {decimal(info.f_bavail * info.f_frsize)} free of " \
        f"{decimal(info.f_blocks * info.f_frsize)}"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def temp_path_in(directory: Path) -> Path:
    return directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"


@contextlib.contextmanager
def staged(directory: Path, mode: int = 0o600) -> Iterator[tuple[Path, BinaryIO]]:
    """A new temp file in ``directory``: written in the block, synced when it ends, removed unless committed."""
    tmp = temp_path_in(directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield tmp, handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def commit(tmp: Path, target: Path, *, replace: bool = True) -> bool:
    """Give a synced temp file its final name. With ``replace=False`` an existing target is left alone and
    False is returned (a hard link fails where a rename would clobber). The caller syncs the directory."""
    if replace:
        os.replace(tmp, target)
        return True
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:
        # File systems without hard links (exFAT, some network shares): check, then rename.
        if target.exists() or target.is_symlink():
            return False
        os.replace(tmp, target)
        return True
    os.unlink(tmp)
    return True


@contextlib.contextmanager
def atomic_writer(target: Path, mode: int = 0o600, *, replace: bool = True) -> Iterator[BinaryIO]:
    """Yield a handle whose contents appear at ``target`` only if the block completes.

    With ``replace=False`` an existing target is left alone (``FileExistsError``).
    """
    with staged(target.parent, mode) as (tmp, handle):
        yield handle
    try:
        if not commit(tmp, target, replace=replace):
            raise FileExistsError(f"{target}: already exists")
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(target: Path, data: bytes, mode: int = 0o600) -> None:
    ensure_dir(target.parent)
    with atomic_writer(target, mode) as handle:
        handle.write(data)


def remove_stale_temps(directory: Path, older_than: float = 0.0, *, recursive: bool = True) -> int:
    """Delete temp files a crash left behind (those older than ``older_than`` seconds); returns how many."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    found = directory.rglob(f"{TEMP_PREFIX}*") if recursive else directory.glob(f"{TEMP_PREFIX}*")
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            if not older_than or path.lstat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


class Confined:
    """Writes files below one root folder and nowhere else.

    Every folder under the root is opened by name relative to its parent with ``O_NOFOLLOW``, so a symbolic
    link already in the tree (planted, or left by an earlier restore) is refused instead of followed, and a
    name can never climb out with ``..`` or an absolute path (callers pass single components). The root
    itself is the user's choice and may be a link.
    """

    def __init__(self, root: Path, dir_mode: int = 0o700):
        ensure_dir(root, dir_mode)
        self.root, self.dir_mode = root, dir_mode
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        os.close(self._root_fd)

    def __enter__(self) -> Confined:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def folder(self, parts: tuple[str, ...]) -> int:
        """An open descriptor of the folder ``root/parts...``, created as needed; the caller closes it.

        Raises NotADirectoryError naming the component when a link or a file is in the way."""
        fd = os.dup(self._root_fd)
        try:
            for depth, part in enumerate(parts):
                _check_component(part)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, self.dir_mode, dir_fd=fd)
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise NotADirectoryError(
                            f"{'/'.join(parts[:depth + 1])} is a symbolic link or not a folder") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd


def _check_component(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"unsafe path component {name!r}")


@contextlib.contextmanager
def staged_at(folder_fd: int, mode: int) -> Iterator[tuple[str, BinaryIO]]:
    """Like :func:`staged`, for a folder given by descriptor: a synced temp file, removed unless committed."""
    name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=folder_fd)
    try:
        os.fchmod(fd, mode)  # exactly what was asked, whatever the umask
        with os.fdopen(fd, "wb") as handle:
            yield name, handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder_fd)
        raise


def commit_at(folder_fd: int, tmp: str, target: str, *, replace: bool) -> bool:
    """Give a temp file in a folder (by descriptor) its name; without ``replace`` an existing name (file,
    link, anything) is left alone and False returned. The folder is synced."""
    _check_component(target)
    try:
        if replace:
            os.replace(tmp, target, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        else:
            try:
                os.link(tmp, target, src_dir_fd=folder_fd, dst_dir_fd=folder_fd, follow_symlinks=False)
            except FileExistsError:
                return False
            except OSError:
                # File systems without hard links (exFAT, some network shares): check, then rename.
                if _lexists_at(folder_fd, target):
                    return False
                os.replace(tmp, target, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            else:
                os.unlink(tmp, dir_fd=folder_fd)
        os.fsync(folder_fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder_fd)


def _lexists_at(folder_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
