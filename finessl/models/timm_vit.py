"""timm ViTs (``timm:vit_small_patch16_224``, SemiKD's ``IN21K-ViT-*`` students) as
image towers, with every ViT fine-tuning strategy.

A plain timm VisionTransformer (class token, learned position embeddings, pre-norm
blocks, the final LayerNorm on the class token) computes exactly what open_clip's
VisionTransformer computes, with other parameter names: its weights are moved into an
open_clip tower of the same shape (:func:`timm_vit_to_open_clip`), so the one ViT
forward with its PEFT hooks (``finessl/models/backbone.py``) serves it unchanged, and
VPT, LoRA, Adapter, AdaptFormer, SSF, BitFit and full fine-tuning all apply (the
family's ``kind`` is ``"vit"``: every ViT strategy serves it). The
differences a timm ViT brings are parameters of that tower: GELU (not QuickGELU),
LayerNorm eps 1e-6, a patch embedding with a bias, no projection. Variants with other
math (register tokens, average pooling, qk-norm, a distillation token) are refused in
one line.

Weights: a local file (``.safetensors``, ``.pth`` / ``.bin`` state dict, or the
``.npz`` of Google's AugReg release, which timm 0.6 read), the Hugging Face cache or
timm's own cache (``torch.hub`` checkpoints), fetched into the Hugging Face cache when
the hub answers, else one line naming the model and the ways to provide them.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch
import torch.nn as nn

from finessl.errors import UserError, brief
from finessl.io import unreachable
from finessl.models.cnn_weights import read_state_dict
from finessl.models.families import BACKBONES, BackboneFamily
from finessl.models.methods import VIT
from finessl.models.peft import build_vit_backbone

log = logging.getLogger(__name__)

PREFIX = "timm:"
HF_URL = "https://huggingface.co"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader reads, in order
_DEFAULT_TAGS = ("", "default", "openai")  # the model's default weights ('openai': the config default)


@functools.lru_cache(maxsize=None)
def _vit_architectures() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models(module="vision_transformer"))


def split_name(backbone: str) -> tuple[str, str]:
    """``timm:<architecture>[.<tag>]`` -> (architecture, tag or '')."""
    name = backbone[len(PREFIX):]
    arch, _, tag = name.partition(".")
    return arch, tag


def weights_name(backbone: str, pretrained: str, key: str = "pretrained") -> str:
    """The timm ``architecture.tag`` whose weights ``pretrained`` (a tag, or a default
    spelling) asks for: the tag given, else the name's own, else timm's default."""
    import timm

    arch, tag = split_name(backbone)
    if pretrained.strip().lower() not in _DEFAULT_TAGS:
        tag = pretrained.strip()
    if not tag:
        tag = timm.models.get_pretrained_cfg(arch).tag or ""
    known = timm.list_pretrained(f"{arch}.*")
    full = f"{arch}.{tag}" if tag else arch
    if known and full not in known:
        raise UserError(f"{key}: '{tag}' is not a timm tag of {arch} (tags: "
                        f"{', '.join(n.split('.', 1)[1] for n in known)}); or give a local "
                        f"weights file, or none")
    return full


def _hf_cache(cache_dir: str) -> str:
    if cache_dir:
        return cache_dir
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _cached(full: str, cache_dir: str) -> str | None:
    """The weights file of ``full`` in the Hugging Face cache or timm's own, or None."""
    import timm

    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        for filename in ((cfg.hf_hub_filename,) if cfg.hf_hub_filename else ()) + _HF_FILES:
            path = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache_dir or None)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if cfg.url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if os.path.isfile(path):
            return path
    return None


