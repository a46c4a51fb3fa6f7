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

import os
from dataclasses import dataclass

import torch

from finessl.algorithms import ALGORITHMS
from finessl.algorithms.semikd import Teacher, checksum
from finessl.config import model_keys
from finessl.data.base import class_names
from finessl.engine.trained import read_state, rebuild, stored_config
from finessl.errors import UserError
from finessl.models.families import family_of


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@dataclass
class TeacherRun:
    """The teacher as a start reads it once (preflight hands it to the Trainer): its
    checkpoint, the config it was trained with and the config of its model."""

    state: dict
    path: str
    cfg: object
    model_cfg: object


def teacher_config(state: dict, path: str, cache_dir: str = ""):
    """The config the teacher was trained with (from its checkpoint), with this run's
    ``cache_dir`` (where its backbone weights are) and no compile or checkpointing."""
    return stored_config(state, path, ["cache_dir", cache_dir, "compile", "False",
                                       "grad_checkpointing", "False"])


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
    differ = [(k, _get(model_cfg, k), _get(cfg, k)) for k in model_keys()
              if not _same(_get(model_cfg, k), _get(cfg, k))]
    if differ:
        listed = ", ".join(f"{k} {theirs!r} (this config: {ours!r})" for k, theirs, ours in differ)
        raise UserError(f"teacher: {source} was trained with {listed}; the keys without stu_ "
                        f"describe the teacher: set them as its run did")


def read_teacher(cfg) -> TeacherRun:
    """The teacher ``cfg.teacher`` names (a run folder or one of its checkpoint files),
    read once and checked against ``cfg``."""
    if not cfg.teacher:
        raise UserError("teacher: algorithm semikd needs a teacher: 'KD True resume TEACHER' "
                        "or 'teacher TEACHER' (a FineSSL run folder or one of its checkpoints)")
    state, path = read_state(cfg.teacher, "teacher", ("model", "config"))
    try:
        trained_cfg = teacher_config(state, path, cfg.cache_dir)
    except UserError as e:
        raise UserError(f"teacher: {e}") from None
    model_cfg = ALGORITHMS.get(trained_cfg.algorithm).model_config(trained_cfg)
    check_match(cfg, model_cfg, cfg.teacher)
    return TeacherRun(state, path, trained_cfg, model_cfg)


def check_teacher(cfg) -> TeacherRun:
    """What a run (and ``--dry-run``) checks of the teacher before anything loads: it
    is a FineSSL run whose model this config describes, and its backbone's weights
    are here (its tower is rebuilt from them). Returns it, read."""
    teacher = read_teacher(cfg)
    family_of(teacher.model_cfg.backbone).check_weights(teacher.model_cfg)
    return teacher


def load_teacher(cfg, data, device: torch.device, teacher: TeacherRun | None = None) -> Teacher:
    """The frozen teacher ``cfg.teacher`` names (``teacher``: as preflight read it), on
    ``device``, checked against the data (the same classes in the same order; names
    compared as prompts, ``green_thing`` = ``green thing``)."""
    teacher = teacher or read_teacher(cfg)
    names = teacher.state.get("classnames")
    if names is not None and class_names(names) != class_names(data.classnames):
        raise UserError(f"teacher: {cfg.teacher} was trained on {len(names)} classes "
                        f"({', '.join(names[:3])}, ...), this run's data has "
                        f"{len(data.classnames)} ({', '.join(data.classnames[:3])}, ...)")
    same = teacher.cfg.DATA.NORMALIZE == cfg.DATA.NORMALIZE  # else its own inputs' statistics
    run = rebuild(teacher.cfg, teacher.state, teacher.path, data.classnames, device,
                  (data.mean, data.std) if same else None, "teacher: ", teacher.model_cfg)
    return Teacher(run.model, run.input_size, teacher.path,
                   checksum(teacher.state["model"].values()))
