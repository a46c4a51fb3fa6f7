"""finessl/algorithms/pimodel.py (and consistency.py, which it shares with Mean Teacher
and VAT): the loss and the ramp against a plain transcription of USB's equations."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import LinearModel, algorithm_config, image_batches, one_line_error, plain_sgd
from finessl.algorithms import build_algorithm
from finessl.algorithms.consistency import ramp_up
from finessl.config_load import load_config

C = 4


def test_loss_ramp_and_gradients_follow_usb_over_several_steps():
    """L = CE(f(x), y) + lambda_u clip(t / (0.4 T), 0, 1) mean (softmax f(u_s) -
    softmax f(u_w))^2, the weak view's softmax fixed; five SGD steps, T = 10."""
    cfg = algorithm_config("pimodel", PIMODEL__LAMBDA_U=10.0, PIMODEL__WARMUP=0.4)
    model = LinearModel(12, C)
    ref = copy.deepcopy(model)
    algorithm = build_algorithm(cfg, model, C, 5, torch.device("cpu"))
    for t, batch in enumerate(image_batches(5, C)):
        loss, logs = algorithm.train_step(batch)
        loss.backward()
        W, b = ref.fc.weight, ref.fc.bias
        f = lambda v: v.flatten(1) @ W.t() + b  # noqa: E731
        target = torch.softmax(f(batch["u_w"]), dim=1).detach()
        mse = ((torch.softmax(f(batch["u_s1"]), dim=1) - target) ** 2).mean()
        ramp = min(t / (0.4 * 10), 1.0)
        expected = F.cross_entropy(f(batch["x"]), batch["y"]) + 10.0 * ramp * mse
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
        assert logs["loss/ramp"] == pytest.approx(ramp)
        for ours, theirs in zip(model.parameters(), ref.parameters()):
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-10, rtol=0)
        plain_sgd(model.parameters()), plain_sgd(ref.parameters())
    assert int(algorithm.state_dict()["step"]) == 5


def test_ramp_up():
    assert [ramp_up(t, 0.4, 10) for t in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert ramp_up(0, 0.0, 10) == 1.0  # no warm-up: the full weight from the start


def test_step_counter_resumes():
    cfg = algorithm_config("pimodel")
    algorithm = build_algorithm(cfg, LinearModel(12, C), C, 5, torch.device("cpu"))
    algorithm.train_step(image_batches(1, C)[0])
    other = build_algorithm(cfg, LinearModel(12, C), C, 5, torch.device("cpu"))
    other.load_state_dict(algorithm.state_dict())
    assert int(other.step) == 1 and other.ramp() == algorithm.ramp()


@pytest.mark.parametrize("algorithm", ["pimodel", "meanteacher", "vat", "fullysupervised",
                                       "supervised"])
@pytest.mark.parametrize("component", ["bms", "dls"])
def test_finessl_components_are_refused_at_config_time(algorithm, component):
    one_line_error(load_config, None, ["algorithm", algorithm, component, "True"],
                   names=(f"{component} True", algorithm, "pseudo-labels"))
    assert load_config(None, ["algorithm", algorithm, component, "False"])[component] is False
    if algorithm == "supervised":  # and zero-shot CLIP, which trains nothing
        one_line_error(load_config, None, ["algorithm", "zeroshot", component, "True"],
                       names=(f"{component} True", "zeroshot", "trains nothing"))


def test_warmup_is_a_fraction():
    one_line_error(load_config, None, ["algorithm", "pimodel", "PIMODEL.WARMUP", "1.5"],
                   names=("PIMODEL.WARMUP",))
