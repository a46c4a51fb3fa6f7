"""The model against independent references (docs/method.md §1): OpenAI-format weights
through open_clip's own OpenAI loader (QuickGELU included), the fp16 backbone against
open_clip's fp16 forward, every PEFT module's initial values, and the per-block order of
operations written out plainly on open_clip's modules."""
from __future__ import annotations

import copy
import json
import logging
import math
import warnings

import open_clip
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import LayerNormFp32, QuickGELU

from conftest import TINY_VIT
from finessl.config import get_cfg_defaults
from finessl.models.backbone import ViTBackbone
from finessl.models.clip import OPENAI_MEAN, OPENAI_STD, load_clip
from finessl.models.peft import build_vit_backbone
from finessl.models.peft_adapter import AdaptFormer, Adapter
from finessl.models.peft_lora import LoRA
from finessl.models.peft_ssf import SSF
from finessl.models.peft_vpt import VisualPrompts

# OpenAI's loader infers the architecture from shapes, with 64-wide heads in both towers.
TINY_OPENAI = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "head_width": 64,
                              "patch_size": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 128, "width": 64, "heads": 1,
                            "layers": 1}}


def images(n=2, size=32, seed=1):
    """Normalised float images (ViTBackbone.normalize passes floats through)."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def openai_format(model: nn.Module) -> dict:
    """``model``'s weights as OpenAI ships them: fp16 tensors and three ints."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    state.update(input_resolution=model.visual.image_size[0],
                 context_length=model.context_length, vocab_size=model.vocab_size)
    return state


def save_jit_archive(state: dict, path) -> None:
    """A TorchScript archive whose state dict is ``state``, like OpenAI's releases."""
    root = nn.Module()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        module = root
        for p in parents:
            if not hasattr(module, p):
                module.add_module(p, nn.Module())
            module = getattr(module, p)
        module.register_buffer(leaf, torch.as_tensor(value))
    with warnings.catch_warnings():  # torch.jit's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(path))


@torch.no_grad()
def projected_features(clip: nn.Module, x: torch.Tensor) -> torch.Tensor:
    backbone = ViTBackbone(clip.visual).eval()
    return backbone(x) @ backbone.proj


def with_gelu(clip: nn.Module) -> nn.Module:
    """A copy of ``clip`` with GELU where it has QuickGELU."""
    clip = copy.deepcopy(clip)
    for block in clip.visual.transformer.resblocks:
        assert isinstance(block.mlp.gelu, QuickGELU)
        block.mlp.gelu = nn.GELU()
    return clip


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return load_clip("ViT-B/16", "none").eval()


# ---- QuickGELU and OpenAI's weights ---------------------------------------------------
def test_authors_names_map_to_the_quickgelu_architectures():
    from finessl.models.clip import BACKBONE_ALIASES
    assert all(name.endswith("-quickgelu") and name in open_clip.list_models()
               for name in BACKBONE_ALIASES.values())


@pytest.mark.slow  # ViT-B/16 through both loaders: several seconds
def test_vit_b16_openai_weights_equal_open_clips_openai_loader(vit_b16, tmp_path, caplog):
    path = tmp_path / "ViT-B-16.pt"
    torch.save(openai_format(vit_b16), path)
    x = images(1, 224)
    with torch.no_grad():
        expected = open_clip.load_openai_model(str(path), "fp32", "cpu").encode_image(x)
    ours = projected_features(load_clip("ViT-B/16", str(path)), x)
    assert rel_err(ours, expected) < 1e-5
    with caplog.at_level(logging.INFO, logger="finessl.models.clip"):
        gelu_config = load_clip("ViT-B-16", str(path))  # open_clip's GELU spelling: corrected
    assert "QuickGELU" in caplog.text
    assert rel_err(projected_features(gelu_config, x), expected) < 1e-5
    assert rel_err(projected_features(with_gelu(gelu_config), x), expected) > 1e-3


@pytest.fixture(scope="module")
def tiny_openai(tmp_path_factory):
    """A tiny CLIP in OpenAI's two file formats, the JSON configs naming its
    architecture (GELU, as open_clip configs default to, and QuickGELU), and the
    features open_clip's OpenAI loader computes from the state-dict file."""
    root = tmp_path_factory.mktemp("openai")
    torch.manual_seed(0)
    state = openai_format(open_clip.model.CLIP(**TINY_OPENAI, quick_gelu=True))
    torch.save(state, root / "tiny.pt")
    save_jit_archive(state, root / "tiny_jit.pt")
    configs = {}
    for name, quick in (("ViT-OAI-Tiny", False), ("ViT-OAI-Tiny-quickgelu", True)):
        configs[name] = str(root / f"{name}.json")
        (root / f"{name}.json").write_text(json.dumps({**TINY_OPENAI, "quick_gelu": quick}))
    with torch.no_grad():
        expected = open_clip.load_openai_model(str(root / "tiny.pt"), "fp32", "cpu").encode_image(
            images())
    return root, configs, expected


