"""ABC (Lee, Shin & Kim, "ABC: Auxiliary Balanced Classifier for Class-imbalanced
Semi-supervised Learning", NeurIPS 2021), as USB's ``imb_algorithms/abc`` runs it.

A second head g (``self.modules["abc"]``) on the backbone's features, trained to be
balanced by Bernoulli masks that keep a sample of class c with a probability falling
with c's frequency; the base algorithm trains as it is, and the backbone learns from
both. With N_c the labeled images of class c, mu_c = min_k N_k / N_c, e the epoch
(from 0) and E = ``num_epochs``:

- L_abc_x = mean_b B(mu_{y_b}) * CE(g(f(x_b)), y_b)
- on the weak view, g's own pseudo-label yhat_b = argmax softmax(g(f(u_w))) and
  confidence p_b; the unlabeled keep-rate decays from 1 to mu over the run,
  mu'_c = 1 - (e / E) (1 - mu_c);
- L_abc_u = mean_{b, views} 1[p_b >= ``ABC.P_CUTOFF``] * B(mu'_{yhat_b}) * CE(g(f(u_s)), yhat_b)
- L = L_base + ``ABC.LOSS_RATIO`` * (L_abc_x + L_abc_u),
  B(p) a Bernoulli draw (one per sample and step, the same for both strong views).

Inference uses g, as USB evaluates (``out_key='logits_aux'``): g's weights take the
model's head while the trainer evaluates, and in a rebuilt run (predict, eval_only)
(:class:`finessl.algorithms.heads.EvaluatedByOwnHead`).

Defaults are USB's (p_cutoff 0.95, loss ratio 1; the paper's too). Differences: g is a
cosine head like the model's own (USB: a linear layer; here the heads are cosine ones,
and the same shape lets g stand in for the main head); L_abc_u is the mean over both
strong views, as L_u is here (USB's FixMatch has one strong view). BMS and DLS act on
the base algorithm's heads as they do without ABC; g is trained by ABC's loss only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.heads import EvaluatedByOwnHead
from finessl.algorithms.imb import ImbMethod, register_imb
from finessl.config import declare, non_negative, threshold
from finessl.models.heads import CosineHead

declare("ABC.P_CUTOFF", 0.95, "confidence of the ABC head from which its pseudo-label trains it", check=threshold)
declare("ABC.LOSS_RATIO", 1.0, "weight of the ABC head's loss", check=non_negative)

HEAD = "abc"  # the head's name in extra_modules and the checkpoint


def bernoulli_mask(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """1 with probability ``keep`` (float64) per sample, else 0, in ``like``'s dtype
    (drawn from the global RNG, which a checkpoint restores)."""
    return torch.bernoulli(keep.detach()).to(like.dtype)


@register_imb("abc")
class ABC(EvaluatedByOwnHead, ImbMethod):
    evaluated_head = HEAD

    def extra_modules(self, feat_dim):
        return {**super().extra_modules(feat_dim), HEAD: CosineHead(feat_dim, self.num_classes)}

    def keep_rates(self) -> torch.Tensor:
        """mu_c = min_k N_k / N_c."""
        counts = self.labeled_distribution()
        return counts.min() / counts

    def extra_losses(self, logits_u, pl):
        losses = super().extra_losses(logits_u, pl)
        out, head, cfg = self.outputs, self.modules[HEAD], self.cfg
        y = out.batch["y"]
        keep = self.keep_rates()
        ce_x = F.cross_entropy(head(out.feat_x), y, reduction="none")
        loss_x = (ce_x * bernoulli_mask(keep[y], ce_x)).mean()
        with torch.no_grad():
            conf, targets = torch.softmax(head(out.feat_w).float(), dim=-1).max(dim=-1)
            progress = self.imb_epoch.double() / cfg.num_epochs
            mask = (conf >= cfg.ABC.P_CUTOFF).to(conf.dtype) \
                * bernoulli_mask((1 - progress * (1 - keep))[targets], conf)
        loss_u = (F.cross_entropy(head(out.feat_u), targets.repeat(out.views), reduction="none")
                  * mask.repeat(out.views)).mean()
        losses["abc"] = cfg.ABC.LOSS_RATIO * (loss_x + loss_u)
        return losses
