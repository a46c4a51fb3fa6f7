"""A trained run, rebuilt: the one way evaluation (``eval_only True model_dir DIR``),
``predict``, SemiKD's teacher and resume read a run folder (docs/running.md).

A run is a folder holding ``config.yaml`` and ``checkpoint_last.pt``, or one of its
checkpoint files (which stores the config too). :func:`read_run` reads the
checkpoint once and the config the run was trained with (``config.yaml``, else the
checkpoint's stored copy, loaded from memory); :func:`rebuild` builds the model its
algorithm trains (SemiKD: the student) on a device in a precision, under the run's
seed (what is not trained, a random tower, comes out as the run drew it) and with
the global RNGs left as they were, and loads the trained tensors. Every failure is
one line from one set: no such folder or file, no checkpoint, not a FineSSL
checkpoint, a checkpoint that does not fit its config.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from finessl.algorithms import algorithm_class
from finessl.config import RUN_CONFIG
from finessl.config_load import load_config_dict
from finessl.data.datasets import dataset_stats
from finessl.engine.checkpoint import (BEST_VAL, LAST, MODEL_KEYS, load_file, read_checkpoint,
                                       seed_everything)
from finessl.engine.device import Precision, select_device
from finessl.engine.rundir import checkpoint_seed
from finessl.errors import UserError, brief
from finessl.models import build_model
from finessl.models.model import input_size

# Where a run was, not what it trained: dropped from a stored config before loading.
PLACE_KEYS = ("resume", "output_dir", "eval_only", "model_dir", "allow_extend")


@dataclass
class TrainedRun:
    """A run rebuilt for inference: its config, the config of the model it trains, the
    model (eval mode, trained tensors loaded) with its device and precision, the
    checkpoint read, the class names the head was built for and the views' side."""

    cfg: object
    model_cfg: object
    model: torch.nn.Module
    device: torch.device
    precision: Precision
    state: dict
    classnames: list[str]
    input_size: int
    path: str  # the checkpoint file read


def checkpoint_path(source: str | None, key: str, name: str = LAST) -> str:
    """The checkpoint a run folder (its ``name``: ``checkpoint_last.pt``, or
    ``checkpoint_best_val.pt``) or a checkpoint file ``source`` names; ``key`` is the
    config key or option that named it."""
    if not source:
        raise UserError(f"{key}: name the run folder to read (it holds {LAST})")
    if os.path.isdir(source):
        path = os.path.join(source, name)
        if name == BEST_VAL and not os.path.isfile(path):
            raise UserError(f"{key}: no {BEST_VAL} in {source}: the run has no validation "
                            f"split (DATA.NUM_VAL), or no epoch of it has finished")
        if not os.path.isfile(path):
            raise UserError(f"{key}: no {LAST} in {source}: no epoch of that run has finished")
        return path
    if not os.path.exists(source):
        raise UserError(f"{key}: no {LAST} in {source}: no such folder (give a run folder, "
                        f"which holds {RUN_CONFIG} and {LAST}, or one of its checkpoint "
                        f"files)")
    return source


def read_state(source: str | None, key: str, keys: tuple[str, ...] = MODEL_KEYS,
               name: str = LAST) -> tuple[dict, str]:
    """(checkpoint state with every entry of ``keys``, its path), read once; ``name``:
    the file of a run folder to read."""
    path = checkpoint_path(source, key, name)
    if os.path.isdir(source):
        return read_checkpoint(source, keys, name=name), path
    state = load_file(path)
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{key}: {path} is not a FineSSL checkpoint (no {', '.join(missing)})")
    return state, path


def stored_config(state: dict, path: str, opts: list[str] | None = None):
    """The config a checkpoint stores (its places dropped), with ``opts`` on top."""
    try:
        stored = yaml.safe_load(state["config"]) or {}
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise UserError(f"{path} is not a FineSSL checkpoint (its config: {brief(e)})") from None
    if isinstance(stored, dict):
        for name in PLACE_KEYS:
            stored.pop(name, None)
    try:
        return load_config_dict(stored, opts, f"the config in {path}")
    except UserError as e:
        raise UserError(f"the config in {path} does not load ({e})") from None


def read_run(source: str | None, key: str, opts: list[str] | None = None,
             cfg_file: str | None = None, name: str = LAST) -> tuple[object, dict, str]:
    """(config, checkpoint state, checkpoint path) of the run ``source`` names (its
    checkpoint ``name``): its config is ``cfg_file``, else the folder's config.yaml,
    else the checkpoint's stored copy, and ``opts`` (runtime keys) go on top; keys that
    would change the model keep the run's values (one warning names them)."""
    from finessl.config_load import keep_run_config, load_config

    state, path = read_state(source, key, name=name)
    run_yaml = os.path.join(source, RUN_CONFIG) if os.path.isdir(source) else None
    cfg_file = cfg_file or (run_yaml if run_yaml and os.path.isfile(run_yaml) else None)
    if cfg_file is None:
        return stored_config(state, path, opts), state, path
    cfg = load_config(cfg_file, opts)
    if opts:  # only runtime keys on top of the config the run was trained with
        cfg.defrost()
        keep_run_config(load_config(cfg_file, []), cfg, source, key)
        cfg.freeze()
    return cfg, state, path


@contextlib.contextmanager
def own_rng(device: torch.device):
    """Every global RNG as it was before, whatever the block draws or seeds."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    random.setstate(python)
    np.random.set_state(numpy)


def load_trained(model, state: dict, path: str, prefix: str = "") -> None:
    """The checkpoint's trained tensors into ``model``; one line when they do not fit
    it or are not tensors at all."""
    try:
        device = next(model.parameters()).device
        model.load_trainable_state_dict({k: v.to(device) for k, v in state["model"].items()})
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{prefix}{path} does not fit the model its config describes "
                        f"({brief(e, 160)}); rebuild it with the config it was trained "
                        f"with") from None
    except (AttributeError, TypeError, ValueError) as e:  # not a dict of tensors
        raise UserError(f"{prefix}{path} is not a FineSSL checkpoint (its model entry: "
                        f"{brief(e)})") from None


def rebuild(cfg, state: dict, path: str, classnames: list[str],
            device: torch.device | None = None, stats: tuple | None = None,
            prefix: str = "", model_cfg=None) -> TrainedRun:
    """The trained model of ``cfg``'s run with ``state``'s tensors: on ``device``
    (default: the one ``cfg`` selects), in the run's precision, normalising with
    ``stats`` (default: DATA.NAME's under DATA.NORMALIZE, docs/data.md); ``model_cfg``:
    the model's config when the caller has it already."""
    device = device or select_device(cfg)
    precision = Precision(cfg.prec, device)
    chosen = algorithm_class(cfg)
    model_cfg = model_cfg or chosen.model_config(cfg)
    mean, std = stats or dataset_stats(cfg.DATA.NAME, cfg.DATA.NORMALIZE)
    seed = checkpoint_seed(state, os.path.dirname(path)) if "seed" in state else 0
    with own_rng(device):
        seed_everything(seed)
        model = build_model(model_cfg, classnames, device, precision.fp16_params, mean, std,
                            chosen.zero_shot_head)
    load_trained(model, state, path, prefix)
    evaluated = chosen.evaluated_state(state.get("algorithm"))  # Mean Teacher: its EMA
    if evaluated is not None:  # all the trained tensors, or those that differ (ABC's head)
        load_trained(model, {"model": {**state["model"], **evaluated}}, path, prefix)
    return TrainedRun(cfg, model_cfg, model.eval(), device, precision, state,
                      list(classnames), input_size(model_cfg), path)
