"""CReST and CReST+ (Wei, Sohn, Mellina, Yuille & Yang, "CReST: A Class-Rebalancing
Self-Training Framework for Imbalanced Semi-Supervised Learning", CVPR 2021), as USB's
``imb_algorithms/crest`` runs them: ``crest`` is the class-rebalancing self-training,
``crest+`` adds the progressive distribution alignment (USB: one class, registered under
both names, its configs setting ``crest_pro_dist_align`` False and True).

Training runs in G = ``CREST.NUM_GENS`` generations; here they split the run's epochs,
generation g = floor(e G / E) of epoch e (E = ``num_epochs``).

**Re-sampling** (both). Before the first epoch of each generation after the first, the
model as it is evaluated predicts the unlabeled images that are not labeled ones, on
their evaluation view (no augmentation); s_i, yhat_i = max, argmax softmax(z_i). With
N_1 >= ... >= N_C the labeled set's class counts, the class of frequency rank k
(k = 0 the most frequent) keeps, of the n_k images predicted as it, the
floor(n_k mu_k) most confident, where

- mu = (N_C / N_1)^{1 / (C - 1)}, mu_k = (mu^{C-1-k})^{1 / alpha}  (alpha = ``CREST.ALPHA``),

so the most frequent class keeps the share (N_C / N_1)^{1/alpha} and the rarest all of
its own. The kept images join the labeled set with their pseudo-labels, in place of
those the previous generation added: a generation's labeled set is the run's own plus
its picks. They are plain labeled images from then on (L_x, BMS's margins on it, DLS's
L_x_aux); the unlabeled set keeps them too.

**Progressive alignment** (``crest+`` only). In generation g the weak view's
probabilities p are aligned to the labeled set's class distribution pi, tempered from
t_0 = 1 (none) to t_{G-1} = ``CREST.DIST_ALIGN_T``:

- t_g = (1 - g / (G - 1)) + (g / (G - 1)) T   (t = 1 for G = 1);
- p_model <- 0.999 p_model + 0.001 mean_b p_b (the first batch's mean at the start);
- pi_t = pi^{t_g} / sum_c pi_c^{t_g};
- p~_b = p_b (pi_t + 1e-6) / (p_model + 1e-6), normalised;
and the base algorithm makes its pseudo-labels (and mask) from p~ as from its own
probabilities (its rule sees log p~ as the logits). BMS and DLS act on them.

Defaults are USB's (6 generations, T 0.5, alpha 3). Where USB and the paper differ,
USB is followed: the paper's share is mu_k = (N_{C-k} / N_1)^alpha' of the actual
counts; USB's takes the geometric profile between N_1 and N_C instead (the same on an
exponentially long-tailed split, as DATA.IMB_L makes, up to rounding) and writes the
exponent as 1 / alpha (USB's alpha is the reciprocal of the paper's).

Differences from USB:

- generations split one run: the model, its optimiser and schedule go on from one to
  the next (USB trains every generation afresh from the pretrained model, for its whole
  ``num_train_iter``);
- rank k is the class's rank in the labeled counts, ties to the lower class (USB takes
  the class index, class 0 being the most frequent in its splits: the same there and on
  DATA.IMB_L > 0 splits, and still right on reversed ones);
- the candidates are the unlabeled images that are not labeled ones (USB's CReST drops
  the labeled images from its unlabeled set altogether, ``include_lb_to_ulb`` False;
  here they stay in it for L_u, as in every other run of the split);
- equal confidences keep the lower position first (USB's argsort leaves their order open);
- "the model as it is evaluated" is ``Algorithm.evaluation_weights`` (USB: its EMA model,
  the one it evaluates).

As in USB, the labeled counts are not updated after re-sampling: the shares and the
alignment's pi are those of the run's own labeled set (``labeled_counts``, USB's
``lb_class_dist``, computed once). An algorithm that keeps state per labeled image
(SimMatch's bank) is refused, its labeled set being fixed.

The pseudo-label of each unlabeled image in the labeled set (-1: none) is a statistic,
so a checkpoint holds it and a run resumed within a generation trains on the labeled set
it had. Under torchrun every rank predicts its strided share of the candidates and the
predictions are gathered (``finessl.engine.evaluate.unlabeled_predictions``): every rank
chooses the same images. Extra cost: G - 1 prediction passes over the unlabeled set;
memory N_u integers (and C floats for ``crest+``).
"""
from __future__ import annotations

import math

import torch

from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.config import declare, positive, threshold

