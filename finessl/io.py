"""Files written whole or not at all: temp file in the same folder, fsync, rename.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never
a truncated one; nothing a user's run wrote is lost to a half-finished save.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, IO

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str, write: Callable[[IO], None], mode: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text), "w")
