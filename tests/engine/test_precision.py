"""``prec`` (docs/method.md §4): fp16 as released (fp16 trained parameters, plain SGD,
no scaler) and amp as the sound mode (fp32 master weights, fp16 autocast, a scaler).

Both are run here on the CPU through ``Trainer``'s ``precision`` argument, which keeps
the mode that a CPU run would otherwise drop to fp32."""
from __future__ import annotations

import pytest
import torch
from open_clip.transformer import LayerNormFp32

from conftest import tiny_args
from finessl.config_load import load_config
from finessl.engine.device import Precision
from finessl.engine.run import restore
from finessl.engine.trainer import Trainer

CPU = torch.device("cpu")
ALL_PEFT = {key: True for key in ("lora", "adapter", "adaptformer", "ssf", "bias_tuning")}


def trainer_for(prec: str, cifar_root, out, **overrides) -> Trainer:
    args = tiny_args(cifar_root, str(out), prec=prec,
                     **{"num_epochs": 1, "total_steps": 3, **ALL_PEFT, **overrides})
    return Trainer(load_config(None, args), str(out), seed=0,
                   precision=Precision(prec, CPU, cpu_fallback=False))


def record_mlp_dtype(trainer: Trainer) -> list[torch.dtype]:
    """The dtype of the first block's fc1 output, each time it runs."""
    seen = []
    fc1 = trainer.model.backbone.visual.transformer.resblocks[0].mlp.c_fc
    fc1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen


def decay_only_step(trainer: Trainer) -> dict[str, torch.Tensor]:
    """One optimizer step with every gradient zero: weight decay alone acts."""
    before = {id(p): p.detach().clone() for p in trainer.params}
    for p in trainer.params:
        p.grad = torch.zeros_like(p)
    trainer.optim.step()
    return before


def test_fp16_trains_fp16_parameters_with_plain_sgd(cifar_root, tmp_path):
    trainer = trainer_for("fp16", cifar_root, tmp_path)
    model, visual = trainer.model, trainer.model.backbone.visual
    block = visual.transformer.resblocks[0]
    # The tower is open_clip's own fp16 model: linear / conv fp16, LayerNorms and
    # embeddings fp32, the LayerNorms computing in fp32.
    assert visual.conv1.weight.dtype == block.attn.in_proj_weight.dtype == torch.float16
    assert block.mlp.c_fc.weight.dtype == torch.float16
    assert isinstance(block.ln_1, LayerNormFp32) and block.ln_1.weight.dtype == torch.float32
    assert visual.class_embedding.dtype == visual.positional_embedding.dtype == torch.float32
    # Every trained tensor is an fp16 parameter, except BitFit's LayerNorm biases.
    names = {id(p): n for n, p in model.named_parameters()}
    for p in trainer.params:
        is_tower_ln = names[id(p)].startswith("backbone.visual.") and p.ndim == 1 and any(
            isinstance(m, torch.nn.LayerNorm) and m.bias is p for m in visual.modules())
        assert p.dtype == (torch.float32 if is_tower_ln else torch.float16), names[id(p)]
    assert any(names[id(p)].startswith("backbone.peft.") for p in trainer.params)
    for head in (model.head, model.aux_head):
        assert head.weight.dtype == head.logit_scale.dtype == torch.float16
        assert head.logit_scale.item() == 14.2890625  # 1 / 0.07 rounded to fp16
    assert trainer.precision.scaler is None and trainer.precision.amp_dtype is None

    seen = record_mlp_dtype(trainer)
    trainer.fit()
    assert seen and set(seen) == {torch.float16}
    assert all(p.dtype in (torch.float16, torch.float32) for p in trainer.params)
    buffers = [trainer.optim.state[p]["momentum_buffer"] for p in trainer.params]
    assert all(b.dtype == p.dtype for b, p in zip(buffers, trainer.params))
    assert torch.isfinite(torch.tensor(trainer.history[-1]["top1"]))

    # lr * wd = 1.5e-5 relative is below half an fp16 ULP (2.4e-4 .. 4.9e-4): decay
    # alone never moves an fp16 weight; the fp32 LayerNorm biases do move.
    trainer.optim = torch.optim.SGD(trainer.params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    before = decay_only_step(trainer)
    for p in trainer.params:
        moved = not torch.equal(p.detach(), before[id(p)])
        assert moved == (p.dtype == torch.float32 and bool(before[id(p)].any()))


def test_amp_keeps_fp32_master_weights_with_autocast_and_a_scaler(cifar_root, tmp_path):
    trainer = trainer_for("amp", cifar_root, tmp_path)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    scaler = trainer.precision.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler.get_scale() == 65536.0
    tuned = {id(p): p.detach().clone() for p in trainer.params}
    seen = record_mlp_dtype(trainer)
    trainer.fit()
    assert seen and set(seen) == {torch.float16}  # autocast ran the tower in fp16
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert any(not torch.equal(p.detach(), tuned[id(p)]) for p in trainer.params)
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert state["scaler"]["scale"] == scaler.get_scale()
    # fp32 master weights: the same decay-only step shrinks every weight by lr * wd.
    trainer.optim = torch.optim.SGD(trainer.params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    before = decay_only_step(trainer)
    for p in trainer.params:
        torch.testing.assert_close(p.detach(), before[id(p)] * (1 - 0.03 * 5e-4),
                                   rtol=1e-6, atol=0)


def test_fp32_and_bf16_dtypes(cifar_root, tmp_path):
    for prec, expected in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        trainer = trainer_for(prec, cifar_root, tmp_path / prec, total_steps=1)
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert trainer.precision.scaler is None
        seen = record_mlp_dtype(trainer)
        trainer.fit()
        assert set(seen) == {expected}


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_fp16_modes_resume_exactly(prec, cifar_root, tmp_path):
    """A checkpoint written under a half mode restores the same parameters and dtypes."""
    first = trainer_for(prec, cifar_root, tmp_path / "a")
    first.fit()
    second = trainer_for(prec, cifar_root, tmp_path / "b")
    restore(second, str(tmp_path / "a"))
    for a, b in zip(first.params, second.params):
        assert a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
