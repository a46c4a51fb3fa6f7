"""What a run checks before it loads a model or data or writes a file, and what
``--dry-run`` checks: the device and precision, the global batch, the model the run
trains (its input size, its weights; SemiKD: the student's, then the teacher run and
its backbone's weights), the views, the run folder (or the folder evaluated), the
dataset's files. Each failure is the one line the real run would end with (exit 2),
and a run that fails here leaves nothing behind. What a start works out here (device,
precision, model config, input size, the teacher read) is handed to the Trainer as a
:class:`Setup`, so it is worked out once.

``--dry-run`` then builds what the run's setup builds
(:func:`finessl.engine.run.dry_run`: the data without writing split.json, the model,
the algorithm, the teacher), with the same functions the Trainer calls, so every setup
check the run makes (docs/running.md) is made, and it cannot drift from the run's:
``input_size``, ``partial``, ``DATA.NUMBER_CLASSES``, ``DATA.NUM_L``,
``DATA.BATCH_SIZE``, ``DATA.CUTOUT``, ...
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import torch

from finessl.algorithms import ALGORITHMS
from finessl.data.base import get_dataset
from finessl.data.transforms import check_cutout
from finessl.distributed import SINGLE, Dist
from finessl.engine.device import Precision, select_device
from finessl.engine.rundir import DEFAULT_RUN_DIR, format_run_dir
from finessl.engine.trained import checkpoint_path
from finessl.errors import UserError
from finessl.engine.checkpoint import LAST
from finessl.models.families import family_of
from finessl.models.model import input_size


@dataclass
class Setup:
    """What one start works out once and hands to the Trainer: the device, the
    precision (docs/method.md §4), the config of the model the run trains (SemiKD: the
    student), the side of its views, and the teacher read (SemiKD, else None)."""

    device: torch.device
    precision: Precision
    model_cfg: object
    input_size: int
    teacher: object = None


def setup(cfg, dist: Dist = SINGLE, precision: Precision | None = None) -> Setup:
    """The checks of the config alone, in the order the run meets them, and what they
    work out (``precision`` replaces the one ``cfg.prec`` gives: tests run the
    half-precision modes on a CPU with it)."""
    device = select_device(cfg, dist)
    if cfg.DATA.BATCH_SIZE % dist.world:
        raise UserError(f"DATA.BATCH_SIZE {cfg.DATA.BATCH_SIZE} (the global batch) is not "
                        f"divisible by the {dist.world} processes")
    precision = precision or Precision(cfg.prec, device)
    model_cfg = ALGORITHMS.get(cfg.algorithm).model_config(cfg)  # SemiKD: the student
    size = input_size(model_cfg)
    check_cutout(cfg.DATA.CUTOUT, size)
    return Setup(device, precision, model_cfg, size)


def check(cfg, dist: Dist = SINGLE) -> Setup:
    """Every check that reads no data, in the order a run meets them; a one-line
    UserError on the first that fails, else the :class:`Setup` of this start."""
    found = setup(cfg, dist)
    if cfg.eval_only:
        checkpoint_path(cfg.model_dir, "model_dir")
    elif dist.is_main:
        check_run_dir(cfg)
    root = os.path.abspath(os.path.expanduser(cfg.DATA.DATAPATH))
    get_dataset(cfg.DATA.NAME, cfg).check(root, cfg.DATA.DOWNLOAD)
    family_of(found.model_cfg.backbone).check_weights(found.model_cfg)
    if ALGORITHMS.get(cfg.algorithm).uses_teacher and not cfg.eval_only:
        from finessl.engine.teacher import check_teacher  # imports every algorithm
        found.teacher = check_teacher(cfg)
    return found


def check_run_dir(cfg) -> None:
    """The folder a fresh run would write can be made and written, and holds no run
    (with ``seed`` null the folder depends on the seed drawn: only writability is
    checked, with the seed's place left open)."""
    if cfg.resume:
        checkpoint_path(cfg.resume, "resume")
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
