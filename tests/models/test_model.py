"""Backbone forward, VPT, heads and where gradients may (not) flow, on a tiny CLIP ViT."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import finessl.models.backbone as backbone_mod
from conftest import TINY_VIT
from finessl.config import get_cfg_defaults
from finessl.models import build_model
from finessl.models.backbone import ViTBackbone
from finessl.models.clip import load_clip
from finessl.models.heads import CosineHead, class_text_embeddings, text_init_weight

CLASSES = ["cat", "dog", "frog"]


def tiny_cfg(**overrides):
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_len = TINY_VIT, "none", 3
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_forward_without_peft_equals_open_clip():
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT, "none")
    visual = clip.visual.eval()
    x = torch.randn(2, 3, 32, 32)
    ours = ViTBackbone(visual)(x)
    assert ours.shape == (2, 64)
    assert torch.allclose(ours @ visual.proj, visual(x), atol=1e-5)


def _record_blocks(monkeypatch):
    seen = []
    original = backbone_mod.block_forward

    def recorder(block, x, n_out=None):
        seen.append(x.detach().clone())
        return original(block, x, n_out)
    monkeypatch.setattr(backbone_mod, "block_forward", recorder)
    return seen


def test_vpt_deep_replaces_prompts_before_every_block(monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(vpt_deep=True), CLASSES, torch.device("cpu"), half=False)
    prompts = model.backbone.peft[0].prompts
    assert prompts.shape == (2, 3, 64)  # one set per block, 3 tokens, width 64
    seen = _record_blocks(monkeypatch)
    model(torch.randn(2, 3, 32, 32))
    n_keep = 1 + (32 // 8) ** 2
    assert [x.shape[1] for x in seen] == [n_keep + 3, n_keep + 3]
    for i, x in enumerate(seen):
        assert torch.equal(x[:, n_keep:], prompts[i].detach().expand(2, -1, -1))


def test_vpt_shallow_prompts_enter_once_and_are_carried(monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(vpt_shallow=True), CLASSES, torch.device("cpu"), half=False)
    prompts = model.backbone.peft[0].prompts
    assert prompts.shape == (1, 3, 64)
    seen = _record_blocks(monkeypatch)
    model(torch.randn(2, 3, 32, 32))
    assert [x.shape[1] for x in seen] == [20, 20]
    assert torch.equal(seen[0][:, 17:], prompts[0].detach().expand(2, -1, -1))
    assert not torch.allclose(seen[1][:, 17:], prompts[0].detach().expand(2, -1, -1))


def test_vpt_init_range():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(vpt_deep=True, vpt_len=50), CLASSES, torch.device("cpu"), False)
    v = (6.0 / (3 * 8 * 8 + 64)) ** 0.5
    prompts = model.backbone.peft[0].prompts
    assert prompts.abs().max() <= v and prompts.abs().max() > 0.95 * v


def test_only_prompts_and_heads_are_trainable():
    model = build_model(tiny_cfg(vpt_deep=True), CLASSES, torch.device("cpu"), half=False)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["aux_head.logit_scale", "aux_head.weight", "backbone.peft.0.prompts",
                         "head.logit_scale", "head.weight"]


def test_aux_losses_send_no_gradient_to_the_prompts():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(vpt_deep=True), CLASSES, torch.device("cpu"), half=False)
    prompts = model.backbone.peft[0].prompts
    logits, aux = model(torch.randn(4, 3, 32, 32))
    F.cross_entropy(aux, torch.tensor([0, 1, 2, 0])).backward()
    assert prompts.grad is None
    assert model.aux_head.weight.grad.abs().sum() > 0
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.visual.parameters())


def test_cosine_head_logits_and_aux_copy():
    torch.manual_seed(0)
    head = CosineHead(4, 3)
    assert torch.allclose(head.weight.norm(dim=-1), torch.ones(3))
    assert head.logit_scale.item() == pytest.approx(1 / 0.07)
    x = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    expected = (1 / 0.07) * head.weight[:, 0] / head.weight.norm(dim=-1)
    assert torch.allclose(head(x)[0], expected.detach(), atol=1e-5)
    model = build_model(tiny_cfg(), CLASSES, torch.device("cpu"), half=False)
    assert torch.equal(model.head.weight, model.aux_head.weight)
    assert model.head.weight.data_ptr() != model.aux_head.weight.data_ptr()


def test_text_init_is_text_embedding_times_visual_projection_transposed():
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT, "none")
    import open_clip
    tokenizer = open_clip.get_tokenizer("ViT-Tiny-8")
    weight = text_init_weight(class_text_embeddings(clip, tokenizer, CLASSES, "a photo of a {}."),
                              clip.visual.proj)
    text = F.normalize(clip.encode_text(tokenizer(["a photo of a dog."])), dim=-1)
    assert weight.shape == (3, 64)
    assert torch.allclose(weight[1], (text @ clip.visual.proj.t())[0], atol=1e-5)
    torch.manual_seed(0)
    model = build_model(tiny_cfg(rand_init=False), CLASSES, torch.device("cpu"), half=False)
    assert torch.allclose(model.head.weight, weight, atol=1e-5)  # released: rows as they are
    torch.manual_seed(0)
    model = build_model(tiny_cfg(rand_init=False, text_init_unit=True), CLASSES,
                        torch.device("cpu"), half=False)
    assert torch.allclose(model.head.weight, F.normalize(weight, dim=-1), atol=1e-5)


def test_local_weights_file_loads_exactly(tmp_path):
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT, "none")
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    torch.manual_seed(1)
    again = load_clip(TINY_VIT, str(path))
    for (name, a), (_, b) in zip(clip.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_zero_shot_head_reproduces_clip_image_text_logits():
    torch.manual_seed(0)
    cfg = tiny_cfg(algorithm="zeroshot")
    model = build_model(cfg, CLASSES, torch.device("cpu"), half=False, zero_shot=True)
    torch.manual_seed(0)  # the same random CLIP as inside build_model
    clip = load_clip(TINY_VIT, "none").eval()
    import open_clip
    text = clip.encode_text(open_clip.get_tokenizer("ViT-Tiny-8")(
        [f"a photo of a {c}." for c in CLASSES]))
    x = torch.randn(2, 3, 32, 32)
    image = clip.encode_image(x)
    expected = clip.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    with torch.no_grad():
        ours = model.head(model.backbone(x))
    assert torch.allclose(ours, expected.detach(), atol=1e-4)
    assert not any(p.requires_grad for p in model.head.parameters())
