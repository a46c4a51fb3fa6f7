"""The released model's behaviour behind ``rand_init False``, ``partial``, ``block_num`` and
``scalar_learnable`` (docs/differences.md, "Reproduced by default, with a switch"), each
checked against a plain transcription of the released lines on ViT-B/16 itself (width
768, 12 blocks; random weights, ``pretrained none``), and each switch for ours."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import finessl.models.backbone as backbone_mod
from finessl.config import get_cfg_defaults
from finessl.errors import UserError
from finessl.models.clip import OPENAI_MEAN, OPENAI_STD, load_clip, open_clip_lib
from finessl.models.heads import CosineHead, class_text_embeddings, text_init_weight
from finessl.models.peft import build_vit_backbone

CLASSES = ["cat", "dog", "frog", "ship"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_clip("ViT-B/16", "none")


def cfg_of(**keys):
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_len = "ViT-B/16", "none", 5
    for k, v in keys.items():
        setattr(cfg, k, v)
    return cfg


def tower(clip, **keys):
    """Our ViT-B/16 tower with ``keys`` (the same frozen visual each time: the build
    freezes it first, then switches on what the strategies train)."""
    torch.manual_seed(0)
    return build_vit_backbone(cfg_of(**keys), clip.visual, OPENAI_MEAN, OPENAI_STD)


def trained(backbone) -> set[str]:
    return {n for n, p in backbone.visual.named_parameters() if p.requires_grad}


# ---- U2: rand_init False ---------------------------------------------------------------
def test_text_init_keeps_the_released_rows_unscaled_and_unit_rows_is_the_switch(clip):
    assert get_cfg_defaults().text_init_unit is False
    tokenizer = open_clip_lib().get_tokenizer("ViT-B-16-quickgelu")
    text = class_text_embeddings(clip, tokenizer, CLASSES, "a photo of a {}.")
    released = text @ clip.visual.proj.data.t()  # ViT_Head: text_features @ visual_proj.t()
    assert released.shape == (4, 768)
    norms = released.norm(dim=-1)
    assert (norms - 1).abs().max() > 2e-2  # the rows are not unit: the switch matters
    head = CosineHead(768, 4, text_init_weight(text, clip.visual.proj))
    assert torch.allclose(head.weight, released, atol=1e-6)
    ours = CosineHead(768, 4, text_init_weight(text, clip.visual.proj), unit_rows=True)
    assert torch.allclose(ours.weight, released / norms[:, None], atol=1e-6)
    # the same logits, but a gradient 1/|w| as large on each released row
    x = torch.randn(3, 768)
    assert torch.allclose(head(x), ours(x), atol=1e-4)
    head(x)[:, 1].sum().backward()
    ours(x)[:, 1].sum().backward()
    assert torch.allclose(head.weight.grad[1] * norms[1], ours.weight.grad[1], atol=1e-4)
    assert head.weight.grad[1].norm() / ours.weight.grad[1].norm() == \
        pytest.approx(1 / norms[1].item(), rel=1e-4)


# ---- U3 / U5: BitFit, finetune, partial and block_num -----------------------------------
def test_bitfit_ignores_partial_as_released_and_partial_weights_is_the_switch(clip):
    released = {n for n, _ in clip.visual.named_parameters() if n.endswith("bias")}
    assert len(released) == 12 * 6 + 2  # every block's six biases, ln_pre, ln_post
    assert trained(tower(clip, bias_tuning=True, partial=3)) == released
    ours = trained(tower(clip, bias_tuning=True, partial=3, partial_weights=True))
    assert ours == {n for n in released if n.startswith(("transformer.resblocks.9.",
                    "transformer.resblocks.10.", "transformer.resblocks.11.", "ln_post."))}
    assert len(ours) == 3 * 6 + 1


def released_finetune_list(visual, block_num):
    """ViT_Tuner's finetune_list, transcribed (the name test as released)."""
    names = [n for n, _ in visual.named_parameters()]
    if block_num is None:
        return set(names)
    block_list = [len(visual.transformer.resblocks) - 1 - i for i in range(block_num)]
    return {n for n in names for num in block_list if "resblocks." + str(num) in n}