@pytest.mark.parametrize("config", ["ViT-OAI-Tiny", "ViT-OAI-Tiny-quickgelu"])
@pytest.mark.parametrize("file", ["tiny.pt", "tiny_jit.pt"])
def test_tiny_openai_weights_equal_open_clips_openai_loader(tiny_openai, config, file):
    root, configs, expected = tiny_openai
    clip = load_clip(configs[config], str(root / file))
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in clip.visual.transformer.resblocks)
    assert rel_err(projected_features(clip, images()), expected) < 1e-5
    assert rel_err(projected_features(with_gelu(clip), images()), expected) > 1e-3


def test_open_clip_checkpoints_keep_their_own_activation(tmp_path):
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT, "none")
    torch.save({"state_dict": clip.state_dict()}, tmp_path / "tiny.pt")
    again = load_clip(TINY_VIT, str(tmp_path / "tiny.pt"))
    assert isinstance(again.visual.transformer.resblocks[0].mlp.gelu, nn.GELU)


# ---- the fp16 backbone -----------------------------------------------------------------
def make_cfg(**overrides):
    cfg = get_cfg_defaults()
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def all_modules_cfg(**overrides):
    """The tiny ViT with every PEFT strategy switched on (VPT-deep by default)."""
    return make_cfg(**{"backbone": TINY_VIT, "pretrained": "none", "vpt_len": 3, **{
        key: True for key in ("vpt_deep", "lora", "adapter", "adaptformer", "ssf",
                              "bias_tuning")}, **overrides})


def perturb(module: nn.Module, std=0.1, seed=0):
    """Move every parameter off its init, so the zero-initialised ones (LoRA's B, the
    up-projections, biases) change the output too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def test_fp16_backbone_equals_open_clips_fp16_forward():
    torch.manual_seed(0)
    half = load_clip(TINY_VIT, "none", precision="fp16").visual.eval()
    block = half.transformer.resblocks[0]
    assert half.conv1.weight.dtype == block.attn.in_proj_weight.dtype == torch.float16
    assert half.class_embedding.dtype == half.positional_embedding.dtype == torch.float32
    assert isinstance(block.ln_1, LayerNormFp32) and block.ln_1.weight.dtype == torch.float32
    x = images()
    with torch.no_grad():
        ours = ViTBackbone(half)(x)
        assert ours.dtype == torch.float32
        assert rel_err((ours.half() @ half.proj).float(), half(x.half()).float()) < 5e-3
        torch.manual_seed(0)
        full = ViTBackbone(load_clip(TINY_VIT, "none").visual.eval())(x)
    assert rel_err(ours, full) < 1e-2


def test_peft_modules_work_with_fp16_and_fp32_parameters_and_activations():
    """All four combinations of parameter and activation dtype give the fp32 result up
    to fp16 rounding, and gradients in the parameters' dtype."""
    cfg = all_modules_cfg(bias_tuning=False)
    torch.manual_seed(0)
    full = build_vit_backbone(cfg, load_clip(TINY_VIT, "none").visual, OPENAI_MEAN, OPENAI_STD)
    perturb(full.peft)
    with torch.no_grad():  # values fp16 can hold, so only the arithmetic differs
        for p in full.peft.parameters():
            p.copy_(p.half().float())
    full.eval()
    expected = full(images())
    for backbone_dtype in (torch.float32, torch.float16):
        for peft_dtype in (torch.float32, torch.float16):
            backbone = copy.deepcopy(full)
            open_clip.model.convert_weights_to_lp(backbone.visual, backbone_dtype)
            backbone.peft.to(peft_dtype)
            out = backbone(images())
            assert rel_err(out, expected) < 2e-2
            out.square().sum().backward()
            for p in backbone.peft.parameters():
                assert p.grad.dtype == peft_dtype and torch.isfinite(p.grad).all()


# ---- initial values, on ViT-B/16's shapes ------------------------------------------------
def assert_uniform(t: torch.Tensor, bound: float):
    assert t.abs().max() <= bound and t.abs().max() > 0.99 * bound
    assert abs(t.std().item() - bound / math.sqrt(3)) < 0.02 * bound / math.sqrt(3)


def assert_normal(t: torch.Tensor, mean: float, std: float):
    assert abs(t.mean().item() - mean) < 0.05 * std and abs(t.std().item() - std) < 0.02 * std


