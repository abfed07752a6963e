"""Atomic file output: write to a temporary name in the target folder, then rename, so a reader
(or a killed job) never leaves or sees a half-written file — the one writer every output of
hpcvib goes through."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

from hpcvib.errors import InputError


@contextlib.contextmanager
def atomic_output(path: str):
    """Yield a temporary path next to ``path``; on success it is flushed to the disk (``fsync``:
    a full disk or an exceeded quota surfaces here, not later), given the mode of the umask and
    renamed to ``path``; on any error it is removed and ``path`` is untouched.

    An operating-system error (unwritable folder, full disk, quota) is raised as ``OSError``
    naming ``path`` — the CLI prints it as one line with exit status 2."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"{path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
        os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write here ({exc.strerror})", path) from None
    try:
        yield tmp
        _sync(tmp, path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename == path:
            raise
        raise OSError(exc.errno or errno.EIO, f"write failed ({exc.strerror or exc})", path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _sync(tmp: str, path: str) -> None:
    """fsync the finished temporary file (data on disk before the rename makes it visible)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path: str) -> None:
    """Fail now, before any work, if ``path`` cannot be written: its folder must exist and be
    writable (the same one-line error the write itself would give later)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"{path}: directory {directory} does not exist")
    try:  # permissions alone do not tell (root, /proc, read-only mounts): try it
        fd, tmp = tempfile.mkstemp(prefix=".tmp-check-", dir=directory)
        os.close(fd)
        os.remove(tmp)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write here ({exc.strerror})", path) from None
