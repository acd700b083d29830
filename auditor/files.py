"""Files: read the ones users name safely, write ours whole.

Reading files named by untrusted input: bounded, regular files only, inside allowed folders.

A config under review names files (its hf_config, its rule files). Three things must not follow
from that: a read that never ends (a FIFO, /dev/zero, a 10 GB file), a read outside the config's
repository (a secret beside it whose contents an error message could echo), and a traceback.

Replacing a file whole: a crash leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path


class FileRefused(ValueError):
    """A file that is not read: str() says why in a clause ('is a FIFO, not a regular file')."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened with O_NONBLOCK, so that naming a FIFO cannot hang the caller before fstat says what it
    is; FileRefused for anything but a regular file, or one over the limit; OSError as the system
    gives it (no such file, permission)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):              # as open() says it
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise FileRefused(f"is {kind}, not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"is over {limit:_} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe(exc: BaseException) -> str:
    """The clause for a failed read: FileRefused's own words, or the OS's (no such file, ...)."""
    if isinstance(exc, FileRefused):
        return str(exc)
    return (getattr(exc, "strerror", None) or str(exc)).lower() if isinstance(exc, OSError) else str(exc)


def repository_root(folder: str | Path) -> Path:
    """The repository a config in ``folder`` belongs to: the nearest folder at or above it that holds
    ``.git`` (a folder, or a file in a worktree), else ``folder`` itself."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def kind_of(path: Path) -> str | None:
    """None for a regular file; else why not, as a clause ('no such file', 'is a FIFO (named pipe),
    not a regular file', 'is a directory, not a file')."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return describe(exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    return f"is {next((name for test, name in _KINDS if test(mode)), 'something else')}, not a regular file"


def outside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` (resolved: symlinks followed) lies outside every one of ``roots``."""
    resolved = Path(path).resolve()
    return not any(resolved.is_relative_to(Path(root).resolve()) for root in roots)



def write_atomic(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``; the
    folder is made first where it is missing.

    The file is created with mode 0o666 less the umask, like any file the user's own tools
    write. A ``NamedTemporaryFile`` would leave it 0600, which a reviewer's account could not
    read. ``durable``: fsync the file before the rename and the folder after it, so a power cut
    leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable and hasattr(os, "O_DIRECTORY"):  # the rename itself survives a power cut
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
