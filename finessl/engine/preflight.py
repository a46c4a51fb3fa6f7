"""What a run checks before it loads a model or data or writes a file, and what
``--dry-run`` checks: the device, the run folder (or the folder evaluated), the
dataset's files, the trained model's weights (SemiKD: the student's, then the teacher
run and its backbone's weights). Each failure is the one line the real run
would end with (exit 2), so a dry run that passes means the real run gets past its
setup, and a run that fails here leaves nothing behind.
"""
from __future__ import annotations

import os
import tempfile

from finessl.algorithms import ALGORITHMS
from finessl.data.base import get_dataset
from finessl.distributed import SINGLE, Dist
from finessl.engine.checkpoint import LAST
from finessl.engine.device import select_device
from finessl.engine.rundir import DEFAULT_RUN_DIR, format_run_dir
from finessl.errors import UserError
from finessl.models.families import family_of


def check(cfg, dist: Dist = SINGLE) -> None:
    """Every check, in the order a run meets them; a one-line UserError on the first
    that fails."""
    select_device(cfg, dist)
    if cfg.eval_only:
        check_saved_run(cfg.model_dir, "model_dir")
    elif dist.is_main:
        check_run_dir(cfg)
    root = os.path.abspath(os.path.expanduser(cfg.DATA.DATAPATH))
    get_dataset(cfg.DATA.NAME, cfg).check(root, cfg.DATA.DOWNLOAD)
    chosen = ALGORITHMS.get(cfg.algorithm)
    model_cfg = chosen.model_config(cfg)  # the model the run trains (SemiKD: the student)
    family_of(model_cfg.backbone).check_weights(model_cfg)
    if chosen.uses_teacher and not cfg.eval_only:
        from finessl.engine.teacher import check_teacher  # imports every algorithm
        check_teacher(cfg)


def check_saved_run(run_dir: str | None, key: str) -> None:
    if not run_dir:
        raise UserError(f"{key}: name the run folder to read (it holds {LAST})")
    if not os.path.isfile(os.path.join(run_dir, LAST)):
        raise UserError(f"{key}: no {LAST} in {run_dir}: no epoch of that run has finished")


def check_run_dir(cfg) -> None:
    """The folder a fresh run would write can be made and written, and holds no run
    (with ``seed`` null the folder depends on the seed drawn: only writability is
    checked, with the seed's place left open)."""
    if cfg.resume:
        check_saved_run(cfg.resume, "resume")
        return
    seed = cfg.seed if cfg.seed is not None else 0
    run_dir = format_run_dir(cfg.output_dir or DEFAULT_RUN_DIR, cfg, seed)
    if cfg.seed is not None and os.path.isfile(os.path.join(run_dir, LAST)):
        raise UserError(f"output_dir {run_dir} already holds a run ({LAST}): pass "
                        f"'resume {run_dir}' to continue it, or choose another output_dir")
    writable(run_dir)


def writable(run_dir: str) -> None:
    """A one-line UserError unless ``run_dir`` is, or can be made as, a writable folder.
    Tried for real (a temporary folder made and removed in the deepest existing
    ancestor): permission bits say nothing to root or on a read-only mount."""
    path = os.path.abspath(run_dir)
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UserError(f"output_dir {run_dir} is not writable ({ancestor} is a file, "
                        f"not a folder)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".finessl-write-test-", dir=ancestor))
    except OSError as e:
        raise UserError(f"output_dir {run_dir} is not writable ({e.strerror} in "
                        f"{ancestor})") from None
