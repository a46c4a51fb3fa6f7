"""The step every pseudo-labelling algorithm shares, with FineSSL's two components as
switches on top (the paper's "plug-and-play" claim, docs/method.md §5).

An algorithm only says how it turns the weak view's logits into pseudo-labels and
per-sample weights (:meth:`PseudoLabeling.pseudo_label`), and optionally how it
adjusts the strong views' logits or adds a loss term. This class does the rest:

- forward: the weak view without autograd (its outputs only feed detached
  pseudo-labels and weights), labeled + both strong views in one forward;
- ``bms``: Balanced Margin Softmax on L_x (unless ``bms_labeled False``) and L_u,
  from the learning pace of this epoch's confident pseudo-labels;
- ``dls``: Decoupled Label Smoothing: L_x_aux, L_u_aux on smoothed pseudo-labels of
  the samples the algorithm keeps, and L_u weighted by the aux head's confidence
  instead of the algorithm's own weights;
- L = L_x + L_x_aux + w_con * L_u + L_u_aux + extra terms.

With ``bms`` and ``dls`` off this is the plain algorithm; FixMatch with both on is
exactly FineSSL.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from finessl.algorithms.base import Algorithm
from finessl.algorithms.memory import LabelMemory
from finessl.losses import (add_margin, balanced_margin, pace_from_counts, smoothed_targets,
                            soft_cross_entropy)
from finessl.metrics import OUT_OF_CLASS, PseudoLabelStats, pseudo_label_category


@dataclass
class PseudoLabels:
    """What a pseudo-labelling rule returns for the weak view of a batch.

    targets: hard pseudo-label per sample; weight: its weight in L_u, in [0, 1]
    (1/0 for threshold methods); selected: confident enough to count towards the
    learning pace (and the pseudo-label diagnostics): :meth:`PseudoLabeling.pace_selected`;
    soft: a target distribution per sample (B x C) when L_u is a cross-entropy to soft
    targets (SimMatch, sharpened targets), else None; ``targets`` is then its argmax,
    the class BMS's margin and DLS's smoothed target take.
    """
    targets: torch.Tensor
    weight: torch.Tensor
    selected: torch.Tensor
    soft: torch.Tensor | None = None


@dataclass
class StepOutputs:
    """This rank's forward passes of the step in progress (``PseudoLabeling.outputs``),
    for rules and loss terms that need more than the weak view's logits: logits, aux
    logits and backbone features (float) of the labeled batch (``*_x``: its
    ``labeled_views`` concatenated, ``x`` alone by default), of the weak view (``*_w``,
    no autograd) and of the strong views (``*_u``: both views concatenated, ``views``
    of them; the weak view itself for Pseudo-Label), the batch, and ``extra``: the
    (logits, aux logits, features) of each of the algorithm's ``extra_views`` by key."""
    batch: Mapping
    logits_x: torch.Tensor
    aux_x: torch.Tensor
    feat_x: torch.Tensor
    logits_w: torch.Tensor
    aux_w: torch.Tensor
    feat_w: torch.Tensor
    logits_u: torch.Tensor
    aux_u: torch.Tensor
    feat_u: torch.Tensor
    views: int
    extra: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def pace_threshold(cfg) -> float:
    """The confidence from which a pseudo-label enters the learning-pace memory: the
    released code hard-codes 0.7 there whatever ``th`` is (``pace_th``, default 0.7), so
    a sweep of ``th`` moves the pseudo-label mask but not the pace; ``pace_th null``
    ties the pace to ``th``."""
    return cfg.th if cfg.pace_th is None else cfg.pace_th


