"""What every image tower gives the model, whatever its family (ViT or CNN): input
normalisation, the feature and its width, the projection into CLIP's joint space (if
any), the trained buffers a checkpoint must keep, and the scope of tower weights the
weight strategies (BitFit, full fine-tuning) train. Those strategies, like the
normalisation, are written once here for every family."""
from __future__ import annotations

import torch
import torch.nn as nn


class ImageTower(nn.Module):
    """Base of :class:`~finessl.models.backbone.ViTBackbone` and
    :class:`~finessl.models.cnn.CNNBackbone`: a frozen ``visual`` tower mapping uint8
    images, normalised by the dataset's ``mean`` / ``std``, to a ``feat_dim`` feature.

    Subclasses set ``feat_dim`` and ``proj``: the matrix from the feature into CLIP's
    joint space (text init, zero-shot), or None where the feature already lives there.
    ``finetune`` says the whole tower trains (full fine-tuning sets it when it attaches).
    """

    finetune = False

    def __init__(self, visual: nn.Module, mean, std):
        super().__init__()
        self.visual = visual
        self.visual.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (as the loaders send them) -> normalised floats, on the device;
        float images are taken as already normalised."""
        if images.dtype != torch.uint8:
            return images
        return (images.float() - self.mean) / self.std

    def weight_scope(self, partial: int | None,
                     ln_post: bool = True) -> list[tuple[str, nn.Parameter]]:
        """The tower weights BitFit and full fine-tuning may train (the last ``partial``
        blocks only, where the family has blocks, with the final LayerNorm above them
        unless ``ln_post`` is False), by name within ``visual``."""
        raise NotImplementedError

    def trained_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers training changes (none unless the family says so)."""
        return {}


def train_tower_weights(tower: ImageTower, bias_tuning: bool, finetune: bool,
                        partial: int | None = None, ln_post: bool = True) -> None:
    """BitFit (Ben Zaken et al., ACL 2022): every bias in the tower's weight scope,
    LayerNorm and BatchNorm biases included as in the paper; full fine-tuning: every
    weight of the scope (``partial`` / ``ln_post``: :meth:`ImageTower.weight_scope`).
    The two strategies of every family."""
    if not (bias_tuning or finetune):
        return
    for name, p in tower.weight_scope(partial, ln_post):
        if finetune or name.endswith("bias"):  # ``bias``, MHA's ``in_proj_bias``
            p.requires_grad_(True)
