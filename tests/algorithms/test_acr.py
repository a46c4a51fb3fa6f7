"""ACR against a plain transcription of the authors' train.py (fp64, several steps across
epochs: losses, gradients, the estimated distribution, the divergence sums and the
adaptive tau), evaluation with the balanced head, and its one-line errors."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.models.heads import CosineHead
from helpers import one_line_error

C, D_IN, FEAT = 3, 12, 5
LABELED_COUNTS = torch.tensor([10, 5, 2])
KEYS = {"TAU_MAX": 1.5, "TAU_MIN": 0.1, "TAU_U_BAL": 1.2, "TAU_X_BAL": 0.8, "EMA_U": 0.7,
        "EST_EPOCH": 0, "P_CUTOFF": 0.9}
STEPS = 2  # total_steps: steps per epoch


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


def build(labeled_counts=LABELED_COUNTS, **cfg_keys):
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.th, cfg.w_con, cfg.total_steps = "acr", 0.5, 1.0, STEPS
    for key, value in KEYS.items():
        setattr(cfg.ACR, key, value)
    for key, value in cfg_keys.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    model = LinearModel().double()
    algo = build_algorithm(cfg, model, C, 12, torch.device("cpu"), labeled_counts=labeled_counts)
    algo.modules.double()
    return cfg, model, algo


def batch(step, n_x=4, n_u=6):
    g = torch.Generator().manual_seed(200 + step)
    images = lambda n: torch.randn(n, 3, 2, 2, generator=g, dtype=torch.float64)  # noqa: E731
    return {"x": images(n_x), "y": torch.randint(0, C, (n_x,), generator=g), "u_w": images(n_u),
            "u_s1": images(n_u), "u_s2": images(n_u),
            "u_idx": torch.randperm(12, generator=g)[:n_u],
            "u_true": torch.randint(0, C, (n_u,), generator=g)}


def cosine(x, w, s):
    """A cosine head, by hand: s * x/|x| . W/|W|."""
    return s * (x / x.norm(dim=-1, keepdim=True)) @ (w / w.norm(dim=-1, keepdim=True)).t()


def kl(p, q):
    """KL(p || q) = sum p log(p / q)."""
    return (p * torch.log(p / q)).sum()


class AcrTranscription:
    """The authors' train.py: its globals (adjustments, u_py, count_KL), its epoch
    start and its step, with the classes of the balanced head's confident
    pseudo-labels counted."""

    def __init__(self, th, w_con):
        self.th, self.w_con = th, w_con
        counts = LABELED_COUNTS.double()
        self.py_con = counts / counts.sum()
        self.py_uni = torch.ones(C, dtype=torch.float64) / C
        self.py_rev = torch.flip(self.py_con, dims=[0])
        adjust = lambda tau: torch.log(self.py_con ** tau + 1e-12)  # noqa: E731
        self.adjust = adjust
        self.adj_l1, self.adj_l12 = adjust(KEYS["TAU_MAX"]), adjust(KEYS["TAU_U_BAL"])
        self.adj_l2 = adjust(KEYS["TAU_X_BAL"])
        self.taumin, self.taumax = KEYS["TAU_MIN"], KEYS["TAU_MAX"]
        self.u_py = torch.ones(C, dtype=torch.float64) / C
        self.count_kl = torch.zeros(3, dtype=torch.float64)
        self.tau = KEYS["TAU_MAX"]

    def epoch_start(self, epoch):
        if epoch > KEYS["EST_EPOCH"]:
            c = self.count_kl / STEPS
            share = torch.exp(c[0]) / (torch.exp(c[0]) + torch.exp(c[1]) + torch.exp(c[2]))
            tau = self.taumin + (self.taumax - self.taumin) * share
            if not math.isnan(tau):
                self.tau = float(tau)
                self.adj_l1 = self.adjust(tau)
        self.count_kl = torch.zeros(3, dtype=torch.float64)

    def step(self, p, b, epoch):
        f = lambda x: x.flatten(1) @ p["backbone.weight"].t() + p["backbone.bias"]  # noqa: E731
        main = lambda x: cosine(f(x), p["head.weight"], p["head.logit_scale"])  # noqa: E731
        bal = lambda x: cosine(f(x), p["acr.weight"], p["acr.logit_scale"])  # noqa: E731
        n = len(b["u_w"])
        logits_x, logits_u_w = main(b["x"]), main(b["u_w"]).detach()
        logits_u_s = torch.cat([main(b["u_s1"]), main(b["u_s2"])])
        logits_x_b, logits_u_w_b = bal(b["x"]), bal(b["u_w"]).detach()
        logits_u_s_b = torch.cat([bal(b["u_s1"]), bal(b["u_s2"])])
        lx = F.cross_entropy(logits_x, b["y"])
        lx_b = F.cross_entropy(logits_x_b + self.adj_l2, b["y"])
        max_probs, targets_u = torch.softmax(logits_u_w - self.adj_l1, -1).max(-1)
        max_probs_h2, targets_u_h2 = torch.softmax(logits_u_w - self.adj_l12, -1).max(-1)
        max_probs_b, targets_u_b = torch.softmax(logits_u_w_b, -1).max(-1)
        max_probs_t, _ = torch.softmax(logits_u_w, -1).max(-1)
        mask, mask_h2 = max_probs >= self.th, max_probs_h2 >= self.th
        mask_b, mask_t = max_probs_b >= self.th, max_probs_t >= self.th
        mask_ss_b_h2 = (mask_b | mask_h2).double().repeat(2)
        mask_ss_t = (mask | mask_t).double().repeat(2)
        if epoch > KEYS["EST_EPOCH"]:
            now = torch.zeros(C, dtype=torch.float64)
            for i in range(n):
                if mask_b[i]:
                    now[targets_u_b[i]] += 1
            if now.sum() > 0:
                now = now / now.sum()
                m = KEYS["EMA_U"]
                self.u_py = m * self.u_py + (1 - m) * now
                for k, anchor in enumerate((self.py_con, self.py_uni, self.py_rev)):
                    self.count_kl[k] += 0.5 * kl(self.u_py, anchor) + 0.5 * kl(anchor, self.u_py)
        lu = (F.cross_entropy(logits_u_s, targets_u.repeat(2), reduction="none") * mask_ss_t).mean()
        lu_b = (F.cross_entropy(logits_u_s_b, targets_u_h2.repeat(2), reduction="none")
                * mask_ss_b_h2).mean()
        kept = (mask | mask_t).float().mean().item(), (mask_b | mask_h2).float().mean().item()
        return lx + self.w_con * lu + lx_b + self.w_con * lu_b, kept


def test_acr_matches_a_transcription_of_the_authors_code_across_epochs():
    cfg, model, algo = build()
    reference = AcrTranscription(cfg.ACR.P_CUTOFF, cfg.w_con)
    named = [*model.named_parameters(), *algo.modules.named_parameters()]
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    plan = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    kept, taus = set(), []
    for step, (epoch, batch_idx) in enumerate(plan):
        if batch_idx == 0:
            algo.on_epoch_start(epoch)
            reference.epoch_start(epoch)
        b = batch(step)
        p = {n: q.detach().clone().requires_grad_(True) for n, q in named}
        expected, fractions = reference.step(p, b, epoch)
        kept.update(fractions)
        optim.zero_grad()
        loss, logs = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6, step
        loss.backward()
        grads = torch.autograd.grad(expected, list(p.values()), allow_unused=True)
        for (name, q), g in zip(named, grads):
            if g is None:  # the aux head: DLS is off
                assert q.grad is None or not q.grad.any(), name
            else:
                assert torch.allclose(q.grad, g, atol=1e-6, rtol=0), (step, name)
        assert torch.allclose(algo.acr_u_py, reference.u_py, atol=1e-6, rtol=0), step
        assert torch.allclose(algo.acr_div, reference.count_kl, atol=1e-6, rtol=0), step
        assert abs(algo.acr_tau.item() - reference.tau) <= 1e-6, step
        assert logs["loss/x_bal"] > 0 and abs(logs["pseudo/acr_tau"] - reference.tau) <= 1e-6
        taus.append(reference.tau)
        optim.step()
    assert len(kept) > 2  # the masks keep some samples and drop others
    assert taus[0] == KEYS["TAU_MAX"] and len(set(taus)) >= 3  # tau adapts, epoch by epoch
    assert not torch.allclose(reference.u_py, torch.full((C,), 1.0 / C, dtype=torch.float64))


def test_acr_evaluates_with_its_balanced_head():
    _, model, algo = build()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    own = model.head.weight.detach().clone()
    with algo.evaluation_weights():
        feat = model.backbone(x.flatten(1))
        assert torch.equal(model.head(feat), algo.modules["acr"](feat))
        assert not torch.equal(model.head.weight, own)
    assert torch.equal(model.head.weight, own)
    evaluated = type(algo).evaluated_state(algo.state_dict())
    assert evaluated.keys() == {"head.weight", "head.logit_scale"}
    assert torch.equal(evaluated["head.weight"], algo.modules["acr"].weight)


def test_acr_state_holds_tau_the_estimate_and_the_epoch():
    _, _, algo = build()
    algo.on_epoch_start(1)
    algo.train_step(batch(0))
    state = algo.state_dict()
    assert {"acr_tau", "acr_u_py", "acr_div", "acr_epoch", "modules"} <= state.keys()
    _, _, fresh = build()
    fresh.load_state_dict(state)
    assert int(fresh.acr_epoch) == 1 and torch.equal(fresh.acr_div, algo.acr_div)
    assert torch.equal(fresh.acr_u_py, algo.acr_u_py)


def test_acr_takes_bms_and_dls_on_its_main_head():
    _, model, algo = build(bms=True, dls=True)
    assert algo.method_label() == "acr+bms+dls" and type(algo).long_tailed_only
    algo.on_epoch_start(0)
    loss, logs = algo.train_step(batch(0))
    loss.backward()
    assert model.aux_head.weight.grad.any() and {"x_aux", "u_aux", "x_bal", "u_bal"} <= {
        k.split("/")[1] for k in logs if k.startswith("loss/")}


def test_acr_without_the_labeled_counts_fails_in_one_line():
    _, _, algo = build(labeled_counts=None)
    one_line_error(algo.train_step, batch(0), names=("acr", "labeled_counts"))


def test_acr_keeps_pseudo_labels_by_its_own_cut_off_not_th():
    """ACR.P_CUTOFF (the authors' 0.95 by default) decides what is kept; the shared th
    does not (the adjustment alone lifts a tail class over th = 0.7 on cosine logits)."""
    assert get_cfg_defaults().ACR.P_CUTOFF == 0.95

    def loss(**keys):
        _, _, algo = build()
        for key, value in keys.items():
            setattr(algo.cfg.ACR if key == "P_CUTOFF" else algo.cfg, key, value)
        algo.on_epoch_start(0)
        loss, logs = algo.train_step(batch(0))
        return loss.item(), logs["pseudo/mask_rate"]

    base = loss()
    assert loss(th=0.1) == base and loss(th=0.99) == base
    assert loss(P_CUTOFF=0.0)[1] == 1.0 and loss(P_CUTOFF=1.0)[1] == 0.0
