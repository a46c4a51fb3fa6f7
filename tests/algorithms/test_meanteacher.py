"""finessl/algorithms/meanteacher.py and ema.py: the loss and the teacher's EMA against
a plain transcription of USB's equations; the EMA weights are what a run evaluates and
what a rebuilt checkpoint holds."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import finessl.engine.trainer as trainer_module
from conftest import tiny_args
from helpers import LinearModel, algorithm_config, image_batches, plain_sgd
from finessl.algorithms import build_algorithm
from finessl.algorithms.ema import EmaWeights
from finessl.config_load import load_config
from finessl.engine.trained import read_run, rebuild
from finessl.engine.trainer import Trainer

C = 4


@pytest.mark.parametrize("warmup", [True, False])
def test_loss_gradients_and_teacher_follow_usb_over_several_steps(warmup):
    """Teacher theta' <- m_t theta' + (1 - m_t) theta after step t (1, 2, ...), m_t =
    min(1 - 1/(t + 1), m) with the warm-up (the authors' code), m without (USB);
    L = CE(f(x), y) + lambda_u clip(t / (0.4 T), 0, 1) mean (softmax f_theta(u_s) -
    softmax f_theta'(u_w))^2."""
    m, lam = 0.7, 50.0
    cfg = algorithm_config("meanteacher", MEANTEACHER__EMA=m, MEANTEACHER__LAMBDA_U=lam,
                           MEANTEACHER__EMA_WARMUP=warmup)
    model = LinearModel(12, C)
    ref = copy.deepcopy(model)
    teacher = [p.detach().clone() for p in ref.parameters()]
    algorithm = build_algorithm(cfg, model, C, 5, torch.device("cpu"))
    for t, batch in enumerate(image_batches(6, C)):
        loss, _ = algorithm.train_step(batch)
        loss.backward()
        W, b = ref.fc.weight, ref.fc.bias
        target = torch.softmax(batch["u_w"].flatten(1) @ teacher[0].t() + teacher[1], dim=1)
        student = torch.softmax(batch["u_s1"].flatten(1) @ W.t() + b, dim=1)
        expected = (F.cross_entropy(batch["x"].flatten(1) @ W.t() + b, batch["y"])
                    + lam * min(t / 4, 1.0) * ((student - target) ** 2).mean())
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
        for ours, theirs in zip(model.parameters(), ref.parameters()):
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-10, rtol=0)
        plain_sgd(model.parameters()), plain_sgd(ref.parameters())
        algorithm.after_step()
        m_t = min(1 - 1 / (t + 2), m) if warmup else m
        teacher = [m_t * s + (1 - m_t) * p.detach() for s, p in zip(teacher, ref.parameters())]
        shadow = algorithm.ema.shadow
        assert torch.allclose(shadow["fc.weight"], teacher[0], atol=1e-12, rtol=0)
        assert torch.allclose(shadow["fc.bias"], teacher[1], atol=1e-12, rtol=0)
    # the teacher evaluates, and the student is back after
    student = model.fc.weight.detach().clone()
    with algorithm.evaluation_weights():
        assert torch.allclose(model.fc.weight, teacher[0], atol=1e-12, rtol=0)
    assert torch.equal(model.fc.weight, student)
    # its state: flat tensors, restored exactly; the evaluated weights read from it
    state = algorithm.state_dict()
    assert torch.equal(type(algorithm).evaluated_state(state)["fc.bias"], shadow["fc.bias"])
    other = build_algorithm(cfg, LinearModel(12, C, seed=1), C, 5, torch.device("cpu"))
    other.load_state_dict(state)
    assert torch.equal(other.ema.shadow["fc.weight"], shadow["fc.weight"]) and int(other.step) == 6


def test_the_ema_of_an_fp16_model_keeps_small_steps():
    """(1 - m) of a small step is below fp16's resolution near 1: an fp32 average keeps it."""
    model = nn.Linear(1, 1, bias=False).half()
    model.trainable_state_dict = lambda: {"weight": model.weight.detach().clone()}
    model._trained_buffers = dict
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EmaWeights(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0 + 2 ** -8)
    for _ in range(10):
        ema.update()
    expected = 1 + 2 ** -8 * (1 - 0.999 ** 10)
    assert ema.shadow["weight"].dtype == torch.float32
    assert ema.shadow["weight"].item() == pytest.approx(expected, abs=1e-6)


def test_a_run_evaluates_and_rebuilds_with_the_teacher(cifar_root, tmp_path, monkeypatch):
    opts = tiny_args(cifar_root, str(tmp_path / "mt"), algorithm="meanteacher", num_epochs=1,
                     total_steps=2, **{"MEANTEACHER.EMA": 0.5, "DATA.NUM_TEST": 20})
    cfg = load_config(None, opts)
    trainer = Trainer(cfg, str(tmp_path / "mt"), seed=1)
    evaluated = []
    real_evaluate = trainer_module.evaluate

    def spy(model, *args):
        evaluated.append(model.trainable_state_dict())
        return real_evaluate(model, *args)
    monkeypatch.setattr(trainer_module, "evaluate", spy)
    trainer.fit()
    shadow = trainer.algorithm.ema.shadow
    own = trainer.model.trainable_state_dict()
    assert evaluated and any(not torch.equal(own[n], shadow[n]) for n in shadow)
    for name, value in shadow.items():  # the last evaluation saw the teacher
        assert torch.equal(evaluated[-1][name], value.to(own[name].dtype)), name
    run_cfg, state, path = read_run(str(tmp_path / "mt"), "model_dir")
    rebuilt = rebuild(run_cfg, state, path, state["classnames"]).model.trainable_state_dict()
    for name, value in shadow.items():
        assert torch.equal(rebuilt[name].cpu(), value.cpu().to(own[name].dtype)), name
