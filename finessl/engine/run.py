"""Train or evaluate from a loaded config: what ``main.py`` calls."""
from __future__ import annotations

import json
import logging
import os

import torch

from finessl.engine.checkpoint import MODEL_KEYS, RESUME_KEYS, read_checkpoint
from finessl.distributed import Dist, init_distributed
from finessl.engine.device import select_device
from finessl.engine.rundir import draw_seed, prepare_run_dir, save_run_config
from finessl.engine.trainer import Trainer
from finessl.errors import UserError
from finessl.io import atomic_write_text
from finessl.logs import setup_logging

log = logging.getLogger(__name__)

RESULTS = "results.json"  # written when a run finishes: what sweeps and summaries read


def train(cfg) -> dict:
    """Fresh run or ``resume``, in one process or under ``torchrun``; logs and returns
    best / last test top-1."""
    dist = init_distributed()
    try:
        return _train(cfg, dist)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _rank0_run_dir(cfg, seed: int, dist: Dist) -> str:
    """Rank 0 checks and prepares the run folder; its verdict reaches every rank."""
    outcome = None
    if dist.is_main:
        try:
            run_dir = prepare_run_dir(cfg, seed)
            if not cfg.resume:
                save_run_config(cfg, seed, run_dir)
            outcome = ("ok", run_dir)
        except UserError as e:
            outcome = ("error", str(e))
    kind, value = dist.broadcast(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def _train(cfg, dist: Dist) -> dict:
    select_device(cfg, dist)  # a missing GPU fails before anything is written
    seed = dist.broadcast(draw_seed(cfg))
    run_dir = _rank0_run_dir(cfg, seed, dist)
    setup_logging(run_dir if dist.is_main else None, quiet=not dist.is_main)
    if cfg.resume:  # the checkpoint is read once; the trainer is rebuilt under its seed
        state = read_checkpoint(run_dir, RESUME_KEYS)
        trainer = Trainer(cfg, run_dir, int(state["seed"]), write_split=False, dist=dist)
        trainer.load_state(state, run_dir)
    else:
        log.info("run folder %s (seed %d, %d process%s)", run_dir, seed, dist.world,
                 "es" if dist.enabled else "")
        trainer = Trainer(cfg, run_dir, seed, dist=dist)
    result = trainer.fit()
    if result and dist.is_main:
        result.update(algorithm=cfg.algorithm, dataset=cfg.DATA.NAME, num_l=cfg.DATA.NUM_L,
                      seed=trainer.seed, history=trainer.history)
        atomic_write_text(json.dumps(result, indent=1), os.path.join(run_dir, RESULTS))
        log.info("best top-1 %.2f%% (epoch %d), last top-1 %.2f%% (epoch %d)",
                 100 * result["best_top1"], result["best_epoch"], 100 * result["last_top1"],
                 result["last_epoch"])
    return result


def evaluate(cfg) -> dict:
    """``eval_only True model_dir DIR``: test top-1 of a saved run."""
    setup_logging()
    state = read_checkpoint(cfg.model_dir, MODEL_KEYS)
    trainer = Trainer(cfg, None, int(state["seed"]), write_split=False)
    trainer.load_state(state, cfg.model_dir, full=False)
    result = trainer.evaluate()
    log.info("test top-1 %.2f%%  ECE %.4f  (%s)", 100 * result["top1"], result["ece"],
             cfg.model_dir)
    return result