class PseudoLabeling(Algorithm):
    """Base of every algorithm that learns from pseudo-labels of unlabeled images."""

    consistency = True  # L_u on the strong views (False: on the weak view, as Pseudo-Label)
    # batch keys of the labeled views L_x (and DLS's L_x_aux) average over (DeFixMatch: x, x_s)
    labeled_views: tuple[str, ...] = ("x",)
    # batch keys of further views forwarded with autograd in the same forward as the
    # others (SequenceMatch: u_m); their outputs are in ``self.outputs.extra``
    extra_views: tuple[str, ...] = ()

    def __init__(self, cfg, model, num_classes, num_unlabeled, device):
        super().__init__(cfg, model, num_classes, num_unlabeled, device)
        default = self.uses_finessl_components  # what the config's None means here
        self.bms = default if cfg.bms is None else cfg.bms
        self.dls = default if cfg.dls is None else cfg.dls
        # this epoch's confident pseudo-label per image, counted as it changes (O(batch))
        self.memory = LabelMemory(num_unlabeled, num_classes, device)
        self.selected = self.memory.labels
        self.stats = PseudoLabelStats(device)  # this epoch's confidence histograms (report)

    # ---- what an algorithm defines -------------------------------------------------
    def pseudo_label(self, logits_w: torch.Tensor, batch: dict) -> PseudoLabels:
        """Pseudo-labels from the weak view's (detached, float) logits of the whole batch
        (every rank's); ``batch`` holds its ``u_idx`` and ``u_true``. May update state;
        what else the step computed is in ``self.outputs`` (:class:`StepOutputs`, this
        rank's: gather what a global statistic needs with ``self.dist.gather``)."""
        raise NotImplementedError

    def labeled_loss(self, logits: torch.Tensor, y: torch.Tensor,
                     sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """L_x on the labeled logits (with BMS's margins where on): the mean cross-entropy,
        each sample's term times its class's factor (``class_weights``: SAW) and its
        ``sample_weights`` (UDA's training-signal annealing masks some)."""
        factors = self.class_weights(labeled=True)
        if factors is None and sample_weights is None:
            return F.cross_entropy(logits, y)
        ce = F.cross_entropy(logits, y, reduction="none")
        if factors is not None:
            ce = ce * factors[y].to(ce.dtype)
        if sample_weights is not None:
            ce = ce * sample_weights
        return ce.mean()

    def adjust_unlabeled_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits L_u is computed on (DebiasPL adds its adaptive margin here)."""
        return logits

    def class_weights(self, labeled: bool) -> torch.Tensor | None:
        """Per-class factors (C) of the per-sample terms of L_x (``labeled``) or L_u, by
        the sample's (pseudo-)label (SAW); None: none."""
        return None

    def extra_losses(self, logits_u: torch.Tensor, pl: PseudoLabels) -> dict[str, torch.Tensor]:
        """Further loss terms, added to L with weight 1 (FreeMatch's fairness loss);
        ``pl`` is this rank's part of the batch, ``self.outputs`` the step's outputs."""
        return {}

    # ---- shared machinery ---------------------------------------------------------
    def pace_selected(self, conf: torch.Tensor) -> torch.Tensor:
        """Which pseudo-labels count towards the learning pace (``PseudoLabels.selected``):
        ``conf`` at least :func:`pace_threshold`, for every algorithm alike."""
        return conf >= pace_threshold(self.cfg)

    def on_epoch_start(self, epoch: int) -> None:
        self.memory.reset()  # the learning pace is measured afresh each epoch
        self.stats.reset()

    def pseudo_label_memory(self) -> torch.Tensor:
        return self.selected

    def margins(self) -> torch.Tensor:
        pace = pace_from_counts(self.memory.counts)
        cfg = self.cfg
        return balanced_margin(pace, cfg.alpha, cfg.bms_form, dynamic=not cfg.bms_fixed_alpha)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Main logits, aux logits and backbone features of ``images``."""
        return self.model(images, detach_aux=self.cfg.aux_detach, features=True)

    def train_step(self, batch):
        cfg, dist = self.cfg, self.dist
        y = batch["y"].repeat(len(self.labeled_views))
        n_x = len(y)
        margins = self.margins() if self.bms else None
        if self.consistency:
            with torch.no_grad():
                logits_w, aux_w, feat_w = self.forward(batch["u_w"])
            unlabeled = [batch["u_s1"], batch["u_s2"]]
        else:
            unlabeled = [batch["u_w"]]
        views, n_u = len(unlabeled), sum(len(u) for u in unlabeled)
        extra_images = [batch[k] for k in self.extra_views]
        # one forward: the labeled views, the strong (or weak) views, the extra views
        outputs = self.forward(torch.cat([*(batch[k] for k in self.labeled_views), *unlabeled,
                                          *extra_images]))
        sizes = [n_x, n_u, *(len(e) for e in extra_images)]
        (logits_x, logits_u, *logits_e), (aux_x, aux_u, *aux_e), (feat_x, feat_u, *feat_e) = (
            t.split(sizes) for t in outputs)
        if not self.consistency:
            logits_w, aux_w, feat_w = logits_u.detach(), aux_u.detach(), feat_u.detach()
        extra = dict(zip(self.extra_views, zip(logits_e, aux_e, feat_e)))
        self.outputs = StepOutputs(batch, logits_x, aux_x, feat_x, logits_w, aux_w, feat_w,
                                   logits_u, aux_u, feat_u, views, extra)
        # pseudo-labels of the whole (all ranks') weak batch: state updates are global
        u_idx, u_true = dist.gather(batch["u_idx"]), dist.gather(batch["u_true"])
        logits_w_all = dist.gather(logits_w)
        pl_all = self.pseudo_label(logits_w_all, {"u_idx": u_idx, "u_true": u_true})
        pl = PseudoLabels(dist.local(pl_all.targets), dist.local(pl_all.weight),
                          dist.local(pl_all.selected),
                          None if pl_all.soft is None else dist.local(pl_all.soft))
        targets = pl.targets.repeat(views)

        labeled_logits = logits_x
        if self.bms and cfg.bms_labeled:
            labeled_logits = add_margin(logits_x, y, margins)
        losses = {"x": self.labeled_loss(labeled_logits, y)}
        unlabeled_logits = self.adjust_unlabeled_logits(logits_u)
        if self.bms:
            unlabeled_logits = add_margin(unlabeled_logits, targets, margins)
        if self.dls:
            conf_aux = torch.softmax(aux_w, dim=-1).max(dim=-1).values
            weight = conf_aux * (conf_aux >= cfg.th_min)
        else:
            weight = pl.weight
        factors = self.class_weights(labeled=False)
        if factors is not None:
            weight = weight * factors[pl.targets].to(weight.dtype)
        weight = weight.repeat(views)
        if pl.soft is None:
            per_sample = F.cross_entropy(unlabeled_logits, targets, reduction="none")
        else:
            per_sample = soft_cross_entropy(unlabeled_logits, pl.soft.repeat(views, 1))
        losses["u"] = (per_sample * weight).mean()
        if self.dls:
            losses["x_aux"] = F.cross_entropy(aux_x, y)
            keep = pl.weight.repeat(views)
            soft = smoothed_targets(targets, self.num_classes, cfg.smoothing)
            # mean over the kept samples of all ranks (the all-reduce of gradients averages)
            kept = dist.sum(keep.sum()) / dist.world
            losses["u_aux"] = (soft_cross_entropy(aux_u, soft) * keep).sum() / kept.clamp(min=1e-12)
        losses.update(self.extra_losses(logits_u, pl))
        loss = sum(v * (cfg.w_con if k == "u" else 1.0) for k, v in losses.items())

        self.memory.set(u_idx[pl_all.selected], pl_all.targets[pl_all.selected])
        # the report's confidence histograms, from the whole batch of all ranks
        conf_main = torch.softmax(logits_w_all, dim=-1).gather(1, pl_all.targets[:, None])[:, 0]
        conf_aux = dist.gather(torch.softmax(aux_w.float(), dim=-1).max(dim=-1).values)
        self.stats.update(conf_main, conf_aux, pseudo_label_category(pl_all.targets, u_true),
                          pl_all.weight > 0)
        return loss, self._logs(loss, losses, pl_all, dist.gather(weight[:len(pl.targets)]),
                                margins, u_true)

    def _logs(self, loss, losses, pl, weight, margins, u_true) -> dict:
        """Pseudo-label diagnostics of the whole batch (all ranks). Accuracies count only
        images of a known class (``u_true >= 0``: not -1, the unknown class of an own
        unlabeled folder, nor -2, an image known to lie outside the label space); the
        out-of-class shares (``ood_*``) are the fraction of -2 images among the kept
        (``masked``) and the confident (``selected``) pseudo-labels whose image is either
        in or out of class."""
        known = (u_true >= 0).float()
        outside = (u_true == OUT_OF_CLASS).float()
        decided = known + outside  # in class or out of it: not -1
        correct = (pl.targets == u_true).float()
        kept = (pl.weight > 0).float()
        selected = pl.selected.float()
        logs = {"loss/total": loss.detach(), **{f"loss/{k}": v.detach() for k, v in losses.items()},
                "pseudo/mask_rate": kept.mean(), "pseudo/weight": weight.mean(),
                "pseudo/acc_all": correct.sum() / known.sum().clamp(min=1),
                "pseudo/acc_masked": (correct * kept).sum() / (kept * known).sum().clamp(min=1),
                "pseudo/ood_masked": (outside * kept).sum() / (kept * decided).sum().clamp(min=1),
                "pseudo/ood_selected":
                    (outside * selected).sum() / (selected * decided).sum().clamp(min=1)}
        if margins is not None:
            logs["pseudo/margin_max"] = margins.max()
        return logs

    def state_dict(self):
        return {**super().state_dict(), "selected": self.selected.clone(),
                **self.stats.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.memory.load(state["selected"])
        self.stats.load_state_dict(state)
