"""MixMatch against a plain transcription of USB's ``mixmatch.py`` (label guessing,
sharpening, MixUp, the two losses, the ramp-up of lambda_u), several steps in fp64,
gradients included; BMS / DLS refused at config time."""
from __future__ import annotations

import copy

import pytest
import torch

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.config_load import load_config
from helpers import LinearHeads, image_batches, one_line_error, step_both

C, B, N, D = 4, 5, 3, 12


def batches(steps, seed=0):
    return image_batches(steps, C, seed=seed, n_x=N, n_u=B, scale=2)


def reference_loss(model, batch, it, total, T, alpha, lambda_u, rampup):
    """USB's train_step, transcribed; its two weak views are u_w and u_w mirrored."""
    f = lambda v: model.head(v.flatten(1))  # noqa: E731
    x, y, u1 = batch["x"], batch["y"], batch["u_w"]
    u2 = torch.flip(u1, dims=[3])
    with torch.no_grad():
        avg = (torch.softmax(f(u1), dim=1) + torch.softmax(f(u2), dim=1)) / 2
        sharp = avg ** (1 / T)
        sharp = sharp / sharp.sum(dim=-1, keepdim=True)
    labels = torch.cat([torch.nn.functional.one_hot(y, C).double(), sharp, sharp])
    inputs = torch.cat([x, u1, u2])
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    lam = max(lam, 1 - lam)
    index = torch.randperm(inputs.size(0))
    mixed_x = lam * inputs + (1 - lam) * inputs[index]
    mixed_y = lam * labels + (1 - lam) * labels[index]
    logits = f(mixed_x)
    sup = torch.sum(-mixed_y[:N] * torch.log_softmax(logits[:N], dim=-1), dim=1).mean()
    probs = torch.softmax(logits[N:], dim=-1)
    unsup = ((probs - mixed_y[N:]) ** 2).mean(dim=1).mean()
    warm = min(max(it / (rampup * total), 0.0), 1.0)
    return sup + lambda_u * warm * unsup


def test_mixmatch_matches_a_transcription_of_usb():
    steps = 5
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.num_epochs, cfg.total_steps = "mixmatch", 2, 5
    cfg.MIXMATCH.RAMPUP = 0.3  # lambda_u rises over 3 steps, then stays
    keys = cfg.MIXMATCH
    ours = LinearHeads(D, C)
    ref = copy.deepcopy(ours)
    algorithm = build_algorithm(cfg, ours, C, B, torch.device("cpu"))
    ours_head, ref_head = list(ours.head.parameters()), list(ref.head.parameters())
    for it, batch in enumerate(batches(steps)):
        torch.manual_seed(100 + it)
        loss, logs = algorithm.train_step(batch)
        torch.manual_seed(100 + it)
        expected = reference_loss(ref, batch, it, 10, keys.T, keys.ALPHA, keys.LAMBDA_U,
                                  keys.RAMPUP)
        assert logs["loss/u"] > 0
        step_both(ours_head, ref_head, loss, expected, lr=0.5, atol=1e-9)
    assert int(algorithm.it) == steps


@pytest.mark.parametrize("algorithm", ["mixmatch", "remixmatch"])
@pytest.mark.parametrize("component", ["bms", "dls"])
def test_mixup_algorithms_refuse_bms_and_dls_at_config_time(algorithm, component):
    one_line_error(load_config, None, ["algorithm", algorithm, component, "True"],
                   names=(algorithm, "bms", "dls", "MixUp"))
    load_config(None, ["algorithm", algorithm, component, "False"])
