"""Train or evaluate from a loaded config: what ``main.py`` calls."""
from __future__ import annotations

import json
import logging
import os

from finessl.engine.checkpoint import saved_seed
from finessl.engine.setup import draw_seed, prepare_run_dir, save_run_config, select_device
from finessl.logs import setup_logging
from finessl.engine.trainer import Trainer
from finessl.io import atomic_write_text

log = logging.getLogger(__name__)

RESULTS = "results.json"  # written when a run finishes: what sweeps and summaries read


def train(cfg) -> dict:
    """Fresh run or ``resume``; logs and returns best / last test top-1."""
    select_device(cfg)  # a missing GPU fails before anything is written
    seed = draw_seed(cfg)
    run_dir = prepare_run_dir(cfg, seed)
    setup_logging(run_dir)
    if cfg.resume:
        trainer = Trainer(cfg, run_dir, saved_seed(run_dir), write_split=False)
        trainer.load(run_dir)
    else:
        save_run_config(cfg, seed, run_dir)
        log.info("run folder %s (seed %d)", run_dir, seed)
        trainer = Trainer(cfg, run_dir, seed)
    result = trainer.fit()
    if result:
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
    trainer = Trainer(cfg, None, saved_seed(cfg.model_dir), write_split=False)
    trainer.load(cfg.model_dir, full=False)
    result = trainer.evaluate()
    log.info("test top-1 %.2f%%  ECE %.4f  (%s)", 100 * result["top1"], result["ece"],
             cfg.model_dir)
    return result
