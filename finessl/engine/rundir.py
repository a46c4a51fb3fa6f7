"""The run folder: the seed a run uses, the folder it writes (never one that already
holds a run), and the merged config saved there."""
from __future__ import annotations

import os
import secrets

from finessl.engine.checkpoint import LAST
from finessl.errors import UserError
from finessl.io import atomic_write_text


def draw_seed(cfg) -> int:
    """``seed``, or a fresh one when it is None (save_run_config records it)."""
    return cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)


def prepare_run_dir(cfg, seed: int) -> str:
    """The run folder: ``resume`` > ``output_dir`` > out/<dataset>/N<NUM_L>/seed<seed>.

    A fresh run never writes into a folder that already holds a checkpoint: that
    would overwrite somebody's results.
    """
    if cfg.resume:
        run_dir = cfg.resume
        if not os.path.isfile(os.path.join(run_dir, LAST)):
            raise UserError(f"resume: no {LAST} in {run_dir}")
        return run_dir
    run_dir = cfg.output_dir or os.path.join("out", cfg.DATA.NAME, f"N{cfg.DATA.NUM_L}",
                                             f"seed{seed}")
    if os.path.isfile(os.path.join(run_dir, LAST)):
        raise UserError(f"output_dir {run_dir} already holds a run ({LAST}): pass "
                        f"'resume {run_dir}' to continue it, or choose another output_dir")
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output_dir {run_dir} is not writable ({e.strerror})") from None
    return run_dir


def save_run_config(cfg, seed: int, run_dir: str) -> None:
    """The merged config, with the seed actually used, as ``config.yaml``."""
    resolved = cfg.clone()
    resolved.defrost()
    resolved.seed = seed
    resolved.output_dir = run_dir
    atomic_write_text(resolved.dump(), os.path.join(run_dir, "config.yaml"))
