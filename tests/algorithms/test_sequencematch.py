"""SequenceMatch against a plain transcription of USB's ``sequencematch.py`` train step
and its ``FlexMatchThresholdingHook``."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from helpers import random_batch, side_by_side, side_by_side_setup

NUM_U = 12


def _setup(**keys):
    return side_by_side_setup("sequencematch", num_unlabeled=NUM_U, **keys)


class FlexHook:
    """USB's FlexMatch thresholding: the memory, and class-wise learning effects
    recomputed after each write (from a Counter, unless one value fills the memory)."""

    def __init__(self, warmup, num_classes=4):
        self.warmup, self.num_classes = warmup, num_classes
        self.selected_label = torch.full((NUM_U,), -1, dtype=torch.long)
        self.classwise_acc = torch.zeros(num_classes, dtype=torch.float64)

    def update(self):
        counter = Counter(self.selected_label.tolist())
        if max(counter.values()) < NUM_U:
            norm = max(counter.values()) if self.warmup else \
                max(v for k, v in counter.items() if k != -1)
            for i in range(self.num_classes):
                self.classwise_acc[i] = counter[i] / norm

    def masking(self, probs, idx, p_cutoff):
        max_probs, max_idx = probs.max(dim=-1)
        acc = self.classwise_acc[max_idx]
        mask = (max_probs >= p_cutoff * (acc / (2.0 - acc))).double()
        select = max_probs >= p_cutoff
        if idx[select].numel():
            self.selected_label[idx[select]] = max_idx[select]
        self.update()
        return mask


def usb_step(th, lambda_u, w_kl, T, hook):
    """USB's SequenceMatch step (hard labels), its lambda_u split into L_u's and the KL
    terms' weights; L_u, L_sm and L_sw averaged over our two strong views."""
    def kl(z, target):
        return F.kl_div(F.softmax(z, dim=-1).log(), target, reduction="none").sum(dim=1)

    def step(model, batch):
        logits = lambda v: model(v)[0]  # noqa: E731
        sup = F.cross_entropy(logits(batch["x"]), batch["y"])
        with torch.no_grad():
            probs_w = torch.softmax(logits(batch["u_w"]), dim=-1)
        z_m = logits(batch["u_m"])
        probs_m = torch.softmax(z_m.detach(), dim=-1)
        mask = hook.masking(probs_w, batch["u_idx"], th)
        target_w = F.softmax(probs_w / T, dim=-1).detach()
        target_m = F.softmax(probs_m / T, dim=-1).detach()
        loss_mw = (kl(z_m, target_w) * mask).mean()
        unsup, loss_sm, loss_sw = 0.0, 0.0, 0.0
        for key in ("u_s1", "u_s2"):
            z_s = logits(batch[key])
            unsup = unsup + (F.cross_entropy(z_s, probs_w.argmax(dim=-1), reduction="none")
                             * mask).mean() / 2
            loss_sm = loss_sm + (kl(z_s, target_m) * mask).mean() / 2
            loss_sw = loss_sw + (kl(z_s, target_w) * mask).mean() / 2
        total = sup + lambda_u * unsup + w_kl * (loss_mw + loss_sm + loss_sw)
        return total, {"mask": mask, "kl": (loss_mw, loss_sm, loss_sw)}
    return step


@pytest.mark.parametrize("warmup", [True, False])
def test_sequencematch_matches_usb_over_steps_with_gradients(warmup):
    cfg, algo, ref_model = _setup()
    cfg.FLEXMATCH.WARMUP = warmup
    hook = FlexHook(warmup)
    gen = torch.Generator().manual_seed(0)
    batches = [random_batch(gen, views=("u_w", "u_s1", "u_s2", "u_m")) for _ in range(5)]
    masks = []
    step = usb_step(cfg.th, cfg.w_con, cfg.SEQUENCEMATCH.W_KL, cfg.SEQUENCEMATCH.T, hook)
    for logs, info in side_by_side(algo, ref_model, step, batches):
        assert torch.equal(algo.selected_label, hook.selected_label)
        assert abs(logs["pseudo/mask_rate"].item() - info["mask"].mean().item()) < 1e-6
        for name, value in zip(("kl_mw", "kl_sm", "kl_sw"), info["kl"]):
            assert abs(logs[f"loss/{name}"].item() - cfg.SEQUENCEMATCH.W_KL * value.item()) < 1e-12
        masks.append(info["mask"])
    masks = torch.cat(masks)
    assert 0 < masks.mean() < 1 and (hook.classwise_acc > 0).any()  # thresholds moved


def test_sequencematch_asks_for_the_medium_view_and_takes_bms_and_dls():
    cfg, algo, _ = _setup(bms=True, dls=True)
    assert algo.unlabeled_medium and not algo.labeled_strong
    assert algo.method_label() == "sequencematch+bms+dls"
    batch = random_batch(torch.Generator().manual_seed(1), views=("u_w", "u_s1", "u_s2", "u_m"))
    loss, logs = algo.train_step(batch)
    assert {"loss/x_aux", "loss/u_aux", "loss/kl_mw", "loss/kl_sm", "loss/kl_sw"} <= set(logs)
    assert torch.isfinite(loss)
    # the medium view went through the step's one forward, with autograd
    logits_m = algo.outputs.extra["u_m"][0]
    assert logits_m.requires_grad and logits_m.shape == (len(batch["u_m"]), 4)
