"""SimMatch against a plain transcription of USB's SimMatch (alignment queue, labeled
bank, unfolding and aggregation, in-batch similarity loss), loss, gradients and state
over several steps of two epochs, in fp64."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from helpers import LinearNet, one_line_error, random_batch, shared_model_epochs

CPU = torch.device("cpu")
C, N_L = 4, 8


def _setup(**keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = "simmatch"
    cfg.th = 0.3
    cfg.SIMMATCH.PROJ, cfg.SIMMATCH.DA_LEN, cfg.SIMMATCH.T = 5, 3, 0.5
    for key, value in keys.items():
        setattr(cfg, key, value)
    model = LinearNet(num_classes=C)
    algo = build_algorithm(cfg, model, C, 12, CPU, num_labeled=N_L)
    algo.modules.double()
    return cfg, model, algo


class Reference:
    """USB's SimMatch step (the model itself as the bank's teacher, bank EMA), written
    out with USB's layout: the bank is P x K."""

    def __init__(self, cfg, bank, num_classes):
        s = cfg.SIMMATCH
        self.T, self.alpha, self.lam, self.ema = s.T, s.ALPHA, s.IN_LOSS, s.BANK_EMA
        self.tau, self.w = cfg.th, cfg.w_con
        self.mem_bank = bank.t().double().clone()
        self.labels_bank = torch.zeros(bank.shape[0], dtype=torch.long)
        self.p_model = torch.zeros(s.DA_LEN, num_classes, dtype=torch.float64)
        self.ptr, self.c = 0, num_classes

    @staticmethod
    def proj(head, feat):
        h = F.linear(F.relu(F.linear(feat, head[0].weight, head[0].bias)), head[2].weight, head[2].bias)
        return h / h.pow(2).sum(1, keepdim=True).pow(0.5)

    def loss(self, model, head, b, epoch):
        n = b["u_w"].shape[0]
        logits_x, _, f_x = model(b["x"], features=True)
        logits_s, _, f_s = model(torch.cat([b["u_s1"], b["u_s2"]]), features=True)
        sup = F.cross_entropy(logits_x, b["y"])
        bank = self.mem_bank.clone().detach()
        with torch.no_grad():
            logits_w, _, f_w = model(b["u_w"], features=True)
            q = F.softmax(logits_w, dim=-1)
            self.p_model[self.ptr] = q.mean(0)
            self.ptr = (self.ptr + 1) % len(self.p_model)
            q = q * (1.0 / self.c + 1e-6) / (self.p_model.mean(0) + 1e-6)
            q = q / q.sum(-1, keepdim=True)
            teacher_orig = F.softmax(self.proj(head, f_w) @ bank / self.T, dim=1)
            teacher = teacher_orig * q.gather(1, self.labels_bank.expand([n, -1]))
            teacher /= teacher.sum(1, keepdim=True)
            agg = torch.zeros(n, self.c, dtype=torch.float64).scatter_add(
                1, self.labels_bank.expand([n, -1]), teacher_orig)
            probs = q * self.alpha + agg * (1 - self.alpha)
        student = F.softmax(self.proj(head, f_s) @ bank / self.T, dim=1)
        in_loss = torch.sum(-teacher.repeat(2, 1) * torch.log(student), dim=1).mean()
        if epoch == 0:
            in_loss = in_loss * 0.0
            probs = q
        mask = (probs.max(1)[0] >= self.tau).double()
        lu = (torch.sum(-probs.repeat(2, 1) * F.log_softmax(logits_s, -1), 1) * mask.repeat(2)).mean()
        with torch.no_grad():
            k = self.proj(head, f_x)
            self.mem_bank[:, b["x_idx"]] = F.normalize(
                self.ema * self.mem_bank[:, b["x_idx"]] + (1 - self.ema) * k.t())
            self.labels_bank[b["x_idx"]] = b["y"]
        return sup + self.w * lu + self.lam * in_loss, mask


def test_loss_gradients_and_bank_match_usbs_simmatch_over_two_epochs():
    cfg, model, algo = _setup()
    ref = Reference(cfg, algo.bank, C)
    head = algo.modules["proj"]
    params = list(model.parameters()) + algo.parameters()
    g = torch.Generator().manual_seed(0)
    kept = []
    for epoch, logs, mask, ours in shared_model_epochs(
            algo, params, lambda b, epoch: ref.loss(model, head, b, epoch),
            lambda: random_batch(g, num_labeled=N_L, num_classes=C)):
        assert (logs["loss/in"].item() == 0) == (epoch == 0)
        assert torch.allclose(algo.bank.double(), ref.mem_bank.t(), atol=1e-6)
        assert torch.equal(algo.bank_labels, ref.labels_bank)
        assert torch.allclose(algo.da_queue.double(), ref.p_model, atol=1e-6)
        kept.append(mask.mean().item())
    assert 0 < sum(kept) < len(kept)  # the threshold both kept and dropped samples
    assert ours[-1].abs().sum() > 0  # the projection head learns from L_in


def test_finessl_components_run_on_simmatch():
    """``algorithm simmatch bms True dls True`` (a row of the results table): soft
    targets, the margin on their argmax."""
    cfg, model, algo = _setup(bms=True, dls=True)
    algo.on_epoch_start(1)
    loss, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1),
                                              num_labeled=N_L, num_classes=C))
    loss.backward()
    assert {"loss/x_aux", "loss/u_aux", "loss/in", "pseudo/margin_max"} <= set(logs)
    assert algo.method_label() == "simmatch+bms+dls"


def test_simmatch_without_the_labeled_set_size_is_one_line():
    cfg = get_cfg_defaults()
    cfg.algorithm = "simmatch"
    one_line_error(build_algorithm, cfg, LinearNet(), C, 12, CPU, names=("simmatch",))
