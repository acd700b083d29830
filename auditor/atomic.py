"""Replacing a file whole: a crash leaves the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


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
