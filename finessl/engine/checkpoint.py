"""The one place that writes, reads and checks checkpoints, with the RNG states that
make resume exact.

A checkpoint holds tensors and plain data only (numbers, strings, lists, dicts: the
RNG states are stored that way too), so it is read with ``torch.load(weights_only=True)``
and a file that would run code on loading is refused.
"""
from __future__ import annotations

import os
import pickle
import random

import numpy as np
import torch

from finessl.errors import UserError
from finessl.io import atomic_save

LAST = "checkpoint_last.pt"
# What each use of a checkpoint reads from it.
RESUME_KEYS = ("epoch", "global_step", "seed", "model", "optimizer", "scheduler", "algorithm",
               "rng", "history")
MODEL_KEYS = ("seed", "model")


def write_checkpoint(state: dict, run_dir: str, epoch: int, keep_every: int = 0) -> None:
    """``checkpoint_last.pt`` (and ``checkpoint_epoch<E>.pt`` every ``keep_every``
    epochs), each written atomically: a crash never leaves a half-written file."""
    atomic_save(state, os.path.join(run_dir, LAST))
    if keep_every > 0 and epoch % keep_every == 0:
        atomic_save(state, os.path.join(run_dir, f"checkpoint_epoch{epoch}.pt"))


def read_checkpoint(run_dir: str, keys: tuple[str, ...] = MODEL_KEYS,
                    map_location="cpu") -> dict:
    """The state saved in ``run_dir``, read once, with every entry of ``keys`` present
    (:data:`RESUME_KEYS` to resume, :data:`MODEL_KEYS` to evaluate or predict)."""
    path = os.path.join(run_dir, LAST)
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise UserError(f"{path} holds objects other than tensors and plain data, which "
                        f"could run code when loaded: refused ({first})") from None
    except Exception as e:  # truncated or foreign file
        raise UserError(f"{path} is not a FineSSL checkpoint ({type(e).__name__})") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} is not a complete FineSSL checkpoint (no "
                        f"{', '.join(missing)})")
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
