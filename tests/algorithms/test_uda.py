"""UDA against a plain transcription of USB's ``uda.py`` (loss, sharpened targets,
confidence mask, training-signal annealing), several steps in fp64, gradients included."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.algorithms.uda import tsa_threshold
from finessl.config import get_cfg_defaults
from helpers import LinearHeads, image_batches, step_both

C, B, D = 4, 6, 12


def batches(steps, seed=0):
    return image_batches(steps, C, seed=seed, n_x=B, n_u=B, scale=2, num_unlabeled=20)


def reference_loss(model, batch, it, total, th, T, schedule, w_con):
    """USB's train_step, transcribed (one strong view there; both views here, averaged)."""
    logits_x = model.head(batch["x"].flatten(1))
    with torch.no_grad():
        probs_w = torch.softmax(model.head(batch["u_w"].flatten(1)), dim=-1)
    progress = it / total
    if schedule == "none":
        tsa = 1.0
    else:
        a = {"linear": progress, "exp": math.exp((progress - 1) * 5),
             "log": 1 - math.exp(-progress * 5)}[schedule]
        tsa = a * (1 - 1 / C) + 1 / C
    sup_mask = (torch.softmax(logits_x, dim=-1).max(dim=-1)[0] <= tsa).double()
    sup = (F.cross_entropy(logits_x, batch["y"], reduction="none") * sup_mask).mean()
    mask = (probs_w.max(dim=-1)[0] >= th).double()
    target = torch.softmax(torch.log(probs_w) / T, dim=-1)  # softmax(z_w / T)
    unsup = 0
    for view in ("u_s1", "u_s2"):
        log_p = F.log_softmax(model.head(batch[view].flatten(1)), dim=-1)
        unsup = unsup + (-(target * log_p).sum(dim=-1) * mask).mean() / 2
    return sup + w_con * unsup


@pytest.mark.parametrize("schedule", ["linear", "exp", "log", "none"])
def test_uda_matches_a_transcription_of_usb(schedule):
    steps = 4
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.th, cfg.UDA.TSA = "uda", 0.5, schedule
    cfg.num_epochs, cfg.total_steps = 2, 3
    ours = LinearHeads(D, C)
    ref = copy.deepcopy(ours)
    algorithm = build_algorithm(cfg, ours, C, 20, torch.device("cpu"))
    ours_head, ref_head = list(ours.head.parameters()), list(ref.head.parameters())
    masked = 0
    for it, batch in enumerate(batches(steps)):
        loss, logs = algorithm.train_step(batch)
        expected = reference_loss(ref, batch, it, 6, 0.5, cfg.UDA.T, schedule, cfg.w_con)
        masked += float(logs["pseudo/mask_rate"])
        step_both(ours_head, ref_head, loss, expected, lr=0.5, atol=1e-9)
    assert 0 < masked < steps  # the mask kept some images and dropped others
    assert int(algorithm.it) == steps


def test_tsa_thresholds_rise_from_one_over_c_towards_one():
    for schedule in ("linear", "exp"):
        assert tsa_threshold(schedule, 1.0, 10) == pytest.approx(1.0)
    assert tsa_threshold("log", 1.0, 10) == pytest.approx(0.1 + 0.9 * (1 - math.exp(-5)))
    assert tsa_threshold("linear", 0.0, 10) == pytest.approx(0.1)
    assert tsa_threshold("log", 0.0, 10) == pytest.approx(0.1)
    assert tsa_threshold("none", 0.0, 10) == 1.0


@pytest.mark.parametrize("name", ["uda", "dash"])
def test_bms_and_dls_plug_into_uda_and_dash(name):
    """UDA's and Dash's targets come from the weak view: FineSSL's components apply."""
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.bms, cfg.dls, cfg.total_steps = name, True, True, 2
    cfg.DASH.WARMUP = 1
    algorithm = build_algorithm(cfg, LinearHeads(D, C), C, 20, torch.device("cpu"))
    algorithm.memory.load(torch.tensor([0, 0, 1, 2] + [-1] * 16))  # margins != 0
    for batch in batches(3):
        loss, logs = algorithm.train_step(batch)
        assert torch.isfinite(loss) and logs["pseudo/margin_max"] > 0
        assert "loss/u_aux" in logs and "loss/x_aux" in logs
    assert algorithm.method_label() == f"{name}+bms+dls"
