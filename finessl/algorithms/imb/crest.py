"""CReST+ (Wei, Sohn, Mellina, Yuille & Yang, "CReST: A Class-Rebalancing Self-Training
Framework for Imbalanced Semi-Supervised Learning", CVPR 2021): its progressive
distribution alignment, as USB's ``imb_algorithms/crest`` (``crest_pro_dist_align``)
runs it; the name is USB's ``crest+``.

Training runs in G = ``CREST.NUM_GENS`` generations; here they split the run's epochs,
generation g = floor(e G / E) of epoch e (E = ``num_epochs``). In generation g the
weak view's probabilities p are aligned to the labeled set's class distribution pi,
tempered from t_0 = 1 (none) to t_{G-1} = ``CREST.DIST_ALIGN_T``:

- t_g = (1 - g / (G - 1)) + (g / (G - 1)) T   (t = 1 for G = 1);
- p_model <- 0.999 p_model + 0.001 mean_b p_b (the first batch's mean at the start);
- pi_t = pi^{t_g} / sum_c pi_c^{t_g};
- p~_b = p_b (pi_t + 1e-6) / (p_model + 1e-6), normalised;
and the base algorithm makes its pseudo-labels (and mask) from p~ as from its own
probabilities (its rule sees log p~ as the logits).

Defaults are USB's (6 generations, T 0.5; the paper's too). Not done: CReST's
class-rebalancing self-training itself (after each generation, the unlabeled images
predicted as class c, the most confident first, join the labeled set in a number
falling with c's frequency, mu^{(C-1-c)/alpha}, and the model is trained afresh):
it needs the labeled set and the model rebuilt between generations, which the
trainer does not do within one run; so there is no plain ``crest`` (it would be the
base algorithm), only the alignment. Differences from USB: generations split one run
(USB: each generation is a full training). BMS and DLS act on the pseudo-labels made
from p~. Under torchrun p_model follows the whole batch of all ranks (the rule gets
it gathered), so every rank holds the same. Extra memory: C floats.
"""
from __future__ import annotations

import torch

from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.config import declare, positive, threshold

declare("CREST.NUM_GENS", 6, "CReST+: generations of the run (its epochs split evenly) over which the alignment's temperature falls", check=positive)
declare("CREST.DIST_ALIGN_T", 0.5, "CReST+: temperature of the labeled distribution that the last generation aligns to (1 = as it is)", check=threshold)

MOMENTUM = 0.999  # of p_model (USB's DistAlignEMAHook)


@register_imb("crest+")
class CReSTPlus(ImbMethod):
    def initial_statistics(self):
        return {**super().initial_statistics(),  # zeros: not started
                "crest_p_model": torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)}

    def temperature(self) -> float:
        """t_g of the generation the run is in."""
        gens = self.cfg.CREST.NUM_GENS
        gen = int(self.imb_epoch) * gens // self.cfg.num_epochs
        progress = gen / (gens - 1) if gens > 1 else 0.0
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
