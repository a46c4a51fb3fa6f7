"""The imbalanced-SSL methods (``imb``) on top of FixMatch: each against a plain
transcription of USB's equations (fp64, several steps, gradients and statistics
included), the config's checks, the method label, and exact resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import optimize

from conftest import tiny_args
from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.config_load import load_config
from finessl.engine.run import restore
from finessl.engine.trainer import Trainer
from finessl.models.heads import CosineHead
from helpers import one_line_error

C, D_IN, FEAT = 3, 12, 5
LABELED_COUNTS = torch.tensor([10, 5, 2])


class LinearModel(nn.Module):
    """A linear 'backbone' and the two cosine heads, in fp64."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(D_IN, FEAT)
        self.backbone.feat_dim = FEAT
        self.head, self.aux_head = CosineHead(FEAT, C), CosineHead(FEAT, C)

    def forward(self, images, detach_aux=True, features=False):
        feat = self.backbone(images.flatten(1))
        out = self.head(feat), self.aux_head(feat.detach() if detach_aux else feat)
        return (*out, feat) if features else out


def build(imb, num_unlabeled=12, **keys):
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.imb, cfg.num_epochs = "fixmatch", imb, 4
    for key, value in keys.items():
        node, leaf = key.split("__")
        setattr(getattr(cfg, node), leaf, value)
    torch.manual_seed(0)
    model = LinearModel().double()
    algo = build_algorithm(cfg, model, C, num_unlabeled, torch.device("cpu"),
                           labeled_counts=LABELED_COUNTS)
    algo.modules.double()
    return cfg, model, algo


def batch(step, n_x=4, n_u=6, num_unlabeled=12):
    g = torch.Generator().manual_seed(100 + step)
    images = lambda n: torch.randn(n, 3, 2, 2, generator=g, dtype=torch.float64)  # noqa: E731
    u_idx = torch.randperm(num_unlabeled, generator=g)[:n_u]
    return {"x": images(n_x), "y": torch.randint(0, C, (n_x,), generator=g), "u_w": images(n_u),
            "u_s1": images(n_u), "u_s2": images(n_u), "u_idx": u_idx,
            "u_true": torch.randint(0, C, (n_u,), generator=g)}


def cosine(x, head):
    """A cosine head, by hand: s * x/|x| . W/|W|."""
    w = head["weight"]
    return head["logit_scale"] * (x / x.norm(dim=-1, keepdim=True)) @ (w / w.norm(dim=-1, keepdim=True)).t()


def fixmatch_loss(p, b, th, w_con, targets=None):
    """FixMatch (Sohn et al. Eq. 2) on both strong views; ``targets`` replace argmax."""
    f = lambda x: x.flatten(1) @ p["backbone.weight"].t() + p["backbone.bias"]  # noqa: E731
    head = {"weight": p["head.weight"], "logit_scale": p["head.logit_scale"]}
    loss_x = F.cross_entropy(cosine(f(b["x"]), head), b["y"])
    with torch.no_grad():
        conf, argmax = torch.softmax(cosine(f(b["u_w"]), head), -1).max(-1)
    targets = argmax if targets is None else targets
    mask = (conf >= th).double()
    loss_u = sum((F.cross_entropy(cosine(f(b[v]), head), targets, reduction="none") * mask).sum()
                 for v in ("u_s1", "u_s2")) / (2 * len(targets))
    return loss_x + w_con * loss_u, f, conf


def compare_grads(loss, params, ours):
    """Our parameters' .grad against the transcription's (None: unused, as the aux head)."""
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (name, g), p in zip(zip(params, grads), ours):
        if g is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            assert torch.allclose(p.grad, g, atol=1e-6, rtol=0), name


def leaf_params(named):
    return {n: p.detach().clone().requires_grad_(True) for n, p in named}


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


def test_method_label_names_the_imbalanced_method():
    assert build("abc")[2].method_label() == "fixmatch+abc"
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.imb, cfg.bms = "fixmatch", "darp", True
    algo = build_algorithm(cfg, LinearModel(), C, 4, torch.device("cpu"))
    assert algo.method_label() == "fixmatch+darp+bms" and algo.name == "fixmatch"


class Killed(Exception):
    pass


@pytest.mark.parametrize("imb", ["abc", "darp"])
def test_resume_after_a_crash_mid_epoch_is_exact(imb, cifar_root, tmp_path):
    steps = 4

    def trainer(folder, write_split=True):
        opts = tiny_args(cifar_root, str(tmp_path / folder), algorithm="fixmatch", imb=imb,
                         num_epochs=2, total_steps=steps, th=0.3, **{"DARP.WARMUP": 0,
                                                                     "DARP.PERIOD": 3})
        return Trainer(load_config(None, opts), str(tmp_path / folder), seed=3,
                       write_split=write_split)

    reference = trainer("reference")
    reference.fit()
    crashed = trainer("crashed")
    calls = {"n": 0}
    step = crashed.algorithm.train_step

    def crash_in_epoch_two(batch):
        calls["n"] += 1
        if calls["n"] == steps + steps // 2:
            raise Killed
        return step(batch)
    crashed.algorithm.train_step = crash_in_epoch_two
    with pytest.raises(Killed):
        crashed.fit()
    resumed = trainer("crashed", write_split=False)
    restore(resumed, str(tmp_path / "crashed"))
    resumed.fit()
    a, b = reference.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    state_a, state_b = reference.algorithm.state_dict(), resumed.algorithm.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        if key != "modules":
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key
    for key in state_a.get("modules", {}):
        assert torch.equal(state_a["modules"][key], state_b["modules"][key]), key
    assert [r["top1"] for r in reference.history] == [r["top1"] for r in resumed.history]
