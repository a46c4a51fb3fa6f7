"""CoMatch against a plain transcription of USB's CoMatch (alignment queue, memory
smoothing with the (embedding, distribution) queue, pseudo-label graph, contrastive
loss), loss, gradients and queue over steps of two epochs, in fp64."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from helpers import LinearNet, one_line_error, random_batch, shared_model_epochs

CPU = torch.device("cpu")
C = 4


def _setup(**keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = "comatch"
    cfg.th = 0.3
    c = cfg.COMATCH
    c.QUEUE, c.PROJ, c.DA_LEN, c.T, c.CONTRAST_TH = 20, 5, 3, 0.5, 0.3  # 2 steps fill it
    for key, value in keys.items():
        setattr(cfg, key, value)
    model = LinearNet(num_classes=C)
    algo = build_algorithm(cfg, model, C, 12, CPU)
    algo.modules.double()
    return cfg, model, algo


class Reference:
    """USB's CoMatch step, written out (``it``: steps done; its queue_batch: the steps
    that fill the queue)."""

    def __init__(self, cfg, step_rows):
        c = cfg.COMATCH
        self.T, self.alpha, self.cth, self.lam = c.T, c.ALPHA, c.CONTRAST_TH, c.CONTRAST
        self.tau, self.w = cfg.th, cfg.w_con
        self.queue_size, self.queue_batch = c.QUEUE, c.QUEUE // step_rows
        self.queue_feats = torch.zeros(c.QUEUE, c.PROJ, dtype=torch.float64)
        self.queue_probs = torch.zeros(c.QUEUE, C, dtype=torch.float64)
        self.queue_ptr, self.it = 0, 0
        self.p_model = torch.zeros(c.DA_LEN, C, dtype=torch.float64)
        self.p_ptr = 0

    @staticmethod
    def proj(head, feat):
        h = F.linear(F.relu(F.linear(feat, head[0].weight, head[0].bias)), head[2].weight, head[2].bias)
        return h / h.pow(2).sum(1, keepdim=True).pow(0.5)

    def loss(self, model, head, b, epoch):
        logits_x, _, f_x = model(b["x"], features=True)
        logits_s, _, f_s = model(torch.cat([b["u_s1"], b["u_s2"]]), features=True)
        feats_s0, feats_s1 = self.proj(head, f_s).chunk(2)
        feats_x = self.proj(head, f_x)
        with torch.no_grad():
            logits_w, _, f_w = model(b["u_w"], features=True)
            feats_w = self.proj(head, f_w)
        sup = F.cross_entropy(logits_x, b["y"])
        with torch.no_grad():
            probs = torch.softmax(logits_w, dim=1)
            self.p_model[self.p_ptr] = probs.mean(0)
            self.p_ptr = (self.p_ptr + 1) % len(self.p_model)
            probs = probs * (1.0 / C + 1e-6) / (self.p_model.mean(0) + 1e-6)
            probs = probs / probs.sum(-1, keepdim=True)
            probs_orig = probs.clone()
            if epoch > 0 and self.it > self.queue_batch:
                A = torch.exp(torch.mm(feats_w, self.queue_feats.t()) / self.T)
                A = A / A.sum(1, keepdim=True)
                probs = self.alpha * probs + (1 - self.alpha) * torch.mm(A, self.queue_probs)
            mask = (probs.max(1)[0] >= self.tau).double()
            fw = torch.cat([feats_w, feats_x.detach()])
            pw = torch.cat([probs_orig, F.one_hot(b["y"], num_classes=C).double()])
            n = len(fw)
            self.queue_feats[self.queue_ptr:self.queue_ptr + n] = fw
            self.queue_probs[self.queue_ptr:self.queue_ptr + n] = pw
            self.queue_ptr = (self.queue_ptr + n) % self.queue_size
        lu = (torch.sum(-probs.repeat(2, 1) * F.log_softmax(logits_s, -1), 1) * mask.repeat(2)).mean()
        Q = torch.mm(probs, probs.t())
        Q.fill_diagonal_(1)
        Q = Q * (Q >= self.cth).double()
        Q = Q / Q.sum(1, keepdim=True)
        sim = torch.exp(torch.mm(feats_s0, feats_s1.t()) / self.T)
        sim_probs = sim / sim.sum(1, keepdim=True)
        contrast = (-(torch.log(sim_probs + 1e-7) * Q).sum(1)).mean()
        self.it += 1
        return sup + self.w * lu + self.lam * contrast, mask


def test_loss_gradients_and_queue_match_usbs_comatch_over_two_epochs():
    cfg, model, algo = _setup()
    ref = Reference(cfg, step_rows=10)  # 4 labeled + 6 unlabeled rows a step
    head = algo.modules["proj"]
    params = list(model.parameters()) + algo.parameters()
    g = torch.Generator().manual_seed(0)
    kept = []
    for _, _, mask, ours in shared_model_epochs(
            algo, params, lambda b, epoch: ref.loss(model, head, b, epoch),
            lambda: random_batch(g, num_classes=C)):
        assert torch.allclose(algo.queue_feats.double(), ref.queue_feats, atol=1e-6)
        assert torch.allclose(algo.queue_probs.double(), ref.queue_probs, atol=1e-6)
        assert int(algo.queue_ptr) == ref.queue_ptr
        kept.append(mask.mean().item())
    assert 0 < sum(kept) < len(kept)
    assert ours[-1].abs().sum() > 0  # the projection head learns from L_c


def test_finessl_components_run_on_comatch():
    cfg, model, algo = _setup(bms=True, dls=True)
    loss, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1), num_classes=C))
    loss.backward()
    assert {"loss/x_aux", "loss/u_aux", "loss/contrast", "pseudo/margin_max"} <= set(logs)


def test_a_queue_smaller_than_a_step_is_one_line():
    cfg, model, algo = _setup()
    cfg.COMATCH.QUEUE = 6
    algo = build_algorithm(cfg, model, C, 12, CPU)
    algo.modules.double()
    one_line_error(algo.train_step, random_batch(torch.Generator().manual_seed(1), num_classes=C),
                   names=("COMATCH.QUEUE",))
