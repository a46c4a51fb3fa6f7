"""SemiKD, the released code's second mode (``KD True``, docs/semikd.md): a trained
FineSSL run, frozen, teaches a smaller student, and an adaptive weight a moves the
student from distillation towards FineSSL's own self-training as its weak-to-strong
consistency catches up with the teacher's.

One step, on a labeled batch (x, y) and one weak and one strong view (u_w, u_s) of
the unlabeled batch; t = teacher logits (main head), t' = its aux head's, s and s' the
student's (s' on detached features):

- consistency of each model: ws = mean CE(logits(u_s), argmax logits(u_w)); every
  ``ep_ws`` steps (in-epoch step % ep_ws == 0, step 0 included) the mean r of
  ws_T / ws_S over the steps since the last update moves a <- a (beta + (1 - beta) r),
  clipped to [``extval``, 1]; a starts at 0.5 and is never reset;
- margins: BMS from the student's learning pace, strength ``alpha`` * a;
- L = L_x + L_x_aux + w_con [(1 - a)(L_kd + L_kd_aux) + a (s_con L_u + L_u_aux)], with
  L_kd = mean_u sum_c -softmax(t(u_w)/Tr)_c log_softmax(s(u_w)/Tr)_c (and t', s' for
  L_kd_aux), and L_x, L_x_aux, L_u, L_u_aux FineSSL's on the one strong view (the
  pseudo-labels and weights from the student's own weak view).

The student is the trained and evaluated model (:meth:`SemiKD.model_config`); the
teacher runs in eval mode under ``no_grad`` and gets no gradient.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from finessl.algorithms.base import Algorithm, register
from finessl.config import RUN_CONFIG, declare, non_negative, positive, rewrite_pairs
from finessl.config_load import last_value
from finessl.errors import UserError
from finessl.algorithms.memory import LabelMemory
from finessl.algorithms.pseudo_labeling import pace_threshold
from finessl.losses import (add_margin, balanced_margin, pace_from_counts, smoothed_targets,
                            soft_cross_entropy)
from finessl.models.heads import CosineHead
from finessl.models.student import student_config

log = logging.getLogger(__name__)

NAME = "semikd"
declare("KD", False, "SemiKD: True selects algorithm semikd, distilling the run named by "
        "'resume TEACHER' (or 'teacher') into the stu_* student (docs/semikd.md)")
declare("teacher", "", "SemiKD: the teacher, a FineSSL run folder or one of its checkpoint files "
        "('resume X' with KD True sets it)")
declare("extval", 0.0, "SemiKD: lower clip of the adaptive weight a (upper: 1)",
        check=lambda v: None if 0.0 <= v <= 1.0 else "must lie in [0, 1]")
declare("ep_ws", 10, "SemiKD: a is updated every ep_ws steps of an epoch", check=positive)
declare("beta", 0.99, "SemiKD: momentum of a's update a <- a (beta + (1 - beta) r)",
        check=lambda v: None if 0.0 <= v <= 1.0 else "must lie in [0, 1]")
declare("Tr", 1.0, "SemiKD: distillation temperature", check=positive)
declare("s_con", 1.0, "SemiKD: weight of L_u beside L_u_aux in the self-training part",
        check=non_negative)


def is_kd_run(path: str) -> bool:
    """Whether ``path`` is the folder of a SemiKD run (its config.yaml says so)."""
    config = os.path.join(path, RUN_CONFIG)
    if not os.path.isfile(config):
        return False
    try:
        with open(config, "rb") as f:
            return (yaml.safe_load(f) or {}).get("algorithm") == NAME
    except (OSError, yaml.YAMLError, AttributeError):
        return False  # not readable as a run's record: not a SemiKD run; the loader says why


@rewrite_pairs
def kd_switch(sources: list) -> list:
    """``KD True`` (the released switch) selects algorithm semikd (whatever ``algorithm``
    the file names: a teacher's YAML serves its student), and ``resume X``
    where X is not a SemiKD run names the teacher (the released README's ``resume
    "path to teacher model checkpoint"``): it becomes ``teacher X``, so the run starts
    afresh and records its teacher in config.yaml. ``resume`` of a SemiKD run folder
    continues that run, as any resume."""
    if last_value(sources, "KD") not in (True, "True", "true"):
        return sources
    chosen = last_value(sources, "algorithm")
    if chosen not in (None, NAME):  # the teacher's own YAML, reused for its student
        log.warning("KD True: algorithm %s replaced by %s (distilling a teacher)", chosen, NAME)
    resume, teacher = last_value(sources, "resume"), last_value(sources, "teacher")
    extra = [("algorithm", NAME)]
    if resume and not is_kd_run(str(resume)):
        resume = str(resume)
        if not os.path.exists(resume):
            raise UserError(f"resume: {resume} does not exist (with KD True, resume names the "
                            f"teacher: a FineSSL run folder or one of its checkpoint files)")
        if teacher and teacher != resume:
            raise UserError(f"resume {resume} and teacher {teacher} both name a teacher: give one")
        sources = [([(k, v) for k, v in pairs if k != "resume"], name) for pairs, name in sources]
        extra.append(("teacher", resume))
    elif not resume and not teacher and not last_value(sources, "eval_only"):
        raise UserError("KD True needs a teacher: 'resume TEACHER' (a FineSSL run folder or one "
                        "of its checkpoint files), as the released README")
    (pairs, name), *before = sources[::-1]
    return before[::-1] + [(pairs + extra, name)]


class Teacher:
    """A trained model, frozen and in eval mode: its (main, aux) logits of a batch,
    under ``no_grad``. Views of another side than the one it was trained on are
    resized to it (bilinear) after its own normalisation.

    ``checksum`` fingerprints its trained tensors, so a resume checks that it still
    distils from the same teacher; ``source`` is where it was loaded from.
    """

    def __init__(self, model: nn.Module, size: int | None, source: str, checksum: float):
        self.model = model.eval().requires_grad_(False)
        self.size, self.source, self.checksum = size, source, float(checksum)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        if self.size and images.shape[-1] != self.size:
            images = F.interpolate(self.model.backbone.normalize(images), size=self.size,
                                   mode="bilinear", align_corners=False)
        logits, aux = self.model(images)
        return logits.float(), aux.float()


def checksum(tensors) -> float:
    """sum + sum of squares of every tensor, in float64: what changes when a trained
    tensor does (a fingerprint, not a hash)."""
    total = 0.0
    for t in tensors:
        t = t.detach().double()
        total += float(t.sum()) + float((t * t).sum())
    return total


@register(NAME, order=90)
class SemiKD(Algorithm):
    uses_teacher = True
    uses_finessl_components = bms = dls = True  # always on: the student learns as FineSSL

    @classmethod
    def model_config(cls, cfg):
        """The student's config (``stu_*`` keys): the model this run trains and evaluates."""
        return student_config(cfg)

    def __init__(self, cfg, model, num_classes, num_unlabeled, device):
        super().__init__(cfg, model, num_classes, num_unlabeled, device)
        aux = getattr(model, "aux_head", None)
        if isinstance(aux, CosineHead):  # the released student's f_aux is not a copy of f
            with torch.no_grad():
                fresh = CosineHead(aux.weight.shape[1], aux.weight.shape[0]).weight
                aux.weight.copy_(fresh.to(aux.weight))
        self.memory = LabelMemory(num_unlabeled, num_classes, device)  # counted: O(batch) a step
        self.selected = self.memory.labels
        # a and the window of ratios in the dtype of the student's head: fp16 under prec
        # fp16, where the released a is an fp16 tensor rounded at every update
        dtype = next(model.head.parameters()).dtype
        self.mixing = torch.tensor(0.5, dtype=dtype, device=device)
        self.ratios = torch.zeros(0, dtype=dtype, device=device)
        self.step = 0  # step within the epoch: the released batch_idx
        self._load_teacher: Callable[[], Teacher] | None = None
        self._teacher: Teacher | None = None

    # ---- the teacher ----------------------------------------------------------------
    def set_teacher(self, load: Callable[[], Teacher]) -> None:
        self._load_teacher, self._teacher = load, None

    @property
    def teacher(self) -> Teacher:
        """Loaded when first needed (training or resuming), never to evaluate the run."""
        if self._teacher is None:
            if self._load_teacher is None:
                raise UserError(f"algorithm {NAME} needs a teacher ('resume TEACHER' with KD True)")
            self._teacher = self._load_teacher()
        return self._teacher

    # ---- state ----------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.teacher  # noqa: B018  (a teacher that does not fit fails before the first step)
        self.memory.reset()  # the student's learning pace is measured afresh each epoch
        self.step = 0

    def pseudo_label_memory(self) -> torch.Tensor:
        return self.selected

    def state_dict(self) -> dict:
        return {"selected": self.selected.clone(), "mixing": self.mixing.clone(),
                "ratios": self.ratios.clone(), "step": torch.tensor(self.step),
                "teacher_checksum": torch.tensor(self.teacher.checksum, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        saved = float(state["teacher_checksum"])
        if not math.isclose(saved, self.teacher.checksum, rel_tol=1e-12, abs_tol=1e-9):
            raise UserError(f"teacher: {self.teacher.source} is not the teacher this run started "
                            f"with (its trained tensors differ); resume needs that teacher")
        self.memory.load(state["selected"])
        self.mixing = state["mixing"].to(self.device, self.mixing.dtype).clone()
        self.ratios = state["ratios"].to(self.device, self.mixing.dtype).clone()
        self.step = int(state["step"])

    # ---- the step -------------------------------------------------------------------
    def update_mixing_weight(self, ratio: torch.Tensor) -> torch.Tensor:
        """Append this step's ws_T / ws_S; at every ``ep_ws``-th step of the epoch, a <-
        a * beta + r * a * (1 - beta) with r the mean of the ratios since the last update,
        clipped to [extval, 1], computed as released (in a's dtype, the same order)."""
        cfg = self.cfg
        self.ratios = torch.cat([self.ratios, ratio.detach().reshape(1).to(self.ratios.dtype)])
        if self.step % cfg.ep_ws == 0:
            total = self.ratios[0]
            for r in self.ratios[1:]:  # Python's sum() over the released list, in order
                total = total + r
            mean = total / len(self.ratios)
            a = self.mixing
            self.mixing = (a * cfg.beta + mean * a * (1.0 - cfg.beta)).clamp(cfg.extval, 1.0)
            self.ratios = self.ratios[:0]
        self.step += 1
        return self.mixing

    def _mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over every rank's samples (one all-reduce): a is the same everywhere."""
        return self.dist.sum(values.sum()) / (self.dist.world * values.numel())

    def train_step(self, batch):
        cfg, dist = self.cfg, self.dist
        x, y, u_w, u_s = batch["x"], batch["y"], batch["u_w"], batch["u_s1"]
        n_x, n_u = x.shape[0], u_w.shape[0]
        t_logits, t_aux = self.teacher(torch.cat([u_w, u_s]))
        t_w, t_s, t_aux_w = t_logits[:n_u], t_logits[n_u:], t_aux[:n_u]
        logits, aux = self.model(torch.cat([x, u_w, u_s]), detach_aux=cfg.aux_detach)
        s_x, s_w, s_s = logits[:n_x], logits[n_x:n_x + n_u], logits[n_x + n_u:]
        aux_x, aux_w, aux_s = aux[:n_x], aux[n_x:n_x + n_u], aux[n_x + n_u:]

        # the adaptive weight, before this step's loss (as released)
        ws_teacher = self._mean(F.cross_entropy(t_s, t_w.argmax(-1), reduction="none"))
        conf, targets = torch.softmax(s_w.detach(), dim=-1).max(dim=-1)
        ws_student = self._mean(F.cross_entropy(s_s.detach(), targets, reduction="none"))
        ratio = ws_teacher / ws_student
        a = self.update_mixing_weight(ratio).float()

        pace = pace_from_counts(self.memory.counts)
        strength = (cfg.alpha * self.mixing).float()  # alpha * a, in a's dtype as released
        margins = (balanced_margin(pace, strength, cfg.bms_form) if not cfg.bms_fixed_alpha
                   else balanced_margin(pace, float(strength), cfg.bms_form, dynamic=False))
        labeled = add_margin(s_x, y, margins) if cfg.bms_labeled else s_x
        losses = {"x": F.cross_entropy(labeled, y), "x_aux": F.cross_entropy(aux_x, y)}
        losses["kd"] = soft_cross_entropy(s_w / cfg.Tr, torch.softmax(t_w / cfg.Tr, -1)).mean()
        losses["kd_aux"] = soft_cross_entropy(aux_w / cfg.Tr,
                                              torch.softmax(t_aux_w / cfg.Tr, -1)).mean()
        conf_aux = torch.softmax(aux_w.detach(), dim=-1).max(dim=-1).values
        weight = conf_aux * (conf_aux >= cfg.th_min)
        strong = add_margin(s_s, targets, margins)
        losses["u"] = (F.cross_entropy(strong, targets, reduction="none") * weight).mean()
        mask = (conf >= cfg.th).float()
        kept = dist.sum(mask.sum()) / dist.world  # the mean over every rank's kept samples
        soft = smoothed_targets(targets, self.num_classes, cfg.smoothing)
        losses["u_aux"] = (soft_cross_entropy(aux_s, soft) * mask).sum() / kept.clamp(min=1e-12)
        distil = losses["kd"] + losses["kd_aux"]
        self_train = cfg.s_con * losses["u"] + losses["u_aux"]
        loss = (losses["x"] + losses["x_aux"]
                + cfg.w_con * ((1.0 - a) * distil + a * self_train))

        u_idx, u_true = dist.gather(batch["u_idx"]), dist.gather(batch["u_true"])
        all_targets, all_mask = dist.gather(targets), dist.gather(mask) > 0
        paced = dist.gather(conf) >= pace_threshold(cfg)  # released: 0.7, not th
        self.memory.set(u_idx[paced], all_targets[paced])
        known = (u_true >= 0).float()
        correct = (all_targets == u_true).float()
        teacher_correct = (dist.gather(t_w.argmax(-1)) == u_true).float()
        logs = {"loss/total": loss.detach(), **{f"loss/{k}": v.detach() for k, v in losses.items()},
                "kd/a": a.detach(), "kd/ws_ratio": ratio.detach(),
                "kd/ws_teacher": ws_teacher.detach(), "kd/ws_student": ws_student.detach(),
                "kd/teacher_acc": (teacher_correct * known).sum() / known.sum().clamp(min=1),
                "pseudo/mask_rate": all_mask.float().mean(), "pseudo/weight": weight.mean(),
                "pseudo/acc_all": (correct * known).sum() / known.sum().clamp(min=1),
                "pseudo/acc_masked": (correct * all_mask * known).sum()
                / (all_mask * known).sum().clamp(min=1),
                "pseudo/margin_max": margins.max()}
        return loss, logs
