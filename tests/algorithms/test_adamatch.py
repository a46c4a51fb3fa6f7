"""AdaMatch against a plain transcription of USB's AdaMatch (distribution alignment with
EMAs, relative confidence threshold), loss and gradients over several steps, in fp64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from helpers import LinearNet, random_batch, shared_model_steps

CPU = torch.device("cpu")


def _setup(**keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = "adamatch"
    cfg.ADAMATCH.EMA = 0.7  # a short memory: the EMAs move visibly in a few steps
    cfg.th = 0.8
    for key, value in keys.items():
        setattr(cfg, key, value)
    model = LinearNet()
    return cfg, model, build_algorithm(cfg, model, 4, 12, CPU)


class Reference:
    """USB's AdaMatch step, written out: DistAlignEMAHook(p_target_type='model'),
    AdaMatchThresholdingHook, hard pseudo-labels, CE on each strong view."""

    def __init__(self, cfg, num_classes):
        self.m, self.tau, self.w = cfg.ADAMATCH.EMA, cfg.th, cfg.w_con
        self.p_model = None
        self.p_target = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)

    def loss(self, model, b):
        logits_x = model(b["x"])[0]
        logits_s = model(torch.cat([b["u_s1"], b["u_s2"]]))[0]
        with torch.no_grad():
            q = torch.softmax(model(b["u_w"])[0], dim=1)
            p = torch.softmax(logits_x.detach(), dim=1)
            mean_q = q.mean(0)
            self.p_model = mean_q if self.p_model is None else \
                self.p_model * self.m + mean_q * (1 - self.m)
            self.p_target = self.p_target * self.m + p.mean(0) * (1 - self.m)
            q = q * (self.p_target + 1e-6) / (self.p_model + 1e-6)
            q = q / q.sum(1, keepdim=True)
            cutoff = p.max(1)[0].mean() * self.tau
            conf, yhat = q.max(1)
            mask = (conf >= cutoff).double()
        lu = (F.cross_entropy(logits_s, yhat.repeat(2), reduction="none") * mask.repeat(2)).mean()
        return F.cross_entropy(logits_x, b["y"]) + self.w * lu, mask


def test_loss_gradients_and_statistics_match_usbs_adamatch_over_steps():
    cfg, model, algo = _setup()
    ref = Reference(cfg, 4)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    masks = []
    batches = (random_batch(g) for _ in range(5))
    for logs, mask, _ in shared_model_steps(algo, params, lambda b: ref.loss(model, b), batches):
        assert torch.allclose(algo.p_model.double(), ref.p_model, atol=1e-6)
        assert torch.allclose(algo.p_target.double(), ref.p_target, atol=1e-6)
        assert logs["pseudo/mask_rate"].item() == pytest.approx(mask.mean().item())
        masks.append(mask.mean().item())
    assert 0 < sum(masks) < len(masks)  # the threshold both kept and dropped samples


def test_finessl_components_run_on_adamatch():
    """``algorithm adamatch bms True dls True`` (a row of the results table): a step
    trains the aux head, adds the margins and counts the pace."""
    cfg, model, algo = _setup(bms=True, dls=True)
    loss, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1)))
    loss.backward()
    assert {"loss/x_aux", "loss/u_aux", "pseudo/margin_max"} <= set(logs)
    assert model.aux_head.weight.grad.abs().sum() > 0
    assert algo.method_label() == "adamatch+bms+dls"
