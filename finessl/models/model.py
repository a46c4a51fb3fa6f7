"""Backbone + PEFT + main head + detached auxiliary head, built from the config."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from finessl.errors import UserError
from finessl.models.clip import OPENAI_MEAN, OPENAI_STD, open_clip_lib, resolve_model_name
from finessl.models.families import family_of
from finessl.models.heads import CosineHead, ZeroShotHead, class_text_embeddings, text_init_weight

log = logging.getLogger(__name__)


class FineSSLModel(nn.Module):
    """Returns the main logits and the auxiliary logits of a batch of images.

    The auxiliary head f_aux sees ``feat.detach()`` (docs/method.md §1): no gradient of
    an aux loss reaches the PEFT parameters, which is what keeps the smoothed aux
    targets from flattening the main head's confidence (the "decoupled" of DLS).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: CosineHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, images: torch.Tensor, detach_aux: bool = True,
                features: bool = False) -> tuple[torch.Tensor, ...]:
        """Main and aux logits in float; ``detach_aux False`` is the Table 6 ablation
        in which aux losses do reach the PEFT parameters. ``features``: the backbone's
        features (in float) as a third output, for algorithms with heads of their own."""
        feat = self.backbone(images)
        aux_in = feat.detach() if detach_aux else feat
        logits, aux = self.head(feat).float(), self.aux_head(aux_in).float()
        return (logits, aux, feat.float()) if features else (logits, aux)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The main head's logits (float): what evaluation, prediction and a
        main-head-only loss use (docs/method.md §3: inference uses f, not f_aux)."""
        return self.head(self.backbone(images)).float()

    def _trained_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers training changes (a fine-tuned CNN's BatchNorm statistics)."""
        trained = getattr(self.backbone, "trained_buffers", dict)()
        return {f"backbone.{n}": b for n, b in trained.items()}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: trainable parameters (PEFT, tuned backbone
        weights, both heads) and trained buffers."""
        state = {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}
        state.update({n: b.detach().clone() for n, b in self._trained_buffers().items()})
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        targets = {n: p for n, p in self.named_parameters() if p.requires_grad}
        targets.update(self._trained_buffers())
        missing = [n for n in targets if n not in state]
        unexpected = [n for n in state if n not in targets]
        if missing or unexpected:
            raise KeyError(f"checkpoint does not match the model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
        with torch.no_grad():
            for n, v in state.items():
                targets[n].copy_(v)


def input_size(cfg) -> int:
    """Side of the views: ``input_size``, else the model's own (CLIP config; 224 for timm)."""
    return family_of(cfg.backbone).input_size(cfg)


def build_model(cfg, classnames: list[str], device: torch.device, half: bool,
                mean=OPENAI_MEAN, std=OPENAI_STD, zero_shot: bool = False) -> FineSSLModel:
    """Frozen image tower + fine-tuning strategy + cosine heads on ``device``; uint8
    inputs are normalised with the dataset's ``mean`` / ``std``.

    ``half`` is ``prec fp16`` as released (docs/method.md §4): a CLIP tower is
    open_clip's own fp16 model (linear and conv weights fp16; LayerNorms, computing in
    fp32, and the embeddings fp32), and every trained tensor (prompts, PEFT weights,
    both heads with their logit scales, tuned tower weights) is an fp16 parameter. A
    CNN tower is halved whole and stays frozen.

    The backbone's family (:func:`~finessl.models.families.family_of`: open_clip ViT,
    CLIP ResNet, timm CNN) loads the tower and wraps it with the strategies switched on,
    into an :class:`~finessl.models.tower.ImageTower` mapping images to a ``feat_dim``
    feature, with ``proj`` the matrix into CLIP's joint space when there is one (text
    init, zero-shot).

    ``zero_shot``: the main head is CLIP's text classifier (an algorithm that asks for
    it says so, ``Algorithm.zero_shot_head``), not a trained cosine head.
    """
    family = family_of(cfg.backbone)
    visual, clip_model = family.load(cfg, half)
    visual.requires_grad_(False)
    backbone = family.build(cfg, visual, mean, std)
    backbone.grad_checkpointing = cfg.grad_checkpointing
    text = weight = None
    if not cfg.rand_init or zero_shot:
        if clip_model is None:
            raise UserError(f"rand_init False and algorithm {cfg.algorithm} need a CLIP "
                            f"backbone with a text tower; {cfg.backbone} has none")
        tokenizer = open_clip_lib().get_tokenizer(resolve_model_name(cfg.backbone))
        text = class_text_embeddings(clip_model, tokenizer, classnames, cfg.template)
        weight = None if cfg.rand_init else text_init_weight(text, backbone.proj)
    if half and clip_model is None:
        if any(p.requires_grad for p in visual.parameters()):
            raise UserError(f"prec fp16 halves the whole {cfg.backbone} tower, BatchNorms "
                            f"included, so none of its weights can be trained (bias_tuning, "
                            f"bn_tuning, finetune); use prec amp")
        visual.half()
    if zero_shot:
        head = ZeroShotHead(backbone.proj, text, clip_model.logit_scale.exp().item())
    else:
        head = CosineHead(backbone.feat_dim, len(classnames), weight,
                          unit_rows=cfg.text_init_unit)
    aux_head = CosineHead(backbone.feat_dim, len(classnames))
    if isinstance(head, CosineHead):
        with torch.no_grad():
            aux_head.weight.copy_(head.weight)  # f_aux starts as a copy of f (docs/method.md §1)
    if half:  # the released trained tensors are fp16 parameters; the tower already is
        added = [getattr(backbone, name, None) for name in ("peft", "ssf")]  # ViT / CNN
        for module in [*added, head, aux_head]:
            if isinstance(module, (nn.ModuleList, CosineHead)):
                module.half()
    model = FineSSLModel(backbone, head, aux_head).to(device)
    if cfg.compile:
        backbone.compile()  # in place: parameter names, and so checkpoints, are unchanged
    del clip_model
    return model
