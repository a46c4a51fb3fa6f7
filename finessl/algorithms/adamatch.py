"""AdaMatch (Berthelot, Roelofs, Sohn, Carlini & Kurakin, "AdaMatch: A Unified Approach
to Semi-Supervised Learning and Domain Adaptation", ICLR 2022), as USB runs it for SSL.

With q = softmax(z_w) of the weak unlabeled view, p = softmax(z_x) of the labeled batch
(both detached), m = ``ADAMATCH.EMA`` and tau = ``th``:
- distribution alignment: p_model <- m p_model + (1 - m) mean_b q_b (the first batch
  sets it), p_target <- m p_target + (1 - m) mean_b p_b (p_target_0 = 1/C);
  q~ = Normalize(q * (p_target + 1e-6) / (p_model + 1e-6));
- relative confidence threshold: c_tau = tau * mean_b max_c p_b(c);
- yhat = argmax q~, mask = max q~ >= c_tau; L_u = mean_b mask_b * CE(z_s, yhat_b).
As USB (``DistAlignEMAHook(p_target_type='model')``, ``AdaMatchThresholdingHook``):
both EMAs are updated with this batch before the alignment, both from the batches of
every rank; the pseudo-label is hard (USB's default ``hard_label True``, so its ``T``
is unused). USB's tau (``p_cutoff``) is 0.95; here it is ``th`` as for every method of
the comparison. The paper's random logit interpolation and the warm-up of the
unlabeled weight belong to domain adaptation: USB's SSL version, followed here, has
neither. ``selected`` (the learning pace under BMS) is max q~ >= ``pace_th``.
"""
from __future__ import annotations

import torch

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import declare, momentum


def align(probs: torch.Tensor, p_target: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Distribution alignment as USB writes it:
    Normalize(q (p_target + 1e-6) / (p_model + 1e-6))."""
    aligned = probs * (p_target + 1e-6) / (p_model + 1e-6)
    return aligned / aligned.sum(dim=-1, keepdim=True)


# Hyperparameters, USB's defaults.
declare("ADAMATCH.EMA", 0.999, "momentum of the distribution-alignment EMAs (p_model, p_target)",
        check=momentum)


@register("adamatch", order=42)
class AdaMatch(PseudoLabeling):
    def initial_statistics(self):
        """The EMAs of the mean unlabeled prediction (set by the first batch:
        ``p_model_set``) and of the mean labeled prediction (starts uniform)."""
        return {"p_model": self.uniform(), "p_model_set": torch.tensor(False, device=self.device),
                "p_target": self.uniform()}

    def pseudo_label(self, logits_w, batch):
        m = self.cfg.ADAMATCH.EMA
        probs = torch.softmax(logits_w, dim=-1)
        logits_x = self.dist.gather(self.outputs.logits_x.detach()).to(logits_w.dtype)
        probs_x = torch.softmax(logits_x, dim=-1)
        mean = probs.mean(dim=0)
        self.p_model.copy_(torch.where(self.p_model_set, m * self.p_model + (1 - m) * mean, mean))
        self.p_model_set.fill_(True)
        self.p_target.mul_(m).add_((1 - m) * probs_x.mean(dim=0))
        conf, targets = align(probs, self.p_target, self.p_model).max(dim=-1)
        cutoff = self.cfg.th * probs_x.max(dim=-1).values.mean()
        return PseudoLabels(targets, (conf >= cutoff).float(), self.pace_selected(conf))
