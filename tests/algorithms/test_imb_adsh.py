"""Adsh (``imb adsh``) on FixMatch against a plain transcription of USB's
AdaptiveThresholdingHook (fp64, several epochs, gradients and thresholds included),
its config check, and exact resume."""
from __future__ import annotations

import math

import torch

from finessl.config_load import load_config
from helpers import IMB_C as C
from helpers import assert_imb_resume_exact, build_imb, compare_grads, fixmatch_loss, imb_batch
from helpers import leaf_params, one_line_error, weak_probs

NUM_U = 24


class AdshTranscription:
    """USB's masking and after_train_epoch, on each image's last prediction (the index
    taken at least 0, see adsh.py)."""

    def __init__(self, tau_1):
        self.tau_1 = tau_1
        self.s = torch.ones(C, dtype=torch.float64) * tau_1
        self.last = {}

    def mask(self, probs, idx):
        max_probs, pred = probs.max(-1)
        for i, c, p in zip(idx.tolist(), pred.tolist(), max_probs.tolist()):
            self.last[i] = (p, c)
        return max_probs.ge(torch.exp(-self.s[pred])).double()

    def after_epoch(self):
        conf_all = torch.tensor([p for p, _ in self.last.values()], dtype=torch.float64)
        pred_all = torch.tensor([c for _, c in self.last.values()])
        ranked = [torch.sort(conf_all[pred_all == y], descending=True)[0] for y in range(C)]
        rho = 1.0
        for i in range(len(ranked[0])):
            if ranked[0][i] < self.tau_1:
                break
            rho = i / len(ranked[0])
        for k in range(C):
            if len(ranked[k]) != 0:
                self.s[k] = -torch.log(ranked[k][max(int(len(ranked[k]) * rho) - 1, 0)])


def test_adsh_matches_a_transcription_of_usb_over_epochs_gradients_included():
    tau_1 = 0.5
    cfg, model, algo = build_imb("adsh", num_unlabeled=NUM_U, ADSH__TAU_1=tau_1)
    reference = AdshTranscription(tau_1)
    named = list(model.named_parameters())
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    plan = [0, 0, 0, 1, 1, 2, 2, 3]
    kept = []
    for step, epoch in enumerate(plan):
        if step == 0 or epoch != plan[step - 1]:
            algo.on_epoch_start(epoch)
            if epoch > 0:
                reference.after_epoch()
        b = imb_batch(step, n_u=8, num_unlabeled=NUM_U)
        p = leaf_params(named)
        mask = reference.mask(weak_probs(p, b), b["u_idx"])
        kept.append(mask.mean().item())
        expected, _, _ = fixmatch_loss(p, b, cfg.th, cfg.w_con, mask=mask)
        optim.zero_grad()
        loss, logs = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        assert logs["pseudo/mask_rate"].item() == mask.mean().item()
        loss.backward()
        compare_grads(expected, p, [q for _, q in named])
        assert torch.allclose(algo.adsh_s, reference.s, atol=1e-12, rtol=0)
        optim.step()
    assert not torch.allclose(reference.s, torch.full((C,), tau_1, dtype=torch.float64))
    assert len(set(reference.s.tolist())) == C  # a threshold per class
    assert 0 < min(kept) and max(kept) < 1 or len(set(kept)) > 1  # the masks vary


def test_adsh_keeps_the_same_share_of_every_class():
    from finessl.algorithms.imb.adsh import adaptive_scores
    conf = torch.tensor([0.99, 0.97, 0.9, 0.8, 0.6, 0.5, 0.45, 0.4], dtype=torch.float64)
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    s = adaptive_scores(conf, pred, torch.zeros(3, dtype=torch.float64), head=0, tau_1=0.95)
    # head: 2 of 4 above 0.95, rho = 1/4: class 1 keeps its top 1 of 4; class 2 unseen
    assert math.isclose(math.exp(-s[0]), 0.99) and math.isclose(math.exp(-s[1]), 0.6)
    assert s[2] == 0


def test_adsh_needs_fixmatch():
    one_line_error(load_config, None, ["algorithm", "flexmatch", "imb", "adsh"],
                   names=("imb adsh", "flexmatch"))
    assert load_config(None, ["algorithm", "finessl", "imb", "adsh"]).imb == "adsh"


def test_adsh_resume_after_a_crash_mid_epoch_is_exact(cifar_root, tmp_path):
    assert_imb_resume_exact("adsh", cifar_root, tmp_path, **{"ADSH.TAU_1": 0.5})
