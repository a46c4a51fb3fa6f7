"""SemiKD's student (docs/semikd.md): a timm ViT in our ViT tower computes what timm
computes, the released names map to the weights they loaded, weights come from the
Hugging Face cache or a file (never downloaded here) or fail in one line, and every
strategy of the student's family trains it."""
from __future__ import annotations

import pytest
import timm
import torch

from conftest import TINY_VIT
from helpers import one_line_error
from finessl.models import build_model
from finessl.models.backbone import ViTBackbone
from finessl.models.families import BACKBONES, family_of
from finessl.models.methods import PEFT_METHODS
from finessl.models.student import STUDENT_ALIASES, student_config
from finessl.models.timm_vit import timm_vit_to_open_clip
from finessl.config_load import load_config

CPU = torch.device("cpu")


def _timm_vit(**kw):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                              num_classes=0, **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # layer scales and biases away from their init
    return model


@pytest.mark.parametrize("kw", [{}, {"init_values": 0.1}, {"pre_norm": True},
                                {"qkv_bias": False}], ids=["plain", "layer_scale", "pre_norm",
                                                           "no_qkv_bias"])
def test_a_timm_vit_in_our_tower_computes_what_timm_computes(kw):
    model = _timm_vit(**kw)
    tower = ViTBackbone(timm_vit_to_open_clip(model), [], mean=(0, 0, 0), std=(1 / 255,) * 3)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(tower(images), model(images), atol=2e-6)


def test_other_timm_vits_are_refused_in_one_line():
    message = one_line_error(timm_vit_to_open_clip, _timm_vit(reg_tokens=4))
    assert "not a plain ViT" in message and "a class token as its only prefix token" in message


def test_released_student_names_map_to_the_weights_they_loaded():
    widths = {"T/16": 192, "S/16": 384, "B/16": 768, "B/32": 768}
    for released, name in STUDENT_ALIASES.items():
        assert name.endswith(".augreg_in21k_ft_in1k")
        assert family_of(name).name == "timm_vit"
        cfg = timm.models.get_pretrained_cfg(name[len("timm:"):])
        assert cfg.hf_hub_id == "timm/" + name[len("timm:"):]
        arch = timm.create_model(name[len("timm:"):].split(".")[0], pretrained=False,
                                 device="meta")  # the shapes, no weights
        assert arch.embed_dim == widths[released.split("-")[-1]], released


def _student_cfg(tmp_path, **keys):
    opts = ["DATA.NAME", "CIFAR10", "cache_dir", str(tmp_path / "hf"), "input_size", "32",
            "backbone", TINY_VIT, "pretrained", "none", "KD", "True", "teacher", str(tmp_path)]
    for key, value in keys.items():
        opts += [key, str(value)]
    return load_config(None, opts)


def test_offline_without_weights_names_the_model_and_every_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    cfg = _student_cfg(tmp_path)  # stu_backbone IN21K-ViT-S/16, the released default
    message = one_line_error(student_config, cfg)
    for needle in ("stu_pretrained: timm weights vit_small_patch16_224.augreg_in21k_ft_in1k",
                   "HF_HUB_OFFLINE=1", "huggingface-cli download timm/vit_small_patch16_224."
                   "augreg_in21k_ft_in1k", "stu_pretrained /path/to/weights", "stu_pretrained none"):
        assert needle in message, needle


def _hf_cache(root, repo_id: str, state: dict) -> None:
    """A Hugging Face cache holding ``state`` as repo_id's model.safetensors."""
    from safetensors.torch import save_file
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


@pytest.mark.parametrize("source", ["hf_cache", "file"])
def test_student_weights_from_the_hf_cache_or_a_file_resampled_to_the_input(source, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    shapes = timm.create_model("vit_tiny_patch16_224", num_classes=0, device="meta").state_dict()
    state = {k: torch.randn(v.shape) for k, v in shapes.items()}  # 224 px: 196 + 1 positions
    keys = {"stu_backbone": "IN21K-ViT-T/16"}
    if source == "hf_cache":
        _hf_cache(tmp_path / "hf", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", state)
    else:
        torch.save(state, tmp_path / "weights.pth")
        keys["stu_pretrained"] = str(tmp_path / "weights.pth")
    student = student_config(_student_cfg(tmp_path, **keys))
    model = build_model(student, ["a", "b"], CPU, half=False)
    visual = model.backbone.visual
    assert torch.equal(visual.conv1.weight, state["patch_embed.proj.weight"])
    assert torch.equal(visual.transformer.resblocks[11].mlp.c_proj.weight,
                       state["blocks.11.mlp.fc2.weight"])
    assert visual.positional_embedding.shape == (5, 192)  # resampled to 32 px (2 x 2 patches)
    assert torch.equal(visual.positional_embedding[0], state["pos_embed"][0, 0])  # class token's


VIT_STRATEGIES = sorted(n for n, m in PEFT_METHODS.items() if m.serves_family(BACKBONES["clip_vit"]))
CNN_STRATEGIES = sorted(n for n, m in PEFT_METHODS.items() if m.serves_family(BACKBONES["timm_cnn"]))


@pytest.mark.parametrize("backbone, strategy",
                         [("timm:test_vit", s) for s in VIT_STRATEGIES]
                         + [("timm:test_resnet", s) for s in CNN_STRATEGIES])
def test_every_strategy_of_the_students_family_trains_it(backbone, strategy, tmp_path):
    cfg = _student_cfg(tmp_path, stu_backbone=backbone, stu_pretrained="none",
                       stu_vpt_len=2, **{f"stu_{strategy}": True})
    student = student_config(cfg)
    assert student.backbone == backbone and student[strategy] and not cfg[strategy]
    model = build_model(student, ["a", "b"], CPU, half=False)
    logits, _ = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    logits.sum().backward()
    tuned = [p for p in model.backbone.parameters() if p.requires_grad]
    assert tuned and all(p.grad is not None for p in tuned), strategy  # every one is reached
    assert any(p.grad.abs().sum() > 0 for p in tuned), strategy  # (LoRA's A waits for B != 0)


def test_a_strategy_the_students_family_lacks_is_one_line(tmp_path):
    cfg = _student_cfg(tmp_path, stu_backbone="timm:test_resnet", stu_pretrained="none",
                       stu_lora=True)
    message = one_line_error(build_model, student_config(cfg), ["a"], CPU, False)
    assert message.startswith("lora: a ViT-only strategy")