def timm_vit_weights(backbone: str, pretrained: str, cache_dir: str = "",
                     key: str = "pretrained") -> str | None:
    """The local weights file for ``backbone`` (None: random init, ``pretrained none``).

    ``pretrained``: 'none'; a file path; a timm tag or '' / 'default' / 'openai' for the
    name's default weights, found in the Hugging Face or timm cache, else downloaded
    into the Hugging Face cache when the hub answers, else a one-line error naming the
    model and every way to provide the weights (``key`` is the config key named).
    """
    import timm

    value = pretrained.strip()
    if value.lower() == "none":
        return None
    if value.endswith((".npz", ".pt", ".pth", ".bin", ".safetensors", ".ckpt")) or os.sep in value:
        if not os.path.isfile(value):
            raise UserError(f"{key}: weights file not found: {value}")
        return value
    full = weights_name(backbone, value, key)
    path = _cached(full, cache_dir)
    if path:
        return path
    cfg = timm.models.get_pretrained_cfg(full)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE=1 is set" if offline else unreachable(HF_URL)
    if why or cfg is None or not cfg.hf_hub_id:
        hub = f"huggingface-cli download {cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id \
            else "its weights file"
        raise UserError(f"{key}: timm weights {full} are not in the Hugging Face cache "
                        f"({_hf_cache(cache_dir)}) nor in timm's cache "
                        f"({os.path.join(torch.hub.get_dir(), 'checkpoints')})"
                        f"{' and ' + why if why else ''}: fetch them once where the hub can "
                        f"be reached ({hub}), or give a local file ({key} /path/to/weights"
                        f".safetensors, .pth or .npz), or {key} none for random init")
    from huggingface_hub import hf_hub_download
    try:
        return hf_hub_download(cfg.hf_hub_id, cfg.hf_hub_filename or _HF_FILES[0],
                               cache_dir=cache_dir or None)
    except Exception as e:  # a download cut off: the user can retry or give a file
        raise UserError(f"{key}: cannot download timm weights {full} ({brief(e)})") from None


def create_timm_vit(backbone: str, weights: str | None, image_size: int | None = None) -> nn.Module:
    """The timm model of ``backbone`` (no classifier) with ``weights`` loaded, its
    position embeddings resampled by timm when ``image_size`` differs from its own."""
    import timm

    arch, _ = split_name(backbone)
    kwargs = {"img_size": image_size} if image_size else {}
    # a state dict replaces every tensor: no random init to draw first (it is slow)
    shapes_only = weights is not None and not weights.endswith(".npz")
    try:
        with torch.device("meta") if shapes_only else contextlib.nullcontext():
            model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    except Exception as e:  # an image size the patch grid cannot take, ...
        raise UserError(f"backbone: timm cannot build {arch} ({brief(e)})") from None
    if weights is None:
        log.info("timm %s: random init (pretrained none)", arch)
        return model
    try:
        if not shapes_only:  # Google's AugReg .npz release, as timm 0.6 downloaded it
            model.load_pretrained(weights)
        else:
            from timm.models.vision_transformer import checkpoint_filter_fn
            state = checkpoint_filter_fn(read_state_dict(weights), model)
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            model.load_state_dict(state, assign=True)
    except UserError:
        raise
    except Exception as e:  # another architecture's file
        raise UserError(f"pretrained: {weights} does not fit timm's {arch} ({brief(e)})") from None
    log.info("timm %s: weights from %s", arch, weights)
    return model


def _unsupported(model: nn.Module) -> str:
    """Why a timm model is not a plain ViT our tower computes exactly ('' when it is)."""
    from timm.models.vision_transformer import Block, VisionTransformer as TimmViT
    if type(model) is not TimmViT:
        return f"a {type(model).__name__}, not timm's plain VisionTransformer"
    checks = {
        "a class token as its only prefix token": model.num_prefix_tokens == 1 and model.has_class_token,
        "class-token pooling": model.global_pool == "token" and isinstance(model.fc_norm, nn.Identity),
        "position embeddings on the class token": not model.no_embed_class,
        "a LayerNorm as final norm": isinstance(model.norm, nn.LayerNorm),
        "a plain patch embedding": isinstance(model.patch_embed.norm, nn.Identity),
    }
    for block in model.blocks:
        checks["plain pre-norm blocks"] = checks.get("plain pre-norm blocks", True) and (
            type(block) is Block and isinstance(block.attn.q_norm, nn.Identity)
            and isinstance(block.attn.norm, nn.Identity) and isinstance(block.mlp.norm, nn.Identity)
            and isinstance(block.mlp.act, nn.GELU))
    missing = [what for what, ok in checks.items() if not ok]
    return f"it needs {', '.join(missing)}" if missing else ""


