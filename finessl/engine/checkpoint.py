"""Checkpoint helpers: the run's seed and the RNG states that make resume exact."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from finessl.errors import UserError

LAST = "checkpoint_last.pt"


def saved_seed(run_dir: str) -> int:
    """The seed a saved run was trained with.

    Resume and evaluation rebuild the model under it, so anything drawn from it at
    build time (a randomly initialised backbone with ``pretrained none``) is the
    same as in training.
    """
    path = os.path.join(run_dir, LAST)
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint {path}")
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["seed"])
    except Exception as e:  # truncated or foreign file
        raise UserError(f"{path} is not a FineSSL checkpoint ({type(e).__name__})") from None


def rng_state() -> dict:
    """Every global RNG the run touches."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
