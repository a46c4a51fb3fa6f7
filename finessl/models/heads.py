"""Cosine classifier heads: the main head f and the auxiliary head f_aux (docs/method.md §1)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CosineHead(nn.Module):
    """``logits = s * normalize(x) @ normalize(W).T`` with a learnable scale s.

    W starts uniform in [-1, 1] with unit rows (the released ``rand_init``), or as
    ``weight`` (text init), its rows scaled to unit norm only with ``unit_rows``: the
    released text init keeps W = T P^T as it is. The logits are the same either way,
    but a row's norm sets how far SGD and weight decay turn it per step.
    s starts at 1/0.07, CLIP's temperature.
    """

    def __init__(self, width: int, num_classes: int, weight: torch.Tensor | None = None,
                 scale: float = 1 / 0.07, unit_rows: bool = False):
        super().__init__()
        if weight is None:
            weight, unit_rows = torch.empty(num_classes, width).uniform_(-1.0, 1.0), True
        weight = weight.float()
        self.weight = nn.Parameter((F.normalize(weight, dim=-1) if unit_rows else weight).clone())
        self.logit_scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computed in the parameters' dtype (fp16 under ``prec fp16``, as released)."""
        x = x.to(self.weight.dtype)
        return self.logit_scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()


@torch.no_grad()
def class_text_embeddings(clip_model: nn.Module, tokenizer, classnames: list[str],
                          template: str) -> torch.Tensor:
    """T: L2-normalised CLIP text embeddings of ``template.format(name)``, one per class."""
    prompts = [template.format(c.replace("_", " ")) for c in classnames]
    device = next(clip_model.parameters()).device
    text = clip_model.encode_text(tokenizer(prompts).to(device)).float()
    return F.normalize(text, dim=-1)


def text_init_weight(text: torch.Tensor, proj: torch.Tensor | None) -> torch.Tensor:
    """The paper's semantic init: W = T @ P.T (Table 10, FFT-dagger), with P the
    visual projection (width x embed_dim), so W's rows live in the pre-projection
    space the heads see (P = None: the features are already in the joint space)."""
    return text if proj is None else text @ proj.detach().float().t()


class ZeroShotHead(nn.Module):
    """CLIP's zero-shot classifier on the pre-projection feature:
    ``logits = s * normalize(x @ P) @ T.T`` with T the normalised text embeddings of
    the class prompts, P the visual projection and s CLIP's logit scale. Not trained."""

    def __init__(self, proj: torch.Tensor | None, text: torch.Tensor, scale: float):
        super().__init__()
        if proj is None:  # features already in the joint space (CLIP ResNets' attention pool)
            proj = torch.eye(text.shape[1])
        self.register_buffer("proj", proj.detach().float().clone())
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x.float() @ self.proj, dim=-1) @ self.text.t()
