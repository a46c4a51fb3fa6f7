"""The one place that writes, reads and checks checkpoints, with the RNG states that
make resume exact.

A checkpoint holds tensors and plain data only (numbers, strings, lists, dicts: the
RNG states are stored that way too), so it is read with ``torch.load(weights_only=True)``
and a file that would run code on loading is refused. Checkpoints written before
that (numpy arrays in the RNG state) are named as such, with the command that
converts them (:mod:`finessl.engine.repair`).

Writing rotates: the previous ``checkpoint_last.pt`` becomes ``checkpoint_prev.pt``
(a hard link, then a rename), so the last good state is on disk at every instant and
a damaged last checkpoint still leaves the one before it. With a validation split
(DATA.NUM_VAL) the checkpoint of the best validation epoch is kept beside them as
``checkpoint_best_val.pt`` (docs/selection.md).
"""
from __future__ import annotations

import logging
import os
import pickle
import pickletools
import random
import re

import numpy as np
import torch

from finessl.errors import UserError, brief
from finessl.io import WriteError, atomic_save

log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"  # what checkpoint_last.pt held before the last write
BEST_VAL = "checkpoint_best_val.pt"  # the epoch of the best validation top-1 (DATA.NUM_VAL)
# What each use of a checkpoint reads from it.
RESUME_KEYS = ("epoch", "global_step", "seed", "model", "optimizer", "scheduler", "algorithm",
               "rng", "history")
MODEL_KEYS = ("seed", "model")
# What an older FineSSL's np.random.get_state() tuple put into a checkpoint.
OLD_FORMAT_GLOBALS = re.compile(r"^numpy(\._core|\.core)?\.(multiarray\._reconstruct|ndarray|"
                                r"dtype|dtypes\.\w+|multiarray\.scalar)$")


def metric_checkpoint(metric: str, option: str = "--metric") -> str:
    """The checkpoint file a way of choosing the epoch reads: ``last`` the last epoch's,
    ``best_val`` the best validation epoch's; ``best_test`` (``best``) is refused, one
    line: choosing with the test labels is an oracle, and no checkpoint of it is kept."""
    if metric == "last":
        return LAST
    if metric == "best_val":
        return BEST_VAL
    if metric in ("best_test", "best"):
        raise UserError(f"{option} {metric}: the best test epoch is chosen with the test labels "
                        f"(an oracle, for reference only), so no checkpoint of it is kept; "
                        f"use best_val (a run with DATA.NUM_VAL) or last")
    raise UserError(f"{option} {metric}: expected last or best_val")


def where(state: dict) -> str:
    """'epoch E' for the end of an epoch, 'epoch E step S' for a mid-epoch checkpoint
    (E epochs done, S steps into the next)."""
    step = state.get("step", 0)
    return f"epoch {state['epoch']}" + (f" step {step}" if step else "")


def write_checkpoint(state: dict, run_dir: str, epoch: int, keep_every: int = 0,
                     best_val: bool = False) -> None:
    """``checkpoint_last.pt``, the one it replaces kept as ``checkpoint_prev.pt`` (and
    ``checkpoint_epoch<E>.pt`` every ``keep_every`` epochs), each written atomically: a
    crash never leaves a half-written file. ``best_val``: the epoch is the best on the
    validation split so far, kept as ``checkpoint_best_val.pt`` too (written first: a
    run killed between the two redoes the epoch on resume and writes both). A failed
    write (a full disk) is one line naming the file; the files already there are as
    they were."""
    path = os.path.join(run_dir, LAST)
    try:
        if best_val:
            atomic_save(state, os.path.join(run_dir, BEST_VAL))
        atomic_save(state, path, keep_previous=os.path.join(run_dir, PREV))
        if keep_every > 0 and epoch % keep_every == 0:
            atomic_save(state, os.path.join(run_dir, f"checkpoint_epoch{epoch}.pt"))
    except WriteError as e:
        raise UserError(f"{e}; the checkpoints already in {run_dir} are intact: make room, then "
                        f"continue with 'resume {run_dir}'") from None


def training_state(trainer, epoch: int, step: int) -> dict:
    """What a checkpoint of ``trainer`` holds after ``epoch`` epochs and ``step`` steps
    of the next: the trained parameters, optimizer, schedule, algorithm and scaler
    states, every RNG, the history so far, and the config and class names it ran with."""
    scaler = trainer.precision.scaler
    return {
        "epoch": epoch, "step": step, "global_step": trainer.global_step, "seed": trainer.seed,
        "model": trainer.model.trainable_state_dict(), "optimizer": trainer.optim.state_dict(),
        "scheduler": trainer.sched.state_dict(), "algorithm": trainer.algorithm.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "rng": rng_state(), "history": trainer.history, "config": trainer.cfg.dump(),
        "classnames": trainer.data.classnames,
    }


