"""Two repairs of a run folder, each a ``main.py`` subcommand:

- ``convert-checkpoint RUN_DIR --trust``: rewrite the checkpoints an older FineSSL
  wrote (numpy arrays in the RNG state) in the current format, readable with
  ``torch.load(weights_only=True)``. Reading the old files needs an unrestricted load,
  which would run any code a tampered file holds: only with ``--trust``, and only for
  files whose objects beyond tensors and plain data are numpy's arrays.
- ``restore-checkpoint RUN_DIR``: a damaged ``checkpoint_last.pt`` is set aside and
  ``checkpoint_prev.pt`` becomes the last checkpoint, for ``resume``.

Every file is replaced atomically and the original kept beside it.
"""
from __future__ import annotations

import glob
import io
import logging
import os

import numpy as np
import torch

from finessl.engine.checkpoint import (LAST, PREV, RESUME_KEYS, Damaged, is_old_format,
                                       load_file, read_checkpoint, unsafe_globals, where)
from finessl.errors import UserError
from finessl.io import WriteError, atomic_save, link_or_copy

log = logging.getLogger(__name__)

BACKUP = ".bak"  # checkpoint_last.pt -> checkpoint_last.pt.bak, the file before conversion
DAMAGED = ".damaged"  # checkpoint_last.pt -> checkpoint_last.pt.damaged


def plain(value):
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers
    (unsigned arrays as int64: the RNG keys; :func:`set_rng_state` reads them so)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "u":
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def _needs_conversion(path: str) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return False
    except Exception as e:
        names = unsafe_globals(path, e) if "weights only" in str(e).lower() else []
        if not names:
            raise Damaged(path, e) from None
        if not is_old_format(names):
            raise UserError(f"{path} names {', '.join(names[:3])}, which no FineSSL checkpoint "
                            f"holds: not converted, even with --trust") from None
        return True


def convert_checkpoints(run_dir: str, trust: bool) -> list[str]:
    """Convert every old-format ``checkpoint*.pt`` in ``run_dir``; the converted paths."""
    paths = sorted(glob.glob(os.path.join(glob.escape(run_dir), "checkpoint*.pt")))
    if not paths:
        raise UserError(f"convert-checkpoint: no checkpoint*.pt in {run_dir}")
    old = [p for p in paths if _needs_conversion(p)]
    if not old:
        log.info("%s: every checkpoint is already in the current format", run_dir)
        return []
    if not trust:
        raise UserError(f"{', '.join(old)}: reading the old format means an unrestricted "
                        f"torch.load, which runs any code a tampered file holds; if you (or "
                        f"FineSSL) wrote these files, pass --trust: 'python main.py "
                        f"convert-checkpoint {run_dir} --trust'")
    for path in old:
        if os.path.exists(path + BACKUP):
            raise UserError(f"{path + BACKUP} already exists: move it away, then convert again")
        state = plain(torch.load(path, map_location="cpu", weights_only=False))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        try:  # what is written must read back as data
            torch.load(buffer, weights_only=True)
        except Exception as e:
            raise UserError(f"{path}: still not plain data after conversion "
                            f"({', '.join(unsafe_globals(path, e)[:3])}); not converted") from None
        try:
            atomic_save(state, path, keep_previous=path + BACKUP)
        except WriteError as e:
            raise UserError(f"{e}; {path} is as it was") from None
        log.info("converted %s to the current format (the original is kept as %s)", path,
                 path + BACKUP)
    return old


def restore_previous(run_dir: str) -> None:
    """``checkpoint_prev.pt`` becomes ``checkpoint_last.pt``; a damaged last checkpoint is
    kept as ``checkpoint_last.pt.damaged``. Refused while the last one reads fine."""
    last = os.path.join(run_dir, LAST)
    if os.path.isfile(last):
        try:
            load_file(last)
        except Damaged:
            pass
        else:
            raise UserError(f"{last} is intact: nothing to restore (resume uses it)")
    state = read_checkpoint(run_dir, RESUME_KEYS, name=PREV)  # one line if it is missing too
    try:  # links: checkpoint_last.pt and checkpoint_prev.pt exist at every instant
        if os.path.isfile(last):
            link_or_copy(last, last + DAMAGED)
        link_or_copy(os.path.join(run_dir, PREV), last)
    except OSError as e:
        raise WriteError(last, e) from None
    log.info("%s now holds %s (%s)%s; continue with 'resume %s'", last, PREV, where(state),
             f", the damaged file is {last + DAMAGED}" if os.path.exists(last + DAMAGED) else "",
             run_dir)
