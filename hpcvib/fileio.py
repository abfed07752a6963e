"""Atomic file output: write to a temporary name in the target folder, then rename, so a reader
(or a killed job) never leaves or sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .errors import InputError


@contextlib.contextmanager
def atomic_output(path: str):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` (mode from the
    umask), on error it is removed and ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
