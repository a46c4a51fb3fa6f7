"""CNN image towers (CLIP ResNets, timm CNNs) and their fine-tuning strategies.

The paper fine-tunes CNNs too (Table 7), with the strategies a CNN has: BatchNorm
tuning, bias tuning (BitFit), SSF on the conv outputs, full fine-tuning, and the
linear probe (none of them: heads only). They combine freely. The ViT-only switches
(VPT, LoRA, adapters, ``partial``) have nothing to attach to and are refused.

BatchNorm statistics stay frozen unless the whole tower is fine-tuned: under
``model.train()`` a tower that is not ``finetune``d stays in eval mode, so its
pretrained running statistics, not those of a few-label batch mixed with strongly
augmented views, normalise every view; ``bn_tuning`` trains the BN affine weight and
bias only. Measured (EfficientNet-Lite0 ImageNet, Fashion-MNIST 64 px, 4 labels per
class, 150 supervised steps, 1000 test images, two label draws): bn_tuning with
frozen statistics 0.66 / 0.69, with batch statistics 0.53 / 0.51 (linear probe 0.63).
``finetune`` runs BN in train mode as usual (0.66 vs 0.67 frozen: no difference).
``CNNBackbone(bn_batch_stats=...)`` overrides the rule.

Strategies apply themselves to the built tower (``attach``, as on a ViT): the tower
has no argument per strategy, and a new CNN strategy is one registered class.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from finessl.errors import UserError
from finessl.models.clip import OPENAI_MEAN, OPENAI_STD
from finessl.models.cnn_weights import TIMM_ALIASES, load_timm, timm_model_name, weights_file
from finessl.models.families import (BACKBONES, BackboneFamily, OpenClipFamily,
                                     check_supported, open_clip_vision_cfg)
from finessl.models.methods import CNN, WeightStrategy, attach_all, peft_method
from finessl.models.tower import ImageTower

__all__ = ["TIMM_ALIASES", "load_timm", "CNNBackbone", "build_cnn_backbone"]

log = logging.getLogger(__name__)


@peft_method("bn_tuning", "CNN backbones: BatchNorm affine parameters trainable", (CNN,))
class BatchNormTuning(WeightStrategy):
    """The affine weight and bias of every BatchNorm layer (the running statistics
    stay frozen: see this module's docstring)."""

    @classmethod
    def attach(cls, cfg, tower) -> None:
        norms = _batchnorms(tower.visual)
        if not norms:
            raise UserError(f"bn_tuning: {type(tower.visual).__name__} has no BatchNorm layers")
        for m in norms:
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer (timm's BatchNormAct2d included: it subclasses BatchNorm2d)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class CNNBackbone(ImageTower):
    """A CNN image tower returning its pooled feature (B, ``feat_dim``), float32.

    timm models (built with ``num_classes=0``) give the globally pooled feature; CLIP
    ResNets (open_clip ``ModifiedResNet``) the attention-pool output, which is already
    in CLIP's joint space. Either way the feature is used as is: ``proj`` is None.
    """

    def __init__(self, visual: nn.Module, mean=OPENAI_MEAN, std=OPENAI_STD,
                 image_size: tuple[int, int] = (224, 224), bn_batch_stats: bool | None = None,
                 channels_last: bool = True):
        super().__init__(visual, mean, std)
        # NHWC weights and activations: oneDNN's (and cuDNN's) fast convolution layout;
        # the demo's training step runs about 2x faster on CPU (benchmarks/cnn_step.py).
        # ``.to(device)``, ``.half()`` and checkpoint loading all keep the layout.
        self.set_channels_last(channels_last)
        self.feat_dim = cnn_feat_dim(visual)
        self.proj = None  # features are used as is (see the class docstring)
        self.image_size = tuple(image_size)
        self._bn_batch_stats = bn_batch_stats
        self.ssf = nn.ModuleList()  # SSF's scale-shift modules, when it attaches
        self._grad_checkpointing = False
        self.train(self.training)

    @property
    def bn_batch_stats(self) -> bool:
        """BN layers normalise with batch statistics (and update them): when the whole
        tower is fine-tuned, unless the constructor said otherwise."""
        return self.finetune if self._bn_batch_stats is None else self._bn_batch_stats

    def set_channels_last(self, enable: bool) -> None:
        """Tower weights and inputs in NHWC (True) or NCHW (False) layout."""
        self.memory_format = torch.channels_last if enable else torch.contiguous_format
        self.visual.to(memory_format=self.memory_format)

    @property
    def grad_checkpointing(self) -> bool:
        """timm towers recompute their blocks in backward (timm's own switch; with BN
        batch statistics the recomputation updates the running statistics a second
        time). CLIP ResNets have no such switch: a no-op there."""
        return self._grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self._grad_checkpointing = bool(enable)
        if hasattr(self.visual, "set_grad_checkpointing"):
            self.visual.set_grad_checkpointing(bool(enable))

    def train(self, mode: bool = True) -> "CNNBackbone":
        """The trainer calls ``model.train()`` every epoch: a tower that is not fully
        fine-tuned stays in eval mode (frozen BN statistics, no dropout / drop-path),
        its BN layers excepted when ``bn_batch_stats`` asks for batch statistics."""
        super().train(mode)
        if mode:
            if not self.finetune:
                self.visual.eval()
            for m in _batchnorms(self.visual):
                m.train(self.bn_batch_stats)
        return self

    def trained_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers training changes (BN running statistics under ``bn_batch_stats``), by
        name within this module: a checkpoint of the trainable state must hold them too."""
        if not self.bn_batch_stats:
            return {}
        return {n: b for n, b in self.named_buffers()
                if n.startswith("visual.") and n.rsplit(".", 1)[-1] in _BN_STATS}

    def weight_scope(self, partial: int | None,
                     ln_post: bool = True) -> list[tuple[str, nn.Parameter]]:
        """Every weight of the tower (a CNN has no ``partial``)."""
        return list(self.visual.named_parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.visual.parameters()).dtype  # fp16 towers under prec fp16
        images = self.normalize(images).to(dtype).contiguous(memory_format=self.memory_format)
        return self.visual(images).float()


def cnn_feat_dim(visual: nn.Module) -> int:
    from open_clip.modified_resnet import ModifiedResNet  # with the model, not the config

    if isinstance(visual, ModifiedResNet):
        return visual.output_dim
    if hasattr(visual, "pretrained_cfg") and hasattr(visual, "num_features"):  # timm
        return getattr(visual, "head_hidden_size", None) or visual.num_features
    raise UserError(f"backbone: image tower {type(visual).__name__} is not supported; CNN "
                    f"backbones are CLIP ResNets (RN50, ...) and timm CNNs (timm:<model>)")


def build_cnn_backbone(cfg, visual: nn.Module, mean, std,
                       family: type[BackboneFamily] | None = None) -> CNNBackbone:
    """CNN image tower with the strategies ``cfg`` switches on (none = linear probe),
    of ``family`` (None: told from the tower, a CLIP ResNet or a timm CNN).

    ``mean`` / ``std`` are the dataset's, as for ViTs (also for ImageNet CNNs).
    """
    from open_clip.modified_resnet import ModifiedResNet  # with the model, not the config

    clip_resnet = isinstance(visual, ModifiedResNet)
    check_supported(cfg, family or (ClipResNet if clip_resnet else TimmCNN))
    if cfg.partial is not None:
        raise UserError(f"partial: a ViT-only strategy (the last K blocks); {cfg.backbone} "
                        f"is a CNN")
    if clip_resnet:
        size = visual.image_size
        if cfg.input_size and cfg.input_size != size:
            raise UserError(f"input_size: {cfg.backbone} takes {size} px inputs (its attention "
                            f"pool has fixed position embeddings), got {cfg.input_size}")
    else:
        size = cfg.input_size or 224  # global pooling takes any size; 224 as model.input_size
    backbone = CNNBackbone(visual, mean, std, image_size=(size, size))
    chosen = attach_all(cfg, backbone)
    backbone.train(backbone.training)  # the BN mode full fine-tuning asks for
    n_train = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    log.info("CNN %s: %s, %d trainable backbone parameters", cfg.backbone,
             " + ".join(chosen) or "linear probe", n_train)
    return backbone


@BACKBONES.register("clip_resnet", kind=CNN, label="CNN", priority=20)
class ClipResNet(OpenClipFamily):
    """open_clip's CLIP ResNets (``RN50``, ...): a CNN tower with CLIP's text tower."""

    @classmethod
    def claims(cls, backbone):
        if TimmCNN.claims(backbone):
            return False
        return isinstance(open_clip_vision_cfg(backbone).get("layers"), (list, tuple))

    @classmethod
    def input_size(cls, cfg):  # a size that differs is refused by build_cnn_backbone
        return cfg.input_size or cls.native_size(cfg)

    @classmethod
    def build(cls, cfg, visual, mean, std):
        return build_cnn_backbone(cfg, visual, mean, std, cls)


@BACKBONES.register("timm_cnn", kind=CNN, label="CNN", priority=10)
class TimmCNN(BackboneFamily):
    """timm CNNs (``timm:<model>``, ``efficientnet_lite0``), weights from local files."""

    @classmethod
    def claims(cls, backbone):
        return backbone.startswith("timm:") or backbone in TIMM_ALIASES

    @classmethod
    def check_weights(cls, cfg):
        weights_file(timm_model_name(cfg.backbone), cfg.pretrained)

    @classmethod
    def student_pretrained(cls, backbone, value, cache_dir):
        """'default': the ImageNet weights a pip package ships (else the timm loader says
        what to do)."""
        return "imagenet" if value.lower() == "default" else value

    @classmethod
    def load(cls, cfg, half):
        return load_timm(cfg.backbone, cfg.pretrained, cfg.cache_dir), None

    @classmethod
    def build(cls, cfg, visual, mean, std):
        return build_cnn_backbone(cfg, visual, mean, std, cls)
