"""The imbalanced-SSL methods (``imb``) on top of FixMatch: each against a plain
transcription of USB's equations (fp64, several steps, gradients and statistics
included), the config's checks, the method label, and exact resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import optimize

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.config_load import load_config
from helpers import IMB_C as C
from helpers import IMB_LABELED_COUNTS as LABELED_COUNTS
from helpers import ImbModel, assert_imb_resume_exact
from helpers import build_imb as build
from helpers import compare_grads, cosine, fixmatch_loss
from helpers import imb_batch as batch
from helpers import leaf_params, one_line_error


# ---- ABC ------------------------------------------------------------------------------
def abc_transcription(p, b, epoch, epochs, cutoff, ratio, th, w_con, seed):
    """USB's ABC.compute_abc_loss on FixMatch's step (two strong views, averaged)."""
    torch.manual_seed(seed)
    loss, f, _ = fixmatch_loss(p, b, th, w_con)
    g = {"weight": p["abc.weight"], "logit_scale": p["abc.logit_scale"]}
    counts = LABELED_COUNTS.double()
    lb_dist = counts.min() / counts
    mask_lb = torch.bernoulli(lb_dist[b["y"]])
    abc_lb = (F.cross_entropy(cosine(f(b["x"]), g), b["y"], reduction="none") * mask_lb).mean()
    with torch.no_grad():
        max_probs, y_ulb = torch.softmax(cosine(f(b["u_w"]), g), 1).max(1)
        mask_1 = (max_probs >= cutoff).double()
        ulb_dist = 1 - (epoch / epochs) * (1 - lb_dist)
        mask = mask_1 * torch.bernoulli(ulb_dist[y_ulb])
    per_view = [(F.cross_entropy(cosine(f(b[v]), g), y_ulb, reduction="none") * mask).mean()
                for v in ("u_s1", "u_s2")]
    return loss + ratio * (abc_lb + sum(per_view) / 2)


def test_abc_matches_a_transcription_of_usb_over_steps_gradients_included():
    cfg, model, algo = build("abc", ABC__P_CUTOFF=0.4, ABC__LOSS_RATIO=0.7)
    named = [*(("model", n, p) for n, p in model.named_parameters()),
             *(("modules", n, p) for n, p in algo.modules.named_parameters())]
    optim = torch.optim.SGD([p for *_, p in named], lr=0.5)
    for step, epoch in enumerate([0, 0, 1, 2, 3]):
        if step == 0 or epoch != int(algo.imb_epoch):
            algo.on_epoch_start(epoch)
        b = batch(step)
        p = leaf_params((n, q) for _, n, q in named)
        expected = abc_transcription(p, b, epoch, 4, 0.4, 0.7, cfg.th, cfg.w_con, seed=step)
        torch.manual_seed(step)
        optim.zero_grad()
        loss, logs = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        loss.backward()
        compare_grads(expected, p, [q for *_, q in named])
        assert logs["loss/abc"].item() > 0
        optim.step()


def test_abc_evaluates_with_its_head():
    _, model, algo = build("abc")
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    own = model.head.weight.detach().clone()
    with algo.evaluation_weights():
        logits = model.head(model.backbone(x.flatten(1)))
        assert torch.equal(logits, algo.modules["abc"](model.backbone(x.flatten(1))))
    assert torch.equal(model.head.weight, own)
    evaluated = type(algo).evaluated_state(algo.state_dict())
    assert evaluated.keys() == {"head.weight", "head.logit_scale"}
    assert torch.equal(evaluated["head.weight"], algo.modules["abc"].weight)


# ---- DARP -----------------------------------------------------------------------------
class DarpTranscription:
    """USB's DARPPseudoLabelingHook, in numpy/scipy (Newton with the exact derivative,
    solved to convergence), with the period counted within the epoch."""

    def __init__(self, n, warmup, alpha, iter_t, period):
        self.orig = np.full((n, C), 1.0 / C)
        self.refine = np.full((n, C), 1.0 / C)
        counts = LABELED_COUNTS.numpy().astype(float)
        dist = counts / counts.sum()
        self.target = dist * n / dist.sum()
        self.warmup, self.alpha, self.iter_t, self.period = warmup, alpha, iter_t, period

    def estimate(self, q):
        labels, k_probs = np.zeros_like(q), np.zeros(C)
        for i in range(C):
            num = int(self.alpha * self.target[i])
            idx = np.argsort(-q[:, i], kind="stable")[:num]
            labels[idx, i] = 1
            k_probs[i] = q[idx, i].sum()
        return labels, (self.target + 1e-6) / (k_probs + 1e-6)

    def solve(self, probs):
        w = 1 / (-(probs * np.log(probs + 1e-6)).sum(1))
        a_e = probs / math.e
        y = np.exp(-np.ones(C).reshape(1, -1) / w.reshape(-1, 1))
        prev = np.zeros(C)
        for _ in range(self.iter_t):
            x = 1 / (a_e * y).sum(1)
            nu = np.array([optimize.newton(
                lambda v, i=i: np.sum(a_e[:, i] * x * np.exp(-v / w)) - self.target[i], prev[i],
                fprime=lambda v, i=i: -np.sum(a_e[:, i] * x * np.exp(-v / w) / w),
                tol=1e-13, maxiter=100) for i in range(C)])
            prev = nu
            y = np.exp(-nu.reshape(1, -1) / w.reshape(-1, 1))
        x = 1 / (a_e * y).sum(1)
        return a_e * x.reshape(-1, 1) * y

    def targets(self, idx, probs, batch_idx, epoch):
        self.orig[idx] = probs
        if epoch <= self.warmup:
            return probs
        if batch_idx % self.period == 0:
            labels, weights = self.estimate(self.orig)
            scaled = self.orig * labels * weights.reshape(1, -1) + 1e-6
            self.refine = self.solve(scaled / scaled.sum(1, keepdims=True))
        return self.refine[idx]


def test_darp_matches_a_transcription_of_usb_over_steps_statistics_included():
    cfg, model, algo = build("darp", DARP__WARMUP=0, DARP__PERIOD=2, DARP__ALPHA=1.5,
                             DARP__ITERS=4)
    reference = DarpTranscription(12, warmup=0, alpha=1.5, iter_t=4, period=2)
    named = list(model.named_parameters())
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    plan = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]  # (epoch, step in epoch)
    for step, (epoch, batch_idx) in enumerate(plan):
        if batch_idx == 0:
            algo.on_epoch_start(epoch)
        b = batch(step)
        p = leaf_params(named)
        with torch.no_grad():
            _, _, conf = fixmatch_loss(p, b, cfg.th, cfg.w_con)
            f = p["backbone.weight"]
            probs = torch.softmax(cosine(b["u_w"].flatten(1) @ f.t() + p["backbone.bias"],
                                         {"weight": p["head.weight"],
                                          "logit_scale": p["head.logit_scale"]}), -1)
        targets = reference.targets(b["u_idx"].numpy(), probs.numpy(), batch_idx, epoch)
        expected, _, _ = fixmatch_loss(p, b, cfg.th, cfg.w_con,
                                       torch.as_tensor(targets).argmax(-1))
        optim.zero_grad()
        loss, _ = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        loss.backward()
        compare_grads(expected, p, [q for _, q in named])
        assert np.abs(algo.darp_orig.numpy() - reference.orig).max() <= 1e-6
        if epoch > 0:
            assert np.abs(algo.darp_refine.numpy() - reference.refine).max() <= 1e-6
        optim.step()
    assert not np.allclose(reference.refine, 1.0 / C)  # the refinery ran
    assert np.allclose(reference.refine.sum(0), reference.target, atol=0.1)  # columns: ~m


# ---- config, label, resume ------------------------------------------------------------
def test_imb_is_checked_at_config_time_in_one_line():
    one_line_error(load_config, None, ["algorithm", "supervised", "imb", "abc"],
                   names=("imb abc", "supervised"))
    one_line_error(load_config, None, ["algorithm", "fixmatch", "imb", "abd"], names=("imb",))
    assert load_config(None, ["algorithm", "flexmatch", "imb", "darp"]).imb == "darp"


def test_a_warm_up_that_outlasts_the_run_is_refused():
    """Otherwise the run is silently FixMatch: DARP refines from epoch WARMUP + 2 (from 1),
    DASO blends from step NUM_PRETRAIN_ITER + 1."""
    short = ["algorithm", "fixmatch", "num_epochs", "8", "total_steps", "50"]
    one_line_error(load_config, None, short + ["imb", "darp"],
                   names=("DARP.WARMUP 12", "epoch 14", "(8)", "at most 6"))
    assert load_config(None, short + ["imb", "darp", "DARP.WARMUP", "6"]).DARP.WARMUP == 6
    one_line_error(load_config, None, short + ["imb", "daso"],
                   names=("DASO.NUM_PRETRAIN_ITER 500", "step 501", "(400)", "at most 399"))
    assert load_config(None, short + ["imb", "daso", "DASO.NUM_PRETRAIN_ITER", "399"])


def test_method_label_names_the_imbalanced_method():
    assert build("abc")[2].method_label() == "fixmatch+abc"
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.imb, cfg.bms = "fixmatch", "darp", True
    algo = build_algorithm(cfg, ImbModel(), C, 4, torch.device("cpu"))
    assert algo.method_label() == "fixmatch+darp+bms" and algo.name == "fixmatch"


@pytest.mark.parametrize("imb", ["abc", "darp"])
def test_resume_after_a_crash_mid_epoch_is_exact(imb, cifar_root, tmp_path):
    assert_imb_resume_exact(imb, cifar_root, tmp_path, **{"DARP.WARMUP": 0, "DARP.PERIOD": 3})