declare("CREST.NUM_GENS", 6, "CReST, CReST+: generations of the run (its epochs split evenly); each after the first picks the pseudo-labelled images of the labeled set anew (CReST+: and lowers the alignment's temperature)", check=positive)
declare("CREST.ALPHA", 3.0, "CReST, CReST+: the class of labeled-frequency rank k (0 the most frequent, of C) keeps the most confident share (N_min / N_max)^((C-1-k) / ((C-1) ALPHA)) of the unlabeled images predicted as it (USB's crest_alpha; larger keeps more)", check=positive)
declare("CREST.DIST_ALIGN_T", 0.5, "CReST+: temperature of the labeled distribution that the last generation aligns to (1 = as it is)", check=threshold)

MOMENTUM = 0.999  # of p_model (USB's DistAlignEMAHook)


def kept_shares(counts: list[int], alpha: float) -> list[float]:
    """mu_k of each class (by class index): the share of the images predicted as it that
    join the labeled set, from the labeled set's class ``counts``."""
    total, c = sum(counts), len(counts)
    dist = [n / total for n in counts]
    ranked = sorted(range(c), key=lambda k: -dist[k])  # stable: ties to the lower class
    rarest = dist[ranked[-1]]  # a class without labeled images: the others keep none
    ratio = dist[ranked[0]] / rarest if rarest > 0 else math.inf
    mu = math.pow(1.0 / ratio, 1 / (c - 1)) if c > 1 else 1.0
    shares = [0.0] * c
    for rank, k in enumerate(ranked):
        shares[k] = math.pow(math.pow(mu, (c - 1) - rank), 1 / alpha)
    return shares


def rebalanced_picks(probs: torch.Tensor, shares: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of ``probs``, pseudo-labels) of the images that join the labeled set: of those
    predicted as class k, the floor(n_k shares[k]) most confident, class by class."""
    conf, pred = probs.max(dim=-1)
    rows = []
    for k, share in enumerate(shares):
        members = (pred == k).nonzero()[:, 0]
        order = conf[members].sort(descending=True, stable=True).indices
        rows.append(members[order[:int(len(members) * share)]])
    rows = torch.cat(rows)
    return rows, pred[rows]


@register_imb("crest")
class CReST(ImbMethod):
    grows_labeled = True

    def initial_statistics(self):
        return {**super().initial_statistics(),  # -1: not in the labeled set
                "crest_labels": torch.full((self.num_unlabeled,), -1, dtype=torch.long,
                                           device=self.device)}

    def generation(self, epoch: int) -> int:
        return epoch * self.cfg.CREST.NUM_GENS // self.cfg.num_epochs

    def relabels_at(self, epoch: int) -> bool:
        return epoch > 0 and self.generation(epoch) != self.generation(epoch - 1)

    def choose_labeled(self, positions, probs):
        shares = kept_shares(self.labeled_distribution().long().tolist(), self.cfg.CREST.ALPHA)
        rows, labels = rebalanced_picks(probs, shares)
        self.crest_labels.fill_(-1)
        self.crest_labels[positions[rows].to(self.device)] = labels.to(self.device)

    def added_labeled(self):
        positions = (self.crest_labels >= 0).nonzero()[:, 0]
        return positions.cpu(), self.crest_labels[positions].cpu()


@register_imb("crest+")
class CReSTPlus(CReST):
    def initial_statistics(self):
        return {**super().initial_statistics(),  # zeros: not started
                "crest_p_model": torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)}

    def temperature(self) -> float:
        """t_g of the generation the run is in."""
        gens = self.cfg.CREST.NUM_GENS
        progress = self.generation(int(self.imb_epoch)) / (gens - 1) if gens > 1 else 0.0
        return (1.0 - progress) + progress * self.cfg.CREST.DIST_ALIGN_T

    def align(self, probs: torch.Tensor) -> torch.Tensor:
        """p~ of the batch's probabilities (float64), after p_model's update."""
        mean = probs.mean(dim=0)
        if self.crest_p_model.sum() == 0:
            self.crest_p_model.copy_(mean)
        else:
            self.crest_p_model.mul_(MOMENTUM).add_(mean, alpha=1 - MOMENTUM)
        target = self.labeled_distribution()
        target = target / target.sum()
        t = self.temperature()
        if t != 1:
            target = target ** t
            target = target / target.sum()
        aligned = probs * (target + 1e-6) / (self.crest_p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    def pseudo_label(self, logits_w, batch):
        aligned = self.align(torch.softmax(logits_w.double(), dim=-1))
        return super().pseudo_label(torch.log(aligned).to(logits_w.dtype), batch)
