"""Our training step against the plain implementation of the same math
(``benchmarks/plain_step.py``): same loss, same parameter update."""
from __future__ import annotations

import shutil

import pytest
import torch

from benchmarks.plain_step import plain_finessl_step
from helpers import setup_tiny_step, sgd_update


@pytest.mark.parametrize("vpt", ["vpt_deep", "vpt_shallow"])
def test_same_loss_and_same_update_as_the_plain_step(vpt):
    cfg, model, algorithm, batch = setup_tiny_step(vpt)
    loss, _ = algorithm.train_step(batch)
    ours = sgd_update(model, loss)
    memory = algorithm.selected.clone()

    cfg, model, algorithm, batch = setup_tiny_step(vpt)
    plain_loss = plain_finessl_step(model, algorithm.selected, batch, cfg, 5)
    plain = sgd_update(model, plain_loss)

    assert loss.item() == pytest.approx(plain_loss.item(), abs=1e-5)
    assert torch.equal(memory, algorithm.selected)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert any(u.abs().max() > 1e-4 for u in ours)  # the step really moved something


def test_gradient_checkpointing_gives_the_same_step():
    cfg, model, algorithm, batch = setup_tiny_step("vpt_deep")
    loss, _ = algorithm.train_step(batch)
    plain = sgd_update(model, loss)
    cfg, model, algorithm, batch = setup_tiny_step("vpt_deep")
    model.backbone.grad_checkpointing = True
    loss_ckpt, _ = algorithm.train_step(batch)
    ours = sgd_update(model, loss_ckpt)
    assert loss_ckpt.item() == pytest.approx(loss.item(), abs=1e-6)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow  # torch.compile: several seconds
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_backbone_gives_the_same_step():
    cfg, model, algorithm, batch = setup_tiny_step("vpt_deep")
    loss, _ = algorithm.train_step(batch)
    plain = sgd_update(model, loss)
    cfg, model, algorithm, batch = setup_tiny_step("vpt_deep")
    model.backbone.compile()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "backbone.peft.0.prompts" in names  # compiled in place: same parameter names
    compiled_loss, _ = algorithm.train_step(batch)
    ours = sgd_update(model, compiled_loss)
    assert compiled_loss.item() == pytest.approx(loss.item(), abs=1e-4)
    for a, b in zip(ours, plain):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)