def timm_vit_to_open_clip(model: nn.Module) -> nn.Module:
    """An open_clip VisionTransformer computing exactly what timm's ``model`` computes up
    to its final LayerNorm on the class token, holding the same tensors (copied)."""
    from open_clip.transformer import LayerNorm, VisionTransformer

    why = _unsupported(model)
    if why:
        name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        raise UserError(f"backbone: timm model {name} is not a plain ViT ({why}); timm ViTs "
                        f"with a class token and pre-norm blocks are supported")
    blocks, width = model.blocks, model.embed_dim
    ls = not isinstance(blocks[0].ls1, nn.Identity)
    proj = model.patch_embed.proj
    with torch.device("meta"):  # shapes only: every tensor is timm's, assigned below
        visual = VisionTransformer(
            image_size=tuple(model.patch_embed.img_size),
            patch_size=tuple(model.patch_embed.patch_size), width=width, layers=len(blocks),
            heads=blocks[0].attn.num_heads, mlp_ratio=blocks[0].mlp.fc1.out_features / width,
            ls_init_value=1.0 if ls else None, output_dim=width,
            no_ln_pre=isinstance(model.norm_pre, nn.Identity),
            act_layer=functools.partial(nn.GELU, approximate=blocks[0].mlp.act.approximate),
            norm_layer=functools.partial(LayerNorm, eps=model.norm.eps))
        visual.conv1 = nn.Conv2d(3, width, proj.kernel_size, proj.stride,
                                 bias=proj.bias is not None)
    visual.proj = None  # the feature is the class token after ``ln_post``: no projection
    src = model.state_dict()
    state = {"conv1.weight": src["patch_embed.proj.weight"],
             "class_embedding": src["cls_token"][0, 0], "positional_embedding": src["pos_embed"][0]}
    if proj.bias is not None:
        state["conv1.bias"] = src["patch_embed.proj.bias"]
    renames = {"norm_pre.": "ln_pre.", "norm.": "ln_post."}
    for i in range(len(blocks)):
        renames.update({f"blocks.{i}.{a}": f"transformer.resblocks.{i}.{b}" for a, b in (
            ("norm1.", "ln_1."), ("attn.qkv.weight", "attn.in_proj_weight"),
            ("attn.qkv.bias", "attn.in_proj_bias"), ("attn.proj.", "attn.out_proj."),
            ("ls1.gamma", "ls_1.gamma"), ("norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
            ("mlp.fc2.", "mlp.c_proj."), ("ls2.gamma", "ls_2.gamma"))})
    for name, tensor in src.items():
        for old, new in renames.items():
            if name.startswith(old):
                state[new + name[len(old):]] = tensor
                break
    target = visual.state_dict()
    for name in target:  # a qkv without bias (qkv_bias False): the zero bias of the same math
        if name.endswith("attn.in_proj_bias") and name not in state:
            state[name] = torch.zeros(target[name].shape, dtype=src["cls_token"].dtype)
    visual.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    return visual


@BACKBONES.register("timm_vit", kind=VIT, label="ViT", priority=5)
class TimmViT(BackboneFamily):
    """timm ViTs (``timm:vit_*``), asked before the timm CNN family (which takes any
    other ``timm:`` name)."""

    @classmethod
    def claims(cls, backbone):
        return backbone.startswith(PREFIX) and split_name(backbone)[0] in _vit_architectures()

    @classmethod
    def input_size(cls, cfg):
        """``input_size`` (the position embeddings are resampled to it), else the model's own."""
        if cfg.input_size:
            return cfg.input_size
        import timm

        cfg_ = timm.models.get_pretrained_cfg(split_name(cfg.backbone)[0])
        return cfg_.input_size[-1] if cfg_ is not None else 224

    @classmethod
    def check_weights(cls, cfg):
        timm_vit_weights(cfg.backbone, cfg.pretrained, cfg.cache_dir)

    @classmethod
    def student_pretrained(cls, backbone, value, cache_dir):
        """The weights found (or fetched) now, so a miss is one line naming
        ``stu_pretrained``; 'default' is timm's default tag."""
        return timm_vit_weights(backbone, value, cache_dir, key="stu_pretrained") or "none"

    @classmethod
    def load(cls, cfg, half):
        weights = timm_vit_weights(cfg.backbone, cfg.pretrained, cfg.cache_dir)
        visual = timm_vit_to_open_clip(create_timm_vit(cfg.backbone, weights, cfg.input_size or None))
        if half:  # as the released student: ``.half()`` whole, LayerNorms included
            visual.half()
        return visual.requires_grad_(False).eval(), None

    @classmethod
    def build(cls, cfg, visual, mean, std):
        return build_vit_backbone(cfg, visual, mean, std, cls)
