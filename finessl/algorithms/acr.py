"""ACR (Wei & Gan, "Towards Realistic Long-Tailed Semi-Supervised Learning: Consistency
Is All You Need", CVPR 2023), as the authors' code (``Gank0078/ACR``, ``train.py``) runs it.

Long-tailed labeled data, unlabeled data of an unknown class distribution (the same,
uniform or reversed). Two heads on the backbone's features: the model's main head f,
trained as FixMatch, and a balanced head g (``self.modules["acr"]``), trained with
logit adjustment; g is the one evaluated. With pi the labeled prior (N_c / sum N),
A(t) = log(pi^t + 1e-12), z_w, z_x, z_s f's logits of the weak, labeled and strong
views, g_x, g_s g's, conf(v) = max softmax(v), th = ``ACR.P_CUTOFF``:

- L_x   = CE(z_x, y);   L_x_bal = CE(g_x + A(``ACR.TAU_X_BAL``), y)
- f's pseudo-label yhat = argmax(z_w - A(tau)), kept when
  conf(z_w - A(tau)) >= th or conf(z_w) >= th:  L_u = mean_{b, views} keep_b CE(z_s, yhat_b)
- g's pseudo-label ybal = argmax(z_w - A(``ACR.TAU_U_BAL``)), kept when
  conf(z_w - A(``ACR.TAU_U_BAL``)) >= th or conf(g_w) >= th:
  L_u_bal = mean_{b, views} keep_b CE(g_s, ybal_b)
- L = L_x + L_x_bal + w_con (L_u + L_u_bal).

Adaptive tau. From epoch e > ``ACR.EST_EPOCH`` (e from 0) on, each step estimates the
unlabeled class distribution from g's confident pseudo-labels of the weak view:
n_c = #{b : argmax g_w = c, conf(g_w) >= th}; when sum n > 0,
u <- m u + (1 - m) n / sum n (m = ``ACR.EMA_U``, u starting uniform), and adds to a
per-epoch sum the divergences D(u, a) = 1/2 KL(u || a) + 1/2 KL(a || u) to the three
anchors a: pi (consistent), uniform, reversed pi (pi's classes in reverse order). At
the start of each epoch e > ``ACR.EST_EPOCH``, with d_a = that sum / ``total_steps``:
tau = TAU_MIN + (TAU_MAX - TAU_MIN) softmax(d_con, d_uni, d_rev)_con (kept as it was
if that is NaN), and the sums restart (so the first estimating epoch, whose sums are
still 0, runs with TAU_MIN + (TAU_MAX - TAU_MIN) / 3). tau starts at ``ACR.TAU_MAX``: data
far from pi (a large d_con) keep f's pseudo-labels strongly debiased; unlabeled data
as long-tailed as the labeled set relax the adjustment.

Defaults: the authors' (tau1 = tau12 = tau2 = 2, taumin 0, ema-u 0.9), except
- est-epoch: theirs 5 of 500 epochs of 500 steps (1% of the run); here epochs are
  ``num_epochs`` (30) x ``total_steps``, and 1% of the run rounds to 0: the estimate
  starts in the second epoch, the adapted tau in the third;
- L_u and L_u_bal weighted by w_con (theirs 1: ``w_con 1`` is the authors' loss).
th is the authors' (and USB's) 0.95, ACR's own key, not the shared ``th`` (0.7 in
FineSSL's comparison). The adjustment makes confidence: on the cosine heads' logits
(scale 1/0.07, margins of a few logits early on) tau = 2 at ratio 20 lifts the tail
class by 6 logits, and "conf(z_w - A) >= th" then keeps wrong tail labels. At 0.7 the
first 30 steps of the offline long-tailed demo keep 26 % of the unlabeled images, 16 %
of them rightly labeled, and the run collapses (14 % top-1); at 0.95 they keep 9 %,
99 % rightly (docs/results.md, "Long-tailed data").
Differences from their code: the class counts n are counted (their
``now_mask[targets_u_b] += mask`` does not accumulate repeated classes, so each class
gets 0 or 1, whichever write wins on the GPU); images with the true label -2 are not
left out of n (theirs reads the true labels: training here never does); no EMA model
is evaluated (theirs tests the EMA, decay 0.999); g is a cosine head like the model's
own (theirs linear); the pseudo-label temperature T (1) is left out. The "JS
divergence" of the paper is, in the code and here, the symmetrised KL above.

BMS and DLS act on the main head as on FixMatch: BMS's margins on L_x and L_u (the
class of yhat), DLS's aux head weighting L_u. State: tau, u, the epoch's divergence
sums and the epoch (a mid-epoch resume does not call ``on_epoch_start``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.heads import EvaluatedByOwnHead
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import declare, momentum, non_negative, threshold
from finessl.errors import UserError
from finessl.models.heads import CosineHead

declare("ACR.TAU_MAX", 2.0, "ACR: strength of the logit adjustment of the main head's pseudo-labels at the start and at most (authors' tau1)", check=non_negative)
declare("ACR.TAU_MIN", 0.0, "ACR: the least adaptive adjustment strength (authors' taumin)", check=non_negative)
declare("ACR.TAU_U_BAL", 2.0, "ACR: logit adjustment of the main head's pseudo-labels that train the balanced head (authors' tau12)", check=non_negative)
declare("ACR.TAU_X_BAL", 2.0, "ACR: logit adjustment of the balanced head's labeled loss (authors' tau2)", check=non_negative)
declare("ACR.EMA_U", 0.9, "ACR: momentum of the estimated unlabeled class distribution", check=momentum)
declare("ACR.P_CUTOFF", 0.95, "ACR: confidence from which a pseudo-label is kept, ACR's own (the authors' 0.95; not the shared th)", check=threshold)
declare("ACR.EST_EPOCH", 0, "ACR: the unlabeled distribution is estimated from the epoch after this one on (epochs from 0)", check=non_negative)

HEAD = "acr"  # the balanced head's name in extra_modules and the checkpoint


def adjustment(prior: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """log(prior^tau + 1e-12): what logit adjustment adds (or takes away)."""
    return torch.log(prior ** tau + 1e-12)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """1/2 KL(p || q) + 1/2 KL(q || p)."""
    return 0.5 * F.kl_div(q.log(), p, reduction="sum") + 0.5 * F.kl_div(p.log(), q, reduction="sum")


@register("acr", order=75)
class ACR(EvaluatedByOwnHead, PseudoLabeling):
    long_tailed_only = True
    evaluated_head = HEAD

    def extra_modules(self, feat_dim):
        return {**super().extra_modules(feat_dim), HEAD: CosineHead(feat_dim, self.num_classes)}

    def initial_statistics(self):
        """tau, the estimate u (uniform), this epoch's divergence sums (to the consistent,
        uniform and reversed anchors) and the epoch."""
        double = dict(dtype=torch.float64, device=self.device)
        return {**super().initial_statistics(),
                "acr_tau": torch.tensor(float(self.cfg.ACR.TAU_MAX), **double),
                "acr_u_py": torch.full((self.num_classes,), 1.0 / self.num_classes, **double),
                "acr_div": torch.zeros(3, **double),
                "acr_epoch": torch.zeros((), dtype=torch.long, device=self.device)}

    def prior(self) -> torch.Tensor:
        """pi: the labeled set's class distribution (float64)."""
        if self.labeled_counts is None:
            raise UserError("algorithm acr: needs the labeled set's class counts "
                            "(build_algorithm(labeled_counts=...))")
        counts = self.labeled_counts.to(self.device, torch.float64)
        return counts / counts.sum()

    def estimating(self) -> bool:
        return int(self.acr_epoch) > self.cfg.ACR.EST_EPOCH

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self.acr_epoch.fill_(epoch)
        if self.estimating():
            cfg = self.cfg.ACR
            share = torch.softmax(self.acr_div / self.cfg.total_steps, dim=0)[0]
            if not torch.isnan(share):
                self.acr_tau.copy_(cfg.TAU_MIN + (cfg.TAU_MAX - cfg.TAU_MIN) * share)
        self.acr_div.zero_()

    def pseudo_label(self, logits_w, batch):
        th, prior = self.cfg.ACR.P_CUTOFF, self.prior()
        adjusted = torch.softmax(logits_w - adjustment(prior, self.acr_tau).to(logits_w.dtype), -1)
        conf, targets = adjusted.max(dim=-1)
        keep = (conf >= th) | (torch.softmax(logits_w, dim=-1).max(dim=-1).values >= th)
        # the balanced head's targets, from the same weak logits, and its own confidence
        balanced = torch.softmax(logits_w - adjustment(prior, self.cfg.ACR.TAU_U_BAL)
                                 .to(logits_w.dtype), -1)
        conf_bal, targets_bal = balanced.max(dim=-1)
        with torch.no_grad():
            own = torch.softmax(self.modules[HEAD](self.outputs.feat_w).float(), dim=-1)
        conf_own, targets_own = self.dist.gather(own.to(logits_w.dtype)).max(dim=-1)
        confident = conf_own >= th
        self.balanced_targets = targets_bal, ((conf_bal >= th) | confident).to(logits_w.dtype)
        if self.estimating():
            self.estimate(targets_own[confident], prior)
        return PseudoLabels(targets, keep.to(logits_w.dtype), self.pace_selected(conf))

    def estimate(self, classes: torch.Tensor, prior: torch.Tensor) -> None:
        """u's EMA step from the balanced head's confident pseudo-labels ``classes``, and
        its divergences to the three anchors added to this epoch's sums."""
        counts = torch.bincount(classes, minlength=self.num_classes).to(torch.float64)
        if counts.sum() == 0:
            return
        m = self.cfg.ACR.EMA_U
        self.acr_u_py.mul_(m).add_((1 - m) * counts / counts.sum())
        anchors = (prior, torch.full_like(prior, 1.0 / self.num_classes), prior.flip(0))
        self.acr_div.add_(torch.stack([symmetric_kl(self.acr_u_py, a) for a in anchors]))

    def extra_losses(self, logits_u, pl):
        losses = super().extra_losses(logits_u, pl)
        out, head, dist = self.outputs, self.modules[HEAD], self.dist
        y = out.batch["y"]
        shift = adjustment(self.prior(), self.cfg.ACR.TAU_X_BAL)
        logits_x = head(out.feat_x)
        losses["x_bal"] = F.cross_entropy(logits_x + shift.to(logits_x.dtype), y)
        targets, keep = (dist.local(t) for t in self.balanced_targets)
        per_sample = F.cross_entropy(head(out.feat_u), targets.repeat(out.views), reduction="none")
        losses["u_bal"] = self.cfg.w_con * (per_sample * keep.repeat(out.views)).mean()
        return losses

    def train_step(self, batch):
        loss, logs = super().train_step(batch)
        logs["pseudo/acr_tau"] = self.acr_tau.float()
        return loss, logs
