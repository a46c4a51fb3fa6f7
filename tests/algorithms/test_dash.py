"""Dash against a plain transcription of USB's ``dash.py`` and ``DashThresholdingHook``
(warm-up, rho_hat, the shrinking threshold, soft then hard targets), several steps in
fp64, gradients included."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.config_load import load_config
from helpers import LinearHeads, image_batches, one_line_error, step_both

C, B, D = 4, 6, 12
WARMUP, EPOCH, UPDATE_EPOCHS, GAMMA, CC, RHO_MIN, T = 3, 2, 1, 1.6, 1.0001, 0.3, 0.5


def batches(steps, seed=0):
    return image_batches(steps, C, seed=seed, n_x=B, n_u=B, scale=2, num_unlabeled=20)


class Reference:
    """USB's Dash, transcribed: warm-up on labeled data, then the thresholding hook."""

    def __init__(self):
        self.losses, self.rho, self.count, self.it = [], None, 0, 0

    def loss(self, model, batch, w_con):
        logits_x = model.head(batch["x"].flatten(1))
        sup = F.cross_entropy(logits_x, batch["y"])
        if self.it < WARMUP:  # supervised warm-up; rho_hat from its last epoch
            if self.it >= WARMUP - EPOCH:
                self.losses += F.cross_entropy(logits_x.detach(), batch["y"],
                                               reduction="none").tolist()
            self.it += 1
            return sup, None
        main_it = self.it - WARMUP
        if main_it % (UPDATE_EPOCHS * EPOCH) == 0:
            rho_init = sum(self.losses) / len(self.losses)
            self.rho = max(CC * GAMMA ** -self.count * rho_init, RHO_MIN)
            self.count += 1
        hard = self.rho == RHO_MIN
        with torch.no_grad():
            logits_w = model.head(batch["u_w"].flatten(1))
        target = logits_w.argmax(dim=-1) if hard else torch.softmax(logits_w / T, dim=-1)
        mask = (F.cross_entropy(logits_w, target, reduction="none") <= self.rho).double()
        unsup = 0
        for view in ("u_s1", "u_s2"):
            z = model.head(batch[view].flatten(1))
            unsup = unsup + (F.cross_entropy(z, target, reduction="none") * mask).mean() / 2
        self.it += 1
        return sup + w_con * unsup, hard


def test_dash_matches_a_transcription_of_usb():
    steps = 14
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.total_steps = "dash", EPOCH
    cfg.DASH.WARMUP, cfg.DASH.UPDATE_EPOCHS, cfg.DASH.GAMMA = WARMUP, UPDATE_EPOCHS, GAMMA
    cfg.DASH.C, cfg.DASH.RHO_MIN, cfg.DASH.T = CC, RHO_MIN, T
    ours = LinearHeads(D, C)
    ref_model = copy.deepcopy(ours)
    algorithm = build_algorithm(cfg, ours, C, 20, torch.device("cpu"))
    reference = Reference()
    ours_head, ref_head = list(ours.head.parameters()), list(ref_model.head.parameters())
    phases = []
    for batch in batches(steps):
        loss, logs = algorithm.train_step(batch)
        expected, hard = reference.loss(ref_model, batch, cfg.w_con)
        phases.append((hard, float(logs["pseudo/mask_rate"])))
        step_both(ours_head, ref_head, loss, expected, lr=0.3, atol=1e-9)
        if reference.rho is not None:
            assert float(algorithm.rho) == reference.rho
    # warm-up (nothing kept), soft targets, then hard ones once rho reached its floor
    assert all(h is None and rate == 0 for h, rate in phases[:WARMUP])
    assert False in [h for h, _ in phases] and True in [h for h, _ in phases]
    assert any(0 < rate < 1 for _, rate in phases[WARMUP:])


def test_a_warm_up_that_outlasts_the_run_is_refused():
    """USB's 2048 supervised steps in a run of 400 would make Dash supervised throughout,
    silently: refused in one line that says how far to lower it."""
    short = ["algorithm", "dash", "num_epochs", "8", "total_steps", "50"]
    one_line_error(load_config, None, short,
                   names=("DASH.WARMUP 2048", "step 2049", "(400)", "at most 399"))
    assert load_config(None, short + ["DASH.WARMUP", "399"]).DASH.WARMUP == 399
    assert load_config(None, ["algorithm", "fixmatch", "num_epochs", "8", "total_steps", "50"])