@pytest.mark.parametrize("deep", [True, False])
def test_vpt_init(vit_b16, deep):
    prompts = VisualPrompts.from_config(make_cfg(), vit_b16.visual, 0, deep).prompts.detach()
    assert prompts.shape == (12 if deep else 1, 50, 768)
    assert_uniform(prompts, 0.0625)  # sqrt(6 / (3 * 16 * 16 + 768))


@pytest.mark.parametrize("rank, init, bound", [  # 0.354, 0.25, 0.036
    (8, "released", 1 / math.sqrt(8)), (16, "released", 0.25), (8, "standard", 1 / math.sqrt(768))])
def test_lora_init(vit_b16, rank, init, bound):
    lora = LoRA.from_config(make_cfg(lora_dim=rank, lora_init=init), vit_b16.visual, 0)
    assert sorted(lora.blocks["0"]) == ["q", "v"] and len(lora.blocks) == 12
    a = torch.cat([m.lora_A.detach().flatten() for m in lora.modules() if hasattr(m, "lora_A")])
    assert all(m.lora_A.shape == (768, rank) and m.lora_B.shape == (rank, 768)
               and not m.lora_B.any() for m in lora.modules() if hasattr(m, "lora_A"))
    assert_uniform(a, bound)


def assert_zero_up_and_biases(branch):
    assert not (branch.up.weight.any() or branch.up.bias.any() or branch.down.bias.any())


def test_adapter_init(vit_b16):
    adapter = Adapter.from_config(make_cfg(), vit_b16.visual, 0)
    downs = torch.cat([b.down.weight.detach().flatten() for b in adapter.blocks.values()])
    for b in adapter.blocks.values():
        assert b.down.weight.shape == (8, 768) and b.up.weight.shape == (768, 8)
        assert b.ln.weight.eq(1).all() and not b.ln.bias.any() and b.scale == 0.1
        assert_zero_up_and_biases(b)
    assert_normal(downs, 0.0, 1 / 48)


@pytest.mark.parametrize("ln_opt", ["in", "out", "none"])
def test_adaptformer_init(vit_b16, ln_opt):
    af = AdaptFormer.from_config(make_cfg(ln_opt=ln_opt), vit_b16.visual, 0)
    downs = torch.cat([b.down.weight.detach().flatten() for b in af.blocks.values()])
    for b in af.blocks.values():
        assert b.down.weight.shape == (64, 768) and b.scale == 0.1 and b.dropout == 0.1
        assert (b.ln is None) == (ln_opt == "none")
        assert_zero_up_and_biases(b)
    assert_uniform(downs, 1 / math.sqrt(768))


def test_ssf_init(vit_b16):
    ssf = SSF.from_config(make_cfg(), vit_b16.visual, 0)
    sizes = {"qkv": 2304, "attn_out": 768, "fc1": 3072, "fc2": 768}
    for block in ssf.blocks.values():
        assert {at: len(m.scale) for at, m in block.items()} == sizes
    params = dict(ssf.named_parameters())
    assert_normal(torch.cat([p.detach() for n, p in params.items() if n.endswith("scale")]),
                  1.0, 0.02)
    assert_normal(torch.cat([p.detach() for n, p in params.items() if n.endswith("shift")]),
                  0.0, 0.02)


def test_bitfit_trains_every_bias_of_the_image_tower(vit_b16):
    visual = copy.deepcopy(vit_b16.visual)
    build_vit_backbone(make_cfg(bias_tuning=True), visual, OPENAI_MEAN, OPENAI_STD)
    trained = {n: p.numel() for n, p in visual.named_parameters() if p.requires_grad}
    assert all(n.endswith("bias") for n in trained) and sum(trained.values()) == 102_912


# ---- the per-block order of operations ---------------------------------------------------
def layer_norm(x, ln):
    return F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)


def af_branch(b, x, ln_opt):
    """AdaptFormer's branch: 0.1 * up(ReLU(down(LN x))), LN placed by ln_opt (eval mode)."""
    h = layer_norm(x, b.ln) if ln_opt == "in" else x
    out = 0.1 * (F.relu(h @ b.down.weight.T + b.down.bias) @ b.up.weight.T + b.up.bias)
    return layer_norm(out, b.ln) if ln_opt == "out" else out


def scale_shift(ssf, i, at, h):
    """SSF at hook point ``at`` of block i; identity when SSF is off."""
    return h if ssf is None else h * ssf.blocks[str(i)][at].scale + ssf.blocks[str(i)][at].shift


