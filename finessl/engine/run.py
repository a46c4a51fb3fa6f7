"""Train or evaluate from a loaded config: what ``main.py`` calls."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os

import torch

from finessl.data import build_data, build_test_loader
from finessl.data.base import get_dataset
from finessl.engine.checkpoint import LAST, RESUME_KEYS, restore_training_state
from finessl.distributed import Dist, init_distributed
from finessl.engine import preflight
from finessl.engine.evaluate import evaluate as evaluate_model
from finessl.engine.trained import own_rng, read_state, rebuild
from finessl.engine.rundir import (checkpoint_seed, draw_seed, extend_run_config,
                                   discard_new_run_dir, prepare_run_dir, run_lock,
                                   save_run_config, setting_name)
from finessl.engine.trainer import Trainer
from finessl.errors import UserError, brief
from finessl.io import RESULTS, atomic_write_text
from finessl.logs import detach_run_log, setup_logging

log = logging.getLogger(__name__)


def train(cfg, epoch_images=None) -> dict:
    """Fresh run or ``resume``, in one process or under ``torchrun``; logs and returns
    best / last test top-1. ``epoch_images(history, confusion, classnames, aux_trained)``
    draws the report's figures of each epoch for tensorboard
    (:func:`finessl.report.figures.epoch_images`, handed down by main.py: the report
    sits above the engine); None: no images."""
    dist = init_distributed()
    try:
        return _train(cfg, dist, epoch_images)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _rank0_run_dir(cfg, seed: int, dist: Dist, hold: contextlib.ExitStack):
    """Rank 0 checks and prepares the run folder, and takes its lock (held in ``hold``
    for the life of the run); its verdict reaches every rank: (run folder, the
    num_epochs an ``allow_extend`` resume extended from, or None)."""
    outcome = None
    if dist.is_main:
        try:
            run_dir = prepare_run_dir(cfg, seed)
            hold.enter_context(run_lock(run_dir))
            extended_from = None
            if not cfg.resume:
                save_run_config(cfg, seed, run_dir)
            elif cfg.allow_extend:  # config.yaml says what will run, before it runs
                extended_from = extend_run_config(run_dir, cfg.num_epochs)
            outcome = ("ok", (run_dir, extended_from))
        except UserError as e:
            outcome = ("error", str(e))
    kind, value = dist.broadcast(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def fit_schedule(trainer, num_epochs: int) -> bool:
    """After a resume, make the restored cosine schedule end at ``num_epochs``.

    The schedule is ``CosineAnnealingLR`` with ``T_max = num_epochs``, stepped once per
    epoch (finessl/engine/optim.py), and the checkpoint restores the T_max the run had
    when it was saved. When ``allow_extend`` raised ``num_epochs``, the schedule is
    recomputed for the new length from the current epoch on: from epoch ``e`` (the
    epochs done) the learning rate is the one a run planned for ``num_epochs`` from
    the start has there, ``lr * (1 + cos(pi * e / num_epochs)) / 2``, down to 0 at
    ``num_epochs``; the epochs already done keep the rates they had. Returns whether
    it changed anything (only after an extension).
    """
    sched = getattr(trainer, "sched", None)
    if sched is None or sched.T_max == num_epochs:
        return False
    done = sched.last_epoch
    sched.T_max = float(num_epochs)
    rates = [sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * done / num_epochs))
             / 2 for base in sched.base_lrs]
    for group, rate in zip(trainer.optim.param_groups, rates):
        group["lr"] = rate
    sched._last_lr = list(rates)  # what get_last_lr() reports until the next step
    return True


def _load(trainer, state: dict, run_dir: str) -> None:
    """:func:`restore_training_state`; a checkpoint with every key but values of the
    wrong shape (a foreign or damaged file) is a one-line error, not a traceback."""
    try:
        restore_training_state(trainer, state, run_dir)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RuntimeError) as e:
        raise UserError(f"{os.path.join(run_dir, LAST)} is not a FineSSL checkpoint of this "
                        f"run ({brief(e)})") from None


def restore(trainer, run_dir: str) -> None:
    """Continue the run saved in ``run_dir`` with ``trainer``: its checkpoint, read once
    (:func:`finessl.engine.trained.read_state`), restores everything a resume needs."""
    _load(trainer, read_state(run_dir, "resume", RESUME_KEYS)[0], run_dir)


def _train(cfg, dist: Dist, epoch_images=None) -> dict:
    setup = preflight.check(cfg, dist)  # device, folder, data, weights: before any write
    seed = dist.broadcast(draw_seed(cfg))
    with contextlib.ExitStack() as hold:  # the run folder's lock, on rank 0
        run_dir, extended_from = _rank0_run_dir(cfg, seed, dist, hold)
        setup_logging(run_dir if dist.is_main else None, quiet=not dist.is_main)
        try:
            trainer = _build(cfg, dist, seed, run_dir, extended_from, setup)
        except UserError:  # setup failed: a folder this run made goes with it
            if dist.is_main:
                detach_run_log(run_dir)
                discard_new_run_dir(run_dir)
            raise
        trainer.epoch_images = epoch_images
        result = trainer.fit()
        if result and dist.is_main:
            result.update(algorithm=cfg.algorithm, dataset=cfg.DATA.NAME, num_l=cfg.DATA.NUM_L,
                          setting=setting_name(cfg), paper_top1=cfg.paper_top1,
                          seed=trainer.seed, history=trainer.history)
            atomic_write_text(json.dumps(result, indent=1), os.path.join(run_dir, RESULTS))
            log.info("best top-1 %.2f%% (epoch %d), last top-1 %.2f%% (epoch %d)",
                     100 * result["best_top1"], result["best_epoch"], 100 * result["last_top1"],
                     result["last_epoch"])
    return result


def _build(cfg, dist: Dist, seed: int, run_dir: str, extended_from,
           setup: preflight.Setup) -> Trainer:
    """The trainer of a fresh run, or of ``resume`` with its checkpoint loaded; a
    teacher (SemiKD) is loaded here, so a teacher that does not fit fails the setup."""
    if extended_from is not None:
        log.info("resume: %s extended from %s to %d epochs (recorded in its config.yaml)",
                 run_dir, extended_from, cfg.num_epochs)
    if cfg.resume:  # the checkpoint is read once; the trainer is rebuilt under its seed
        state = read_state(run_dir, "resume", RESUME_KEYS)[0]
        trainer = Trainer(cfg, run_dir, checkpoint_seed(state, run_dir), write_split=False,
                          dist=dist, setup=setup)
        _load(trainer, state, run_dir)
        if fit_schedule(trainer, cfg.num_epochs):
            log.info("cosine schedule recomputed for %d epochs from epoch %d (lr %.3e)",
                     cfg.num_epochs, trainer.start_epoch,
                     trainer.optim.param_groups[0]["lr"])
    else:
        log.info("run folder %s (seed %d, %d process%s)", run_dir, seed, dist.world,
                 "es" if dist.enabled else "")
        trainer = Trainer(cfg, run_dir, seed, dist=dist, setup=setup)
        if trainer.algorithm.uses_teacher:
            trainer.algorithm.teacher  # noqa: B018  (loaded as the first epoch would)
    return trainer


def evaluate(cfg) -> dict:
    """``eval_only True model_dir DIR``: test top-1 of a saved run, rebuilt from its
    folder (:func:`finessl.engine.trained.rebuild`) on this start's device."""
    setup_logging()
    setup = preflight.check(cfg)
    state, path = read_state(cfg.model_dir, "model_dir")
    data = build_data(cfg, setup.input_size, None)
    run = rebuild(cfg, state, path, data.classnames, setup.device, (data.mean, data.std),
                  model_cfg=setup.model_cfg)
    loader = build_test_loader(data, max(100, cfg.DATA.BATCH_SIZE), cfg.num_workers)
    result = evaluate_model(run.model, loader, run.device, run.precision, data.num_classes,
                            num_test=len(data.test))
    log.info("test top-1 %.2f%%  ECE %.4f  (%s)", 100 * result["top1"], result["ece"],
             cfg.model_dir)
    return result


def dry_run(cfg) -> None:
    """``--dry-run``: every check a real run's setup makes, in its order, and nothing
    written. :func:`preflight.check` first (device, folder, data files, weights), then
    the data (no split file), the model, the algorithm and the teacher are built as the
    run builds them, so every check they make is made and the two cannot drift; the
    global random state is left as it was and their progress lines are not printed
    (stdout is the merged config). Skipped after the first half when the data is still
    to be downloaded (a dry run fetches nothing)."""
    found = preflight.check(cfg)
    if cfg.DATA.DOWNLOAD:
        root = os.path.abspath(os.path.expanduser(cfg.DATA.DATAPATH))
        try:
            get_dataset(cfg.DATA.NAME, cfg).check(root, False)
        except UserError:
            log.info("dry run: %s is still to be downloaded; the checks that read it run "
                     "when the real run has it", cfg.DATA.NAME)
            return
    quiet = logging.getLogger("finessl")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with own_rng(found.device):
            trainer = Trainer(cfg, None, 0, write_split=False, setup=found)
            if not cfg.eval_only and trainer.algorithm.uses_teacher:
                trainer.algorithm.teacher  # noqa: B018  (loaded as the first epoch would)
    finally:
        quiet.setLevel(level)
