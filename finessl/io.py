"""Files written whole or not at all: temp file in the same folder, fsync, rename.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never
a truncated one; nothing a user's run wrote is lost to a half-finished save. A write
that fails (a full disk, a quota, a read-only mount) raises :class:`WriteError`, one
line naming the file, and leaves the previous version as it was. A process killed in
the middle of a write leaves its temp file (``.tmp-`` and 8 characters, the
:data:`TEMP` pattern) behind: :func:`remove_orphan_temps` clears them.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from typing import Callable, IO

import torch

from finessl.errors import UserError

RESULTS = "results.json"  # a finished run's record (engine/run.py), read by reports and sweeps
TEMP = re.compile(r"^\.tmp-[a-z0-9_]{8}$")  # tempfile.mkstemp(prefix=".tmp-")'s names
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"


class WriteError(UserError):
    """A file could not be written; the previous version of it is intact."""

    def __init__(self, path: str, error: OSError):
        self.path, self.errno = path, error.errno
        reason = error.strerror or str(error) or type(error).__name__
        code = f" (errno {error.errno})" if error.errno else ""
        super().__init__(f"could not write {path}: {reason}{code}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    """Make the renames in ``folder`` durable (best effort: not every filesystem can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write: Callable[[IO], None], mode: str,
                  keep_previous: str | None = None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        if keep_previous and os.path.exists(path):
            link_or_copy(path, keep_previous)  # the old file now lives at both names
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise WriteError(path, e) from None
        raise


def link_or_copy(src: str, dst: str) -> None:
    """Make ``dst`` hold what ``src`` holds, atomically: a hard link renamed over ``dst``
    (no data copied), or a copy written by :func:`_atomic_write` where the filesystem
    has no hard links. ``src`` is not touched."""
    folder = os.path.dirname(os.path.abspath(dst))
    link = os.path.join(folder, ".tmp-" + "".join(secrets.choice(_ALPHABET) for _ in range(8)))
    try:
        os.link(src, link)
    except OSError:  # no hard links here (some network and FUSE filesystems)
        with open(src, "rb") as source:
            _atomic_write(dst, lambda f: shutil.copyfileobj(source, f), "wb")
        return
    try:
        os.replace(link, dst)
    except BaseException:
        os.unlink(link)
        raise


def atomic_save(obj, path: str, keep_previous: str | None = None) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically. With ``keep_previous``, the file
    ``path`` held is first linked (or copied) to that name, then the new one renamed
    over ``path``: at every instant ``path`` holds a complete file, and afterwards the
    old version is at ``keep_previous``."""
    _atomic_write(path, lambda f: torch.save(obj, f), "wb", keep_previous)


def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text), "w")


def remove_orphan_temps(folder: str) -> list[str]:
    """Delete the temp files interrupted writes left in ``folder`` (only names matching
    :data:`TEMP`, only plain files, only in ``folder`` itself); their names."""
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if TEMP.match(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
    return removed


def unreachable(url: str, timeout: float = 3.0) -> str:
    """'' when the host of ``url`` accepts a connection within ``timeout`` seconds, else
    why not, in a few words: an offline machine fails in seconds instead of a
    download library's minute of retries."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as e:
        return f"{host} cannot be reached: {e.strerror or type(e).__name__}"