@pytest.mark.parametrize("block_num", [None, 1, 3, 12])
def test_finetune_ignores_partial_and_block_num_scopes_it_as_released(clip, block_num):
    expected = released_finetune_list(clip.visual, block_num)
    if block_num is None:
        expected.discard("proj")  # maps the feature into the joint space: never a gradient
    assert trained(tower(clip, finetune=True, partial=2, block_num=block_num)) == expected
    if block_num == 3:
        assert len(expected) == 3 * 12 and "ln_post.weight" not in expected


def test_finetune_partial_weights_is_ours_and_refused_with_block_num(clip):
    ours = trained(tower(clip, finetune=True, partial=2, partial_weights=True))
    assert ours == ({n for n, _ in clip.visual.named_parameters()
                     if n.startswith(("transformer.resblocks.10.", "transformer.resblocks.11."))}
                    | {"ln_post.weight", "ln_post.bias"})
    with pytest.raises(UserError, match="block_num 2 and partial_weights True"):
        tower(clip, finetune=True, partial=2, partial_weights=True, block_num=2)
    with pytest.raises(UserError, match="block_num: 13 blocks asked for"):
        tower(clip, finetune=True, block_num=13)
    # block_num scopes finetune only: BitFit keeps every bias
    assert len(trained(tower(clip, bias_tuning=True, block_num=2))) == 74


# ---- U4: vpt_shallow with partial -------------------------------------------------------
@pytest.mark.parametrize("switch, first", [(False, 0), (True, 9)])
def test_shallow_prompts_enter_at_block_0_as_released_or_L_minus_K(clip, monkeypatch,
                                                                   switch, first):
    backbone = tower(clip, vpt_shallow=True, partial=3, partial_shallow=switch)
    prompts = backbone.peft[0]
    assert prompts.prompts.shape == (1, 5, 768)
    v = math.sqrt(6.0 / (3 * 16 * 16 + 768))  # the released VPT init
    assert prompts.prompts.abs().max() <= v
    seen = []

    def route(block, x, n_out=None, *hooks):  # tokens only: what enters each block
        seen.append(x.shape[1])
        return x[:, :n_out] if n_out is not None else x
    monkeypatch.setattr(backbone_mod, "block_forward", route)
    backbone(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert seen == [197] * first + [202] * (12 - first)
    # deep prompts keep following partial: blocks 9, 10, 11
    deep = tower(clip, vpt_deep=True, partial=3).peft[0]
    assert deep.first == 9 and deep.prompts.shape == (3, 5, 768)


# ---- U5: scalar_learnable and adapter_scalar ----------------------------------------------
def released_branch(m, x, scale, ln_in=True):
    """Adapter / AdaptFormer.forward as released, without the residual: LN, down, ReLU,
    (dropout), up, times the scale."""
    h = F.layer_norm(x, (768,), m.ln.weight, m.ln.bias) if ln_in else x
    return F.linear(F.relu(F.linear(h, m.down.weight, m.down.bias)), m.up.weight,
                    m.up.bias) * scale


@pytest.mark.parametrize("method", ["adapter", "adaptformer"])
def test_scalar_learnable_trains_a_scale_from_adapter_scalar(clip, method):
    backbone = tower(clip, **{method: True}, scalar_learnable=True, adapter_scalar=0.25,
                     partial=4)
    module = backbone.peft[0]
    assert sorted(module.blocks) == ["10", "11", "8", "9"]
    branch = module.blocks["11"].eval()
    assert isinstance(branch.scale, torch.nn.Parameter) and branch.scale.requires_grad
    assert branch.scale.item() == 0.25
    names = {n for n, _ in module.named_parameters()}
    assert {f"blocks.{i}.scale" for i in range(8, 12)} <= names
    with torch.no_grad():
        branch.up.weight.normal_(0, 0.02)  # a branch that is not zero yet
    x = torch.randn(2, 7, 768)
    out = branch(x)
    assert torch.allclose(out, released_branch(branch, x, 0.25), atol=1e-5)
    out.sum().backward()
    assert branch.scale.grad is not None
    assert branch.scale.grad.item() == pytest.approx((out / 0.25).sum().item(), rel=1e-4)
    # default: a constant 0.1, as released with scalar_learnable False
    fixed = tower(clip, **{method: True}).peft[0].blocks["0"]
    assert fixed.scale == 0.1 and not any(n.endswith("scale") for n, _ in fixed.named_parameters())
