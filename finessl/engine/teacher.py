"""SemiKD's teacher (docs/semikd.md): one of our trained runs, rebuilt from its own
config and checkpoint and frozen.

``teacher`` (or ``resume`` with ``KD True``) names a run folder (its
``checkpoint_last.pt``) or one of its checkpoint files. The released code meant to
load the teacher's trained tensors (prompts, both heads with their logit scales) and
crashed instead (docs/differences.md); here the model its config describes is built
(any of our backbones and strategies; a SemiKD run's student too), the tensors are
loaded exactly, and two checks make a wrong teacher one line: the keys without
``stu_`` in this run's config must describe the same model as the teacher's own
config, and the tensors must fit that model.
"""
from __future__ import annotations

import contextlib
import os
import random
import tempfile

import numpy as np
import torch
import yaml

from finessl.algorithms import ALGORITHMS
from finessl.algorithms.semikd import Teacher, checksum
from finessl.config import RUN_CONFIG, model_keys
from finessl.data.datasets import dataset_stats
from finessl.engine.checkpoint import LAST, load_file, read_checkpoint, seed_everything
from finessl.engine.device import Precision
from finessl.errors import UserError, brief
from finessl.models import build_model
from finessl.models.families import family_of
from finessl.models.model import input_size
from finessl.config_load import load_config

# Where a run was, not what it trained: dropped from the teacher's config before loading.
_PLACE_KEYS = ("resume", "output_dir", "eval_only", "model_dir", "allow_extend")


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def read_teacher(source: str) -> tuple[dict, str]:
    """(checkpoint state, path of the file) of a run folder or a checkpoint file."""
    if not source:
        raise UserError("teacher: algorithm semikd needs a teacher: 'KD True resume TEACHER' "
                        "or 'teacher TEACHER' (a FineSSL run folder or one of its checkpoints)")
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, LAST)):
            raise UserError(f"teacher: {source} holds no {LAST}; a teacher is a FineSSL run "
                            f"folder with a finished epoch, or one of its checkpoint files")
        return read_checkpoint(source, ("model", "config", "seed")), os.path.join(source, LAST)
    if not os.path.isfile(source):
        raise UserError(f"teacher: {source} does not exist")
    state = load_file(source)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"teacher: {source} is not a FineSSL checkpoint (no trained tensors "
                        f"and config); give a run folder or its checkpoint_*.pt")
    return state, source


def teacher_config(state: dict, cache_dir: str = ""):
    """The config the teacher was trained with (from its checkpoint), its places
    dropped and this run's ``cache_dir`` (where its backbone weights are) set."""
    stored = yaml.safe_load(state["config"]) or {}
    for key in _PLACE_KEYS:
        stored.pop(key, None)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, RUN_CONFIG)
        with open(path, "w") as f:
            yaml.safe_dump(stored, f)
        cfg = load_config(path, ["cache_dir", cache_dir, "compile", "False",
                                 "grad_checkpointing", "False"])
    return cfg


def _same(theirs, ours) -> bool:
    """Equal values; a model-config file spelled by two paths is the same file."""
    if theirs == ours:
        return True
    return (isinstance(theirs, str) and isinstance(ours, str) and os.path.isfile(theirs)
            and os.path.isfile(ours) and os.path.samefile(theirs, ours))


def check_match(cfg, model_cfg, source: str) -> None:
    """This run's teacher keys against the teacher's own: every difference in one line.
    The teacher keys are those declared ``shapes_model`` (:func:`finessl.config.model_keys`:
    the backbone, the dataset, every strategy switch and size), plug-ins' included."""
    keys = model_keys()
    differ = [(k, _get(model_cfg, k), _get(cfg, k)) for k in keys
              if not _same(_get(model_cfg, k), _get(cfg, k))]
    if differ:
        listed = ", ".join(f"{k} {theirs!r} (this config: {ours!r})" for k, theirs, ours in differ)
        raise UserError(f"teacher: {source} was trained with {listed}; the keys without stu_ "
                        f"describe the teacher: set them as its run did")


@contextlib.contextmanager
def _own_rng(device: torch.device):
    """Every global RNG as it was before, whatever the block draws or seeds."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    random.setstate(python)
    np.random.set_state(numpy)


def _trained(cfg) -> tuple[dict, str, object, object]:
    """(checkpoint state, its path, the config it was trained with, the config of the
    model it holds) of the teacher ``cfg.teacher`` names, checked against ``cfg``."""
    state, path = read_teacher(cfg.teacher)
    try:
        trained_cfg = teacher_config(state, cfg.cache_dir)
    except UserError as e:
        raise UserError(f"teacher: the config in {path} does not load ({e})") from None
    model_cfg = ALGORITHMS.get(trained_cfg.algorithm).model_config(trained_cfg)
    check_match(cfg, model_cfg, cfg.teacher)
    return state, path, trained_cfg, model_cfg


def check_teacher(cfg) -> None:
    """What a run (and ``--dry-run``) checks of the teacher before anything loads: it
    is a FineSSL run whose model this config describes, and its backbone's weights
    are here (its tower is rebuilt from them)."""
    model_cfg = _trained(cfg)[3]
    family_of(model_cfg.backbone).check_weights(model_cfg)


def load_teacher(cfg, data, device: torch.device) -> Teacher:
    """The frozen teacher ``cfg.teacher`` names, on ``device``, checked against ``cfg``
    and the data (same classes, in the same order)."""
    source = cfg.teacher
    state, path, trained_cfg, model_cfg = _trained(cfg)
    names = state.get("classnames")
    if names is not None and list(names) != list(data.classnames):
        raise UserError(f"teacher: {source} was trained on {len(names)} classes "
                        f"({', '.join(names[:3])}, ...), this run's data has "
                        f"{len(data.classnames)} ({', '.join(data.classnames[:3])}, ...)")
    if trained_cfg.DATA.NORMALIZE == cfg.DATA.NORMALIZE:
        mean, std = data.mean, data.std
    else:  # the teacher sees its inputs as it was trained on them
        mean, std = dataset_stats(trained_cfg.DATA.NAME, trained_cfg.DATA.NORMALIZE)
    half = Precision(trained_cfg.prec, device).fp16_params  # its fp16 path where it had one
    with _own_rng(device):  # what is not trained (a random tower) is drawn as its run drew it
        seed_everything(int(state.get("seed") or 0))
        model = build_model(model_cfg, data.classnames, device, half, mean, std)
    try:
        model.load_trainable_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"teacher: {path} does not fit the model its config describes "
                        f"({brief(e, 160)})") from None
    return Teacher(model, input_size(model_cfg), path, checksum(state["model"].values()))
