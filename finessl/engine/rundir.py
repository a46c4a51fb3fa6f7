"""The run folder: the seed a run uses, the folder it writes (never one that already
holds a run, never one another process is running in), and the merged config saved
there."""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from typing import Iterator

import yaml
from yacs.config import CfgNode as CN

from finessl.config import RUN_CONFIG
from finessl.engine.checkpoint import LAST
from finessl.errors import UserError
from finessl.io import atomic_write_text

LOCK = "run.lock"  # held (flock) by the process training in the folder; holds its pid


def draw_seed(cfg) -> int:
    """``seed``, or a fresh one when it is None (save_run_config records it)."""
    return cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)


RUN_DIR_FIELDS = ("seed", "algorithm", "config")
DEFAULT_RUN_DIR = "out/{config}/{algorithm}/seed{seed}"


def setting_name(cfg) -> str:
    """The setting's name in run folders, sweeps and reports: ``setting`` (the --cfg
    file's name unless set), else ``<DATA.NAME>_N<NUM_L>``."""
    return cfg.setting or f"{cfg.DATA.NAME}_N{cfg.DATA.NUM_L}"


def format_run_dir(template: str, cfg, seed: int) -> str:
    """``output_dir`` with its fields filled: ``{seed}``, ``{algorithm}`` and ``{config}``
    (the ``setting`` key, which ``load_config`` sets to the --cfg file's name; without
    either, ``<DATA.NAME>_N<NUM_L>``), so seeds and methods of one config never share a
    folder."""
    config = setting_name(cfg)
    try:
        return template.format(seed=seed, algorithm=cfg.algorithm, config=config)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"output_dir {template!r}: fields are {{seed}}, {{algorithm}} and "
                        f"{{config}} ({type(e).__name__}: {e}); write a literal brace as "
                        f"{{{{ or }}}}") from None


def prepare_run_dir(cfg, seed: int) -> str:
    """The run folder: ``resume`` > ``output_dir`` (its fields filled,
    :func:`format_run_dir`) > out/{config}/{algorithm}/seed{seed}.

    A fresh run never writes into a folder that already holds a checkpoint: that
    would overwrite somebody's results.
    """
    if cfg.resume:
        run_dir = cfg.resume
        if not os.path.isfile(os.path.join(run_dir, LAST)):
            raise UserError(f"resume: no {LAST} in {run_dir}: no epoch of that run has "
                            f"finished; start it afresh (the same command without resume)")
        return run_dir
    run_dir = format_run_dir(cfg.output_dir or DEFAULT_RUN_DIR, cfg, seed)
    if os.path.isfile(os.path.join(run_dir, LAST)):
        raise UserError(f"output_dir {run_dir} already holds a run ({LAST}): pass "
                        f"'resume {run_dir}' to continue it, or choose another output_dir")
    try:
        made = first_missing(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        if made is not None:
            _MADE[os.path.abspath(run_dir)] = made
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output_dir {run_dir} is not writable ({e.strerror})") from None
    return run_dir


_MADE: dict[str, str] = {}  # run folder -> the outermost folder prepare_run_dir made for it


def first_missing(path: str) -> str | None:
    """The outermost folder of ``path`` that does not exist yet (None: it all exists)."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def discard_new_run_dir(run_dir: str) -> None:
    """Remove what :func:`prepare_run_dir` made for a run that failed before its first
    checkpoint (a folder it found existing is left; one holding a checkpoint too)."""
    made = _MADE.pop(os.path.abspath(run_dir), None)
    if made is not None and not os.path.isfile(os.path.join(run_dir, LAST)):
        shutil.rmtree(made, ignore_errors=True)


def _holder(fd: int) -> str:
    """The pid written in a lock file held by another process ('?' when unreadable)."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[str]:
    """Hold ``run_dir/run.lock`` for the life of the block: one run per folder.

    The lock is an ``flock`` on a descriptor this process keeps open, so the kernel
    releases it when the process ends in any way (SIGKILL included): a lock file left
    by a dead process holds no lock and is taken over silently. The file carries the
    holder's pid, for the message another process gets (one line, exit 2). The file is
    removed when the block ends; a process that opened it just before is not fooled
    (it checks that the file it locked is still the one at the path, else retries).
    """
    path = os.path.join(run_dir, LOCK)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"output_dir {run_dir}: cannot create {LOCK} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            who = f"process {pid}" if pid != "?" else "another process"
            raise UserError(f"output_dir {run_dir} is in use by {who}; wait for it to "
                            f"finish or stop it, or choose another output_dir") from None
        except OSError as e:  # a file system without locks
            os.close(fd)
            raise UserError(f"output_dir {run_dir}: cannot lock {path} ({e.strerror})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def checkpoint_seed(state: dict, run_dir: str) -> int:
    """The seed a checkpoint read by :func:`~finessl.engine.checkpoint.read_checkpoint`
    records; one that is not a number is a one-line error (a foreign or damaged file)."""
    seed = state["seed"]
    try:
        if isinstance(seed, (bool, str, bytes)):
            raise TypeError
        return int(seed)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise UserError(f"{os.path.join(run_dir, LAST)} is not a FineSSL checkpoint (its seed "
                        f"is a {type(seed).__name__}, not an int)") from None


def save_run_config(cfg, seed: int, run_dir: str) -> None:
    """The merged config, with the seed actually used, as ``config.yaml``."""
    resolved = cfg.clone()
    resolved.defrost()
    resolved.seed = seed
    resolved.output_dir = run_dir
    resolved.setting = setting_name(cfg)  # the name stays the run's, however it is reloaded
    atomic_write_text(resolved.dump(), os.path.join(run_dir, RUN_CONFIG))


def extend_run_config(run_dir: str, num_epochs: int) -> int | None:
    """Record an extension (``allow_extend True``) in ``run_dir/config.yaml``: its
    ``num_epochs`` becomes ``num_epochs``, every other value stays, and the file is
    rewritten atomically. Returns the old ``num_epochs``, or None when it already said
    so (a rerun of the same extension)."""
    path = os.path.join(run_dir, RUN_CONFIG)
    with open(path, "rb") as f:
        stored = CN(yaml.safe_load(f))
    old = stored.get("num_epochs")
    if old == num_epochs:
        return None
    stored.num_epochs = num_epochs
    atomic_write_text(stored.dump(), path)
    return old