def restore_training_state(trainer, state: dict, run_dir: str) -> None:
    """Put a state :func:`read_checkpoint` returned into ``trainer``, everything a resume
    needs: the loop goes on where it stopped (evaluation rebuilds a run with
    :mod:`finessl.engine.trained` instead). Parameters that do not fit the model are
    one line."""
    path = os.path.join(run_dir, LAST)
    try:
        trainer.model.load_trainable_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path} does not fit this config ({brief(e)}); "
                        f"use the config the run was trained with") from None
    trainer.optim.load_state_dict(state["optimizer"])
    trainer.sched.load_state_dict(state["scheduler"])
    try:
        trainer.algorithm.load_state_dict(state["algorithm"])
    except (KeyError, RuntimeError) as e:  # a statistic it lacks (an older FineSSL) or resized
        raise UserError(f"{path}: the algorithm's state does not fit "
                        f"{trainer.algorithm.method_label()} of this FineSSL ({brief(e)}); resume "
                        f"it with the version that wrote it, or start the run afresh") from None
    if trainer.precision.scaler is not None and state["scaler"] is not None:
        trainer.precision.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    trainer.start_epoch, trainer.global_step = state["epoch"], state["global_step"]
    trainer.start_step = state.get("step", 0)  # older checkpoints: end of an epoch
    trainer.history, trainer.saved = state["history"], where(state)
    log.info("resumed from %s at %s", path, trainer.saved)


def _scan_globals(path: str) -> list[str]:
    """The classes and functions a plain pickle names, read without running it."""
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # what could be read is all there is
        pass
    return [n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))]


def unsafe_globals(path: str, error: Exception) -> list[str]:
    """The classes and functions a checkpoint names that a weights-only load refuses."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: the error names the first one, or a scan finds them
        return re.findall(r"GLOBAL ([\w.]+)", str(error))[:1] or _scan_globals(path)


def is_old_format(names: list[str]) -> bool:
    """True when the only objects beyond tensors and plain data are numpy's arrays:
    a checkpoint of an older FineSSL."""
    return bool(names) and all(OLD_FORMAT_GLOBALS.match(n) for n in names)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    first = brief(text.splitlines()[0].split(". ")[0], 160) if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_file(path: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``, its failures as one line each."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = unsafe_globals(path, e) if "weights only" in str(e).lower() else []
        if not names:  # garbage, a truncated pickle: nothing that names code, yet unreadable
            raise Damaged(path, e) from None
        if is_old_format(names):
            run_dir = os.path.dirname(path) or "."
            raise UserError(f"{path} is a checkpoint of an older FineSSL: its RNG state holds "
                            f"numpy arrays, which only a load that could also run code reads. "
                            f"If you trust the file, convert it once with 'python main.py "
                            f"convert-checkpoint {run_dir} --trust'") from None
        raise UserError(f"{path} names {', '.join(names[:3])}, which could run code when "
                        f"loaded: refused (a FineSSL checkpoint holds tensors and plain data "
                        f"only)") from None
    except Exception as e:  # truncated or foreign file
        raise Damaged(path, e) from None


class Damaged(UserError):
    """A checkpoint file that cannot be read at all (truncated, garbage)."""

    def __init__(self, path: str, error: Exception):
        self.path = path
        super().__init__(f"{path} is damaged or not a FineSSL checkpoint ({_first_line(error)})")


def _offer_previous(run_dir: str, damaged: Damaged) -> UserError:
    """The error for a damaged checkpoint_last.pt: with the way back to checkpoint_prev.pt
    when that one is intact."""
    prev = os.path.join(run_dir, PREV)
    if not os.path.isfile(prev):
        return damaged
    try:
        state = load_file(prev)
        _check_keys(prev, state, RESUME_KEYS)
    except UserError:
        return UserError(f"{damaged}; {PREV} is not intact either")
    return UserError(f"{damaged}; {PREV} ({where(state)}) is intact: 'python main.py "
                     f"restore-checkpoint {run_dir}' makes it the last checkpoint (keeping "
                     f"the damaged file as {LAST}.damaged), then resume")


def _check_keys(path: str, state, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} is not a complete FineSSL checkpoint (no "
                        f"{', '.join(missing)})")


def read_checkpoint(run_dir: str, keys: tuple[str, ...] = MODEL_KEYS,
                    map_location="cpu", name: str = LAST) -> dict:
    """The state saved in ``run_dir``, read once, with every entry of ``keys`` present
    (:data:`RESUME_KEYS` to resume, :data:`MODEL_KEYS` to evaluate or predict)."""
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint {path}")
    try:
        state = load_file(path, map_location)
    except Damaged as e:
        raise (_offer_previous(run_dir, e) if name == LAST else e) from None
    _check_keys(path, state, keys)
    return state


def rng_state() -> dict:
    """Every global RNG the run touches."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
