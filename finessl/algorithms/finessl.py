"""FineSSL (Gan & Wei, "Erasing the Bias: Fine-Tuning Foundation Models for
Semi-Supervised Learning", ICML 2024), as released by the authors (METHOD.md §3).

Balanced Margin Softmax: the class learning pace beta(k) (share of confident
pseudo-labels of class k this epoch) sets a margin m(k) added to the non-target
logits of every sample of class k, so slow classes get pushed harder and the
aggregated bias of the pretrained model is erased.
Decoupled Label Smoothing: an auxiliary head on detached features, trained with
smoothed pseudo-label targets, gives calibrated confidences that weight every
unlabeled sample of the main loss, without flattening the main head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import Algorithm, register
from finessl.losses import (add_margin, balanced_margin, learning_pace, smoothed_targets,
                            soft_cross_entropy)


@register("finessl")
class FineSSL(Algorithm):

    def __init__(self, cfg, model, num_classes, num_unlabeled, device):
        super().__init__(cfg, model, num_classes, num_unlabeled, device)
        self.selected = torch.full((num_unlabeled,), -1, dtype=torch.long, device=device)

    def on_epoch_start(self, epoch: int) -> None:
        self.selected.fill_(-1)  # the learning pace is measured afresh each epoch

    def pseudo_label_memory(self) -> torch.Tensor:
        return self.selected

    def train_step(self, batch):
        cfg, model = self.cfg, self.model
        x, y, u_idx = batch["x"], batch["y"], batch["u_idx"]
        margins = balanced_margin(learning_pace(self.selected, self.num_classes), cfg.alpha,
                                  cfg.bms_form)

        with torch.no_grad():  # the weak view only feeds detached pseudo-labels and weights
            logits_w, aux_w = model(batch["u_w"])
        probs_w = torch.softmax(logits_w.float(), dim=-1)
        conf, pseudo = probs_w.max(dim=-1)
        mask = conf >= cfg.th
        conf_aux = torch.softmax(aux_w.float(), dim=-1).max(dim=-1).values

        n_x, n_u = x.shape[0], batch["u_s1"].shape[0]
        logits, aux = model(torch.cat([x, batch["u_s1"], batch["u_s2"]]))
        logits, aux = logits.float(), aux.float()
        logits_x, logits_s = logits[:n_x], logits[n_x:]
        aux_x, aux_s = aux[:n_x], aux[n_x:]
        pseudo2, mask2 = pseudo.repeat(2), mask.repeat(2)
        weight2 = (conf_aux * (conf_aux >= cfg.th_min)).repeat(2)

        loss_x = F.cross_entropy(add_margin(logits_x, y, margins), y)
        loss_x_aux = F.cross_entropy(aux_x, y)
        loss_u = (F.cross_entropy(add_margin(logits_s, pseudo2, margins), pseudo2,
                                  reduction="none") * weight2).mean()
        soft = smoothed_targets(pseudo2, self.num_classes, cfg.smoothing)
        per_sample = soft_cross_entropy(aux_s, soft)
        loss_u_aux = (per_sample * mask2).sum() / mask2.sum().clamp(min=1)
        loss = loss_x + loss_x_aux + cfg.w_con * loss_u + loss_u_aux

        self.selected[u_idx[mask]] = pseudo[mask]
        correct = (pseudo == batch["u_true"]).float()
        logs = {
            "loss/total": loss.detach(), "loss/x": loss_x.detach(),
            "loss/x_aux": loss_x_aux.detach(), "loss/u": loss_u.detach(),
            "loss/u_aux": loss_u_aux.detach(),
            "pseudo/mask_rate": mask.float().mean(),
            "pseudo/weight": weight2[:n_u].mean(),
            "pseudo/acc_all": correct.mean(),
            "pseudo/acc_masked": (correct * mask).sum() / mask.sum().clamp(min=1),
            "pseudo/margin_max": margins.max(),
        }
        return loss, logs

    def state_dict(self):
        return {"selected": self.selected.clone()}

    def load_state_dict(self, state):
        self.selected.copy_(state["selected"].to(self.device))
