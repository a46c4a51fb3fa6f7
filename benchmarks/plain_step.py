"""A plain implementation of one FineSSL step, kept only as the yardstick for
``benchmarks/step.py`` and for the equality test: all four views concatenated
through one autograd forward, attention as matmul + softmax + matmul, every view's
activations kept for backward, each PEFT module's hooks called in every block it acts
in. Same math as ``finessl.algorithms`` (docs/method.md §3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.losses import (add_margin, balanced_margin, learning_pace, smoothed_targets,
                            soft_cross_entropy)


def plain_attention(attn, x, i, peft):
    b, n, d = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    for module in peft:
        q, k, v = module.qkv(i, x, q, k, v)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-2, -1) / (d // heads) ** 0.5, dim=-1)
    out = attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    for module in peft:
        out = module.attn_out(i, out)
    return out


def plain_mlp(mlp, x, i, peft):
    h = mlp.c_fc(x)
    for module in peft:
        h = module.fc1(i, h)
    h = mlp.c_proj(mlp.gelu(h))
    for module in peft:
        h = module.fc2(i, h)
    return h


def plain_features(backbone, images):
    """Every token through every block; each PEFT module's hooks in the blocks where it
    acts (the base hooks are identities)."""
    visual = backbone.visual
    x = visual._embeds(images)
    n_keep = x.shape[1]
    for i, block in enumerate(visual.transformer.resblocks):
        for module in backbone.peft:
            x = module.before_block(i, x, n_keep)
        peft = [module for module in backbone.peft if module.acts_in(i)]
        x = x + block.ls_1(plain_attention(block.attn, block.ln_1(x), i, peft))
        h = plain_mlp(block.mlp, block.ln_2(x), i, peft)
        for module in peft:
            h = module.mlp(i, x, h)
        x = x + block.ls_2(h)
    return visual.ln_post(x[:, 0])


def plain_finessl_step(model, selected, batch, cfg, num_classes):
    """Loss of one FineSSL step; updates ``selected`` in place like the real one."""
    x, y = batch["x"], batch["y"]
    n_x, n_u = x.shape[0], batch["u_w"].shape[0]
    feat = plain_features(model.backbone, torch.cat([x, batch["u_w"], batch["u_s1"],
                                                     batch["u_s2"]]))
    logits, aux = model.head(feat), model.aux_head(feat.detach())
    logits_x, logits_w, logits_s = logits[:n_x], logits[n_x:n_x + n_u], logits[n_x + n_u:]
    aux_x, aux_w, aux_s = aux[:n_x], aux[n_x:n_x + n_u], aux[n_x + n_u:]
    margins = balanced_margin(learning_pace(selected, num_classes), cfg.alpha, cfg.bms_form)
    conf, pseudo = torch.softmax(logits_w.detach(), dim=-1).max(dim=-1)
    mask = (conf >= cfg.th).float().repeat(2)
    conf_aux = torch.softmax(aux_w.detach(), dim=-1).max(dim=-1).values
    weight = (conf_aux * (conf_aux >= cfg.th_min)).repeat(2)
    targets = pseudo.repeat(2)
    loss_x = F.cross_entropy(add_margin(logits_x, y, margins), y)
    loss_x_aux = F.cross_entropy(aux_x, y)
    loss_u = (F.cross_entropy(add_margin(logits_s, targets, margins), targets,
                              reduction="none") * weight).mean()
    soft = smoothed_targets(targets, num_classes, cfg.smoothing)
    loss_u_aux = (soft_cross_entropy(aux_s, soft) * mask).sum() / mask.sum().clamp(min=1e-12)
    keep = conf >= cfg.th
    selected[batch["u_idx"][keep]] = pseudo[keep]
    return loss_x + cfg.w_con * loss_u + loss_x_aux + loss_u_aux
