"""Our training step against the plain implementation of the same math
(``benchmarks/plain_step.py``): same loss, same parameter update."""
from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch

from conftest import REPO, TINY_VIT
from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.models import build_model

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from plain_step import plain_finessl_step  # noqa: E402


def _setup(vpt: str):
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_len = TINY_VIT, "none", 4
    setattr(cfg, vpt, True)
    torch.manual_seed(0)
    model = build_model(cfg, [f"c{i}" for i in range(5)], torch.device("cpu"), half=False)
    algorithm = build_algorithm(cfg, model, 5, 10, torch.device("cpu"))
    algorithm.selected.copy_(torch.tensor([0, 0, 1, 2, -1, -1, 3, 0, -1, -1]))  # margins != 0
    g = torch.Generator().manual_seed(1)
    images = lambda: torch.randn(3, 3, 32, 32, generator=g)  # noqa: E731
    batch = {"x": images(), "y": torch.tensor([0, 3, 4]), "u_w": images(), "u_s1": images(),
             "u_s2": images(), "u_idx": torch.tensor([4, 5, 8]), "u_true": torch.tensor([0, 1, 2])}
    return cfg, model, algorithm, batch


def _update(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    optim.zero_grad()
    loss.backward()
    optim.step()
    return [p.detach() - b for p, b in zip(params, before)]


@pytest.mark.parametrize("vpt", ["vpt_deep", "vpt_shallow"])
def test_same_loss_and_same_update_as_the_plain_step(vpt):
    cfg, model, algorithm, batch = _setup(vpt)
    loss, _ = algorithm.train_step(batch)
    ours = _update(model, loss)
    memory = algorithm.selected.clone()

    cfg, model, algorithm, batch = _setup(vpt)
    plain_loss = plain_finessl_step(model, algorithm.selected, batch, cfg, 5)
    plain = _update(model, plain_loss)

    assert loss.item() == pytest.approx(plain_loss.item(), abs=1e-5)
    assert torch.equal(memory, algorithm.selected)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert any(u.abs().max() > 1e-4 for u in ours)  # the step really moved something


def test_gradient_checkpointing_gives_the_same_step():
    cfg, model, algorithm, batch = _setup("vpt_deep")
    loss, _ = algorithm.train_step(batch)
    plain = _update(model, loss)
    cfg, model, algorithm, batch = _setup("vpt_deep")
    model.backbone.grad_checkpointing = True
    loss_ckpt, _ = algorithm.train_step(batch)
    ours = _update(model, loss_ckpt)
    assert loss_ckpt.item() == pytest.approx(loss.item(), abs=1e-6)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_backbone_gives_the_same_step():
    cfg, model, algorithm, batch = _setup("vpt_deep")
    loss, _ = algorithm.train_step(batch)
    plain = _update(model, loss)
    cfg, model, algorithm, batch = _setup("vpt_deep")
    model.backbone.compile()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "backbone.peft.0.prompts" in names  # compiled in place: same parameter names
    compiled_loss, _ = algorithm.train_step(batch)
    ours = _update(model, compiled_loss)
    assert compiled_loss.item() == pytest.approx(loss.item(), abs=1e-4)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)