def transcription(visual, mods, x, deep=True, ln_opt="in", ffn_opt="parallel", lora_first=False):
    """docs/method.md §1, steps 1-12 of every block, on open_clip's modules and the PEFT
    modules' raw parameters; ``mods`` maps a module's class name to it (absent: off)."""
    vpt, ssf, lora = mods.get("VisualPrompts"), mods.get("SSF"), mods.get("LoRA")
    adapter, af = mods.get("Adapter"), mods.get("AdaptFormer")
    x = visual.conv1(x).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], 1)
    x = visual.ln_pre(x + visual.positional_embedding)
    n_keep = x.shape[1]
    for i, block in enumerate(visual.transformer.resblocks):
        if vpt is not None and (deep or i == 0):  # 1: prompts appended at the end
            x = torch.cat([x[:, :n_keep], vpt.prompts[i].expand(x.shape[0], -1, -1)], 1)
        h = block.ln_1(x)  # 2
        qkv = h @ block.attn.in_proj_weight.T + block.attn.in_proj_bias  # 3
        update = 0
        if lora is not None:
            q_, v_ = (h @ lr.lora_A @ lr.lora_B / lr.lora_A.shape[1]
                      for lr in (lora.blocks[str(i)]["q"], lora.blocks[str(i)]["v"]))
            update = torch.cat([q_, torch.zeros_like(q_), v_], -1)
        if lora_first:  # the wrong order, for the test's sake
            qkv = scale_shift(ssf, i, "qkv", qkv + update)
        else:  # 3, 4: SSF, then q += LoRA_q, v += LoRA_v
            qkv = scale_shift(ssf, i, "qkv", qkv) + update
        q, k, v = (t.unflatten(-1, (block.attn.num_heads, -1)).transpose(1, 2)
                   for t in qkv.chunk(3, -1))
        attn = torch.softmax(q / math.sqrt(q.shape[-1]) @ k.transpose(-2, -1), -1)  # 5
        o = block.attn.out_proj((attn @ v).transpose(1, 2).flatten(2))  # 6
        x = x + scale_shift(ssf, i, "attn_out", o)  # 7
        if af is not None and ffn_opt == "parallel":  # 8
            a = af_branch(af.blocks[str(i)], x, ln_opt)
        h = scale_shift(ssf, i, "fc1", block.mlp.c_fc(block.ln_2(x)))  # 9
        h = scale_shift(ssf, i, "fc2", block.mlp.c_proj(block.mlp.gelu(h)))
        if adapter is not None:  # 10
            b = adapter.blocks[str(i)]
            h = h + 0.1 * (F.relu(layer_norm(h, b.ln) @ b.down.weight.T + b.down.bias)
                           @ b.up.weight.T + b.up.bias)
        if af is not None:  # 11
            h = h + (a if ffn_opt == "parallel" else af_branch(af.blocks[str(i)], h, ln_opt))
        x = x + h  # 12
    return visual.ln_post(x[:, 0])


@pytest.mark.parametrize("deep, ln_opt, ffn_opt", [
    (True, "in", "parallel"), (False, "in", "parallel"), (True, "out", "parallel"),
    (True, "none", "parallel"), (True, "in", "sequential"), (False, "out", "sequential")])
def test_forward_equals_the_released_order_of_operations(deep, ln_opt, ffn_opt):
    cfg = all_modules_cfg(vpt_deep=deep, vpt_shallow=not deep, ln_opt=ln_opt, ffn_opt=ffn_opt)
    torch.manual_seed(0)
    backbone = build_vit_backbone(cfg, load_clip(TINY_VIT, "none").visual, OPENAI_MEAN,
                                  OPENAI_STD).eval()
    perturb(backbone.peft)
    perturb(backbone.visual, std=0.05, seed=1)  # the biases BitFit trains move too
    assert {type(m).__name__ for m in backbone.peft} == {
        "VisualPrompts", "SSF", "LoRA", "Adapter", "AdaptFormer"}
    mods = {type(m).__name__: m for m in backbone.peft}
    x = images(3)
    with torch.no_grad():
        ours = backbone(x)
        expected = transcription(backbone.visual, mods, x, deep, ln_opt, ffn_opt)
        assert rel_err(ours, expected) < 1e-5
        # the test can fail: the other SSF / LoRA order, or any module left out, differs
        swapped = transcription(backbone.visual, mods, x, deep, ln_opt, ffn_opt, lora_first=True)
        assert rel_err(swapped, expected) > 1e-3
        for name in mods:
            without = {k: m for k, m in mods.items() if k != name}
            assert rel_err(transcription(backbone.visual, without, x, deep, ln_opt, ffn_opt),
                           expected) > 1e-3, name
